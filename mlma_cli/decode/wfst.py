"""WFST decoding graphs (H o L o G) built with kaldifst + kaldilm, decoded with kaldi-decoder.

Label spaces:
  * acoustic input (graph ilabels): token id + 1 (blank -> 1, 0 is epsilon), as `DecodableCtc` expects;
  * token space between H and L: token id + 1 for non-blank tokens, disambiguation symbols #k -> V + 1 + k
    (#0 is G's back-off symbol);
  * words: the symbol table kaldilm writes for G (`<eps>` 0, `#0`, `<s>`, `</s>`, then the words).

Construction: G from ARPA (kaldilm, back-off arcs on #0, `<s>`/`</s>` as epsilons); L with a loop state, word
output on the first token arc and #k appended to token sequences that are duplicated or a prefix of another
word's sequence; LG = compose(L, G), determinized (determinize_star, log semiring) and minimized
(minimize_encoded); its disambiguation inputs become epsilons; HLG = compose(H, LG) with H the CTC topology
(standard: one state per token, blank state 0, V^2 arcs; or compact, 3V arcs; see `ctc_topo`). The graph
directory holds:

    HLG.fst  G.fst  words.txt  lexicon.txt  meta.json
"""
from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from mlma_cli.errors import MissingDependencyError, MlmaError
from mlma_cli.text.normalize import LANGUAGES
from mlma_cli.utils.io import atomic_path, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

SPECIAL_WORDS = ("<eps>", "#0", "<s>", "</s>")


def _kaldifst():
    try:
        import kaldifst
    except ImportError as err:
        raise MissingDependencyError(
            "WFST decoding needs kaldifst, kaldi-decoder and kaldilm: pip install 'mlma[lm]' "
            "(or pip install kaldifst kaldi-decoder kaldilm)"
        ) from err
    return kaldifst


def _kaldi_decoder():
    _kaldifst()
    try:
        import kaldi_decoder
    except ImportError as err:
        raise MissingDependencyError("WFST decoding needs kaldi-decoder: pip install 'mlma[lm]'") from err
    return kaldi_decoder


def read_symbol_table(path: Path) -> Dict[str, int]:
    table = {}
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines()):
        parts = line.split()
        if len(parts) != 2:
            raise MlmaError(f"{path}: line {i + 1} is not 'symbol id'; rebuild the graph with `mlma lm graph`")
        table[parts[0]] = int(parts[1])
    return table


def fst_arcs(fst) -> Tuple[List[Tuple[int, int, int, int, float]], Dict[int, float]]:
    """Arcs (src, dst, ilabel, olabel, cost) and final costs {state: cost} of a kaldifst FST, via its text form."""
    arcs, finals = [], {}
    for line in fst.to_str(show_weight_one=True).splitlines():
        p = line.split()
        if len(p) >= 4:
            arcs.append((int(p[0]), int(p[1]), int(p[2]), int(p[3]), float(p[4]) if len(p) > 4 else 0.0))
        elif p:
            finals[int(p[0])] = float(p[1]) if len(p) > 1 else 0.0
    return arcs, finals


def _build_fst(arcs, finals, start: int = 0):
    kf = _kaldifst()
    fst = kf.StdVectorFst()
    n = 1 + max([start] + [max(a[0], a[1]) for a in arcs] + list(finals))
    for _ in range(n):
        fst.add_state()
    fst.start = start
    for s, d, i, o, w in arcs:
        fst.add_arc(s, kf.StdArc(i, o, w, d))
    for s, w in finals.items():
        fst.set_final(s, w)
    return fst


TOPOLOGIES = ("standard", "compact")


def ctc_topo(vocab_size: int, topo: str = "standard"):
    """CTC topology H: input token id + 1, output token id + 1 once per emitted token, else 0 (epsilon).

    "standard": exactly CTC's collapse rule. State 0 after blank (start), state s after token s; from every
    state every token (V^2 arcs): fine to a few thousand tokens.
    "compact": 3V arcs. State 0 loops on blank; token t enters state t (output t), which loops on t and
    leaves to 0 on epsilon. It accepts every CTC path, and also reads a repeat without a blank between as
    two tokens, leaving the choice to the lexicon and LM (the token FST of Eesen, the idea behind k2's
    modified topology). For large vocabularies, where the standard H becomes too big to compose.
    All states final.
    """
    if topo not in TOPOLOGIES:
        raise ValueError(f"topo={topo!r}, expected one of {', '.join(TOPOLOGIES)}")
    arcs = [(0, 0, 1, 0, 0.0)]  # blank loop at the start state
    if topo == "compact":
        for t in range(1, vocab_size):
            arcs += [(0, t, t + 1, t + 1, 0.0), (t, t, t + 1, 0, 0.0), (t, 0, 0, 0, 0.0)]
        return _build_fst(arcs, {s: 0.0 for s in range(vocab_size)})
    if vocab_size > 2000:
        log.warning("standard CTC topology for %d tokens has %d arcs; graph building will be slow and large "
                    "(`mlma lm graph --topo compact` has %d)", vocab_size, vocab_size * vocab_size, 3 * vocab_size)
    for s in range(1, vocab_size):
        arcs.append((s, 0, 1, 0, 0.0))  # blank
    for s in range(vocab_size):
        for t in range(1, vocab_size):
            arcs.append((s, t, t + 1, 0 if t == s else t + 1, 0.0))
    return _build_fst(arcs, {s: 0.0 for s in range(vocab_size)})


def lexicon_with_disambig(lexicon: Dict[str, Sequence[int]]) -> Tuple[Dict[str, List[int]], int]:
    """Append #k (k >= 1) to token sequences that are duplicated or a proper prefix of another word's.

    Args:
        lexicon: word -> token ids (no blank).
    Returns:
        (word -> token ids + disambiguation index list [k] or [], max k used).
    """
    prefixes = set()
    seq_words: Dict[Tuple[int, ...], List[str]] = {}
    for w, seq in lexicon.items():
        seq = tuple(seq)
        seq_words.setdefault(seq, []).append(w)
        for i in range(1, len(seq)):
            prefixes.add(seq[:i])
    out: Dict[str, List[int]] = {}
    max_k = 0
    for seq, ws in seq_words.items():
        if len(ws) == 1 and seq not in prefixes:
            out[ws[0]] = []
            continue
        for k, w in enumerate(sorted(ws), start=1):
            out[w] = [k]
            max_k = max(max_k, k)
    return out, max_k


def lexicon_fst(lexicon: Dict[str, Sequence[int]], word_ids: Dict[str, int], vocab_size: int,
                skip_tokens: Sequence[int] = ()):
    """L: token space (id + 1, #k -> V + 1 + k) to words. State 0 is start, loop and final state.

    `skip_tokens` (e.g. language tags) may appear between words and output nothing.
    """
    disambig, max_k = lexicon_with_disambig(lexicon)
    arcs = [(0, 0, vocab_size + 1, word_ids["#0"], 0.0)]  # pass G's back-off symbol through
    arcs += [(0, 0, t + 1, 0, 0.0) for t in skip_tokens]
    nxt = 1
    for w, seq in lexicon.items():
        labels = [t + 1 for t in seq] + [vocab_size + 1 + k for k in disambig[w]]
        src = 0
        for i, lab in enumerate(labels):
            last = i == len(labels) - 1
            dst = 0 if last else nxt
            if not last:
                nxt += 1
            arcs.append((src, dst, lab, word_ids[w] if i == 0 else 0, 0.0))
            src = dst
    return _build_fst(arcs, {0: 0.0}), max_k


def g_fst_from_arpa(arpa: Path, words_txt: Path):
    """G from an ARPA file via kaldilm; writes the word symbol table to `words_txt`."""
    try:
        import kaldilm
    except ImportError as err:
        raise MissingDependencyError("building G needs kaldilm: pip install 'mlma[lm]'") from err
    if not Path(arpa).is_file():
        raise MlmaError(f"{arpa}: ARPA file not found; train one with `mlma lm train` or pass an existing LM")
    try:
        text = kaldilm.arpa2fst(str(arpa), disambig_symbol="#0", write_symbol_table=str(words_txt), max_arpa_warnings=0)
    except Exception as err:  # kaldilm raises RuntimeError on malformed input
        raise MlmaError(f"{arpa}: not a valid ARPA file ({err}); check its \\data\\ section and n-gram lines") from err
    kf = _kaldifst()
    G = kf.compile(text)
    kf.arcsort(G, sort_type="ilabel")
    return G


def _relabel(fst, fn_in: Callable[[int], int]):
    arcs, finals = fst_arcs(fst)
    return _build_fst([(s, d, fn_in(i), o, w) for s, d, i, o, w in arcs], finals, start=fst.start)


@dataclass
class Graph:
    """A decoding graph plus its word table; `fst` is a kaldifst StdVectorFst (HLG)."""

    fst: object
    id2word: Dict[int, str]
    vocab_size: int
    meta: dict

    @property
    def num_states(self) -> int:
        return self.fst.num_states


def build_graph(
    arpa: Path,
    spell: Callable[[str], Sequence[int]],
    vocab_size: int,
    out_dir: Optional[Path] = None,
    meta: Optional[dict] = None,
    skip_tokens: Sequence[int] = (),
    topo: str = "standard",
) -> Graph:
    """Build HLG for the words of the ARPA LM.

    Args:
        arpa: word n-gram LM in ARPA format.
        spell: word -> token ids (without blank), e.g. the tokenizer's encode.
        vocab_size: V of the acoustic model (blank = 0).
        out_dir: when given, HLG.fst, G.fst, words.txt, lexicon.txt, meta.json are written there.
        meta: extra metadata (e.g. tokenizer checksum) stored in meta.json.
        skip_tokens: token ids accepted between words without output (the tokenizer's language tags).
        topo: CTC topology of H, "standard" or "compact" (see :func:`ctc_topo`).
    """
    kf = _kaldifst()
    H = ctc_topo(vocab_size, topo)  # first: a bad topo fails before the costly L and G work
    kf.arcsort(H, sort_type="olabel")
    with tempfile.TemporaryDirectory() as tmp:
        words_txt = Path(tmp) / "words.txt"
        G = g_fst_from_arpa(arpa, words_txt)
        words_text = words_txt.read_text(encoding="utf-8")
    word_ids = {w: int(i) for w, i in (l.split() for l in words_text.splitlines() if l.strip())}
    lexicon: Dict[str, List[int]] = {}
    skipped = []
    for w in word_ids:
        if w in SPECIAL_WORDS:
            continue
        seq = [int(t) for t in spell(w)]
        if not seq or any(t <= 0 or t >= vocab_size for t in seq):
            skipped.append(w)
            continue
        lexicon[w] = seq
    if skipped:
        log.warning("%d LM words have no token spelling and are left out of L (e.g. %s)", len(skipped), skipped[:5])
    if not lexicon:
        raise MlmaError(f"{arpa}: none of the LM's words can be spelled with the tokenizer; is it the right LM?")
    L, max_k = lexicon_fst(lexicon, word_ids, vocab_size, skip_tokens)
    kf.arcsort(L, sort_type="olabel")
    LG = kf.compose(L, G)
    LG = kf.StdVectorFst(LG) if not isinstance(LG, kf.StdVectorFst) else LG
    kf.determinize_star(LG, use_log=True)
    kf.minimize_encoded(LG)
    LG = _relabel(LG, lambda i: 0 if i > vocab_size else i)  # disambiguation symbols -> epsilon
    kf.rmepsilon(LG)
    kf.arcsort(LG, sort_type="ilabel")
    HLG = kf.compose(H, LG)
    HLG = kf.StdVectorFst(HLG) if not isinstance(HLG, kf.StdVectorFst) else HLG
    kf.connect(HLG)
    kf.arcsort(HLG, sort_type="ilabel")
    if HLG.num_states == 0:
        raise MlmaError(f"{arpa}: the decoding graph came out empty (LM and lexicon share no path)")
    info = dict(meta or {})
    info.update({"vocab_size": vocab_size, "arpa": str(arpa), "num_words": len(lexicon),
                 "num_disambig": max_k, "hlg_states": HLG.num_states, "ctc_topo": topo})
    id2word = {i: w for w, i in word_ids.items()}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, fst in (("HLG.fst", HLG), ("G.fst", G)):
            with atomic_path(out / name) as tmp:
                if not fst.write(str(tmp)):
                    raise MlmaError(f"{out / name}: could not be written; check the directory is writable")
        write_text_atomic(out / "words.txt", words_text)
        write_text_atomic(out / "lexicon.txt", "".join(f"{w} {' '.join(map(str, s))}\n" for w, s in lexicon.items()))
        write_json_atomic(out / "meta.json", info)
        log.info("wrote decoding graph %s (%d states, %d words)", out, HLG.num_states, len(lexicon))
    return Graph(HLG, id2word, vocab_size, info)


def load_graph(graph_dir: Path) -> Graph:
    """Load HLG.fst + words.txt + meta.json written by `build_graph`."""
    kf = _kaldifst()
    d = Path(graph_dir)
    for name in ("HLG.fst", "words.txt", "meta.json"):
        if not (d / name).is_file():
            raise MlmaError(f"{d / name}: missing; build the graph with `mlma lm graph --arpa LM.arpa --out-dir {d}`")
    meta = json.loads((d / "meta.json").read_text())
    fst = kf.StdVectorFst.read(str(d / "HLG.fst"))
    if fst is None:
        raise MlmaError(f"{d / 'HLG.fst'}: unreadable FST; rebuild the graph with `mlma lm graph`")
    table = read_symbol_table(d / "words.txt")
    return Graph(fst, {i: w for w, i in table.items()}, int(meta["vocab_size"]), meta)


def graph_for_lang(graph_dir: Path, lang: str) -> Path:
    """A per-language graph `DIR/<lang>/` when it exists, else DIR itself (one graph for every language)."""
    d = Path(graph_dir)
    return d / lang if (d / lang / "HLG.fst").is_file() else d


def tokenizer_checksum(tokenizer_bytes: bytes) -> str:
    return hashlib.sha256(tokenizer_bytes).hexdigest()[:16]


@dataclass
class WfstResult:
    words: List[str]
    word_ids: List[int]
    tokens: List[int]
    cost: float  # total cost (graph + acoustic, after lm_scale), lower is better


class KaldiWfstDecoder:
    """kaldi-decoder FasterDecoder over a Graph; one utterance at a time on CPU.

    The acoustic scores are log_probs / lm_scale, i.e. total score = LM score + acoustic / lm_scale.
    """

    def __init__(self, graph: Graph, beam: float = 16.0, max_active: int = 7000, lm_scale: float = 1.0):
        kd = _kaldi_decoder()
        if lm_scale <= 0:
            raise ValueError(f"lm_scale must be > 0, got {lm_scale}")
        self.graph = graph
        self.lm_scale = lm_scale
        opts = kd.FasterDecoderOptions(beam=beam, max_active=max_active)
        self.decoder = kd.FasterDecoder(graph.fst, opts)
        self._kd = kd

    def decode(self, log_probs) -> WfstResult:
        """log_probs: (T, V) for one utterance (numpy or torch)."""
        kf = _kaldifst()
        lp = log_probs.detach().cpu().float().numpy() if hasattr(log_probs, "detach") else np.asarray(log_probs)
        if lp.ndim != 2 or lp.shape[1] != self.graph.vocab_size:
            raise MlmaError(
                f"log-probs of shape {lp.shape} do not fit a graph built for vocab size {self.graph.vocab_size}; "
                "rebuild the graph with this model's tokenizer (`mlma lm graph`)"
            )
        if lp.shape[0] == 0:
            return WfstResult([], [], [], 0.0)
        decodable = self._kd.DecodableCtc(np.ascontiguousarray(lp / self.lm_scale, dtype=np.float32))
        self.decoder.decode(decodable)
        ok, lattice = self.decoder.get_best_path(use_final_probs=True)
        if not ok:
            ok, lattice = self.decoder.get_best_path(use_final_probs=False)
        if not ok:
            log.warning("WFST decoding found no path (beam too small?); empty hypothesis")
            return WfstResult([], [], [], float("inf"))
        ok, isyms, osyms, weight = kf.get_linear_symbol_sequence(lattice)
        cost = float(weight.value1 + weight.value2)
        words = [self.graph.id2word.get(o, f"<{o}>") for o in osyms]
        tokens, prev = [], None
        for i in isyms:  # frame labels (token + 1) -> collapse repeats, drop blank
            if i != prev and i > 1:
                tokens.append(i - 1)
            prev = i
        return WfstResult(words, list(osyms), tokens, cost)


def build_graph_for_tokenizer(arpa: Path, tokenizer, out_dir: Optional[Path] = None,
                              topo: str = "standard") -> Graph:
    """HLG whose lexicon spells each LM word with `tokenizer` (mlma_cli.data.tokenizer.Tokenizer).

    Words containing pieces the tokenizer does not know (<unk>, id 1) are left out; language tags are
    allowed between words.
    """
    def spell(word: str) -> List[int]:
        ids = list(tokenizer.sp.encode(word, out_type=int))
        return [] if 1 in ids else ids

    tags = [tokenizer.tag_id(lang) for lang in LANGUAGES] if tokenizer.lang_tags else []
    meta = {"tokenizer_sha256": tokenizer_checksum(tokenizer.to_bytes()), "lang_tags": bool(tags)}
    return build_graph(arpa, spell, tokenizer.vocab_size, out_dir=out_dir, meta=meta, skip_tokens=tags, topo=topo)
