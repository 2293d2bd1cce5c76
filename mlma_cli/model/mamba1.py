"""Initialisation and the per-direction path of a Mamba-1 mixer, shared by BiMamba and its unidirectional form."""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from mlma_cli.model.masking import zero_padding


def init_dt_bias(bias: torch.Tensor, dt_min: float, dt_max: float, dt_init_floor: float) -> None:
    """Fill bias so softplus(bias) is log-uniform in [dt_min, dt_max] (floored), like mamba-ssm."""
    with torch.no_grad():
        dt = torch.exp(torch.rand_like(bias) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus


def no_weight_decay(*params: nn.Parameter) -> None:
    """Mark parameters like mamba-ssm does; the optimizer builder skips weight decay on them."""
    for p in params:
        p._no_weight_decay = True


def direction_params(d_inner: int, d_state: int, d_conv: int, dt_rank: int, dt_min: float, dt_max: float,
                     dt_init_floor: float) -> dict:
    """Fresh parameters of one scan direction: depthwise causal conv1d, x_proj, dt_proj, A_log (d_inner, N), D.

    Initialised like mamba-ssm; the owning mixer assigns them under its names (conv1d / conv1d_b, ...).
    """
    conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, bias=True)
    x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
    dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
    nn.init.uniform_(dt_proj.weight, -dt_rank ** -0.5, dt_rank ** -0.5)
    init_dt_bias(dt_proj.bias, dt_min, dt_max, dt_init_floor)
    dt_proj.bias._no_reinit = True
    a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)  # S4D-real: A = -[1..N]
    A_log = nn.Parameter(torch.log(a))
    D = nn.Parameter(torch.ones(d_inner))
    no_weight_decay(A_log, D)
    return dict(conv1d=conv1d, x_proj=x_proj, dt_proj=dt_proj, A_log=A_log, D=D)


def mamba1_direction(x: torch.Tensor, z: torch.Tensor, mask: Optional[torch.Tensor], conv1d: nn.Conv1d,
                     x_proj: nn.Linear, dt_proj: nn.Linear, A_log: torch.Tensor, D: torch.Tensor,
                     d_state: int, scan: Callable) -> torch.Tensor:
    """One direction of the Mamba-1 mixer (mamba-ssm's unfused path).

    x, z: (B, d_inner, L) with valid frames first; mask (B, L) True on valid frames. -> y (B, d_inner, L).
    """
    length = x.shape[-1]
    x = zero_padding(x, mask, time_dim=2)              # padding never enters the conv
    x = F.silu(conv1d(x)[..., :length])                # causal depthwise conv
    dt, B, C = torch.split(x_proj(x.transpose(1, 2)), [dt_proj.in_features, d_state, d_state], dim=-1)
    dt = F.linear(dt, dt_proj.weight).transpose(1, 2)  # (B, d_inner, L); bias goes in as delta_bias
    A = -torch.exp(A_log.float())
    return scan(x.contiguous(), dt.contiguous(), A, B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(),
                D.float(), z=z.contiguous(), delta_bias=dt_proj.bias.float(), delta_softplus=True)
