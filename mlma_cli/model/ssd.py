"""Mamba-2 state-space duality (SSD) scan in pure PyTorch (CPU and CUDA tensors).

Argument layout and semantics are mamba-ssm's ``mamba_chunk_scan_combined`` (its Triton kernel is a
drop-in replacement):

    x  : (B, L, H, P)     dt : (B, L, H)      A : (H,) negative scalar decay per head
    B, C : (B, L, G, N)   with G groups dividing H; head h reads group h // (H // G)
    D  : (H,) or (H, P)   z : (B, L, H, P)    dt_bias : (H,)       ->  y : (B, L, H, P) in x's dtype

Math (per batch b, head h; state h_t is (P, N)):
    dt'  = softplus(dt + dt_bias) if dt_softplus else dt + dt_bias
    h_t  = exp(dt'_t A) h_{t-1} + dt'_t x_t B_t^T,        h_{-1} = 0
    y_t  = h_t C_t + D x_t;           y = y * silu(z) when z is given
All arithmetic is float32 internally.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["ssd_chunk_scan", "ssd_sequential"]


def _check(x, dt, A, B, C, D, z, dt_bias):
    if x.dim() != 4:
        raise ValueError(f"x must be (B, L, H, P), got {tuple(x.shape)}")
    bsz, length, nheads, headdim = x.shape
    if length < 1:
        raise ValueError("ssd scan needs L >= 1")
    if tuple(dt.shape) != (bsz, length, nheads):
        raise ValueError(f"dt must be (B, L, H) = {(bsz, length, nheads)}, got {tuple(dt.shape)}")
    if tuple(A.shape) != (nheads,):
        raise ValueError(f"A must be (H,) = ({nheads},), got {tuple(A.shape)}")
    if B.dim() != 4 or B.shape[:2] != (bsz, length) or B.shape != C.shape:
        raise ValueError(f"B and C must be (B, L, G, N) with B={bsz}, L={length}; got {tuple(B.shape)}, {tuple(C.shape)}")
    if nheads % B.shape[2] != 0:
        raise ValueError(f"groups G={B.shape[2]} must divide heads H={nheads}")
    if D is not None and tuple(D.shape) not in ((nheads,), (nheads, headdim)):
        raise ValueError(f"D must be (H,) or (H, P), got {tuple(D.shape)}")
    if z is not None and z.shape != x.shape:
        raise ValueError(f"z {tuple(z.shape)} must match x {tuple(x.shape)}")
    if dt_bias is not None and tuple(dt_bias.shape) != (nheads,):
        raise ValueError(f"dt_bias must be (H,), got {tuple(dt_bias.shape)}")


def _prepare_dt(dt, dt_bias, dt_softplus):
    """(B, L, H) float32 effective step size."""
    dt = dt.float()
    if dt_bias is not None:
        dt = dt + dt_bias.float()
    if dt_softplus:
        dt = F.softplus(dt)
    return dt


def _finish(y, x, D, z):
    """Skip term and gate on the float32 output y (B, L, H, P); returns x's dtype."""
    if D is not None:
        Df = D.float()
        y = y + (Df[:, None] if Df.dim() == 1 else Df) * x.float()
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(x.dtype)


def ssd_sequential(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: Optional[int] = None,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    dt_bias: Optional[torch.Tensor] = None,
    dt_softplus: bool = False,
) -> torch.Tensor:
    """Plain loop over time: the correctness reference for :func:`ssd_chunk_scan`.

    Same arguments (``chunk_size`` is accepted and ignored so the two are interchangeable).
    """
    _check(x, dt, A, B, C, D, z, dt_bias)
    bsz, length, nheads, headdim = x.shape
    rep = nheads // B.shape[2]
    dt = _prepare_dt(dt, dt_bias, dt_softplus)  # (B, L, H)
    xf = x.float()
    Bh = B.float().repeat_interleave(rep, dim=2)  # (B, L, H, N)
    Ch = C.float().repeat_interleave(rep, dim=2)
    decay = torch.exp(dt * A.float())  # (B, L, H)
    h = xf.new_zeros(bsz, nheads, headdim, B.shape[-1])
    ys = []
    # unbind (not indexing) so autograd's backward is one stack instead of a full-size zero per step
    for a_t, dt_t, x_t, b_t, c_t in zip(decay.unbind(1), dt.unbind(1), xf.unbind(1), Bh.unbind(1), Ch.unbind(1)):
        h = a_t[:, :, None, None] * h + (dt_t[:, :, None] * x_t).unsqueeze(-1) * b_t[:, :, None, :]
        ys.append(torch.matmul(h, c_t.unsqueeze(-1)).squeeze(-1))  # (B, H, P)
    y = torch.stack(ys, dim=1)  # (B, L, H, P)
    return _finish(y, x, D, z)


def ssd_chunk_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    dt_bias: Optional[torch.Tensor] = None,
    dt_softplus: bool = False,
) -> torch.Tensor:
    """Chunked SSD: quadratic (attention-like) form inside each chunk, state recurrence between chunks.

    Shapes as in the module docstring; any L >= 1 (padded internally to a multiple of ``chunk_size``).
    Differentiable through autograd; memory O(B * L * H * chunk_size) for the intra-chunk kernel.
    """
    _check(x, dt, A, B, C, D, z, dt_bias)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    bsz, length, nheads, headdim = x.shape
    ngroups, dstate = B.shape[2], B.shape[3]
    rep = nheads // ngroups
    Q = int(chunk_size)
    nchunks = -(-length // Q)
    pad = nchunks * Q - length

    dtf = _prepare_dt(dt, dt_bias, dt_softplus)
    xf, Bf, Cf = x.float(), B.float(), C.float()
    if pad:
        # Zero step size and zero input on the tail: it neither decays nor feeds the state, and being
        # at the end it cannot reach any real output anyway.
        dtf = F.pad(dtf, (0, 0, 0, pad))
        xf = F.pad(xf, (0, 0, 0, 0, 0, pad))
        Bf = F.pad(Bf, (0, 0, 0, 0, 0, pad))
        Cf = F.pad(Cf, (0, 0, 0, 0, 0, pad))

    # Chunked views with heads split as (G, R): head h = g * R + r reads group g.
    dtc = dtf.view(bsz, nchunks, Q, ngroups, rep).permute(0, 1, 3, 4, 2)  # (B, c, G, R, Q)
    xc = xf.view(bsz, nchunks, Q, ngroups, rep, headdim).permute(0, 1, 3, 4, 2, 5)  # (B, c, G, R, Q, P)
    Bc = Bf.view(bsz, nchunks, Q, ngroups, dstate).permute(0, 1, 3, 2, 4)  # (B, c, G, Q, N)
    Cc = Cf.view(bsz, nchunks, Q, ngroups, dstate).permute(0, 1, 3, 2, 4)  # (B, c, G, Q, N)
    Ah = A.float().view(ngroups, rep, 1)

    dA = dtc * Ah  # (B, c, G, R, Q) log-decay of each step
    cum = torch.cumsum(dA, dim=-1)  # log-decay from the chunk start through step l
    # seg[l, s] = sum_{s < k <= l} dA_k, summed directly rather than as cum_l - cum_s: the difference
    # of two large cumulative sums loses float32 precision when decays are strong. Upper triangle is
    # -inf in the exponent (not masked after exp), so exp never overflows and no inf * 0 reaches autograd.
    idx = torch.arange(Q, device=x.device)
    below = idx[:, None] > idx[None, :]  # [k, s]: k > s
    seg = torch.cumsum(dA.unsqueeze(-1).expand(*dA.shape, Q).masked_fill(~below, 0.0), dim=-2)  # (..., Q, Q)
    decay = torch.exp(seg.masked_fill(idx[:, None] < idx[None, :], float("-inf")))  # [l, s], l >= s
    # Intra-chunk: y_l = sum_{s<=l} (C_l . B_s) exp(seg[l, s]) dt_s x_s
    CB = torch.matmul(Cc, Bc.transpose(-1, -2)).unsqueeze(3)  # (B, c, G, 1, Q, Q)
    dtx = xc * dtc.unsqueeze(-1)  # (B, c, G, R, Q, P)
    y = torch.matmul(CB * decay, dtx)  # (B, c, G, R, Q, P)

    # State contributed by each chunk alone, at its end: sum_s exp(cum_end - cum_s) dt_s x_s B_s^T.
    w = decay[..., -1, :]  # (B, c, G, R, Q) = exp(sum_{k > s} dA_k)
    states = torch.matmul((dtx * w.unsqueeze(-1)).transpose(-1, -2), Bc.unsqueeze(3))  # (B, c, G, R, P, N)
    # Pass states between chunks: a short loop over chunks (exact; no cumsum differences across the
    # whole sequence, which would lose precision for long inputs).
    chunk_decay = torch.exp(cum[..., -1])  # (B, c, G, R)
    h = states.new_zeros(bsz, ngroups, rep, headdim, dstate)
    prev = []
    for c in range(nchunks):
        prev.append(h)
        if c + 1 < nchunks:
            h = chunk_decay[:, c, ..., None, None] * h + states[:, c]
    prev_states = torch.stack(prev, dim=1)  # (B, c, G, R, P, N) state entering each chunk
    # Inter-chunk: y_l += exp(cum_l) C_l h_prev.
    y_prev = torch.matmul(Cc.unsqueeze(3), prev_states.transpose(-1, -2))  # (B, c, G, R, Q, P)
    y = y + y_prev * torch.exp(cum).unsqueeze(-1)

    y = y.permute(0, 1, 4, 2, 3, 5).reshape(bsz, nchunks * Q, nheads, headdim)[:, :length]
    return _finish(y, x, D, z)
