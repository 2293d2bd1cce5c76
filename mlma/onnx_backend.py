"""The ONNX backend of `mlma.load`: an `mlma export` directory in onnxruntime, with no torch anywhere.

Greedy CTC in numpy with per-token times as the torch backend gives them (`decode.timestamps`): a token's frames
are its run on the best path, start = first frame, end = last frame + 1, times frame x frame shift (10 ms fbank
hop x the export's subsampling factor = 40 ms). Audio longer than `max_segment_seconds` is cut into windows by
`decode.segment.plan_segments(vad="none")` (silero-vad needs torch), each window's context frames dropped.
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from mlma_cli.decode.timestamps import FBANK_SHIFT

MIN_SECONDS = 0.05  # as the torch backend: shorter audio cannot fill one encoder frame


class TokensTxtPieces:
    """The tokenizer calls of `decode.timestamps` (id_to_piece, decode, lang_of) over an export's tokens.txt, for
    an export without tokenizer.model; `<xx>` pieces of the six languages are its language tags."""

    def __init__(self, model) -> None:
        from mlma_cli.text.normalize import LANGUAGES

        self._model = model
        tokens = model.tokens or []
        self._tag_ids = {i: p[1:-1] for i, p in enumerate(tokens) if p.startswith("<") and p[1:-1] in LANGUAGES
                         and p.endswith(">")}

    def id_to_piece(self, i: int) -> str:
        return self._model.tokens[i] if self._model.tokens is not None else str(i)

    def decode(self, ids: Sequence[int]) -> str:
        return self._model.text(ids)  # drops blank and every `<...>` piece

    def lang_of(self, ids: Sequence[int]) -> Optional[str]:
        return next((self._tag_ids[i] for i in ids if i in self._tag_ids), None)


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
        self.tok = m.tokenizer if m.tokenizer is not None else TokensTxtPieces(m)
        self.tag_langs: Dict[int, str] = dict(self.tok._tag_ids)
        self.info: Dict[str, Any] = {
            "backend": self.name, "path": os.fspath(path), "model_path": str(m.model_path),
            "device": "cuda" if providers[0].startswith("CUDA") else "cpu", "providers": providers,
            "threads": threads, "model_type": m.metadata.get("model_type"), "vocab_size": m.vocab_size,
            "lang_tags": bool(m.metadata.get("lang_tags")), "languages": self.languages,
            "subsampling_factor": int(m.metadata.get("subsampling_factor", 4)), "int8": bool(m.metadata.get("is_int8")),
            "metadata": dict(m.metadata),
        }

    # ------------------------------------------------------------------------------------------- decoding
    def _segment(self, lp: np.ndarray, offset: float, start: float, end: float):
        """(T, V) log-probs of one segment, whose first frame is at `offset` seconds -> results.Segment."""
        from mlma_cli.decode.results import Segment
        from mlma_cli.decode.timestamps import group_words, make_tokens, path_spans

        ids, spans = path_spans(lp.argmax(axis=-1), self.model.blank_id)
        tokens = make_tokens(self.tok, ids, spans, lp, offset, self.frame_s)
        return Segment(start, end, self.tok.decode(ids), self.tok.lang_of(ids), group_words(self.tok, tokens))

    def _out_frames(self, n_samples: int) -> int:
        from mlma_cli.decode.segment import fbank_frames

        # the front end's stride-2 convolutions each give ceil(T / 2) frames: ceil(T / factor) in all
        factor = self.info["subsampling_factor"]
        return -(-fbank_frames(n_samples) // factor)

    def transcribe(self, files: Sequence[Tuple[int, str]], arrays: Sequence[Tuple[int, np.ndarray]], n: int,
                   batch_size: int = 8, language: Optional[str] = None, max_segment_seconds: float = 30.0,
                   context_seconds: float = 2.0, vad: str = "none", **options) -> list:
        """Greedy transcripts; audio longer than `max_segment_seconds` is cut into windows (cuts moved to the
        quietest 0.2 s, `context_seconds` of audio on each side of a cut) as `mlma transcribe --vad none` does."""
        from mlma_cli.data.audio import load_audio
        from mlma_cli.decode.audio_inputs import ArraySource
        from mlma_cli.decode.results import Transcript, majority_language
        from mlma_cli.decode.segment import kept_frames, plan_segments
        from mlma_cli.errors import MlmaError
        from mlma_cli.export.runtime import compute_fbank

        if options:
            raise TypeError(f"the ONNX backend takes batch_size, language, max_segment_seconds, context_seconds "
                            f"and vad='none' only (greedy search); got {', '.join(sorted(options))}")
        if vad != "none":
            raise MlmaError(f"vad={vad!r}: the ONNX backend cuts long audio into windows only (vad='none'); "
                            "silero-vad needs torch: load the PyTorch weights for it")
        if max_segment_seconds <= 0 or context_seconds < 0:
            raise ValueError("max_segment_seconds must be > 0 and context_seconds >= 0")
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
        plans = []
        for i, a in enumerate(audio):
            if len(a) < MIN_SECONDS * 16000:
                msg = f"{names[i]}: audio too short ({len(a) / 16000:.3f} s); need at least {MIN_SECONDS} s"
                raise (MlmaError(msg) if i in dict(files) else ValueError(msg))
            plans.append(plan_segments(ArraySource(names[i], a), max_segment_seconds, context_seconds, "none")[0])
        jobs = [(i, g) for i, segs in enumerate(plans) for g in segs]
        lps = self.model.log_probs([compute_fbank(audio[i][g.left: g.right]) for i, g in jobs], batch_size=batch_size)
        segments: List[list] = [[] for _ in range(n)]
        for (i, g), lp in zip(jobs, lps):
            lp = np.array(lp, dtype=np.float32)
            if mask:
                lp[:, mask] = -np.inf
            lo, hi = kept_frames(g, lp.shape[0], self._out_frames)
            segments[i].append(self._segment(lp[lo:hi], g.left / 16000 + lo * self.frame_s, g.start / 16000,
                                             g.end / 16000))
        total = sum(len(a) for a in audio) or 1
        spent = time.perf_counter() - t0
        out = []
        for i, segs in enumerate(segments):
            text = " ".join(s.text for s in segs if s.text)
            out.append(Transcript(names[i], text, language or majority_language(segs), len(audio[i]) / 16000,
                                  spent * len(audio[i]) / total, segs))
        return out
