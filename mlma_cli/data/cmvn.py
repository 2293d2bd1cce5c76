"""Global feature mean / standard deviation, stored as ``DATA/fbank/cmvn.json``: ``{"mean": [F], "std": [F], "frames": n}``."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from mlma_cli.errors import MlmaError
from mlma_cli.utils.io import write_json_atomic

STD_FLOOR = 1e-5


@dataclass
class Cmvn:
    """mean, std: ``(F,)`` float32; frames: how many feature frames the statistics cover."""

    mean: np.ndarray
    std: np.ndarray
    frames: int

    def apply(self, feats: np.ndarray) -> np.ndarray:
        """Normalize ``(T, F)`` features."""
        return (feats - self.mean) / self.std


class CmvnAccumulator:
    """Running sums in float64 over ``(T, F)`` arrays."""

    def __init__(self) -> None:
        self.sum: Optional[np.ndarray] = None
        self.sumsq: Optional[np.ndarray] = None
        self.frames = 0

    def add(self, feats: np.ndarray) -> None:
        x = np.asarray(feats, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0:
            return
        if self.sum is None:
            self.sum, self.sumsq = np.zeros(x.shape[1]), np.zeros(x.shape[1])
        elif x.shape[1] != self.sum.shape[0]:
            raise ValueError(f"feature dim {x.shape[1]} != {self.sum.shape[0]}")
        self.sum += x.sum(axis=0)
        self.sumsq += (x * x).sum(axis=0)
        self.frames += x.shape[0]

    def result(self) -> Cmvn:
        if self.frames == 0:
            raise ValueError("no frames accumulated")
        mean = self.sum / self.frames
        var = np.maximum(self.sumsq / self.frames - mean * mean, 0.0)
        std = np.maximum(np.sqrt(var), STD_FLOOR)
        return Cmvn(mean.astype(np.float32), std.astype(np.float32), int(self.frames))


def compute_cmvn(arrays: Iterable[np.ndarray]) -> Cmvn:
    """Statistics over ``(T, F)`` arrays, pooled over all frames."""
    acc = CmvnAccumulator()
    for a in arrays:
        acc.add(a)
    return acc.result()


def save_cmvn(path: str | Path, cmvn: Cmvn, **extra) -> Path:
    """Write atomically; ``extra`` keys (e.g. datasets) are stored beside mean/std/frames."""
    obj = {"mean": [float(v) for v in cmvn.mean], "std": [float(v) for v in cmvn.std], "frames": int(cmvn.frames)}
    obj.update(extra)
    write_json_atomic(path, obj)
    return Path(path)


def load_cmvn(path: str | Path) -> Cmvn:
    """Read ``cmvn.json``; ``MlmaError`` naming the file when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise MlmaError(f"{path} not found; run `mlma features` first (it writes the CMVN statistics)")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        mean = np.asarray(obj["mean"], dtype=np.float32)
        std = np.asarray(obj["std"], dtype=np.float32)
        frames = int(obj["frames"])
    except (ValueError, KeyError, TypeError) as err:
        raise MlmaError(f"{path}: malformed CMVN file ({err}); delete it and rerun `mlma features`") from err
    if mean.ndim != 1 or mean.shape != std.shape or np.any(std <= 0):
        raise MlmaError(f"{path}: mean/std must be equal-length vectors with std > 0; rerun `mlma features`")
    return Cmvn(mean, std, frames)
