"""`mlma transcribe`: arbitrary audio files -> text with a trained checkpoint.

Audio: anything `mlma_cli.data.audio.load_audio` reads (wav, flac, mp3, ogg/vorbis, opus; ffmpeg fallback),
any sample rate, mono or multichannel (averaged), resampled to 16 kHz; fbank as in training.

Long files: the ConMamba encoder is linear in time, but the Conformer baseline's attention is quadratic and
very long inputs drift from the training lengths, so files are cut into windows of `chunk_seconds` (30 s)
plus `context_seconds` (2 s) of audio on each side. Each window runs through the encoder; only the output
frames of its central part are kept, and the kept frames of all windows are concatenated into one
(T', V) log-prob sequence before the search, so words across window edges are decoded once.
Files up to chunk + context seconds are decoded whole.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from mlma_cli.decode.runner import DecodeOptions, Searcher
from mlma_cli.errors import MlmaError

log = logging.getLogger(__name__)
FRAME_SHIFT = 0.01  # seconds per fbank frame


@dataclass
class Transcript:
    file: str
    text: str
    language: Optional[str]  # from the language tag the model emitted, when the tokenizer has tags
    duration: float
    seconds: float

    @property
    def rtf(self) -> float:
        return self.seconds / max(self.duration, 1e-9)

    def to_dict(self) -> dict:
        return {"file": self.file, "text": self.text, "language": self.language, "duration": round(self.duration, 3),
                "seconds": round(self.seconds, 3), "rtf": round(self.rtf, 4)}


def chunk_bounds(num_frames: int, chunk: int, context: int) -> List[Tuple[int, int, int, int]]:
    """Windows over feature frames: (a, start, end, b) with [start, end) kept and [a, b) fed to the encoder."""
    if num_frames <= chunk + context:
        return [(0, 0, num_frames, num_frames)]
    out = []
    for start in range(0, num_frames, chunk):
        end = min(start + chunk, num_frames)
        out.append((max(0, start - context), start, end, min(num_frames, end + context)))
    return out


def chunked_log_probs(model, feats: torch.Tensor, chunk: int, context: int, device, max_batch: int = 8) -> torch.Tensor:
    """feats (T, F) -> log_probs (T', V) through windows of `chunk` + 2 * `context` frames (see module doc)."""
    bounds = chunk_bounds(feats.shape[0], chunk, context)
    pieces = []
    for i in range(0, len(bounds), max_batch):
        group = bounds[i : i + max_batch]
        lens = torch.tensor([b - a for a, _, _, b in group], dtype=torch.int64)
        x = torch.zeros(len(group), int(lens.max()), feats.shape[1])
        for j, (a, _, _, b) in enumerate(group):
            x[j, : b - a] = feats[a:b]
        with torch.inference_mode():
            lp, out_lens = model(x.to(device), lens.to(device))
        lp, out_lens = lp.float().cpu(), out_lens.cpu()
        for j, (a, s, e, b) in enumerate(group):
            if len(bounds) == 1:
                pieces.append(lp[j, : int(out_lens[j])])
                continue
            # output frames covering [s, e): subsampling arithmetic applied to the offsets inside the window
            left = int(model.output_lengths(torch.tensor([s - a]))[0]) if s > a else 0
            right = int(model.output_lengths(torch.tensor([e - a]))[0])
            right = min(right, int(out_lens[j]))
            pieces.append(lp[j, left:right])
    return torch.cat(pieces, dim=0)


def transcribe_files(
    inference,
    paths: Sequence[str],
    opts: DecodeOptions,
    lang: Optional[str] = None,
    chunk_seconds: float = 30.0,
    context_seconds: float = 2.0,
) -> Tuple[List[Transcript], List[Tuple[str, str]]]:
    """Transcribe every file; unreadable ones are collected as (file, error message), the rest still run.

    Returns (transcripts in input order of the readable files, errors).
    """
    from mlma_cli.data.audio import load_audio
    from mlma_cli.data.features import SAMPLING_RATE, fbank_extractor

    if chunk_seconds <= 0 or context_seconds < 0:
        raise MlmaError(f"--chunk-seconds must be > 0 and --context-seconds >= 0 (got {chunk_seconds}, {context_seconds})")
    opts.validate()
    device = torch.device(opts.device)
    model = inference.model.to(device).eval()
    searcher = Searcher(opts, inference.tokenizer)
    extractor = fbank_extractor()
    chunk = max(1, int(round(chunk_seconds / FRAME_SHIFT)))
    context = int(round(context_seconds / FRAME_SHIFT))
    out: List[Transcript] = []
    errors: List[Tuple[str, str]] = []
    for path in paths:
        t0 = time.perf_counter()
        try:
            samples, sr = load_audio(path, target_sr=SAMPLING_RATE)
        except MlmaError as err:
            errors.append((str(path), str(err)))
            log.error("%s", err)
            continue
        duration = len(samples) / sr
        if len(samples) < int(0.05 * sr):
            errors.append((str(path), f"{path}: audio too short ({duration:.3f} s); need at least 0.05 s"))
            continue
        feats = torch.from_numpy(np.asarray(extractor.extract(samples, sr), dtype=np.float32))  # (T, 80)
        lp = chunked_log_probs(model, feats, chunk, context, device)
        (text, tag), = searcher(lp.unsqueeze(0), torch.tensor([lp.shape[0]]), lang or "")
        out.append(Transcript(str(path), text, tag, duration, time.perf_counter() - t0))
    return out, errors
