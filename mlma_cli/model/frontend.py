"""Convolutional front end: two stride-2 Conv2d blocks (4x time subsampling) and a Linear to d_model."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn

from mlma_cli.model.masking import valid_mask, zero_padding


def conv_out_length(lengths: torch.Tensor) -> torch.Tensor:
    """Frames after one 3x3 stride-2 conv with padding 1: ceil(L / 2)."""
    return torch.div(lengths + 1, 2, rounding_mode="floor")


class _ConvBlock(nn.Module):
    """Conv2d(3x3, stride 2, pad 1) -> LayerNorm over (freq, channel) per frame -> LeakyReLU -> Dropout.

    (B, C_in, T, F) -> (B, C_out, ceil(T/2), ceil(F/2)).
    """

    def __init__(self, c_in: int, c_out: int, f_out: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm([f_out, c_out])
        self.act = nn.LeakyReLU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).permute(0, 2, 3, 1)                    # (B, T', F', C)
        y = self.dropout(self.act(self.norm(y)))
        return y.permute(0, 3, 1, 2)


class ConvFrontEnd(nn.Module):
    """Features (B, T, F) and lengths (B,) -> (B, T', D) and lengths (B,), T' = ceil(ceil(T/2)/2).

    Padded frames are zeroed before each conv, so a valid frame near the end of an utterance sees the same zeros
    in a batch as from the conv's own zero padding when the utterance is alone.

    Args:
        num_features: F.
        d_model: output width D.
        channels: channels of the two blocks (64, 32 in the reference).
        dropout: dropout in each block and after the Linear.
    """

    def __init__(self, num_features: int, d_model: int, channels: Tuple[int, int] = (64, 32),
                 dropout: float = 0.1) -> None:
        super().__init__()
        f1 = (num_features + 1) // 2
        f2 = (f1 + 1) // 2
        self.block1 = _ConvBlock(1, channels[0], f1, dropout)
        self.block2 = _ConvBlock(channels[0], channels[1], f2, dropout)
        self.out = nn.Linear(channels[1] * f2, d_model)
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def output_lengths(lengths: torch.Tensor) -> torch.Tensor:
        return conv_out_length(conv_out_length(lengths))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = zero_padding(x, valid_mask(lengths, x.shape[1]), time_dim=1).unsqueeze(1)   # (B, 1, T, F)
        x = self.block1(x)
        lengths = conv_out_length(lengths)
        x = self.block2(zero_padding(x, valid_mask(lengths, x.shape[2]), time_dim=2))
        lengths = conv_out_length(lengths)
        b, c, t, f = x.shape
        x = self.out(x.permute(0, 2, 3, 1).reshape(b, t, f * c))  # (B, T', F'*C) -> (B, T', D)
        return self.dropout(x), lengths
