"""Mamba-2 SSD: the chunked scan against an independent float64 loop written here."""

import pytest
import torch
import torch.nn.functional as F

from scan_helpers import assert_close_scaled, import_mamba_ssm_ref
from mlma_cli.model.ssd import ssd_chunk_scan, ssd_sequential


def naive_ssd(x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """Independent reference: float64, per-head loop over time, head h reads group h // (H // G)."""
    x, dt, A, B, C = (t.double() for t in (x, dt, A, B, C))
    if dt_bias is not None:
        dt = dt + dt_bias.double()
    if dt_softplus:
        dt = F.softplus(dt)
    bsz, length, nheads, headdim = x.shape
    per_group = nheads // B.shape[2]
    y = torch.zeros(bsz, length, nheads, headdim, dtype=torch.float64)
    for h in range(nheads):
        g = h // per_group
        state = torch.zeros(bsz, headdim, B.shape[-1], dtype=torch.float64)
        for t in range(length):
            a = torch.exp(dt[:, t, h] * A[h])[:, None, None]
            state = a * state + dt[:, t, h, None, None] * x[:, t, h, :, None] * B[:, t, g, None, :]
            y[:, t, h] = (state * C[:, t, g, None, :]).sum(-1)
    if D is not None:
        Dd = D.double()
        y = y + (Dd[:, None] if Dd.dim() == 1 else Dd) * x
    if z is not None:
        y = y * F.silu(z.double())
    return y


def make_inputs(bsz=2, length=9, nheads=4, headdim=3, ngroups=1, dstate=5, seed=0, D_shape=None,
                z=False, dt_bias=False):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    kw = dict(
        x=r(bsz, length, nheads, headdim),
        dt=r(bsz, length, nheads) * 0.5 - 1.0,
        A=-(torch.rand(nheads, generator=g) * 3 + 0.1),
        B=r(bsz, length, ngroups, dstate),
        C=r(bsz, length, ngroups, dstate),
    )
    if D_shape == "h":
        kw["D"] = r(nheads)
    elif D_shape == "hp":
        kw["D"] = r(nheads, headdim)
    if z:
        kw["z"] = r(bsz, length, nheads, headdim)
    if dt_bias:
        kw["dt_bias"] = r(nheads) * 0.5
    return kw


def check(fn, kw, chunk_size, tol=1e-5):
    names = list(kw)
    leaves = {k: v.clone().requires_grad_() for k, v in kw.items()}
    y = fn(**leaves, chunk_size=chunk_size, dt_softplus=True)
    assert y.shape == kw["x"].shape and y.dtype == torch.float32
    ref_leaves = {k: v.detach().double().requires_grad_() for k, v in kw.items()}
    ref = naive_ssd(**ref_leaves, dt_softplus=True)
    assert_close_scaled(y, ref, tol, "values")
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(5))
    grads = torch.autograd.grad(y, [leaves[k] for k in names], dy)
    ref_grads = torch.autograd.grad(ref, [ref_leaves[k] for k in names], dy.double())
    for k, gr, rg in zip(names, grads, ref_grads):
        assert_close_scaled(gr, rg, tol, f"grad {k}")


@pytest.mark.parametrize("chunk", [1, 4, 16])
@pytest.mark.parametrize("length_kind", ["1", "7", "q-1", "q", "q+1", "3q+5"])
def test_chunked_ssd_matches_naive(chunk, length_kind):
    q = chunk
    length = {"1": 1, "7": 7, "q-1": max(q - 1, 1), "q": q, "q+1": q + 1, "3q+5": 3 * q + 5}[length_kind]
    kw = make_inputs(length=length, D_shape="h", z=True, dt_bias=True, seed=length + chunk)
    check(ssd_chunk_scan, kw, chunk)


@pytest.mark.parametrize("ngroups", [1, 2, 4])
@pytest.mark.parametrize("D_shape", [None, "h", "hp"])
def test_groups_and_skip_shapes(ngroups, D_shape):
    kw = make_inputs(length=21, ngroups=ngroups, D_shape=D_shape, z=D_shape is not None, seed=ngroups)
    check(ssd_chunk_scan, kw, 8)


def test_sequential_reference_matches_naive():
    kw = make_inputs(length=13, ngroups=2, D_shape="hp", z=True, dt_bias=True)
    check(ssd_sequential, kw, 4)


def test_long_sequence_strong_decay_is_finite():
    # Cumulative decays far below float32's exp range across the sequence; chunks keep them local.
    kw = make_inputs(length=70, seed=3)
    kw["dt"] = torch.rand(kw["dt"].shape) * 10 + 5  # softplus(dt) up to ~15, A down to -3.1
    check(ssd_chunk_scan, kw, 16)


def test_bfloat16_inputs():
    kw = make_inputs(length=19, ngroups=2, D_shape="h", z=True, dt_bias=True)
    bf = {k: v.to(torch.bfloat16).requires_grad_() for k, v in kw.items()}
    y = ssd_chunk_scan(**bf, chunk_size=8, dt_softplus=True)
    assert y.dtype == torch.bfloat16
    ref = naive_ssd(**{k: v.detach() for k, v in bf.items()}, dt_softplus=True)
    assert_close_scaled(y.float(), ref, 1e-2, "bf16 values")
    y.float().pow(2).sum().backward()
    for k, v in bf.items():
        assert v.grad is not None and v.grad.dtype == torch.bfloat16 and torch.isfinite(v.grad.float()).all(), k


def test_input_validation():
    kw = make_inputs(length=5, nheads=4, ngroups=1)
    with pytest.raises(ValueError, match="must divide"):
        ssd_chunk_scan(**dict(kw, B=torch.randn(2, 5, 3, 5), C=torch.randn(2, 5, 3, 5)), chunk_size=4)
    with pytest.raises(ValueError, match="chunk_size"):
        ssd_chunk_scan(**kw, chunk_size=0)


@pytest.mark.parametrize("ngroups", [1, 2])
def test_matches_mamba_ssm_chunk_scan_combined_ref(ngroups):
    ref_fn = import_mamba_ssm_ref("mamba_ssm.ops.triton.ssd_combined", "ssd_chunk_scan_combined_ref")
    # mamba-ssm's reference needs L to be a multiple of the chunk size
    kw = make_inputs(length=24, ngroups=ngroups, D_shape="h", z=True, dt_bias=True, seed=9)
    a = {k: v.clone().requires_grad_() for k, v in kw.items()}
    b = {k: v.clone().requires_grad_() for k, v in kw.items()}
    y = ssd_chunk_scan(**a, chunk_size=8, dt_softplus=True)
    y_ref = ref_fn(**b, chunk_size=8, dt_softplus=True)
    assert_close_scaled(y, y_ref, 1e-5, "values vs mamba-ssm")
    dy = torch.randn(y.shape)
    (y * dy).sum().backward()
    (y_ref * dy).sum().backward()
    for k in kw:
        assert_close_scaled(a[k].grad, b[k].grad, 1e-5, f"grad {k} vs mamba-ssm")
