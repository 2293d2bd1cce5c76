"""Cutting long audio into segments the encoder sees one at a time.

Audio up to `max_seconds` is one segment. Longer audio is cut by one of two planners, both streaming over the
source block by block (memory does not grow with the file):

* `vad="silero"`: silero-vad speech probabilities every 32 ms -> speech regions (hysteresis thresholds, short
  pauses bridged, padded) that end in pauses; a region longer than `max_seconds` is split at its lowest-
  (smoothed) probability frame in the second half of its first `max_seconds`, recursively.
* `vad="none"` (and the fallback when silero-vad is not installed, logged): fixed windows of `max_seconds`,
  each cut moved to the quietest 0.2 s (10 ms frames, smoothed) in the window's second half.

A segment is `Segment(start, end, left, right)` in samples: the encoder sees [left, right), the output frames
of [start, end) are kept. Cuts inside speech (window cuts, forced splits) get `context` samples of audio on
the open side(s), as the windowed scheme always had; cuts in pauses need none.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

log = logging.getLogger(__name__)

SR = 16000
VAD_WINDOW = 512  # samples per silero-vad step at 16 kHz (32 ms)
ENERGY_HOP = 160  # 10 ms
BLOCK = VAD_WINDOW * ENERGY_HOP * 4  # samples per streamed block (~20 s), a multiple of both hops
VADS = ("silero", "none")


@dataclass(frozen=True)
class Segment:
    start: int
    end: int
    left: int
    right: int


@dataclass
class VadConfig:
    threshold: float = 0.5        # speech starts above this probability
    neg_threshold: float = 0.35   # ... and ends below this one
    min_silence: float = 0.3      # pauses shorter than this are bridged (seconds)
    min_speech: float = 0.25      # shorter speech bursts are dropped
    pad: float = 0.03             # audio kept before / after each region (silero's speech_pad_ms = 30)


_SILERO = None
_silero_failed = False


def load_silero():
    """The silero-vad model (torch JIT shipped in its package), or None with a logged reason."""
    global _SILERO, _silero_failed
    if _SILERO is None and not _silero_failed:
        try:
            from silero_vad import load_silero_vad

            _SILERO = load_silero_vad()
        except Exception as err:  # ImportError, or a broken install
            _silero_failed = True
            log.warning("silero-vad unavailable (%s: %s); long audio is cut into fixed windows instead "
                        "(pip install 'mlma[vad]')", type(err).__name__, err)
    return _SILERO


def speech_probs(source, model) -> np.ndarray:
    """Silero speech probability of each 32 ms window of `source` (AudioSource), streamed. -> (N,)"""
    import torch

    model.reset_states()
    out = []
    with torch.inference_mode():
        for _, block in source.blocks(BLOCK):
            if len(block) % VAD_WINDOW:
                block = np.concatenate([block, np.zeros(VAD_WINDOW - len(block) % VAD_WINDOW, dtype=np.float32)])
            x = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32)).view(-1, VAD_WINDOW)
            out += [float(model(chunk, SR)) for chunk in x]
    model.reset_states()
    return np.asarray(out, dtype=np.float32)


def frame_energy(source) -> np.ndarray:
    """Log energy of each 10 ms frame of `source`, streamed. -> (N,)"""
    out = []
    for _, block in source.blocks(BLOCK):
        n = len(block) // ENERGY_HOP * ENERGY_HOP
        frames = block[:n].reshape(-1, ENERGY_HOP)
        e = (frames.astype(np.float64) ** 2).mean(axis=1)
        if n < len(block):
            e = np.append(e, float((block[n:] ** 2).mean()))
        out.append(np.log(e + 1e-10))
    return np.concatenate(out) if out else np.zeros(0)


def speech_regions(probs: np.ndarray, hop: float, cfg: VadConfig) -> List[Tuple[float, float]]:
    """Speech regions (start, end) in seconds from per-frame speech probabilities (`hop` seconds apart)."""
    regions: List[List[float]] = []
    start: Optional[int] = None
    below = 0  # frames since the probability fell under neg_threshold
    for i, p in enumerate(probs):
        if start is None:
            if p >= cfg.threshold:
                start, below = i, 0
        elif p < cfg.neg_threshold:
            below += 1
            if below * hop >= cfg.min_silence:
                regions.append([start * hop, (i - below + 1) * hop])
                start = None
        else:
            below = 0
    if start is not None:
        regions.append([start * hop, (len(probs) - below) * hop])
    regions = [r for r in regions if r[1] - r[0] >= cfg.min_speech]
    total = len(probs) * hop
    for k, r in enumerate(regions):  # pad, but never into the neighbour: meet half-way
        lo = 0.0 if k == 0 else (regions[k - 1][1] + r[0]) / 2
        hi = total if k == len(regions) - 1 else (r[1] + regions[k + 1][0]) / 2
        r[0], r[1] = max(lo, r[0] - cfg.pad), min(hi, r[1] + cfg.pad)
    return [(a, b) for a, b in regions]


def smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Moving average over `width` frames (same length): a cut goes to a quiet stretch, not a lone quiet frame."""
    if width <= 1 or len(x) == 0:
        return x
    pad = np.pad(x.astype(np.float64), (width // 2, width - 1 - width // 2), mode="edge")
    return np.convolve(pad, np.ones(width) / width, mode="valid")


def split_at_minimum(a: int, b: int, score: np.ndarray, hop: int, max_len: int) -> List[int]:
    """Cut points (samples) splitting [a, b) into pieces <= max_len, each at the lowest `score` (per `hop` samples)
    in the second half of the first max_len of what remains. -> interior cut points, ascending."""
    cuts = []
    while b - a > max_len:
        lo, hi = (a + max_len // 2) // hop, (a + max_len) // hop
        window = score[lo:hi]
        cut = (lo + int(np.argmin(window))) * hop if len(window) else a + max_len
        cut = min(max(cut, a + hop), a + max_len)
        cuts.append(cut)
        a = cut
    return cuts


def kept_frames(seg: Segment, n_out: int, out_frames) -> Tuple[int, int]:
    """Output frames [lo, hi) of the encoder's `n_out` frames over [left, right) that belong to [start, end).

    `out_frames(n_samples)` is the model's frame count for that many samples (subsampling arithmetic).
    """
    lo = out_frames(seg.start - seg.left) if seg.start > seg.left else 0
    hi = n_out if seg.right == seg.end else min(n_out, out_frames(seg.end - seg.left))
    return lo, hi


def fbank_frames(n_samples: int) -> int:
    """lhotse's / kaldi-native-fbank's frame count at 16 kHz with a 10 ms hop (the half frame rounds up)."""
    return (n_samples + 80) // 160


def _pieces(a: int, b: int, cuts: Sequence[int], context: int, n: int, open_left=False, open_right=False):
    """Segments between consecutive cuts of [a, b); interior cuts get context on both sides."""
    bounds = [a, *cuts, b]
    out = []
    for k in range(len(bounds) - 1):
        s, e = bounds[k], bounds[k + 1]
        lctx = k > 0 or open_left
        rctx = k < len(bounds) - 2 or open_right
        out.append(Segment(s, e, max(0, s - context) if lctx else s, min(n, e + context) if rctx else e))
    return out


def plan_segments(source, max_seconds: float = 30.0, context_seconds: float = 2.0, vad: str = "silero",
                  vad_config: Optional[VadConfig] = None) -> Tuple[List[Segment], str]:
    """Segments of one AudioSource and the planner used ('whole', 'silero', 'windows').

    An empty list means the VAD heard no speech.
    """
    if vad not in VADS:
        raise ValueError(f"vad must be one of {VADS}, got {vad!r}")
    n = source.num_samples
    max_len = int(max_seconds * SR)
    context = int(context_seconds * SR)
    if n <= max_len:
        return [Segment(0, n, 0, n)], "whole"
    model = load_silero() if vad == "silero" else None
    if model is None:
        energy = smooth(frame_energy(source), 21)  # 0.2 s
        cuts = split_at_minimum(0, n, energy, ENERGY_HOP, max_len)
        return _pieces(0, n, cuts, context, n), "windows"
    probs = speech_probs(source, model)
    cfg = vad_config or VadConfig()
    out: List[Segment] = []
    for a_s, b_s in speech_regions(probs, VAD_WINDOW / SR, cfg):
        a, b = int(a_s * SR), min(n, int(b_s * SR))
        out += _pieces(a, b, split_at_minimum(a, b, smooth(probs, 5), VAD_WINDOW, max_len), context, n)
    return out, "silero"
