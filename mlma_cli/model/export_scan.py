"""Scans for ONNX export: the recurrences as one ``torch.ops.higher_order.scan`` over time.

torch.onnx's dynamo exporter turns a higher-order scan into an ONNX ``Scan`` node, so the exported graph loops
over however many frames it is given (no unrolling, no custom op) and any ONNX runtime runs it. The training and
inference paths never see these functions: ``onnx_export_scans()`` swaps them in for the duration of an export.

    with onnx_export_scans():
        torch.onnx.export(model, ..., dynamo=True)

Same arguments and math as ``scan.selective_scan`` and ``ssd.ssd_chunk_scan`` (see those modules), computed
step by step in float32 like their sequential references.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
from torch._higher_order_ops.scan import scan as hop_scan

from mlma_cli.model import backends, scan as scan_mod, ssd as ssd_mod

__all__ = ["selective_scan_onnx", "ssd_scan_onnx", "onnx_export_scans"]


def _time_major(t: torch.Tensor, time_dim: int) -> torch.Tensor:
    return t.movedim(time_dim, 0).contiguous()


def selective_scan_onnx(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                        D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                        delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False) -> torch.Tensor:
    """Mamba-1 selective scan: u, delta, z (B, D, L); A (D, N); B, C (B, N, L); D, delta_bias (D,) -> (B, D, L)."""
    scan_mod._check(u, delta, A, B, C, D, z, delta_bias)
    delta = scan_mod._prepare_delta(delta, delta_bias, delta_softplus)
    A32 = A.float()

    def step(h, xs):  # h (B, D, N); xs: (B, D), (B, D), (B, N), (B, N) at one time step
        d_t, du_t, b_t, c_t = xs
        h = torch.exp(d_t.unsqueeze(-1) * A32) * h + du_t.unsqueeze(-1) * b_t.unsqueeze(1)
        return h, (h * c_t.unsqueeze(1)).sum(-1)

    h0 = u.new_zeros(u.shape[0], u.shape[1], A.shape[1], dtype=torch.float32)
    xs = [_time_major(delta, 2), _time_major(delta * u.float(), 2), _time_major(B.float(), 2),
          _time_major(C.float(), 2)]
    _, ys = hop_scan(step, h0, xs)                      # ys (L, B, D)
    return scan_mod._finish(ys.permute(1, 2, 0), u, D, z)


def ssd_scan_onnx(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                  chunk_size: Optional[int] = None, D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                  dt_bias: Optional[torch.Tensor] = None, dt_softplus: bool = False) -> torch.Tensor:
    """Mamba-2 SSD scan: x (B, L, H, P), dt (B, L, H), A (H,), B, C (B, L, G, N) -> (B, L, H, P).

    ``chunk_size`` is accepted and ignored: the recurrence runs step by step (as ``ssd.ssd_sequential``).
    """
    ssd_mod._check(x, dt, A, B, C, D, z, dt_bias)
    rep = x.shape[2] // B.shape[2]
    dt = ssd_mod._prepare_dt(dt, dt_bias, dt_softplus)  # (B, L, H)
    A32 = A.float()

    def step(h, xs):  # h (B, H, P, N); xs: (B, H), (B, H, P), (B, H, N), (B, H, N)
        dt_t, x_t, b_t, c_t = xs
        h = torch.exp(dt_t * A32)[..., None, None] * h + (dt_t.unsqueeze(-1) * x_t).unsqueeze(-1) * b_t.unsqueeze(2)
        return h, (h * c_t.unsqueeze(2)).sum(-1)

    h0 = x.new_zeros(x.shape[0], x.shape[2], x.shape[3], B.shape[3], dtype=torch.float32)
    xs = [_time_major(dt, 1), _time_major(x.float(), 1), _time_major(B.float().repeat_interleave(rep, dim=2), 1),
          _time_major(C.float().repeat_interleave(rep, dim=2), 1)]
    _, ys = hop_scan(step, h0, xs)                      # ys (L, B, H, P)
    return ssd_mod._finish(ys.transpose(0, 1), x, D, z)


@contextlib.contextmanager
def onnx_export_scans() -> Iterator[None]:
    """Within the block every Mamba mixer uses the scans above, whatever its scan_backend."""
    saved = dict(backends.FORCED)
    backends.FORCED.update({"selective scan": selective_scan_onnx, "SSD scan": ssd_scan_onnx})
    try:
        yield
    finally:
        backends.FORCED.clear()
        backends.FORCED.update(saved)
