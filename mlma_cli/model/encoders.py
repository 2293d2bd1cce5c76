"""ConMamba and Conformer encoders: conv front end, N macaron layers, final LayerNorm."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn

from mlma_cli.model.attention import RelPositionMultiHeadAttention
from mlma_cli.model.bimamba import BiMamba
from mlma_cli.model.config import ModelConfig
from mlma_cli.model.frontend import ConvFrontEnd
from mlma_cli.model.mamba2 import BiMamba2
from mlma_cli.model.masking import valid_mask
from mlma_cli.model.modules import ConvModule, FeedForward


def make_mixer(cfg: ModelConfig) -> nn.Module:
    """The sequence mixer of a ConMamba layer: BiMamba (mamba1) or BiMamba2 (mamba2)."""
    if cfg.mixer == "mamba1":
        return BiMamba(cfg.d_model, cfg.d_state, cfg.d_conv, cfg.expand, cfg.dt_rank, cfg.dt_min, cfg.dt_max,
                       cfg.dt_init_floor, cfg.bidirectional, cfg.scan_backend)
    return BiMamba2(cfg.d_model, cfg.d_state, cfg.d_conv, cfg.expand, cfg.mamba2_headdim, cfg.mamba2_chunk_size,
                    cfg.dt_min, cfg.dt_max, cfg.dt_init_floor, cfg.bidirectional, cfg.scan_backend)


class ConMambaLayer(nn.Module):
    """x + FFN1/2; x + BiMamba(LN(x)); x + ConvModule(x); LN(x + FFN2/2). GELU.

    forward(x (B, T, D), lengths (B,), mask (B, T) True on valid frames) -> (B, T, D).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.ffn1 = FeedForward(d, cfg.ffn_dim, cfg.dropout, "gelu")
        self.norm_mixer = nn.LayerNorm(d)
        self.mixer = make_mixer(cfg)
        self.conv = ConvModule(d, cfg.conv_kernel, cfg.dropout, "gelu")
        self.ffn2 = FeedForward(d, cfg.ffn_dim, cfg.dropout, "gelu")
        self.norm_out = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ffn1(x)
        x = x + self.mixer(self.norm_mixer(x), lengths)   # no dropout on this branch, as the reference
        x = x + self.conv(x, mask)
        return self.norm_out(x + 0.5 * self.ffn2(x))


class ConformerLayer(nn.Module):
    """x + FFN1/2; x + Dropout(RelPosMHSA(LN(x))); x + ConvModule(x); LN(x + FFN2/2). Swish.

    forward(x (B, T, D), lengths (B,), mask (B, T)) -> (B, T, D).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.ffn1 = FeedForward(d, cfg.ffn_dim, cfg.dropout, "swish")
        self.norm_attn = nn.LayerNorm(d)
        self.attn = RelPositionMultiHeadAttention(d, cfg.num_heads, cfg.dropout)
        self.dropout = nn.Dropout(cfg.dropout)
        self.conv = ConvModule(d, cfg.conv_kernel, cfg.dropout, "swish")
        self.ffn2 = FeedForward(d, cfg.ffn_dim, cfg.dropout, "swish")
        self.norm_out = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ffn1(x)
        x = x + self.dropout(self.attn(self.norm_attn(x), mask))
        x = x + self.conv(x, mask)
        return self.norm_out(x + 0.5 * self.ffn2(x))


class Encoder(nn.Module):
    """Front end + N layers (ConMamba or Conformer, per cfg.encoder) + final LayerNorm.

    forward(feats (B, T, F), lengths (B,)) -> (B, T', D), out_lengths (B,); T' = ceil(ceil(T/2)/2).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.frontend = ConvFrontEnd(cfg.num_features, cfg.d_model, cfg.subsampling_channels, cfg.dropout,
                                     cfg.frontend_dropout, cfg.subsampling_factor)
        layer = ConMambaLayer if cfg.encoder == "conmamba" else ConformerLayer
        self.layers = nn.ModuleList(layer(cfg) for _ in range(cfg.num_layers))
        self.final_norm = nn.LayerNorm(cfg.d_model)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x, lengths = self.frontend(feats, lengths)
        mask = valid_mask(lengths, x.shape[1])
        for layer in self.layers:
            x = layer(x, lengths, mask)
        return self.final_norm(x), lengths
