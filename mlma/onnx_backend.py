"""The ONNX backend of `mlma.load`: an `mlma export` directory in onnxruntime, with no torch anywhere.

Greedy CTC in numpy with per-token times as the torch backend gives them (`decode.timestamps`): a token's frames
are its run on the best path, start = first frame, end = last frame + 1, times frame x frame shift (10 ms fbank
hop x the export's subsampling factor = 40 ms). Each input is decoded whole (no VAD segmentation of long audio).
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

FBANK_SHIFT = 0.01
MIN_SECONDS = 0.05  # as the torch backend: shorter audio cannot fill one encoder frame


def greedy_spans(log_probs: np.ndarray, blank: int = 0) -> Tuple[List[int], List[Tuple[int, int]]]:
    """Best path of (T', V) scores -> (token ids, repeats collapsed, blanks removed; (first, last) frame of each)."""
    best = log_probs.argmax(axis=-1) if log_probs.shape[0] else np.zeros(0, dtype=np.int64)
    ids: List[int] = []
    spans: List[Tuple[int, int]] = []
    prev = blank
    for t, c in enumerate(int(x) for x in best):
        if c != blank:
            if c == prev:
                spans[-1] = (spans[-1][0], t)
            else:
                ids.append(c)
                spans.append((t, t))
        prev = c
    return ids, spans


class OnnxBackend:
    name = "onnx"

    def __init__(self, path, device: str = "auto", threads: Optional[int] = None, int8: bool = False) -> None:
        from mlma_cli.export.runtime import OnnxCtcModel

        providers = ["CPUExecutionProvider"]
        dev = (device or "auto").strip().lower()
        if dev != "cpu":
            try:
                import onnxruntime as ort

                has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
            except ImportError:
                has_cuda = False
            if dev.startswith("cuda") and not has_cuda:
                from mlma_cli.errors import MlmaError

                raise MlmaError(f"device {device!r}: this onnxruntime has no CUDA provider; use device='cpu' or "
                                "install onnxruntime-gpu")
            if has_cuda:
                providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        threads = threads or max(1, min(4, os.cpu_count() or 1))
        self.model = OnnxCtcModel(path, threads=threads, int8=int8, providers=providers)
        m = self.model
        self.languages = list(m.languages)
        self.frame_s = FBANK_SHIFT * int(m.metadata.get("subsampling_factor", 4))
        self.tok = m.tokenizer
        self.tag_langs: Dict[int, str] = dict(getattr(self.tok, "_tag_ids", {}) or {}) if self.tok else {}
        self.info: Dict[str, Any] = {
            "backend": self.name, "path": os.fspath(path), "model_path": str(m.model_path),
            "device": "cuda" if providers[0].startswith("CUDA") else "cpu", "providers": providers,
            "threads": threads, "model_type": m.metadata.get("model_type"), "vocab_size": m.vocab_size,
            "lang_tags": bool(m.metadata.get("lang_tags")), "languages": self.languages,
            "subsampling_factor": int(m.metadata.get("subsampling_factor", 4)), "int8": bool(m.metadata.get("is_int8")),
            "metadata": dict(m.metadata),
        }

    # ------------------------------------------------------------------------------------------- pieces
    def _piece(self, i: int) -> str:
        if self.tok is not None:
            return self.tok.id_to_piece(i)
        return self.model.tokens[i] if self.model.tokens is not None else str(i)

    def _is_tag(self, i: int) -> bool:
        if self.tag_langs:
            return i in self.tag_langs
        p = self._piece(i)
        return p.startswith("<") and p.endswith(">")

    def _decode(self, ids: Sequence[int]) -> str:
        return self.model.text([i for i in ids if not self._is_tag(i)])

    # ------------------------------------------------------------------------------------------- decoding
    def _result(self, name: str, lp: np.ndarray, duration: float, seconds: float, language: Optional[str]):
        from mlma_cli.decode.results import Segment, Token, Transcript, Word

        ids, spans = greedy_spans(lp, self.model.blank_id)
        tokens = [Token(i, self._piece(i), a * self.frame_s, (b + 1) * self.frame_s,
                        float(np.exp(lp[a: b + 1, i].max()))) for i, (a, b) in zip(ids, spans)]
        groups: List[List[Token]] = []  # as decode.timestamps.group_words: `▁` opens a word, tags dropped
        for t in tokens:
            if t.id == self.model.blank_id or self._is_tag(t.id):
                continue
            if not groups or t.text.startswith("\u2581"):
                groups.append([t])
            else:
                groups[-1].append(t)
        words = []
        for g in groups:
            text = self._decode([t.id for t in g])
            if text:
                words.append(Word(text, g[0].start, g[-1].end, sum(t.confidence for t in g) / len(g), list(g)))
        lang = next((self.tag_langs[i] for i in ids if i in self.tag_langs), None)
        text = self._decode(ids)
        seg = Segment(0.0, duration, text, lang, words)
        return Transcript(name, text, language or lang, duration, seconds, [seg])

    def transcribe(self, files: Sequence[Tuple[int, str]], arrays: Sequence[Tuple[int, np.ndarray]], n: int,
                   batch_size: int = 8, language: Optional[str] = None, **options) -> list:
        from mlma_cli.data.audio import load_audio
        from mlma_cli.errors import MlmaError
        from mlma_cli.export.runtime import compute_fbank

        if options:
            raise TypeError(f"the ONNX backend takes batch_size and language only (greedy search); got "
                            f"{', '.join(sorted(options))}")
        mask: List[int] = []
        if language is not None:
            from mlma_cli.text.normalize import LANGUAGES

            if language not in LANGUAGES:
                raise MlmaError(f"language {language!r} is not one of {', '.join(LANGUAGES)}")
            mask = [i for i, lang in self.tag_langs.items() if lang != language]
        t0 = time.perf_counter()
        names: List[str] = [""] * n
        audio: List[Optional[np.ndarray]] = [None] * n
        errors = []
        for i, p in files:
            names[i] = p
            try:
                audio[i], _ = load_audio(p)
            except MlmaError as err:
                errors.append(str(err))
        if errors:
            raise MlmaError("cannot transcribe " + "; ".join(errors))
        for i, a in arrays:
            names[i], audio[i] = str(i), a
        for i, a in enumerate(audio):
            if len(a) < MIN_SECONDS * 16000:
                msg = f"{names[i]}: audio too short ({len(a) / 16000:.3f} s); need at least {MIN_SECONDS} s"
                raise (MlmaError(msg) if i in dict(files) else ValueError(msg))
        feats = [compute_fbank(a) for a in audio]
        lps = self.model.log_probs(feats, batch_size=batch_size)
        total = sum(len(a) for a in audio) or 1
        spent = time.perf_counter() - t0
        out = []
        for i, (a, lp) in enumerate(zip(audio, lps)):
            lp = np.array(lp, dtype=np.float32)
            if mask:
                lp[:, mask] = -np.inf
            out.append(self._result(names[i], lp, len(a) / 16000, spent * len(a) / total, language))
        return out
