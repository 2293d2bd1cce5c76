"""Bootstrap confidence intervals for corpus error rates (resampling utterances with replacement)."""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np


def bootstrap_ci(
    errors: Sequence[int], ref_lens: Sequence[int], num_samples: int = 1000, alpha: float = 0.05, seed: int = 0
) -> Tuple[float, float]:
    """Percentile bootstrap CI of the corpus error rate 100 * sum(errors) / sum(ref_lens).

    Args:
        errors: (N,) errors per utterance; ref_lens: (N,) reference lengths per utterance.
        num_samples: bootstrap replicates; alpha: 0.05 gives a 95% interval; seed: makes it deterministic.
    Returns:
        (low, high) in percent; (nan, nan) for an empty corpus.
    """
    e = np.asarray(errors, dtype=np.float64)
    n = np.asarray(ref_lens, dtype=np.float64)
    if e.shape != n.shape:
        raise ValueError(f"errors {e.shape} and ref_lens {n.shape} differ in shape")
    if e.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, e.size, size=(num_samples, e.size))  # (S, N)
    rates = 100.0 * e[idx].sum(axis=1) / np.maximum(n[idx].sum(axis=1), 1.0)  # (S,)
    low, high = np.percentile(rates, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)
