"""Conformer building blocks shared by both encoders: feed-forward and convolution modules."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from mlma_cli.model.masking import zero_padding

ACTIVATIONS = {"gelu": nn.GELU, "swish": nn.SiLU}


class FeedForward(nn.Module):
    """LayerNorm -> Linear(D, ffn_dim) -> activation -> Dropout -> Linear(ffn_dim, D) -> Dropout; (B, T, D) -> (B, T, D)."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float, activation: str) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, ffn_dim),
            ACTIVATIONS[activation](),
            nn.Dropout(dropout),
            nn.Linear(ffn_dim, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvModule(nn.Module):
    """LayerNorm -> pointwise Conv1d(D, 2D) + GLU -> depthwise Conv1d(kernel, 'same') -> LayerNorm -> activation
    -> Linear(D, D) -> Dropout.

    Padded frames are zeroed right before the depthwise conv, so a valid frame sees exactly the zeros it would
    see from the conv's own padding if its utterance were alone.

    forward(x (B, T, D), mask (B, T) True on valid frames, or None) -> (B, T, D).
    """

    def __init__(self, d_model: int, kernel_size: int, dropout: float, activation: str) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size} must be odd for 'same' padding")
        self.norm_in = nn.LayerNorm(d_model)
        self.pointwise = nn.Conv1d(d_model, 2 * d_model, 1)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)
        self.norm_mid = nn.LayerNorm(d_model)
        self.act = ACTIVATIONS[activation]()
        self.linear = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        y = F.glu(self.pointwise(self.norm_in(x).transpose(1, 2)), dim=1)   # (B, D, T)
        y = self.depthwise(zero_padding(y, mask, time_dim=2)).transpose(1, 2)
        return self.dropout(self.linear(self.act(self.norm_mid(y))))
