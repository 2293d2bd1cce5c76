"""CTC greedy search: best token per frame, collapse repeats, drop blanks."""
from __future__ import annotations

from typing import List

import torch

from mlma_cli.decode.timestamps import path_spans


def ctc_greedy(log_probs: torch.Tensor, lens: torch.Tensor, blank: int = 0) -> List[List[int]]:
    """Greedy (best path) CTC decoding.

    Args:
        log_probs: (B, T, V) log-posteriors (any monotone scores work).
        lens: (B,) number of valid frames per utterance.
        blank: blank token id.
    Returns:
        B token id lists (repeats collapsed, blanks removed).
    """
    if log_probs.dim() != 3:
        raise ValueError(f"ctc_greedy expects (B, T, V) log-probs, got shape {tuple(log_probs.shape)}")
    best = log_probs.argmax(dim=-1).cpu()  # (B, T)
    lens = torch.as_tensor(lens).cpu().tolist()
    out: List[List[int]] = []
    for b, n in enumerate(lens):
        path = best[b, : int(n)]
        if path.numel() == 0:
            out.append([])
            continue
        keep = torch.ones_like(path, dtype=torch.bool)
        keep[1:] = path[1:] != path[:-1]
        path = path[keep]
        out.append([int(t) for t in path.tolist() if t != blank])
    return out


def ctc_greedy_aligned(log_probs: torch.Tensor, lens: torch.Tensor, blank: int = 0):
    """`ctc_greedy` plus each token's frames on the best path.

    Returns B pairs (token ids, [(first frame, last frame)] inclusive), the ids equal to `ctc_greedy`'s.
    """
    if log_probs.dim() != 3:
        raise ValueError(f"ctc_greedy expects (B, T, V) log-probs, got shape {tuple(log_probs.shape)}")
    best = log_probs.argmax(dim=-1).cpu()  # (B, T)
    return [path_spans(best[b, : int(n)].tolist(), blank) for b, n in enumerate(torch.as_tensor(lens).cpu().tolist())]
