"""One SentencePiece model over all languages' training text; id 0 is the CTC blank.

Training text is read from lhotse cut manifests and normalized with ``normalize(text, supervision.language)``.
Language balancing: language l contributes ``T * n_l^alpha / sum_k n_k^alpha`` sentences, where n_l is its
sentence count and T the total (capped by ``max_sentences``). alpha=0 gives every language the same share
(the default: so English does not dominate the vocabulary), alpha=1 keeps the natural proportions. A language
with fewer sentences than its share is up-sampled (its sentences repeated, then a seeded sample of the rest),
one with more is sub-sampled without replacement.
"""
from __future__ import annotations

import logging
import os
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from mlma_cli.data.layout import find_datasets
from mlma_cli.errors import MlmaError
from mlma_cli.text.normalize import LANGUAGES, normalize, normalize_generic
from mlma_cli.utils.io import atomic_path, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
BLANK = "<blk>"
UNK = "<unk>"
MODEL_TYPES = ("unigram", "bpe", "char")


def lang_tag(lang: str) -> str:
    return f"<{lang}>"


class Tokenizer:
    """A SentencePiece model with mlma's conventions (blank 0, optional ``<lang>`` tags); see DESIGN.md."""

    def __init__(self, sp, source: str = "<bytes>"):
        self.sp = sp
        self.source = source
        first = sp.id_to_piece(0)
        if first != BLANK:
            raise MlmaError(f"tokenizer {source} has {first!r} at id 0, not the CTC blank {BLANK!r}; "
                            f"train one with `mlma tokenizer`")
        self._tag_ids: Dict[int, str] = {}
        for lang in LANGUAGES:
            i = sp.piece_to_id(lang_tag(lang))
            if sp.id_to_piece(i) == lang_tag(lang):
                self._tag_ids[i] = lang
        self._lang_to_tag = {lang: i for i, lang in self._tag_ids.items()}

    @classmethod
    def load(cls, path: PathLike) -> "Tokenizer":
        import sentencepiece as spm

        path = Path(path)
        if not path.is_file():
            raise MlmaError(f"tokenizer model {path} not found; train one with `mlma tokenizer`")
        sp = spm.SentencePieceProcessor()
        try:
            sp.Load(str(path))
        except (OSError, RuntimeError) as err:
            raise MlmaError(f"{path} is not a SentencePiece model ({err}); retrain with `mlma tokenizer`") from err
        return cls(sp, str(path))

    @classmethod
    def from_bytes(cls, data: bytes) -> "Tokenizer":
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(data)
        except (OSError, RuntimeError) as err:
            raise MlmaError(f"stored tokenizer bytes are not a SentencePiece model ({err})") from err
        return cls(sp)

    def to_bytes(self) -> bytes:
        return self.sp.serialized_model_proto()

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    @property
    def blank_id(self) -> int:
        return 0

    @property
    def lang_tags(self) -> bool:
        return len(self._tag_ids) == len(LANGUAGES)

    def tag_id(self, lang: str) -> int:
        if lang not in self._lang_to_tag:
            raise ValueError(f"tokenizer has no language tag for {lang!r}")
        return self._lang_to_tag[lang]

    def encode(self, text: str, lang: Optional[str] = None) -> List[int]:
        """Normalize (with ``lang``'s rules when given) and encode; prepend the ``<lang>`` id when tags are on."""
        norm = normalize(text, lang) if lang is not None else normalize_generic(text)
        ids = list(self.sp.encode(norm, out_type=int)) if norm else []
        if lang is not None and self.lang_tags:
            ids.insert(0, self._lang_to_tag[lang])
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` without blanks and language tags."""
        keep = [int(i) for i in ids if int(i) != 0 and int(i) not in self._tag_ids]
        return self.sp.decode(keep).strip() if keep else ""

    def lang_of(self, ids: Iterable[int]) -> Optional[str]:
        """The language of the first language tag in ``ids``, or None."""
        for i in ids:
            lang = self._tag_ids.get(int(i))
            if lang is not None:
                return lang
        return None

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(int(i))

    def pieces(self) -> List[str]:
        return [self.sp.id_to_piece(i) for i in range(self.vocab_size)]


# ----------------------------------------------------------------------------------------------- training text


def resolve_cut_paths(cuts: Sequence[PathLike] = (), data: Optional[PathLike] = None,
                      datasets: Sequence[str] = ()) -> List[Path]:
    """Cut manifests named by ``cuts`` (a cuts file, or a directory holding ``cuts.jsonl.gz``) and by dataset
    patterns such as ``synthetic/*/train`` under ``DATA/manifests`` (falling back to ``DATA/fbank``)."""
    paths: List[Path] = []
    for c in cuts:
        p = Path(c)
        if p.is_dir():
            p = p / "cuts.jsonl.gz"
        if not p.is_file():
            raise MlmaError(f"cut manifest {p} not found; pass a cuts.jsonl.gz file or a dataset directory holding one")
        paths.append(p)
    for pattern in datasets:
        if data is None:
            raise MlmaError(f"--dataset {pattern} needs --data (the data directory)")
        names = find_datasets(data, pattern) or find_datasets(data, pattern, kind="fbank")
        if not names:
            raise MlmaError(f"no dataset matches {pattern!r} under {Path(data) / 'manifests'}; run `mlma prepare` first")
        kind = "manifests" if find_datasets(data, pattern) else "fbank"
        paths.extend(Path(data) / kind / n / "cuts.jsonl.gz" for n in names)
    if not paths:
        raise MlmaError("no training text given; pass --cuts FILE|DIR or --data DIR --dataset 'synthetic/*/train'")
    return paths


def _lang_from_path(path: Path) -> Optional[str]:
    lang = path.parent.parent.name  # .../<corpus>/<lang>/<split>/cuts.jsonl.gz
    return lang if lang in LANGUAGES else None


def read_training_text(paths: Sequence[PathLike]) -> Tuple[Dict[str, List[str]], int]:
    """Normalized supervision texts per language from cut manifests, and the number of empty ones skipped.

    A supervision without a language takes it from the dataset path (``<corpus>/<lang>/<split>``);
    an unknown language code raises MlmaError naming the file and cut.
    """
    from lhotse import load_manifest_lazy

    texts: Dict[str, List[str]] = {}
    skipped = 0
    for path in map(Path, paths):
        fallback = _lang_from_path(path)
        try:
            cuts = load_manifest_lazy(path)
        except Exception as err:
            raise MlmaError(f"cannot read cut manifest {path}: {err}") from err
        for cut in cuts:
            for sup in cut.supervisions:
                lang = sup.language or fallback
                if lang not in LANGUAGES:
                    raise MlmaError(f"{path}: cut {cut.id} has language {lang!r}; supported: {', '.join(LANGUAGES)}; "
                                    f"fix the manifest's supervision language")
                norm = normalize(sup.text or "", lang)
                if not norm:
                    skipped += 1
                    continue
                texts.setdefault(lang, []).append(norm)
    return texts, skipped


def balance_sentences(texts: Dict[str, List[str]], alpha: float = 0.0, max_sentences: Optional[int] = None,
                      seed: int = 0) -> Dict[str, List[str]]:
    """Resample each language's sentences to its temperature share (module doc); deterministic for ``seed``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"balance alpha must be in [0, 1], got {alpha}")
    counts = {lang: len(s) for lang, s in texts.items() if s}
    if not counts:
        return {}
    total = sum(counts.values())
    if max_sentences is not None:
        total = min(total, max_sentences)
    weights = {lang: n ** alpha for lang, n in counts.items()}
    norm = sum(weights.values())
    out = {}
    for lang in sorted(counts):
        target = max(1, round(total * weights[lang] / norm))
        rng = random.Random(f"mlma-tokenizer-balance:{seed}:{lang}")
        sents = texts[lang]
        reps, rest = divmod(target, len(sents))
        out[lang] = sents * reps + rng.sample(sents, rest)
    return out


@dataclass
class TokenizerReport:
    out_dir: Path
    model_type: str
    vocab_size: int
    sentences: Dict[str, int] = field(default_factory=dict)  # per language, as read
    used: Dict[str, int] = field(default_factory=dict)  # per language, after balancing
    skipped_empty: int = 0


def train_tokenizer(cut_paths: Sequence[PathLike], out_dir: PathLike, vocab_size: int = 500,
                    model_type: str = "unigram", lang_tags: bool = False, alpha: float = 0.0,
                    max_sentences: Optional[int] = 2_000_000, seed: int = 0) -> TokenizerReport:
    """Train ``out_dir/tokenizer.model`` (+ ``tokenizer.vocab``, ``tokens.txt``, ``tokenizer.json``) atomically.

    ``vocab_size`` is a soft limit (``hard_vocab_limit=false``); for ``char`` every character becomes a piece.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model type must be one of {MODEL_TYPES}, got {model_type!r}")
    texts, skipped = read_training_text(cut_paths)
    if not texts:
        raise MlmaError(f"no training text in {', '.join(map(str, cut_paths))} (all transcripts empty?); "
                        f"check the manifests")
    balanced = balance_sentences(texts, alpha, max_sentences, seed)
    report = TokenizerReport(Path(out_dir), model_type, 0, {k: len(v) for k, v in texts.items()},
                             {k: len(v) for k, v in balanced.items()}, skipped)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".tokenizer-") as tmp:
        text_file = Path(tmp) / "text.txt"
        with open(text_file, "w", encoding="utf-8") as f:
            for lang in sorted(balanced):
                f.writelines(s + "\n" for s in balanced[lang])
        prefix = Path(tmp) / "tokenizer"
        _spm_train(text_file, prefix, vocab_size, model_type, lang_tags, seed)
        _drop_build_paths(Path(f"{prefix}.model"))
        tok = Tokenizer.load(f"{prefix}.model")
        report.vocab_size = tok.vocab_size
        for suffix in (".vocab", ".model"):  # model last: its presence means the directory is complete
            with atomic_path(out_dir / f"tokenizer{suffix}") as dst:
                os.replace(f"{prefix}{suffix}", dst)
            if suffix == ".vocab":
                write_text_atomic(out_dir / "tokens.txt",
                                  "".join(f"{p} {i}\n" for i, p in enumerate(tok.pieces())))
                write_json_atomic(out_dir / "tokenizer.json", {
                    "model_type": model_type, "vocab_size": tok.vocab_size, "requested_vocab_size": vocab_size,
                    "lang_tags": lang_tags, "balance_alpha": alpha, "seed": seed,
                    "sentences": report.sentences, "sentences_used": report.used, "skipped_empty": skipped,
                    "cuts": [str(p) for p in cut_paths]})
    return report


def _drop_build_paths(model_file: Path) -> None:
    """SentencePiece records its input and output paths (here a fresh temporary directory) in the model. Replace
    them by fixed names, so the same text and options always give a byte-identical model: recipe stage checksums
    and `mlma train`'s resume check then see a retrained but equal tokenizer as unchanged."""
    try:
        from sentencepiece import sentencepiece_model_pb2 as pb
    except ImportError:  # protobuf missing: the model works, only its bytes vary between trainings
        log.info("protobuf not importable: %s keeps its build paths", model_file)
        return
    proto = pb.ModelProto()
    proto.ParseFromString(model_file.read_bytes())
    del proto.trainer_spec.input[:]
    proto.trainer_spec.input.append("text.txt")
    proto.trainer_spec.model_prefix = "tokenizer"
    model_file.write_bytes(proto.SerializeToString(deterministic=True))


def _spm_train(text_file: Path, prefix: Path, vocab_size: int, model_type: str, lang_tags: bool,
               seed: int) -> None:
    import sentencepiece as spm

    if vocab_size < 3 + (len(LANGUAGES) if lang_tags else 0) and model_type != "char":
        raise MlmaError(f"--vocab-size {vocab_size} is too small; use at least a few dozen")
    kwargs = dict(
        input=str(text_file), model_prefix=str(prefix), model_type=model_type, vocab_size=vocab_size,
        character_coverage=1.0, pad_id=0, pad_piece=BLANK, unk_id=1, unk_piece=UNK, bos_id=-1, eos_id=-1,
        hard_vocab_limit=False, normalization_rule_name="identity", input_sentence_size=2_000_000,
        shuffle_input_sentence=True, num_threads=max(1, min(8, os.cpu_count() or 1)),
        minloglevel=2,
    )
    if model_type == "char":
        kwargs["use_all_vocab"] = True
    if lang_tags:
        kwargs["user_defined_symbols"] = [lang_tag(lang) for lang in LANGUAGES]
    if hasattr(spm, "set_random_generator_seed"):
        spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(**kwargs)
    except RuntimeError as err:
        msg = str(err).strip().splitlines()[-1] if str(err).strip() else repr(err)
        raise MlmaError(f"SentencePiece training on {text_file.name} failed ({msg}); "
                        f"try a smaller --vocab-size or more text") from err
