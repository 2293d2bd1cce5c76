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

import torch.nn.functional as F

from mlma_cli.model import backends, scan as scan_mod, ssd as ssd_mod
from mlma_cli.model.masking import reverse_index, reverse_time

__all__ = ["selective_scan_onnx", "bidirectional_scan_onnx", "ssd_scan_onnx", "onnx_export_scans"]


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


def bidirectional_scan_onnx(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, Bt: torch.Tensor, Ct: torch.Tensor,
                            D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                            delta_bias: Optional[torch.Tensor] = None, lengths: Optional[torch.Tensor] = None,
                            delta_softplus: bool = True) -> torch.Tensor:
    """Both directions of a bidirectional Mamba-1 mixer in one scan over time (``biscan.bidirectional_scan_by_parts``'s
    arguments and result: u, delta (B, 2, E, L), A (2, E, N), Bt, Ct (B, 2, L, N), D, delta_bias (2, E), z (B, L, E)
    -> y (B, L, E)).

    Direction 1's inputs are reversed within each length up front, and both directions' states advance in the same
    loop: one ONNX Scan per layer instead of two. The step computes its decays itself (a (B, 2, E, N) exp that stays
    in cache: precomputing them for all frames costs more in memory traffic than it saves) and reads the states out
    with a MatMul against C. softplus is written with Exp and Log (onnxruntime's Softplus kernel is a slow scalar
    loop), equal to torch's to float32 rounding: below about -17 it gives 0 instead of e^x < 5e-8.
    """
    length = u.shape[-1]
    idx = reverse_index(lengths, length) if lengths is not None else None

    def second_reversed(t: torch.Tensor, time_dim: int) -> torch.Tensor:  # t: direction at dim 1
        return torch.stack([t[:, 0], reverse_time(t[:, 1], idx, time_dim - 1)], dim=1)

    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[None, :, :, None]
    if delta_softplus:
        delta = torch.relu(delta) + torch.log(1.0 + torch.exp(-delta.abs()))
    u32 = second_reversed(u.float(), 3)
    delta = second_reversed(delta, 3)
    tm = lambda t: t.permute(3, 0, 1, 2)  # noqa: E731  (B, 2, E, L) -> (L, B, 2, E)
    A32 = A.float()

    def step(h, xs):  # h (B, 2, E, N); xs: delta', delta' u (B, 2, E, 1), B (B, 2, 1, N), C (B, 2, N, 1) of a step
        d_t, du_t, b_t, c_t = xs
        h = torch.exp(d_t * A32) * h + du_t * b_t
        return h, torch.matmul(h, c_t)

    h0 = u32.new_zeros(u.shape[0], 2, u.shape[2], A.shape[-1])
    xs = [tm(delta).unsqueeze(-1), tm(delta * u32).unsqueeze(-1),
          second_reversed(Bt.float(), 2).permute(2, 0, 1, 3).unsqueeze(3),
          second_reversed(Ct.float(), 2).permute(2, 0, 1, 3).unsqueeze(-1)]
    _, ys = hop_scan(step, h0, xs)                                                        # (L, B, 2, E, 1)
    ys = ys.squeeze(-1).permute(1, 2, 3, 0)                                               # (B, 2, E, L)
    if D is not None:
        ys = ys + D.float()[None, :, :, None] * u32
    y = (0.5 * (ys[:, 0] + reverse_time(ys[:, 1], idx, 2))).transpose(1, 2)              # (B, L, E)
    y = y if z is None else y * F.silu(z.float())
    return y.to(u.dtype)


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
    backends.FORCED.update({"selective scan": selective_scan_onnx, "bidirectional scan": bidirectional_scan_onnx,
                            "SSD scan": ssd_scan_onnx})
    try:
        yield
    finally:
        backends.FORCED.clear()
        backends.FORCED.update(saved)
