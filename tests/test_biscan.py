"""The fused bidirectional scan (both directions in one C kernel call, the backward one reversed within each length
by visiting order) against the same math by parts: gathered reversals around a float64 step-by-step scan."""
import pytest
import torch
import torch.nn.functional as F

from mlma_cli.model import biscan, scan_cpu_kernel
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


@pytest.mark.parametrize("lengths", LENGTHS, ids=list(LENGTHS))
@pytest.mark.parametrize("n", [16, 8, 5])
def test_fused_kernel_matches_reference(lengths, n):
    assert biscan.fused_kernel_applies(torch.zeros(1), n), "the kernel builds wherever the tests run"
    check(biscan.bidirectional_scan, make_inputs(n=n, seed=n), LENGTHS[lengths])


@pytest.mark.parametrize("opts", [dict(z=False), dict(D=False, bias=False), dict(softplus=False)],
                         ids=["no-gate", "no-skip-no-bias", "no-softplus"])
def test_fused_kernel_optional_inputs(opts):
    softplus = opts.get("softplus", True)
    check(biscan.bidirectional_scan, make_inputs(seed=3, **opts), LENGTHS["padded"], softplus=softplus)


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
    a = biscan.bidirectional_scan(**kw, z=xz[..., 6:], lengths=LENGTHS["padded"])
    b = biscan.bidirectional_scan(**kw, z=xz[..., 6:].contiguous(), lengths=LENGTHS["padded"])
    assert torch.equal(a, b)


def test_shape_errors():
    kw = make_inputs()
    with pytest.raises(ValueError, match="B, 2, E, L"):
        biscan.bidirectional_scan(**dict(kw, u=kw["u"][:, :1], delta=kw["delta"][:, :1]))
    with pytest.raises(ValueError, match="2, E, N"):
        biscan.bidirectional_scan(**dict(kw, A=kw["A"][:, :, :4]))


# ---- the time-major inference kernels (BiMamba under no_grad / inference_mode on CPU) -------------------------------

def tm_inputs(kw, dt_rank=3):
    """The same inputs in the inference kernels' layouts: u, delta (2, B, L, E), A transposed, and B, C as columns of
    x_proj-like rows (2, B, L, R+2N) whose first R columns are junk."""
    tm = lambda t: t.permute(1, 0, 3, 2).contiguous()  # noqa: E731  (B, 2, E, L) -> (2, B, L, E)
    bsz, _, length, n = kw["Bt"].shape
    rows = torch.cat([torch.full((2, bsz, length, dt_rank), float("nan")), kw["Bt"].transpose(0, 1),
                      kw["Ct"].transpose(0, 1)], dim=-1).contiguous()
    return dict(u=tm(kw["u"]), delta=tm(kw["delta"]), At=kw["A"].transpose(1, 2).contiguous(), bc=rows[..., dt_rank:],
                D=kw.get("D"), bias=kw.get("delta_bias"), z=kw.get("z"))


def tm_reference(kw, lengths, softplus):
    ref = biscan.bidirectional_scan_by_parts(**{k: v.double() for k, v in kw.items()}, lengths=lengths,
                                             delta_softplus=softplus, scan=naive_scan)
    length = kw["u"].shape[-1]
    valid = torch.ones(ref.shape[:2]) if lengths is None else (torch.arange(length)[None, :] < lengths[:, None])
    return ref, valid.double()[..., None]


@pytest.mark.parametrize("lengths", LENGTHS, ids=list(LENGTHS))
@pytest.mark.parametrize("n", [16, 8, 5])
@pytest.mark.parametrize("dim", [6, 16, 37], ids=["part-block", "one-block", "blocks+tail"])
def test_time_major_scan_kernel_matches_reference(lengths, n, dim):
    kw = make_inputs(n=n, dim=dim, seed=n + dim)
    lens = LENGTHS[lengths]
    y = scan_cpu_kernel.biscan_tm_fwd(scan_cpu_kernel.load(), **tm_inputs(kw), lengths=lens, softplus=True)
    ref, valid = tm_reference(kw, lens, True)
    assert y.shape == ref.shape and y.dtype == torch.float32
    assert_close_scaled(y * valid, ref * valid, 1e-5, "values")


@pytest.mark.parametrize("opts", [dict(z=False), dict(D=False, bias=False), dict(softplus=False)],
                         ids=["no-gate", "no-skip-no-bias", "no-softplus"])
def test_time_major_scan_kernel_optional_inputs(opts):
    softplus = opts.get("softplus", True)
    kw = make_inputs(seed=3, dim=20, **opts)
    y = scan_cpu_kernel.biscan_tm_fwd(scan_cpu_kernel.load(), **tm_inputs(kw), lengths=LENGTHS["padded"],
                                      softplus=softplus)
    ref, valid = tm_reference(kw, LENGTHS["padded"], softplus)
    assert_close_scaled(y * valid, ref * valid, 1e-5, "values")


@pytest.mark.parametrize("lengths", LENGTHS, ids=list(LENGTHS))
@pytest.mark.parametrize("dim,k", [(37, 4), (16, 1), (8, 7)])
def test_time_major_conv_kernel_matches_per_direction_convs(lengths, dim, k):
    """Direction 0: the causal depthwise conv; direction 1: the causal conv of each sequence reversed within its
    length, reversed back; padding is zeros; SiLU after both."""
    from mlma_cli.model.masking import reverse_index, reverse_time, zero_padding

    g = torch.Generator().manual_seed(dim + k)
    bsz, length = 3, 23
    lens = LENGTHS[lengths]
    xz = torch.randn(bsz, length, 2 * dim, generator=g)       # the conv reads the first half of in_proj's rows
    w, bias = torch.randn(2, dim, 1, k, generator=g), torch.randn(2, dim, generator=g)
    u = scan_cpu_kernel.biconv_tm(scan_cpu_kernel.load(), xz[..., :dim], w[:, :, 0].transpose(1, 2).contiguous(),
                                  bias, lens)
    mask = None if lens is None else torch.arange(length)[None, :] < lens[:, None]
    x = zero_padding(xz[..., :dim].double(), mask).transpose(1, 2)   # (B, E, L)
    idx = reverse_index(lens, length) if lens is not None else None
    causal = lambda t, d: F.conv1d(t, w[d].double(), bias[d].double(), padding=k - 1, groups=dim)[..., :length]  # noqa: E731
    ref = torch.stack([causal(x, 0), reverse_time(causal(reverse_time(x, idx, 2), 1), idx, 2)])
    ref = F.silu(ref).transpose(2, 3)                                 # (2, B, L, E)
    valid = torch.ones(bsz, length) if mask is None else mask.double()
    assert u.shape == (2, bsz, length, dim)
    assert_close_scaled(u * valid[None, ..., None], ref * valid[None, ..., None], 1e-6, "conv")


def test_time_major_kernels_same_result_on_any_thread_count(monkeypatch):
    """Work units are whole channel blocks, so the split over threads (torch's OpenMP threads, or the Python pool
    where torch has no libgomp) cannot change a bit."""
    kw = make_inputs(seed=9, dim=70, length=31)
    lib = scan_cpu_kernel.load()
    args = dict(**tm_inputs(kw), lengths=LENGTHS["padded"], softplus=True)
    one = scan_cpu_kernel.biscan_tm_fwd(lib, **args)
    torch.set_num_threads(2)  # the one_torch_thread fixture restores the count
    for omp in (True, False):
        monkeypatch.setattr(scan_cpu_kernel, "USE_OMP", omp)
        assert torch.equal(scan_cpu_kernel.biscan_tm_fwd(lib, **args), one)
