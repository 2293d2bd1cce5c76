"""Mamba-1 selective scan: the fast paths against an independent float64 loop written here."""

import pytest
import torch
import torch.nn.functional as F

from scan_helpers import assert_close_scaled, import_mamba_ssm_ref
from mlma_cli.model import scan as scan_mod
from mlma_cli.model import scan_cpu_kernel
from mlma_cli.model.scan import TORCH_CHUNK, selective_scan, selective_scan_sequential

T = TORCH_CHUNK
LENGTHS = [1, 7, T - 1, T, T + 1, 3 * T + 5]
OPTION_SETS = {
    "bare": dict(),
    "all": dict(D=True, z=True, delta_bias=True, delta_softplus=True),
    "D+softplus": dict(D=True, delta_softplus=True),
    "z+bias": dict(z=True, delta_bias=True),
}


def naive_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Independent reference: float64, one state update per step, nothing precomputed."""
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    bsz, dim, length = u.shape
    h = torch.zeros(bsz, dim, A.shape[1], dtype=torch.float64)
    ys = []
    for t in range(length):
        dt = delta[:, :, t, None]  # (B, D, 1)
        h = torch.exp(dt * A) * h + dt * u[:, :, t, None] * B[:, None, :, t]
        ys.append((h * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D.double()[:, None] * u
    if z is not None:
        y = y * F.silu(z.double())
    return y


def make_inputs(bsz=2, dim=4, n=16, length=9, seed=0, options=None, delta_scale=0.5):
    """Random inputs in mamba-ssm layout; A negative (S4D-real-like), optional tensors per options."""
    g = torch.Generator().manual_seed(seed)
    options = options or {}
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    kw = dict(
        u=r(bsz, dim, length),
        delta=r(bsz, dim, length) * delta_scale + (0.0 if options.get("delta_softplus") else 1.0),
        A=-(torch.rand(dim, n, generator=g) * 4 + 0.1),
        B=r(bsz, n, length),
        C=r(bsz, n, length),
    )
    if not options.get("delta_softplus"):
        kw["delta"] = kw["delta"].abs() * 0.3  # a positive step size when no softplus makes it one
    if options.get("D"):
        kw["D"] = r(dim)
    if options.get("z"):
        kw["z"] = r(bsz, dim, length)
    if options.get("delta_bias"):
        kw["delta_bias"] = r(dim) * 0.5
        if not options.get("delta_softplus"):
            kw["delta_bias"] = kw["delta_bias"].abs()  # keep delta + bias a positive step size
    return kw


@pytest.fixture(params=["kernel", "torch"])
def impl(request, monkeypatch):
    """Run a test once with the compiled CPU kernel and once with the pure-PyTorch chunked scan."""
    if request.param == "kernel":
        if scan_cpu_kernel.load() is None:
            pytest.skip("C kernel unavailable here (no compiler, or MLMA_SCAN_KERNEL=0); the torch path is tested")
    else:
        monkeypatch.setattr(scan_cpu_kernel, "load", lambda: None)
    assert scan_mod.scan_implementation("cpu") == ("c-kernel" if request.param == "kernel" else "torch-chunked")
    return request.param


def check_against_naive(fn, kw, tol=1e-5):
    flags = {k: v for k, v in kw.items() if isinstance(v, bool)}
    names = [k for k in kw if k not in flags]
    leaves = {k: kw[k].clone().requires_grad_() for k in names}
    y = fn(**leaves, **flags)
    ref = naive_scan(**{k: v.detach() for k, v in leaves.items()}, **flags)
    assert y.shape == ref.shape and y.dtype == torch.float32
    assert_close_scaled(y, ref, tol, "values")
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(7))
    grads = torch.autograd.grad(y, [leaves[k] for k in names], dy)
    ref_leaves = {k: v.detach().double().requires_grad_() for k, v in leaves.items()}
    ref_y = naive_scan(**ref_leaves, **flags)
    ref_grads = torch.autograd.grad(ref_y, [ref_leaves[k] for k in names], dy.double())
    for k, g, rg in zip(names, grads, ref_grads):
        assert g is not None and g.shape == rg.shape, k
        assert_close_scaled(g, rg, tol, f"grad {k}")


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("opt", list(OPTION_SETS))
def test_fast_scan_matches_naive(impl, length, opt):
    kw = make_inputs(length=length, options=OPTION_SETS[opt], seed=length)
    kw.update({k: v for k, v in OPTION_SETS[opt].items() if k == "delta_softplus"})
    check_against_naive(selective_scan, kw)


@pytest.mark.parametrize("n", [1, 5, 8, 24, 70])  # 70: above the kernel's state limit, torch path
def test_other_state_sizes(impl, n):
    kw = make_inputs(n=n, length=2 * T + 3, options=OPTION_SETS["all"], seed=n)
    check_against_naive(selective_scan, dict(kw, delta_softplus=True))


@pytest.mark.parametrize("length", [1, T + 1, 3 * T + 5])
def test_sequential_reference_matches_naive(length):
    kw = make_inputs(length=length, options=OPTION_SETS["all"], seed=3)
    check_against_naive(selective_scan_sequential, dict(kw, delta_softplus=True))


def test_non_contiguous_inputs(impl):
    # B and C usually arrive as transposed slices of x_proj's output; u and delta as transposes too.
    kw = make_inputs(length=T + 3, options=OPTION_SETS["all"])
    big = torch.randn(2, T + 3, 40)
    kw["B"] = big[:, :, 3:19].transpose(1, 2)
    kw["C"] = big[:, :, 20:36].transpose(1, 2)
    kw["u"] = kw["u"].transpose(1, 2).contiguous().transpose(1, 2)
    assert not kw["B"].is_contiguous() and not kw["u"].is_contiguous()
    check_against_naive(selective_scan, dict(kw, delta_softplus=True))


def test_extreme_decays_stay_finite(impl):
    # delta * A down to about -700: decays underflow; values and gradients must stay exact and finite.
    kw = make_inputs(length=2 * T + 1, dim=3)
    kw["delta"] = torch.rand(kw["delta"].shape) * 40
    kw["A"] = -torch.linspace(0.01, 16.0, 16).repeat(3, 1)
    check_against_naive(selective_scan, kw)


def test_softplus_over_a_wide_range(impl):
    # The kernel's own softplus/exp/log: delta + bias from -30 to 30 hits all three branches.
    kw = make_inputs(length=3 * T, dim=5, options=OPTION_SETS["all"])
    kw["delta"] = torch.linspace(-30, 30, kw["delta"].numel()).reshape(kw["delta"].shape)
    kw["A"] = kw["A"] * 0.05  # keep decays moderate so the comparison is about softplus itself
    check_against_naive(selective_scan, dict(kw, delta_softplus=True))


def test_bfloat16_inputs(impl):
    kw = make_inputs(length=T + 5, options=OPTION_SETS["all"])
    bf = {k: v.to(torch.bfloat16).requires_grad_() for k, v in kw.items()}
    y = selective_scan(**bf, delta_softplus=True)
    assert y.dtype == torch.bfloat16
    ref = naive_scan(**{k: v.detach() for k, v in bf.items()}, delta_softplus=True)
    assert_close_scaled(y.float(), ref, 1e-2, "bf16 values")  # bf16 output rounding, 8 bits of mantissa
    y.float().pow(2).sum().backward()
    for k, v in bf.items():
        assert v.grad is not None and v.grad.dtype == torch.bfloat16 and torch.isfinite(v.grad.float()).all(), k


def test_input_validation():
    kw = make_inputs(length=5)
    with pytest.raises(ValueError, match="A must be"):
        selective_scan(**dict(kw, A=kw["A"][:, :3].t()))
    with pytest.raises(ValueError, match="B must be"):
        selective_scan(**dict(kw, B=kw["B"][:, :, :4]))


def test_kernel_builds_where_a_compiler_exists(monkeypatch):
    # The test environment always has one (the dev extra brings zig cc), and the fast path must not
    # silently degrade to the fallback.
    assert scan_cpu_kernel.compiler_candidates(), "no C compiler and no ziglang: pip install -e .[dev]"
    monkeypatch.delenv("MLMA_SCAN_KERNEL", raising=False)
    monkeypatch.setattr(scan_cpu_kernel, "_tried", False)
    monkeypatch.setattr(scan_cpu_kernel, "_lib", None)
    assert scan_cpu_kernel.load() is not None
    assert scan_cpu_kernel.built_with() == scan_cpu_kernel.compiler_candidates()[0][0]


def test_without_system_compiler_zig_cc_from_pypi_is_used(monkeypatch, tmp_path):
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no cc, gcc or clang
    assert [label for label, _ in scan_cpu_kernel.compiler_candidates()] == ["zig cc (ziglang from PyPI)"]
    monkeypatch.setenv("CC", "my-cc --flag")
    assert scan_cpu_kernel.compiler_candidates()[0][1] == ["my-cc", "--flag"]


@pytest.mark.parametrize("opt", ["all", "z+bias"])
def test_kernel_built_by_zig_cc_matches_naive(monkeypatch, opt):
    """The kernel as the ziglang wheel's compiler builds it (first build ~5 s, then cached)."""
    label, command = scan_cpu_kernel.compiler_candidates()[-1]
    assert label.startswith("zig cc"), "the dev extra installs ziglang"
    lib = scan_cpu_kernel.build_with(command, label)
    assert lib is not None, "zig cc failed to build the scan kernel (see the log)"
    monkeypatch.setattr(scan_cpu_kernel, "_lib", lib)
    monkeypatch.setattr(scan_cpu_kernel, "_tried", True)
    kw = make_inputs(length=3 * T + 5, options=OPTION_SETS[opt], seed=5)
    check_against_naive(selective_scan, dict(kw, delta_softplus=OPTION_SETS[opt].get("delta_softplus", False)))


def test_kernel_can_be_disabled(monkeypatch):
    monkeypatch.setenv("MLMA_SCAN_KERNEL", "0")
    monkeypatch.setattr(scan_cpu_kernel, "_tried", False)
    monkeypatch.setattr(scan_cpu_kernel, "_lib", None)
    assert scan_cpu_kernel.load() is None
    assert scan_mod.scan_implementation("cpu") == "torch-chunked"
    kw = make_inputs(length=T + 2)
    check_against_naive(selective_scan, kw)


@pytest.mark.parametrize("opt", ["bare", "all"])
def test_matches_mamba_ssm_selective_scan_ref(opt):
    ref_fn = import_mamba_ssm_ref("mamba_ssm.ops.selective_scan_interface", "selective_scan_ref")
    kw = make_inputs(length=3 * T + 5, options=OPTION_SETS[opt], seed=11)
    flags = dict(delta_softplus=OPTION_SETS[opt].get("delta_softplus", False))
    a = {k: v.clone().requires_grad_() for k, v in kw.items()}
    b = {k: v.clone().requires_grad_() for k, v in kw.items()}
    y = selective_scan(**a, **flags)
    y_ref = ref_fn(**b, **flags)
    assert_close_scaled(y, y_ref, 1e-5, "values vs mamba-ssm")
    dy = torch.randn(y.shape)
    (y * dy).sum().backward()
    (y_ref * dy).sum().backward()
    for k in kw:
        assert_close_scaled(a[k].grad, b[k].grad, 1e-5, f"grad {k} vs mamba-ssm")


def test_kernel_source_ships_as_package_data():
    """The C kernel is a real file next to its loader, listed as package data, so wheels and editable installs
    both carry it (a wheel built from this tree was checked to contain and compile it)."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    from pathlib import Path

    src = scan_cpu_kernel._C_PATH
    assert src.name == "scan_cpu_kernel.c" and "mlma_scan_fwd" in src.read_text()
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "model/scan_cpu_kernel.c" in pyproject["tool"]["setuptools"]["package-data"]["mlma_cli"]
