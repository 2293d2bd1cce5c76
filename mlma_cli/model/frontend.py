"""Convolutional front end: two Conv2d blocks (4x or 2x time subsampling, 4x in frequency) and a Linear to d_model."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn

from mlma_cli.model.config import SUBSAMPLING_FACTORS
from mlma_cli.model.masking import valid_mask, zero_padding


def conv_out_length(lengths: torch.Tensor, stride: int = 2) -> torch.Tensor:
    """Frames after one 3x3 conv with padding 1 and time stride 2 (ceil(L / 2)) or 1 (L)."""
    return torch.div(lengths + 1, 2, rounding_mode="floor") if stride == 2 else lengths


class _ConvBlock(nn.Module):
    """Conv2d(3x3, stride (time_stride, 2), pad 1) -> LayerNorm over (freq, channel) per frame -> LeakyReLU -> Dropout.

    (B, C_in, T, F) -> (B, C_out, ceil(T/time_stride), ceil(F/2)).
    """

    def __init__(self, c_in: int, c_out: int, f_out: int, dropout: float, time_stride: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=(time_stride, 2), padding=1)
        self.norm = nn.LayerNorm([f_out, c_out])
        self.act = nn.LeakyReLU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).permute(0, 2, 3, 1)                    # (B, T', F', C)
        y = self.dropout(self.act(self.norm(y)))
        return y.permute(0, 3, 1, 2)


class ConvFrontEnd(nn.Module):
    """Features (B, T, F) and lengths (B,) -> (B, T', D) and lengths (B,), T' = ceil(ceil(T/2)/2) (factor 4) or
    ceil(T/2) (factor 2: the second block keeps the frame rate; 20 ms output frames for dense character targets).

    Padded frames are zeroed before each conv, so a valid frame near the end of an utterance sees the same zeros
    in a batch as from the conv's own zero padding when the utterance is alone.

    Args:
        num_features: F.
        d_model: output width D.
        channels: channels of the two blocks (64, 32 in the reference).
        dropout: dropout after the Linear.
        block_dropout: dropout in each conv block (None: ``dropout``).
        subsampling_factor: 4 or 2 (time).
    """

    def __init__(self, num_features: int, d_model: int, channels: Tuple[int, int] = (64, 32),
                 dropout: float = 0.1, block_dropout: Optional[float] = None, subsampling_factor: int = 4) -> None:
        super().__init__()
        if subsampling_factor not in SUBSAMPLING_FACTORS:
            raise ValueError(f"subsampling_factor={subsampling_factor}, expected one of {SUBSAMPLING_FACTORS}")
        self.strides = (2, subsampling_factor // 2)
        f1 = (num_features + 1) // 2
        f2 = (f1 + 1) // 2
        block_dropout = dropout if block_dropout is None else block_dropout
        self.block1 = _ConvBlock(1, channels[0], f1, block_dropout)
        self.block2 = _ConvBlock(channels[0], channels[1], f2, block_dropout, time_stride=self.strides[1])
        self.out = nn.Linear(channels[1] * f2, d_model)
        self.dropout = nn.Dropout(dropout)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return conv_out_length(conv_out_length(lengths, self.strides[0]), self.strides[1])

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = zero_padding(x, valid_mask(lengths, x.shape[1]), time_dim=1).unsqueeze(1)   # (B, 1, T, F)
        x = self.block1(x)
        lengths = conv_out_length(lengths, self.strides[0])
        x = self.block2(zero_padding(x, valid_mask(lengths, x.shape[2]), time_dim=2))
        lengths = conv_out_length(lengths, self.strides[1])
        b, c, t, f = x.shape
        x = self.out(x.permute(0, 2, 3, 1).reshape(b, t, f * c))  # (B, T', F'*C) -> (B, T', D)
        return self.dropout(x), lengths
