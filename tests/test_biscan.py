"""The bidirectional mixer's time-major C kernels (both directions' scans in one call, the backward one reversed within
each length by visiting order; both directions' conv + SiLU in one call), values and gradients, against the same math
by parts: gathered reversals around a float64 step-by-step scan, per-direction convs."""
import pytest
import torch
import torch.nn.functional as F

from mlma_cli.model import biscan, scan_cpu_kernel
from mlma_cli.model.masking import reverse_index, reverse_time, zero_padding
from mlma_cli.model.scan import selective_scan

from scan_helpers import assert_close_scaled
from test_scan import naive_scan

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_inputs(bsz=3, dim=6, n=16, length=23, seed=0, z=True, D=True, bias=True, softplus=True):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    kw = dict(u=r(bsz, 2, dim, length), delta=r(bsz, 2, dim, length) * 0.5 + (0.0 if softplus else 1.0),
              A=-(torch.rand(2, dim, n, generator=g) * 4 + 0.1), Bt=r(bsz, 2, length, n), Ct=r(bsz, 2, length, n))
    if not softplus:
        kw["delta"] = kw["delta"].abs()
    if D:
        kw["D"] = r(2, dim)
    if z:
        kw["z"] = r(bsz, length, dim)
    if bias:
        kw["delta_bias"] = r(2, dim) * 0.3
    return kw


def check(fn, kw, lengths, softplus=True, tol=1e-5):
    """fn's values and gradients at valid frames against the float64 by-parts reference."""
    length = kw["u"].shape[-1]
    valid = torch.ones(kw["u"].shape[0], length) if lengths is None else \
        (torch.arange(length)[None, :] < lengths[:, None]).double()
    leaves = {k: v.clone().requires_grad_() for k, v in kw.items()}
    y = fn(**leaves, lengths=lengths, delta_softplus=softplus)
    ref_leaves = {k: v.detach().double().requires_grad_() for k, v in kw.items()}
    ref = biscan.bidirectional_scan_by_parts(**ref_leaves, lengths=lengths, delta_softplus=softplus, scan=naive_scan)
    assert y.shape == ref.shape == (kw["u"].shape[0], length, kw["u"].shape[2]) and y.dtype == torch.float32
    assert_close_scaled(y * valid[..., None], ref * valid[..., None], tol, "values")
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(7)) * valid[..., None]  # padded: unspecified
    grads = torch.autograd.grad(y, list(leaves.values()), dy)
    ref_grads = torch.autograd.grad(ref, list(ref_leaves.values()), dy.double())
    for k, a, b in zip(leaves, grads, ref_grads):
        assert_close_scaled(a, b, tol, f"grad {k}")


LENGTHS = {"unpadded": None, "padded": torch.tensor([23, 11, 1])}


def time_major(u, delta, A, Bt, Ct, D=None, z=None, delta_bias=None, lengths=None, delta_softplus=True, dt_rank=3):
    """biscan.biscan_time_major on the by-parts layout's inputs, converted differentiably: u, delta to (2, B, L, E),
    A transposed, B and C as columns of x_proj-like rows (2, B, L, R+2N) after R junk columns."""
    tm = lambda t: t.permute(1, 0, 3, 2)  # noqa: E731  (B, 2, E, L) -> (2, B, L, E)
    bsz, _, length, n = Bt.shape
    rows = torch.cat([torch.full((2, bsz, length, dt_rank), float("nan")), Bt.transpose(0, 1), Ct.transpose(0, 1)], -1)
    return biscan.biscan_time_major(tm(u), tm(delta), A.transpose(1, 2), rows[..., dt_rank:], D, z, delta_bias,
                                    lengths, delta_softplus)


@pytest.mark.parametrize("lengths", LENGTHS, ids=list(LENGTHS))
@pytest.mark.parametrize("n", [16, 8, 5])
@pytest.mark.parametrize("dim", [6, 16, 37], ids=["part-block", "one-block", "blocks+tail"])
def test_time_major_scan_matches_reference(lengths, n, dim):
    assert biscan.fused_kernel_applies(torch.zeros(1), n), "the kernel builds wherever the tests run"
    check(time_major, make_inputs(n=n, dim=dim, seed=n + dim), LENGTHS[lengths])


@pytest.mark.parametrize("opts", [dict(z=False), dict(D=False, bias=False), dict(softplus=False)],
                         ids=["no-gate", "no-skip-no-bias", "no-softplus"])
def test_time_major_scan_optional_inputs(opts):
    softplus = opts.get("softplus", True)
    check(time_major, make_inputs(seed=3, dim=20, **opts), LENGTHS["padded"], softplus=softplus)


@pytest.mark.parametrize("scan", ["fast", "torch-chunked"])
def test_by_parts_with_the_per_direction_scans_matches_reference(scan, monkeypatch):
    if scan == "torch-chunked":
        monkeypatch.setattr(scan_cpu_kernel, "_lib", None)
        monkeypatch.setattr(scan_cpu_kernel, "_tried", True)
    fn = lambda **kw: biscan.bidirectional_scan_by_parts(**kw, scan=selective_scan)  # noqa: E731
    check(fn, make_inputs(seed=4, length=40), LENGTHS["padded"])


def test_gate_may_be_a_strided_view():
    kw = make_inputs(seed=5, z=False)
    xz = torch.randn(3, 23, 12)  # like in_proj's output: the gate is the second half of each frame
    a = time_major(**kw, z=xz[..., 6:], lengths=LENGTHS["padded"])
    b = time_major(**kw, z=xz[..., 6:].contiguous(), lengths=LENGTHS["padded"])
    assert torch.equal(a, b)


def test_shape_errors():
    kw = make_inputs()
    u = kw["u"].permute(1, 0, 3, 2)
    bc = torch.randn(2, 3, 23, 32)
    with pytest.raises(ValueError, match="2, B, L, E"):
        biscan.biscan_time_major(u[:1], u[:1], kw["A"].transpose(1, 2), bc)
    with pytest.raises(ValueError, match="2, N, E"):
        biscan.biscan_time_major(u, u, kw["A"].transpose(1, 2)[..., :4], bc)
    with pytest.raises(ValueError, match="channel stride 1"):
        biscan.biscan_time_major(u, u, kw["A"].transpose(1, 2), bc, z=torch.randn(3, 6, 23).transpose(1, 2))


@pytest.mark.parametrize("lengths", LENGTHS, ids=list(LENGTHS))
@pytest.mark.parametrize("dim,k", [(37, 4), (16, 1), (8, 7)])
def test_time_major_conv_matches_per_direction_convs(lengths, dim, k):
    """Direction 0: the causal depthwise conv; direction 1: the causal conv of each sequence reversed within its
    length, reversed back; zeros past each length; SiLU after both. Values and gradients."""
    g = torch.Generator().manual_seed(dim + k)
    bsz, length = 3, 23
    lens = LENGTHS[lengths]
    xz = torch.randn(bsz, length, 2 * dim, generator=g, requires_grad=True)  # the conv reads the first half
    w = torch.randn(2, k, dim, generator=g, requires_grad=True)
    bias = torch.randn(2, dim, generator=g, requires_grad=True)
    u = biscan.biconv_time_major(xz[..., :dim], w, bias, lens)
    X, W, Bb = (t.detach().double().requires_grad_() for t in (xz, w, bias))
    mask = None if lens is None else torch.arange(length)[None, :] < lens[:, None]
    x = zero_padding(X[..., :dim], mask).transpose(1, 2)                     # (B, E, L)
    idx = reverse_index(lens, length) if lens is not None else None
    causal = lambda t, d: F.conv1d(t, W[d].t()[:, None], Bb[d], padding=k - 1, groups=dim)[..., :length]  # noqa: E731
    ref = F.silu(torch.stack([causal(x, 0), reverse_time(causal(reverse_time(x, idx, 2), 1), idx, 2)]))
    ref = ref.transpose(2, 3)                                               # (2, B, L, E)
    valid = (torch.ones(bsz, length) if mask is None else mask.double())[None, ..., None]
    assert u.shape == (2, bsz, length, dim)
    assert_close_scaled(u * valid, ref * valid, 1e-6, "values")
    du = torch.randn(u.shape, generator=g) * valid
    for name, a, b in zip(["x", "w", "bias"], torch.autograd.grad(u, [xz, w, bias], du),
                          torch.autograd.grad(ref, [X, W, Bb], du.double())):
        assert_close_scaled(a, b, 1e-5, f"grad {name}")


def test_time_major_kernels_same_result_on_any_thread_count(monkeypatch):
    """Work units are whole channel blocks and accumulators are per thread: the split over threads (torch's OpenMP
    threads, or the Python pool where torch has no libgomp) changes the values by rounding at most."""
    kw = {k: v.requires_grad_() for k, v in make_inputs(seed=9, dim=70, length=31).items()}
    dy = torch.randn(3, 31, 70)

    def run():
        y = time_major(**kw, lengths=LENGTHS["padded"])
        return [y.detach()] + list(torch.autograd.grad(y, list(kw.values()), dy))

    one = run()
    torch.set_num_threads(2)  # the one_torch_thread fixture restores the count
    for omp in (True, False):
        monkeypatch.setattr(scan_cpu_kernel, "USE_OMP", omp)
        two = run()
        assert torch.equal(two[0], one[0])                # the forward pass: bit for bit
        for a, b in zip(two[1:], one[1:]):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)   # gradients summed over threads' slots


@pytest.mark.parametrize("lengths", LENGTHS, ids=list(LENGTHS))
def test_export_scan_of_both_directions_matches_reference(lengths):
    """The ONNX export's one-loop scan of both directions (run eagerly here) against the same reference."""
    from mlma_cli.model.export_scan import bidirectional_scan_onnx

    kw = make_inputs(seed=11, dim=10)
    lens = LENGTHS[lengths]
    with torch.no_grad():
        y = bidirectional_scan_onnx(**kw, lengths=lens)
    ref = biscan.bidirectional_scan_by_parts(**{k: v.double() for k, v in kw.items()}, lengths=lens, scan=naive_scan)
    valid = torch.ones(3, 23) if lens is None else (torch.arange(23)[None, :] < lens[:, None]).double()
    assert_close_scaled(y * valid[..., None], ref * valid[..., None], 1e-5, "values")
