"""Bidirectional Mamba-2 (SSD) mixer, length-aware; ``mixer: mamba2`` in the model config.

Names follow mamba-ssm's ``Mamba2`` (in_proj giving [z, x, B, C, dt], conv1d over xBC, dt_bias, A_log (H,), D (H,),
norm = gated RMSNorm, out_proj); the backward direction adds conv1d_b, dt_bias_b, A_b_log, D_b. One group
(ngroups = 1) of B/C shared by all heads, as mamba-ssm's default.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from mlma_cli.model.backends import ssd_scan_for
from mlma_cli.model.mamba1 import init_dt_bias, no_weight_decay
from mlma_cli.model.masking import reverse_index, reverse_time, zero_padding


class RMSNormGated(nn.Module):
    """rmsnorm(y * silu(z)) * weight over the last dim (mamba-ssm's RMSNormGated, norm_before_gate=False)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = y.float() * F.silu(z.float())
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(z.dtype)


class BiMamba2(nn.Module):
    """Mamba-2 mixer; bidirectional by default.

    Args:
        d_model: input/output width D.
        d_state: SSM state size N per group.
        d_conv: causal conv kernel over xBC.
        expand: d_inner = expand * d_model; heads H = d_inner / headdim.
        headdim: head dimension P.
        chunk_size: SSD chunk length.
        dt_min, dt_max, dt_init_floor: delta initialisation (into dt_bias).
        bidirectional: add the length-aware backward direction; the two scan outputs are averaged before the
            shared gated norm and out_proj.
        scan_backend: one of config.SCAN_BACKENDS (see backends.py).

    forward(x (B, T, D), lengths (B,) or None) -> (B, T, D).
    """

    def __init__(self, d_model: int, d_state: int = 64, d_conv: int = 4, expand: int = 2, headdim: int = 64,
                 chunk_size: int = 64, dt_min: float = 1e-3, dt_max: float = 1e-1, dt_init_floor: float = 1e-4,
                 bidirectional: bool = True, scan_backend: str = "auto") -> None:
        super().__init__()
        self.d_inner = expand * d_model
        if self.d_inner % headdim:
            raise ValueError(f"d_inner={self.d_inner} not divisible by headdim={headdim}")
        self.d_state, self.headdim, self.chunk_size = d_state, headdim, chunk_size
        self.nheads = self.d_inner // headdim
        self.bidirectional, self.scan_backend = bidirectional, scan_backend
        conv_dim = self.d_inner + 2 * d_state
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner + 2 * d_state + self.nheads, bias=False)
        dirs = ("", "_b") if bidirectional else ("",)
        for sfx in dirs:
            setattr(self, f"conv1d{sfx}", nn.Conv1d(conv_dim, conv_dim, d_conv, groups=conv_dim,
                                                    padding=d_conv - 1, bias=True))
            dt_bias = nn.Parameter(torch.empty(self.nheads))
            init_dt_bias(dt_bias, dt_min, dt_max, dt_init_floor)
            A_log = nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(1.0, 16.0)))
            D = nn.Parameter(torch.ones(self.nheads))
            no_weight_decay(dt_bias, A_log, D)
            setattr(self, f"dt_bias{sfx}", dt_bias)
            setattr(self, "A_b_log" if sfx else "A_log", A_log)
            setattr(self, f"D{sfx}", D)
        self.norm = RMSNormGated(self.d_inner)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def _direction(self, xbc: torch.Tensor, dt: torch.Tensor, mask: Optional[torch.Tensor], conv1d: nn.Conv1d,
                   dt_bias: torch.Tensor, A_log: torch.Tensor, D: torch.Tensor, scan: Callable) -> torch.Tensor:
        """xbc (B, L, d_inner + 2N), dt (B, L, H), valid frames first -> y (B, L, d_inner)."""
        bsz, length, _ = xbc.shape
        xbc = zero_padding(xbc, mask, time_dim=1)
        xbc = F.silu(conv1d(xbc.transpose(1, 2))[..., :length]).transpose(1, 2)
        x, B, C = torch.split(xbc, [self.d_inner, self.d_state, self.d_state], dim=-1)
        y = scan(x.reshape(bsz, length, self.nheads, self.headdim).contiguous(), dt.contiguous(),
                 -torch.exp(A_log.float()), B.unsqueeze(2).contiguous(), C.unsqueeze(2).contiguous(),
                 self.chunk_size, D=D, z=None, dt_bias=dt_bias, dt_softplus=True)
        return y.reshape(bsz, length, self.d_inner)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        length = x.shape[1]
        mask = None
        if lengths is not None:
            mask = torch.arange(length, device=x.device)[None, :] < lengths[:, None]
        z, xbc, dt = torch.split(self.in_proj(x), [self.d_inner, self.d_inner + 2 * self.d_state, self.nheads],
                                 dim=-1)
        scan = ssd_scan_for(x, self.scan_backend)
        y = self._direction(xbc, dt, mask, self.conv1d, self.dt_bias, self.A_log, self.D, scan)
        if self.bidirectional:
            idx = reverse_index(lengths, length) if lengths is not None else None
            y_b = self._direction(reverse_time(xbc, idx, 1), reverse_time(dt, idx, 1), mask, self.conv1d_b,
                                  self.dt_bias_b, self.A_b_log, self.D_b, scan)
            y = 0.5 * (y + reverse_time(y_b, idx, 1))
        return self.out_proj(self.norm(y, z))
