"""Both directions of a bidirectional Mamba-1 scan in one call, each sequence reversed within its own length.

    y = bidirectional_scan(u, delta, A, Bt, Ct, D, z, delta_bias, lengths, delta_softplus=True, scan=None)

Layouts (direction 0 forward, 1 backward; both directions' inputs in the original time order):
    u, delta : (B, 2, E, L)      A : (2, E, N)      Bt, Ct : (B, 2, L, N)      D, delta_bias : (2, E)
    z : (B, L, E) gate (any strides) or None      lengths : (B,) int64 or None (all sequences L long)
    -> y : (B, L, E) = 0.5 * (scan_fwd + reverse(scan(reverse(inputs of direction 1)))) * silu(z)
where scan is ``scan.selective_scan``'s math with the D skip term, and reverse flips each sequence within its own
length (padded frames stay put, as ``masking.reverse_index``). Frames past a sequence's length: unspecified.

On CPU with the compiled kernel (``scan_cpu_kernel``) this is one fused call that visits the backward direction's
frames last-to-first in place: no reversed copies, no separate averaging or gating pass, and the output is
already time-major for the out projection. Otherwise (CUDA, no compiler, the ONNX export's step-by-step scans) it
is :func:`bidirectional_scan_by_parts`: two calls of a per-direction scan function with gathered reversals,
which is also the reference the fused kernel is tested against.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from mlma_cli.model import scan_cpu_kernel
from mlma_cli.model.masking import reverse_index, reverse_time

__all__ = ["bidirectional_scan", "bidirectional_scan_by_parts", "fused_kernel_applies"]


def fused_kernel_applies(u: torch.Tensor, d_state: int) -> bool:
    """True when :func:`bidirectional_scan` without a ``scan`` runs the fused CPU kernel for tensors like u."""
    return (u.device.type == "cpu" and d_state <= scan_cpu_kernel.MAX_STATE and not torch.compiler.is_compiling()
            and scan_cpu_kernel.load() is not None)


class _BiKernelScan(torch.autograd.Function):
    """The fused C kernel, forward and hand-written backward; saves only its inputs."""

    @staticmethod
    def forward(ctx, u, delta, A, Bt, Ct, D, z, bias, lengths, softplus):
        lib = scan_cpu_kernel.load()
        y = scan_cpu_kernel.biscan_fwd(lib, u, delta, A, Bt, Ct, D, z, bias, lengths, softplus)
        ctx.save_for_backward(u, delta, A, Bt, Ct, D, z, bias, lengths)
        ctx.softplus, ctx.lib = softplus, lib
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        u, delta, A, Bt, Ct, D, z, bias, lengths = ctx.saved_tensors
        grads = scan_cpu_kernel.biscan_bwd(ctx.lib, u, delta, A, Bt, Ct, D, z, bias, lengths, ctx.softplus,
                                           dy.float().contiguous())
        return (*grads, None, None)


def bidirectional_scan_by_parts(u, delta, A, Bt, Ct, D=None, z=None, delta_bias=None, lengths=None,
                                delta_softplus=True, scan: Optional[Callable] = None) -> torch.Tensor:
    """The same result from two calls of a per-direction scan (``selective_scan`` signature; default the fast
    one). Shapes as in the module docstring."""
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


def bidirectional_scan(u, delta, A, Bt, Ct, D=None, z=None, delta_bias=None, lengths=None, delta_softplus=True,
                       scan: Optional[Callable] = None) -> torch.Tensor:
    """Both directions at once; ``scan`` (a per-direction scan function) forces the by-parts path.

    Shapes as in the module docstring; float32 inside, y in u's dtype.
    """
    if u.dim() != 4 or u.shape[1] != 2 or delta.shape != u.shape:
        raise ValueError(f"u and delta must be (B, 2, E, L), got {tuple(u.shape)} and {tuple(delta.shape)}")
    bsz, _, dim, length = u.shape
    n = A.shape[-1]
    if tuple(A.shape) != (2, dim, n) or tuple(Bt.shape) != (bsz, 2, length, n) or Ct.shape != Bt.shape:
        raise ValueError(f"A must be (2, E, N) and Bt, Ct (B, 2, L, N); got {tuple(A.shape)}, {tuple(Bt.shape)}, "
                         f"{tuple(Ct.shape)}")
    if scan is not None or not fused_kernel_applies(u, n):
        return bidirectional_scan_by_parts(u, delta, A, Bt, Ct, D, z, delta_bias, lengths, delta_softplus, scan)
    f32 = lambda t: None if t is None else t.float().contiguous()  # noqa: E731
    if z is not None:
        z = z.float()
        if z.stride(2) != 1:
            z = z.contiguous()
    lens = None if lengths is None else lengths.to(device="cpu", dtype=torch.int64).contiguous()
    y = _BiKernelScan.apply(f32(u), f32(delta), f32(A), f32(Bt), f32(Ct), f32(D), z, f32(delta_bias), lens,
                            bool(delta_softplus))
    return y.to(u.dtype)
