"""Bidirectional Mamba-1 mixer ("BiMamba v2"), length-aware.

Parameter names follow mamba-ssm's ``Mamba`` (in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj) and, for the
backward direction, the BiMamba-v2 forks used by ConMamba (conv1d_b, x_proj_b, dt_proj_b, A_b_log, D_b), so one
state dict runs on our PyTorch scan and on mamba-ssm's CUDA kernel.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from mlma_cli.model.backends import selective_scan_for
from mlma_cli.model.mamba1 import direction_params, mamba1_direction
from mlma_cli.model.masking import reverse_index, reverse_time


class BiMamba(nn.Module):
    """Mamba-1 mixer; bidirectional by default.

    Args:
        d_model: input/output width D.
        d_state: SSM state size N (16).
        d_conv: causal conv kernel (4).
        expand: d_inner = expand * d_model.
        dt_rank: rank of the delta projection (ceil(D / 16)).
        dt_min, dt_max, dt_init_floor: delta initialisation.
        bidirectional: add the length-aware backward direction and average the two.
        scan_backend: "auto" | "torch" | "cuda" (see backends.py).

    forward(x (B, T, D), lengths (B,) or None) -> (B, T, D). Frames past a sequence's length are ignored: they
    never reach valid frames, and their own output is unspecified.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, dt_rank: int = 16,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, dt_init_floor: float = 1e-4,
                 bidirectional: bool = True, scan_backend: str = "auto") -> None:
        super().__init__()
        self.d_inner = expand * d_model
        self.d_state = d_state
        self.bidirectional = bidirectional
        self.scan_backend = scan_backend
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        args = (self.d_inner, d_state, d_conv, dt_rank, dt_min, dt_max, dt_init_floor)
        for name, p in direction_params(*args).items():
            setattr(self, name, p)
        if bidirectional:
            back = direction_params(*args)
            self.conv1d_b, self.x_proj_b, self.dt_proj_b = back["conv1d"], back["x_proj"], back["dt_proj"]
            self.A_b_log, self.D_b = back["A_log"], back["D"]
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        bsz, length, _ = x.shape
        mask = None
        if lengths is not None:
            mask = torch.arange(length, device=x.device)[None, :] < lengths[:, None]
        xz = self.in_proj(x).transpose(1, 2)            # (B, 2*d_inner, L)
        xs, z = xz.chunk(2, dim=1)
        scan = selective_scan_for(xs, self.scan_backend)
        y = mamba1_direction(xs, z, mask, self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D,
                             self.d_state, scan)
        if self.bidirectional:
            idx = reverse_index(lengths, length) if lengths is not None else None
            xs_b, z_b = reverse_time(xz, idx, 2).chunk(2, dim=1)
            y_b = mamba1_direction(xs_b, z_b, mask, self.conv1d_b, self.x_proj_b, self.dt_proj_b, self.A_b_log,
                                   self.D_b, self.d_state, scan)
            y = 0.5 * (y + reverse_time(y_b, idx, 2))
        return self.out_proj(y.transpose(1, 2))
