"""Both directions of a bidirectional Mamba-1 mixer's scan (and its conv), each sequence reversed within its length.

Math (direction 0 forward, 1 backward, both directions' inputs in the original time order):
    y = 0.5 * (scan_0 + reverse(scan_1(reverse(inputs of direction 1)))) * silu(z)
where scan is ``scan.selective_scan``'s math with the D skip term, and reverse flips each sequence within its own
length (padded frames stay put, as ``masking.reverse_index``). Frames past a sequence's length: unspecified.

Two implementations:

* :func:`biconv_time_major` + :func:`biscan_time_major` (CPU with the compiled kernel, ``scan_cpu_kernel``): both
  directions' depthwise conv + SiLU in one C call, and both scans in one C call that visits the backward direction's
  frames last-to-first in place (no reversed copies, no separate averaging or gating pass), time-major throughout and
  vectorised across channels, with hand-written backward passes. Layouts::

      biconv: x (B, L, E) channel stride 1, w (2, K, E), bias (2, E)                  -> u (2, B, L, E)
      biscan: u, delta (2, B, L, E), At (2, N, E) = A transposed, bc (2, B, L, S) rows holding B_t then C_t,
              D, delta_bias (2, E), z (B, L, E) channel stride 1                       -> y (B, L, E)

* :func:`bidirectional_scan_by_parts` (CUDA, no compiler, the ONNX export's step-by-step scans): two calls of a
  per-direction scan function with gathered reversals; also the reference the kernels are tested against::

      u, delta (B, 2, E, L), A (2, E, N), Bt, Ct (B, 2, L, N), D, delta_bias (2, E), z (B, L, E) -> y (B, L, E)

lengths: (B,) int64 or None (all sequences L long).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from mlma_cli.model import scan_cpu_kernel
from mlma_cli.model.masking import reverse_index, reverse_time

__all__ = ["biconv_time_major", "biscan_time_major", "bidirectional_scan_by_parts", "fused_kernel_applies"]


def fused_kernel_applies(u: torch.Tensor, d_state: int) -> bool:
    """True when the time-major C kernels run for tensors like u (CPU, d_state <= MAX_STATE, a compiled kernel)."""
    return (u.device.type == "cpu" and d_state <= scan_cpu_kernel.MAX_STATE and not torch.compiler.is_compiling()
            and scan_cpu_kernel.load() is not None)


def bidirectional_scan_by_parts(u, delta, A, Bt, Ct, D=None, z=None, delta_bias=None, lengths=None,
                                delta_softplus=True, scan: Optional[Callable] = None) -> torch.Tensor:
    """Two calls of a per-direction scan (``selective_scan`` signature; default ``scan.selective_scan``) with
    gathered reversals. Shapes as in the module docstring."""
    if scan is None:
        from mlma_cli.model.scan import selective_scan as scan
    idx = reverse_index(lengths, u.shape[-1]) if lengths is not None else None
    rev = lambda t, dim: reverse_time(t, idx, dim)  # noqa: E731
    opt = lambda t, k: None if t is None else t[k]  # noqa: E731
    cm = lambda t: t.transpose(1, 2).contiguous()  # noqa: E731  (B, L, N) -> the scan's (B, N, L)
    y = scan(u[:, 0].contiguous(), delta[:, 0].contiguous(), A[0], cm(Bt[:, 0]), cm(Ct[:, 0]), opt(D, 0),
             delta_bias=opt(delta_bias, 0), delta_softplus=delta_softplus)
    y_b = scan(rev(u[:, 1], 2).contiguous(), rev(delta[:, 1], 2).contiguous(), A[1], cm(rev(Bt[:, 1], 1)),
               cm(rev(Ct[:, 1], 1)), opt(D, 1), delta_bias=opt(delta_bias, 1), delta_softplus=delta_softplus)
    y = (0.5 * (y + rev(y_b, 2))).transpose(1, 2)      # (B, L, E)
    return y if z is None else y * F.silu(z)


# ---- time-major kernels (BiMamba on CPU) -----------------------------------------------------------------------------

def _needs_grad(*ts) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


class _BiConvTM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, bias, lengths):
        lib = scan_cpu_kernel.load()
        ctx.save_for_backward(x, w, bias, lengths)
        ctx.lib = lib
        return scan_cpu_kernel.biconv_tm(lib, x, w, bias, lengths)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, du):
        x, w, bias, lengths = ctx.saved_tensors
        dx, dw, dbias = scan_cpu_kernel.biconv_tm_bwd(ctx.lib, x, w, bias, lengths, du.contiguous())
        return dx, dw, dbias, None


class _BiScanTM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, At, bc, D, z, bias, lengths, softplus):
        lib = scan_cpu_kernel.load()
        ctx.save_for_backward(u, delta, At, bc, D, z, bias, lengths)
        ctx.lib, ctx.softplus = lib, softplus
        return scan_cpu_kernel.biscan_tm_fwd(lib, u, delta, At, bc, D, bias, z, lengths, softplus)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        u, delta, At, bc, D, z, bias, lengths = ctx.saved_tensors
        du, ddelta, dAt, dbc, dD, dbias, dz = scan_cpu_kernel.biscan_tm_bwd(ctx.lib, u, delta, At, bc, D, bias, z,
                                                                            lengths, ctx.softplus, dy.contiguous())
        return du, ddelta, dAt, dbc, dD, dz, dbias, None, None


def biconv_time_major(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor,
                      lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Both directions' depthwise conv + SiLU, time-major, with autograd: x (B, L, E) with channel stride 1,
    w (2, K, E), bias (2, E), lengths (B,) int64 or None -> u (2, B, L, E) (``scan_cpu_kernel.biconv_tm``).
    Float32 CPU tensors and the compiled kernel (:func:`fused_kernel_applies`)."""
    w, bias = w.contiguous(), bias.contiguous()
    if _needs_grad(x, w, bias):
        return _BiConvTM.apply(x, w, bias, lengths)
    return scan_cpu_kernel.biconv_tm(scan_cpu_kernel.load(), x, w, bias, lengths)


def biscan_time_major(u: torch.Tensor, delta: torch.Tensor, At: torch.Tensor, bc: torch.Tensor,
                      D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                      delta_bias: Optional[torch.Tensor] = None, lengths: Optional[torch.Tensor] = None,
                      delta_softplus: bool = True) -> torch.Tensor:
    """Both directions' scans, averaged and gated, time-major, with autograd (``scan_cpu_kernel.biscan_tm_fwd``):
    u, delta (2, B, L, E); At (2, N, E) = A transposed; bc (2, B, L, S) rows holding B_t then C_t (a column slice of
    a contiguous tensor, e.g. x_proj's output past its dt columns); D, delta_bias (2, E); z (B, L, E) with channel
    stride 1 -> y (B, L, E). Float32 CPU tensors and the compiled kernel (:func:`fused_kernel_applies`)."""
    if u.dim() != 4 or u.shape[0] != 2 or delta.shape != u.shape:
        raise ValueError(f"u and delta must be (2, B, L, E), got {tuple(u.shape)} and {tuple(delta.shape)}")
    _, bsz, length, dim = u.shape
    if At.dim() != 3 or At.shape[0] != 2 or At.shape[2] != dim or tuple(bc.shape[:3]) != (2, bsz, length) or \
            bc.shape[3] < 2 * At.shape[1]:
        raise ValueError(f"At must be (2, N, E) and bc (2, B, L, >= 2N); got {tuple(At.shape)}, {tuple(bc.shape)}")
    if z is not None and (tuple(z.shape) != (bsz, length, dim) or z.stride(2) != 1):
        raise ValueError(f"z must be (B, L, E) = {(bsz, length, dim)} with channel stride 1, got {tuple(z.shape)}")
    rows = bc.stride(2)
    if bc.stride() != (bsz * length * rows, length * rows, rows, 1):
        bc = bc.contiguous()                 # the kernel walks rows of a contiguous (2, B, L, .) buffer
    u, delta, At = u.contiguous(), delta.contiguous(), At.contiguous()
    D = None if D is None else D.contiguous()
    delta_bias = None if delta_bias is None else delta_bias.contiguous()
    if _needs_grad(u, delta, At, bc, D, z, delta_bias):
        return _BiScanTM.apply(u, delta, At, bc, D, z, delta_bias, lengths, bool(delta_softplus))
    return scan_cpu_kernel.biscan_tm_fwd(scan_cpu_kernel.load(), u, delta, At, bc, D, delta_bias, z, lengths,
                                         bool(delta_softplus))
