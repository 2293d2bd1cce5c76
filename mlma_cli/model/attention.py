"""Relative-position multi-head self-attention (Transformer-XL style, with pos_bias_u / pos_bias_v)."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn


def rel_positions(length: int, d_model: int, device=None, dtype=None) -> torch.Tensor:
    """Sinusoidal embeddings of relative positions T-1, T-2, ..., -(T-1): (2T-1, D)."""
    pos = torch.arange(length - 1, -length, -1, device=device, dtype=torch.float32)[:, None]
    inv_freq = torch.exp(torch.arange(0, d_model, 2, device=device, dtype=torch.float32)
                         * (-math.log(10000.0) / d_model))
    pe = torch.zeros(2 * length - 1, d_model, device=device)
    pe[:, 0::2] = torch.sin(pos * inv_freq)
    pe[:, 1::2] = torch.cos(pos * inv_freq)
    return pe.to(dtype or torch.float32)


def rel_shift(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, 2T-1) scores against positions T-1..-(T-1) -> (B, H, T, T) with out[..., i, j] = x[..., i, T-1-i+j],
    i.e. the score of query i against relative position i - j."""
    b, h, t, m = x.shape
    x = torch.cat([x.new_zeros(b, h, t, 1), x], dim=-1).view(b, h, m + 1, t)
    return x[:, :, 1:].reshape(b, h, t, m)[..., :t]


class RelPositionMultiHeadAttention(nn.Module):
    """Masked multi-head self-attention with relative positions.

    score(i, j) = (q_i + u) . k_j + (q_i + v) . W_pos r_{i-j}, scaled by 1/sqrt(d_head); u, v are the learned
    pos_bias_u / pos_bias_v. Keys at padded frames get no weight.

    Args:
        d_model: width D (divisible by num_heads).
        num_heads: heads H.
        dropout: dropout on the attention weights.

    forward(x (B, T, D), mask (B, T) True on valid frames, or None) -> (B, T, D).
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} not divisible by num_heads={num_heads}")
        self.h, self.d_head = num_heads, d_model // num_heads
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.linear_pos = nn.Linear(d_model, d_model, bias=False)
        self.pos_bias_u = nn.Parameter(torch.empty(num_heads, self.d_head))
        self.pos_bias_v = nn.Parameter(torch.empty(num_heads, self.d_head))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.in_proj(x).view(b, t, 3, self.h, self.d_head).unbind(2)   # (B, T, H, dh)
        p = self.linear_pos(rel_positions(t, d, x.device, x.dtype)).view(2 * t - 1, self.h, self.d_head)
        ac = torch.einsum("bihd,bjhd->bhij", q + self.pos_bias_u, k)
        bd = rel_shift(torch.einsum("bihd,mhd->bhim", q + self.pos_bias_v, p))
        scores = (ac + bd) / math.sqrt(self.d_head)                              # (B, H, T, T)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
        attn = self.dropout(torch.softmax(scores, dim=-1))
        out = torch.einsum("bhij,bjhd->bihd", attn, v).reshape(b, t, d)
        return self.out_proj(out)
