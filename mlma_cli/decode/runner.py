"""Batched decoding of test sets: cuts with features -> model -> search method -> scored icefall-layout files.

Output layout (one directory per test set and method, icefall's file names inside):

    OUT/<corpus>/<lang>/<method>/recogs-<split>-<setting>.txt, errs-..., wer-summary-<split>.txt,
                                  hyps-<split>-<setting>.jsonl, results-<split>-<setting>.json
    OUT/decode-<method>-<setting>.json    this run: every test set's WER/CER/CI/RTF

References and hypotheses are both normalized with `normalize(text, lang)` (lang = the supervision's
language, else the test set's) before scoring.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from lhotse import CutSet

from mlma_cli.data.features import fbank_extractor
from mlma_cli.data.layout import fbank_dir, manifest_dir, parse_dataset
from mlma_cli.decode.greedy import ctc_greedy
from mlma_cli.decode.prefix_beam import ctc_prefix_beam_batch
from mlma_cli.decode.wfst import KaldiWfstDecoder, graph_for_lang, load_graph, tokenizer_checksum
from mlma_cli.errors import MlmaError
from mlma_cli.score.files import write_testset_results
from mlma_cli.score.utts import Utt
from mlma_cli.text.normalize import LANGUAGES, normalize
from mlma_cli.utils.io import write_json_atomic

log = logging.getLogger(__name__)

METHODS = ("ctc-greedy-search", "ctc-prefix-beam-search", "wfst")
BACKENDS = ("kaldi", "k2")


@dataclass
class DecodeOptions:
    """How to search. `beam` is the prefix-beam size; `search_beam` the WFST beam (kaldi beam / k2 search beam)."""

    method: str = "ctc-greedy-search"
    beam: int = 4
    graph: Optional[Path] = None
    backend: str = "kaldi"
    search_beam: float = 16.0
    output_beam: float = 8.0
    max_active: int = 7000
    lm_scale: float = 1.0
    device: str = "cpu"
    max_duration: float = 200.0  # seconds of (padded) audio per batch
    suffix: str = ""

    def validate(self) -> None:
        if self.method not in METHODS:
            raise MlmaError(f"unknown --method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.backend not in BACKENDS:
            raise MlmaError(f"unknown --backend {self.backend!r}; choose kaldi or k2")
        if self.method == "wfst" and self.graph is None:
            raise MlmaError("--method wfst needs --graph DIR (build one with `mlma lm graph`)")
        if self.beam < 1:
            raise MlmaError(f"--beam must be >= 1, got {self.beam}")
        if self.lm_scale <= 0:
            raise MlmaError(f"--lm-scale must be > 0, got {self.lm_scale}")

    @property
    def setting(self) -> str:
        if self.method == "ctc-greedy-search":
            s = self.method
        elif self.method == "ctc-prefix-beam-search":
            s = f"{self.method}-beam-{self.beam}"
        else:
            s = f"wfst-{self.backend}-beam-{self.search_beam:g}-lm-scale-{self.lm_scale:g}"
        return f"{s}-{self.suffix}" if self.suffix else s


class Searcher:
    """Turns a batch of log-probs into texts with the chosen method. `lang` picks a per-language graph."""

    def __init__(self, opts: DecodeOptions, tokenizer):
        self.opts = opts
        self.tok = tokenizer
        self._graphs: Dict[Path, object] = {}

    def _wfst(self, lang: str):
        d = graph_for_lang(self.opts.graph, lang)
        if d not in self._graphs:
            graph = load_graph(d)
            want = graph.meta.get("tokenizer_sha256")
            if want and want != tokenizer_checksum(self.tok.to_bytes()):
                raise MlmaError(f"{d}: graph was built with another tokenizer than this checkpoint's; rebuild it "
                                f"with `mlma lm graph --checkpoint ...`")
            if self.opts.backend == "k2":
                from mlma_cli.decode.k2_backend import K2Decoder

                dec = K2Decoder(graph, device=self.opts.device, search_beam=self.opts.search_beam,
                                output_beam=self.opts.output_beam, max_active_states=self.opts.max_active,
                                lm_scale=self.opts.lm_scale)
            else:
                dec = KaldiWfstDecoder(graph, beam=self.opts.search_beam, max_active=self.opts.max_active,
                                       lm_scale=self.opts.lm_scale)
            log.info("WFST decoding with %s on %s (%d states)", self.opts.backend, d, graph.num_states)
            self._graphs[d] = dec
        return self._graphs[d]

    def __call__(self, log_probs: torch.Tensor, lens: torch.Tensor, lang: str) -> List[Tuple[str, Optional[str]]]:
        """log_probs (B, T, V), lens (B,) -> B (text, language tag found or None)."""
        m = self.opts.method
        if m == "ctc-greedy-search":
            ids = ctc_greedy(log_probs, lens)
        elif m == "ctc-prefix-beam-search":
            ids = ctc_prefix_beam_batch(log_probs, lens, beam=self.opts.beam)
        else:
            dec = self._wfst(lang)
            if self.opts.backend == "k2":
                res = dec.decode(log_probs, lens.tolist())
                return [(" ".join(r.words), self.tok.lang_of(r.tokens or [])) for r in res]
            out = []
            for b, n in enumerate(lens.tolist()):
                r = dec.decode(log_probs[b, : int(n)])
                out.append((" ".join(r.words), self.tok.lang_of(r.tokens)))
            return out
        return [(self.tok.decode(x), self.tok.lang_of(x)) for x in ids]


def cuts_for(data_dir: Path, dataset: str):
    """Load the test set's cuts: DATA/fbank/... (features) or, with a logged fallback, DATA/manifests/... ."""
    corpus, lang, split = parse_dataset(dataset)
    fb = fbank_dir(data_dir, corpus, lang, split) / "cuts.jsonl.gz"
    if fb.is_file():
        return CutSet.from_file(fb)
    raw = manifest_dir(data_dir, corpus, lang, split) / "cuts.jsonl.gz"
    if raw.is_file():
        log.warning("%s: no features under %s; computing fbank on the fly from %s", dataset, fb.parent, raw)
        return CutSet.from_file(raw)
    raise MlmaError(f"{fb}: not found (nor {raw}); run `mlma prepare` and `mlma features` for {dataset}")


def cut_features(cut, extractor) -> np.ndarray:
    """(T, F) fbank of one cut: stored features, else computed from its audio."""
    if cut.has_features:
        return cut.load_features()
    return cut.compute_features(extractor)


def batches(items: Sequence, max_duration: float, seconds: Callable = lambda c: c.duration,
            max_items: Optional[int] = None) -> List[List]:
    """Longest first; a batch holds at most ``max_duration`` seconds of padded audio (at least one item) and at
    most ``max_items`` items. ``seconds(item)`` is an item's length (a cut's duration by default)."""
    ordered = sorted(items, key=seconds, reverse=True)
    out, cur = [], []
    for c in ordered:
        full = max_items is not None and len(cur) >= max_items
        if cur and (full or (len(cur) + 1) * seconds(cur[0]) > max_duration):
            out.append(cur)
            cur = []
        cur.append(c)
    if cur:
        out.append(cur)
    return out


def pad_feats(feats: Sequence[np.ndarray]) -> Tuple[torch.Tensor, torch.Tensor]:
    """List of (T_i, F) arrays -> padded (B, T_max, F) float tensor and (B,) int64 lengths."""
    lens = torch.tensor([f.shape[0] for f in feats], dtype=torch.int64)
    x = torch.zeros(len(feats), int(lens.max()), feats[0].shape[1])
    for i, f in enumerate(feats):
        x[i, : f.shape[0]] = torch.from_numpy(np.asarray(f, dtype=np.float32))
    return x, lens


@dataclass
class Timer:
    features: float = 0.0
    model: float = 0.0
    search: float = 0.0

    @property
    def total(self) -> float:
        return self.features + self.model + self.search


def decode_dataset(model, searcher: Searcher, cuts, lang: str, opts: DecodeOptions,
                   progress: Optional[Callable[[int], None]] = None):
    """Decode every cut of one test set.

    Returns (utterances (normalized ref/hyp), Timer, audio seconds, per-utterance language-tag hits).
    """
    extractor = fbank_extractor()
    timer = Timer()
    audio = 0.0
    utts: List[Utt] = []
    device = torch.device(opts.device)
    lid = []
    for batch in batches(list(cuts), opts.max_duration):
        t0 = time.perf_counter()
        feats = [cut_features(c, extractor) for c in batch]
        x, x_lens = pad_feats(feats)
        t1 = time.perf_counter()
        with torch.inference_mode():
            log_probs, out_lens = model(x.to(device), x_lens.to(device))
            if device.type == "cuda":
                torch.cuda.synchronize()
        log_probs = log_probs.float() if opts.backend == "k2" and opts.method == "wfst" else log_probs.float().cpu()
        out_lens = out_lens.cpu()
        t2 = time.perf_counter()
        texts = searcher(log_probs, out_lens, lang)
        t3 = time.perf_counter()
        timer.features += t1 - t0
        timer.model += t2 - t1
        timer.search += t3 - t2
        for cut, (hyp, tag_lang) in zip(batch, texts):
            audio += cut.duration
            sups = cut.supervisions
            ulang = (sups[0].language if sups and sups[0].language in LANGUAGES else lang)
            ref_raw = " ".join((s.text or "") for s in sups)
            utts.append(Utt(cut.id, ulang, normalize(ref_raw, ulang), normalize(hyp, ulang), ref_raw, hyp))
            if tag_lang is not None:
                lid.append(tag_lang == ulang)
        if progress:
            progress(len(batch))
    return utts, timer, audio, lid


def run_decode(inference, data_dir: Path, test_sets: Sequence[str], opts: DecodeOptions, out_dir: Path,
               checkpoints: Sequence[str] = (),
               progress: Optional[Callable[[int, int], None]] = None) -> List[dict]:
    """Decode and score every test set; writes the icefall-layout files and OUT/decode-<setting>.json.

    ``progress(utterances_done, utterances_total)`` follows all test sets together.
    """
    opts.validate()
    model = inference.model.to(opts.device).eval()
    searcher = Searcher(opts, inference.tokenizer)
    summary = []
    all_cuts = {name: list(cuts_for(data_dir, name)) for name in test_sets}
    total, done = sum(len(c) for c in all_cuts.values()), [0]

    def tick(n: int) -> None:
        done[0] += n
        progress(done[0], total)

    for name in test_sets:
        corpus, lang, split = parse_dataset(name)
        cuts = all_cuts[name]
        start = time.perf_counter()
        utts, timer, audio, lid = decode_dataset(model, searcher, cuts, lang, opts, tick if progress else None)
        wall = time.perf_counter() - start
        if not utts:
            raise MlmaError(f"{name}: the test set has no cuts; check `mlma prepare` output")
        extra = {
            "dataset": name, "corpus": corpus, "lang": lang, "split": split, "method": opts.method,
            "backend": opts.backend if opts.method == "wfst" else None,
            "beam": opts.beam if opts.method == "ctc-prefix-beam-search" else None,
            "graph": str(opts.graph) if opts.method == "wfst" else None,
            "lm_scale": opts.lm_scale if opts.method == "wfst" else None,
            "device": opts.device, "checkpoints": list(checkpoints),
            "audio_seconds": round(audio, 3), "decode_seconds": round(wall, 3),
            "rtf": round(wall / max(audio, 1e-9), 5),
            "rtf_parts": {k: round(v / max(audio, 1e-9), 5) for k, v in
                          (("features", timer.features), ("model", timer.model), ("search", timer.search))},
            "lid_accuracy": round(sum(lid) / len(lid), 4) if lid else None,
        }
        method_dir = Path(out_dir) / corpus / lang / opts.method
        res = write_testset_results(method_dir, split, opts.setting, utts, extra)
        log.info("%s %s: WER %.2f%% CER %.2f%% (%d utts, RTF %.4f)", name, opts.setting, res["wer"]["rate"],
                 res["cer"]["rate"], res["num_utts"], extra["rtf"])
        summary.append(res)
    write_json_atomic(Path(out_dir) / f"decode-{opts.setting}.json", {"setting": opts.setting, "results": summary})
    return summary
