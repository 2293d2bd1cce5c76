"""Mamba-1 selective scan for CPU (and, in pure PyTorch, CUDA) tensors.

Argument layout is mamba-ssm's ``selective_scan_fn`` so its CUDA kernel is a drop-in replacement:

    u, delta, z : (B, D, L)      A : (D, N) real, negative      B, C : (B, N, L)
    D, delta_bias : (D,)         ->  y : (B, D, L) in u's dtype

Math (per batch b, channel d, state n):
    delta' = softplus(delta + delta_bias) if delta_softplus else delta + delta_bias
    h_t    = exp(delta'_t A) * h_{t-1} + delta'_t B_t u_t,      h_{-1} = 0
    y_t    = <C_t, h_t> + D u_t;          y = y * silu(z) when z is given
All arithmetic is float32 internally (bfloat16 / float16 inputs are upcast).

Implementations behind :func:`selective_scan` (:func:`scan_implementation` says which one runs):
- "c-kernel": CPU tensors, d_state <= 64, a C compiler (system or zig cc) at first use (``scan_cpu_kernel``): the whole
  scan fused per (batch, channel) row, forward and hand-written backward, threads over channels.
- "torch-chunked": everything else (CUDA without mamba-ssm, no compiler, ``MLMA_SCAN_KERNEL=0``):
  per chunk of TORCH_CHUNK steps, the state-independent terms are computed vectorised and the
  recurrence is one fused multiply-add per step; a custom backward recomputes each chunk's states
  from its saved starting state, so memory is O(B*D*L + B*D*N*L/T) instead of autograd's O(B*D*L*N).
:func:`selective_scan_sequential` is the plain autograd loop kept as the correctness reference.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from . import scan_cpu_kernel

__all__ = ["selective_scan", "selective_scan_sequential", "scan_implementation"]

# Time steps per chunk in the pure-PyTorch path: large enough to amortise per-chunk work, small enough
# that a chunk's (T, B, D, N) working set stays in cache (measured best at 16 on a 2-core AVX-512 CPU).
TORCH_CHUNK = 16


def _check(u, delta, A, B, C, D, z, delta_bias):
    if u.dim() != 3:
        raise ValueError(f"u must be (B, D, L), got {tuple(u.shape)}")
    bsz, dim, length = u.shape
    if length < 1:
        raise ValueError("selective_scan needs L >= 1")
    if delta.shape != u.shape:
        raise ValueError(f"delta {tuple(delta.shape)} must match u {tuple(u.shape)}")
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"A must be (D={dim}, N), got {tuple(A.shape)}")
    n = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if tuple(t.shape) != (bsz, n, length):
            raise ValueError(f"{name} must be (B, N, L) = {(bsz, n, length)}, got {tuple(t.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z {tuple(z.shape)} must match u {tuple(u.shape)}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and tuple(t.shape) != (dim,):
            raise ValueError(f"{name} must be (D,) = ({dim},), got {tuple(t.shape)}")


def _prepare_delta(delta, delta_bias, delta_softplus):
    """(B, D, L) float32 effective step size."""
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def _finish(y, u, D, z):
    """Skip term and gate on the float32 scan output y (B, D, L); returns u's dtype."""
    if D is not None:
        y = y + D.float()[:, None] * u.float()
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(u.dtype)


def selective_scan_sequential(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    delta_bias: Optional[torch.Tensor] = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """Plain loop over time: the correctness reference (and the benchmark's "plain loop" row).

    Shapes as in the module docstring. Differentiable through ordinary autograd, which keeps every
    step's state alive: O(B*D*L*N) memory for the backward pass.
    """
    _check(u, delta, A, B, C, D, z, delta_bias)
    delta = _prepare_delta(delta, delta_bias, delta_softplus)
    A32, B32, C32, u32 = A.float(), B.float(), C.float(), u.float()
    bsz, dim, length = u.shape
    # Everything that does not depend on the state is computed up front, so the loop is one
    # multiply-add and one contraction per step. unbind (not indexing) gives per-step views whose
    # backward is a single stack rather than a full-size zero tensor per step.
    dA = torch.exp(delta.unsqueeze(-1) * A32[:, None, :])  # (B, D, L, N)
    dBu = (delta * u32).unsqueeze(-1) * B32.transpose(1, 2).unsqueeze(1)  # (B, D, L, N)
    h = u32.new_zeros(bsz, dim, A.shape[1])
    ys = []
    for a_t, b_t, c_t in zip(dA.unbind(2), dBu.unbind(2), C32.unbind(2)):
        h = a_t * h + b_t
        ys.append(torch.matmul(h, c_t.unsqueeze(-1)).squeeze(-1))  # (B, D)
    y = torch.stack(ys, dim=-1)  # (B, D, L)
    return _finish(y, u, D, z)


def _recurrence_(hs: torch.Tensor, a: torch.Tensor, h0: torch.Tensor) -> None:
    """In place: hs[t] <- a[t] * hs[t-1] + hs[t] with hs[-1] = h0. hs, a: (T, ...), h0: hs[0]'s shape.

    One fused multiply-add per step; everything that does not depend on the state is computed
    vectorised over the chunk before this loop.
    """
    hs[0].addcmul_(a[0], h0)
    for t in range(1, hs.shape[0]):
        hs[t].addcmul_(a[t], hs[t - 1])


def _torch_forward(u, delta, A, B, C, chunk, keep_states):
    """Pure-PyTorch chunked forward. u, delta (B, D, L); A (D, N); B, C (B, N, L), float32.

    Returns y (B, D, L) and, if keep_states, the state entering each chunk (list of (B, D, N)).
    Peak extra memory is two (T, B, D, N) chunk buffers.
    """
    bsz, dim, length = u.shape
    # Time-major contiguous copies (L, B, D) / (L, B, N): the per-chunk products then come out with each
    # step one contiguous slab. (Permuted views instead make every product inherit a layout with time
    # innermost, and the per-step multiply-add becomes a strided walk, ~8x slower.)
    tm = lambda t: t.permute(2, 0, 1).contiguous()  # noqa: E731
    dl, dul, Bl, Cl = tm(delta), tm(delta * u), tm(B), tm(C)
    y = u.new_empty(length, bsz, dim)
    h = u.new_zeros(bsz, dim, A.shape[1])
    starts = []
    for s in range(0, length, chunk):
        e = min(s + chunk, length)
        if keep_states:
            starts.append(h)
        a = torch.exp(dl[s:e, :, :, None] * A)  # (T, B, D, N)
        hs = dul[s:e, :, :, None] * Bl[s:e, :, None, :]  # (T, B, D, N), becomes the states
        _recurrence_(hs, a, h)
        h = hs[-1].clone()  # do not pin the whole chunk buffer
        y[s:e] = torch.matmul(hs, Cl[s:e, :, :, None]).squeeze(-1)
    return y.permute(1, 2, 0), starts


def _torch_backward(u, delta, A, B, C, dy, starts, chunk):
    """Gradients (du, ddelta, dA, dB, dC) of :func:`_torch_forward`, chunk by chunk in reverse.

    Each chunk's states are recomputed from its saved starting state; the adjoint g_t = dL/dh_t
    obeys g_t = dy_t C_t + a_{t+1} g_{t+1}, the same recurrence run backwards.
    """
    bsz, dim, length = u.shape
    tm = lambda t: t.permute(2, 0, 1).contiguous()  # noqa: E731  time-major, see _torch_forward
    dl, ul, dyl = tm(delta), tm(u), tm(dy)  # (L, B, D)
    dul = dl * ul
    Bl, Cl = tm(B), tm(C)  # (L, B, N)
    du = u.new_empty(length, bsz, dim)
    ddelta = u.new_empty(length, bsz, dim)
    dB = u.new_empty(length, bsz, A.shape[1])
    dC = u.new_empty(length, bsz, A.shape[1])
    dA = torch.zeros_like(A)
    carry = None  # a_{t+1} * g_{t+1} for the first step after this chunk
    for c in reversed(range(len(starts))):
        s = c * chunk
        e = min(s + chunk, length)
        a = torch.exp(dl[s:e, :, :, None] * A)  # (T, B, D, N)
        hs = dul[s:e, :, :, None] * Bl[s:e, :, None, :]
        _recurrence_(hs, a, starts[c])
        dC[s:e] = torch.matmul(dyl[s:e, :, None, :], hs).squeeze(2)  # sum_d dy h
        g = dyl[s:e, :, :, None] * Cl[s:e, :, None, :]  # (T, B, D, N)
        if carry is not None:
            g[-1] += carry
        for t in range(e - s - 2, -1, -1):
            g[t].addcmul_(a[t + 1], g[t + 1])
        carry = a[0] * g[0]
        gB = torch.matmul(g, Bl[s:e, :, :, None]).squeeze(-1)  # (T, B, D): sum_n g B
        dB[s:e] = torch.matmul(dul[s:e, :, None, :], g).squeeze(2)  # sum_d g delta u
        # dL/d(delta_t A) = g_t * h_{t-1} * a_t, with h_{t-1} the previous state (starts[c] at t = s)
        x = g.mul_(a)
        x[1:] *= hs[:-1]
        x[0] *= starts[c]
        # elementwise + reductions over contiguous dims: a matmul form here would be a bmm over
        # T*B*D batches of 1x1 products, or force a transposing copy of x
        ddelta[s:e] = (x * A).sum(-1) + ul[s:e] * gB
        dA += (x * dl[s:e, :, :, None]).sum((0, 1))
        du[s:e] = dl[s:e] * gB
    to_bdl = lambda t: t.permute(1, 2, 0)  # noqa: E731
    return to_bdl(du), to_bdl(ddelta), dA, dB.permute(1, 2, 0), dC.permute(1, 2, 0)


class _KernelScan(torch.autograd.Function):
    """The whole scan (softplus, recurrence, skip, gate) in the compiled CPU kernel; saves only inputs."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus):
        lib = scan_cpu_kernel.load()
        Bt, Ct = B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()  # (B, L, N): a step is contiguous
        y = scan_cpu_kernel.scan_fwd(lib, u, delta, A, Bt, Ct, D, z, delta_bias, softplus)
        ctx.save_for_backward(u, delta, A, Bt, Ct, D, z, delta_bias)
        ctx.softplus, ctx.lib = softplus, lib  # the backward runs in the library that ran the forward
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        u, delta, A, Bt, Ct, D, z, delta_bias = ctx.saved_tensors
        du, ddelta, dA, dBt, dCt, dD, dz, dbias = scan_cpu_kernel.scan_bwd(
            ctx.lib, u, delta, A, Bt, Ct, D, z, delta_bias, ctx.softplus, dy.float().contiguous())
        return du, ddelta, dA, dBt.transpose(1, 2), dCt.transpose(1, 2), dD, dz, dbias, None


class _TorchScanCore(torch.autograd.Function):
    """Pure-PyTorch y = scan(u, delta, A, B, C) without skip or gate; float32; O(B*D*N*L/T) saved state."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C):
        y, starts = _torch_forward(u, delta, A, B, C, TORCH_CHUNK, keep_states=True)
        ctx.save_for_backward(u, delta, A, B, C)
        ctx.starts = starts
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        u, delta, A, B, C = ctx.saved_tensors
        grads = _torch_backward(u, delta, A, B, C, dy.float().contiguous(), ctx.starts, TORCH_CHUNK)
        ctx.starts = None
        return grads


def _kernel_for(*tensors):
    """The compiled kernel when every given tensor is on the CPU and the kernel is available."""
    if all(t is None or t.device.type == "cpu" for t in tensors):
        return scan_cpu_kernel.load()
    return None


def scan_implementation(device="cpu") -> str:
    """Which implementation :func:`selective_scan` uses on ``device``: "c-kernel" or "torch-chunked"."""
    return "c-kernel" if _kernel_for(torch.empty(0, device=device)) is not None else "torch-chunked"


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    delta_bias: Optional[torch.Tensor] = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """Fast selective scan; same signature, shapes and result as :func:`selective_scan_sequential`.

    u, delta, z (B, D, L); A (D, N); B, C (B, N, L); D, delta_bias (D,) -> y (B, D, L), u's dtype.
    On CPU it runs a compiled C kernel (built on first use, see ``scan_cpu_kernel``) and otherwise a
    chunked pure-PyTorch scan; both have hand-written backward passes that recompute states instead
    of storing them, so memory stays O(B * D * L) plus per-chunk buffers.
    """
    _check(u, delta, A, B, C, D, z, delta_bias)
    f32 = lambda t: None if t is None else t.float().contiguous()  # noqa: E731
    if (u.numel() > 0 and A.shape[1] <= scan_cpu_kernel.MAX_STATE
            and _kernel_for(u, delta, A, B, C, D, z, delta_bias) is not None):
        y = _KernelScan.apply(f32(u), f32(delta), f32(A), f32(B), f32(C), f32(D), f32(z), f32(delta_bias),
                              bool(delta_softplus))
        return y.to(u.dtype)
    delta = _prepare_delta(delta, delta_bias, delta_softplus).contiguous()
    y = _TorchScanCore.apply(f32(u), delta, f32(A), f32(B), f32(C))
    return _finish(y, u, D, z)
