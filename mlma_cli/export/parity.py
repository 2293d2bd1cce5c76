"""PyTorch vs onnxruntime on the same features: log-prob difference and greedy agreement.

    rep = compare(torch_model, OnnxCtcModel(dir), feats, batch_size=4)
    rep.max_abs_diff, rep.identical, rep.n
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import numpy as np
import torch

from mlma_cli.decode.greedy import ctc_greedy
from mlma_cli.export.runtime import OnnxCtcModel, ctc_greedy_ids, pad_batch


@dataclass
class ParityReport:
    """n utterances; max_abs_diff over all valid frames; identical = utterances with the same greedy ids."""

    n: int
    max_abs_diff: float
    identical: int
    torch_ids: List[List[int]]
    onnx_ids: List[List[int]]

    @property
    def identical_pct(self) -> float:
        return 100.0 * self.identical / max(self.n, 1)


def torch_log_probs(model: torch.nn.Module, feats: Sequence[np.ndarray], batch_size: int = 8) -> List[np.ndarray]:
    """The PyTorch model's (T'_i, V) log-probs, batched in the same length order as OnnxCtcModel.log_probs."""
    order = sorted(range(len(feats)), key=lambda i: -feats[i].shape[0])
    out: List[np.ndarray] = [None] * len(feats)  # type: ignore[list-item]
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            idx = order[s: s + batch_size]
            x, lens = pad_batch([feats[i] for i in idx])
            lp, out_lens = model(torch.from_numpy(x), torch.from_numpy(lens))
            for j, i in enumerate(idx):
                out[i] = lp[j, : int(out_lens[j])].numpy()
    return out


def compare(model: torch.nn.Module, onnx_model: OnnxCtcModel, feats: Sequence[np.ndarray],
            batch_size: int = 8) -> ParityReport:
    """Run both on feats (list of (T_i, F)) in padded batches of ``batch_size`` and compare."""
    ref = torch_log_probs(model, feats, batch_size)
    got = onnx_model.log_probs(feats, batch_size)
    diff = 0.0
    for a, b in zip(ref, got):
        if a.shape != b.shape:
            raise AssertionError(f"output shapes differ: PyTorch {a.shape}, ONNX {b.shape}")
        diff = max(diff, float(np.abs(a - b).max()))
    t_ids = [ctc_greedy(torch.from_numpy(a)[None], torch.tensor([a.shape[0]]))[0] for a in ref]  # mlma decode's
    o_ids = [ctc_greedy_ids(b) for b in got]
    same = sum(a == b for a, b in zip(t_ids, o_ids))
    return ParityReport(len(feats), diff, same, t_ids, o_ids)
