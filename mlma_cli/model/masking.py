"""Padding helpers shared by the encoders: valid-frame masks and per-sequence time reversal."""
from __future__ import annotations

from typing import Optional

import torch


def valid_mask(lengths: torch.Tensor, max_len: Optional[int] = None) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool, True on valid frames."""
    if max_len is None:
        max_len = int(lengths.max()) if lengths.numel() else 0
    steps = torch.arange(max_len, device=lengths.device)
    return steps[None, :] < lengths[:, None]


def zero_padding(x: torch.Tensor, mask: Optional[torch.Tensor], time_dim: int = 1) -> torch.Tensor:
    """Zero the padded frames of x; mask (B, T) is True on valid frames, time_dim says where T is in x."""
    if mask is None:
        return x
    shape = [1] * x.dim()
    shape[0], shape[time_dim] = mask.shape
    return x * mask.view(shape).to(x.dtype)


def reverse_index(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, T) long index that reverses each sequence within its own length; padded frames stay put.

    Gathering with it twice is the identity, so the same index maps the backward direction's output back.
    """
    t = torch.arange(max_len, device=lengths.device)[None, :]
    lens = lengths[:, None].to(t.dtype)
    return torch.where(t < lens, lens - 1 - t, t)


def reverse_time(x: torch.Tensor, index: Optional[torch.Tensor], time_dim: int) -> torch.Tensor:
    """Reverse each sequence of x along time_dim with an index from reverse_index (None: plain flip)."""
    if index is None:
        return x.flip(time_dim)
    shape = [1] * x.dim()
    shape[0], shape[time_dim] = index.shape
    return x.gather(time_dim, index.view(shape).expand_as(x))
