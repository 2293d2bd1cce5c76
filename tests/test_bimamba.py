"""BiMamba (Mamba-1) and BiMamba2 (Mamba-2) mixers: mamba-ssm names, inits, length-aware backward direction."""
import logging

import pytest
import torch
import torch.nn.functional as F

from mlma_cli.errors import MissingDependencyError
from mlma_cli.model import backends, biscan, masking, scan_cpu_kernel
from mlma_cli.model.bimamba import BiMamba
from mlma_cli.model.mamba2 import BiMamba2


pytestmark = pytest.mark.usefixtures("one_torch_thread")

# state_dict keys and shapes of mamba-ssm's Mamba (+ the BiMamba-v2 "_b" direction), d_model 32, expand 2,
# d_state 16, d_conv 4, dt_rank 2
MAMBA1_NAMES = {
    "in_proj.weight": (128, 32), "conv1d.weight": (64, 1, 4), "conv1d.bias": (64,), "x_proj.weight": (34, 64),
    "dt_proj.weight": (64, 2), "dt_proj.bias": (64,), "A_log": (64, 16), "D": (64,), "out_proj.weight": (32, 64),
    "conv1d_b.weight": (64, 1, 4), "conv1d_b.bias": (64,), "x_proj_b.weight": (34, 64),
    "dt_proj_b.weight": (64, 2), "dt_proj_b.bias": (64,), "A_b_log": (64, 16), "D_b": (64,),
}
# mamba-ssm's Mamba2, d_model 32, expand 2, headdim 16 (H = 4), d_state 8, ngroups 1
MAMBA2_NAMES = {
    "in_proj.weight": (2 * 64 + 2 * 8 + 4, 32), "conv1d.weight": (80, 1, 4), "conv1d.bias": (80,),
    "dt_bias": (4,), "A_log": (4,), "D": (4,), "norm.weight": (64,), "out_proj.weight": (32, 64),
    "conv1d_b.weight": (80, 1, 4), "conv1d_b.bias": (80,), "dt_bias_b": (4,), "A_b_log": (4,), "D_b": (4,),
}


def mamba1(**kw):
    return BiMamba(32, d_state=16, d_conv=4, expand=2, dt_rank=2, scan_backend="torch", **kw)


def mamba2(**kw):
    return BiMamba2(32, d_state=8, d_conv=4, expand=2, headdim=16, chunk_size=8, scan_backend="torch", **kw)


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_bimamba_names_match_mamba_ssm():
    assert _shapes(mamba1()) == MAMBA1_NAMES
    uni = _shapes(mamba1(bidirectional=False))
    assert uni == {k: v for k, v in MAMBA1_NAMES.items() if "_b" not in k}


def test_bimamba2_names_match_mamba_ssm():
    assert _shapes(mamba2()) == MAMBA2_NAMES


def test_bimamba_inits_follow_mamba_ssm():
    torch.manual_seed(0)
    m = mamba1()
    for a_log in (m.A_log, m.A_b_log):
        assert torch.allclose(a_log, torch.log(torch.arange(1, 17.0)).expand(64, 16))
        assert a_log._no_weight_decay
    for d in (m.D, m.D_b):
        assert torch.equal(d, torch.ones(64)) and d._no_weight_decay
    for dt_proj in (m.dt_proj, m.dt_proj_b):
        dt = F.softplus(dt_proj.bias)
        assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6
        assert dt_proj.weight.abs().max() <= 2 ** -0.5
    m2 = mamba2()
    assert torch.all((m2.A_log.exp() >= 1) & (m2.A_log.exp() <= 16))
    assert m2.dt_bias._no_weight_decay and m2.A_b_log._no_weight_decay


def _alone_vs_batched(module, lengths, seed=0, grad=False):
    """Max |out_alone - out_in_batch| over valid frames; padded frames hold random junk.

    grad=False runs under no_grad (BiMamba's time-major inference kernels on CPU), grad=True with autograd on
    (the fused training kernel)."""
    torch.manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), 32)
    lens = torch.tensor(lengths)
    with torch.enable_grad() if grad else torch.no_grad():
        y = module(x, lens).detach()
        err = 0.0
        for i, n in enumerate(lengths):
            alone = module(x[i:i + 1, :n], lens[i:i + 1]).detach()
            err = max(err, (alone[0] - y[i, :n]).abs().max().item())
    return err


@pytest.mark.parametrize("make", [mamba1, mamba2], ids=["mamba1", "mamba2"])
def test_bimamba_padding_invariant(make):
    assert _alone_vs_batched(make().eval(), [29, 17, 5, 1]) < 1e-5
    assert _alone_vs_batched(make().eval(), [29, 17, 5, 1], grad=True) < 1e-5


@pytest.mark.parametrize("make,path", [(mamba1, "kernels-no-grad"), (mamba1, "kernels-autograd"),
                                       (mamba1, "by-parts"), (mamba2, "by-parts")],
                         ids=["mamba1-kernels-no-grad", "mamba1-kernels-autograd", "mamba1-by-parts", "mamba2"])
def test_bimamba_backward_direction_is_length_aware(make, path, monkeypatch):
    module = make().eval()
    grad = path == "kernels-autograd"
    if path.startswith("kernels"):
        assert biscan.fused_kernel_applies(torch.zeros(1), 16)
        real = scan_cpu_kernel.biscan_tm_fwd
        # the scan kernel told every sequence is L long reverses the whole padded sequence
        monkeypatch.setattr(scan_cpu_kernel, "biscan_tm_fwd", lambda lib, *a: real(lib, *a[:7], None, *a[8:]))
    else:
        monkeypatch.setattr(scan_cpu_kernel, "load", lambda: None)  # no compiled kernels: by parts
        assert _alone_vs_batched(module, [29, 17, 5, 1]) < 1e-5
    # The padding test above must notice a backward direction that flips the whole padded tensor
    monkeypatch.setattr("mlma_cli.model.biscan.reverse_index", lambda lengths, t: None)
    monkeypatch.setattr("mlma_cli.model.mamba2.reverse_index", lambda lengths, t: None)
    assert _alone_vs_batched(module, [29, 17, 5, 1], grad=grad) > 1e-4  # vs < 1e-5 when right


@pytest.mark.parametrize("d_model", [32, 36], ids=["whole-blocks", "channel-tail"])
def test_bimamba_kernel_paths_equal_the_by_parts_path(d_model, monkeypatch):
    """On CPU the mixer runs the time-major kernels: on cached weights without grad, through their backward passes
    with autograd. Both equal the by-parts path (two per-direction scans, gathered reversals, torch conv) at valid
    frames, padded or not, and so do all parameter and input gradients."""
    torch.manual_seed(0)
    module = BiMamba(d_model, dt_rank=3, scan_backend="torch").eval()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.1)   # away from the init's symmetric values
    x = torch.randn(3, 27, d_model)
    for lens in (torch.tensor([27, 27, 27]), torch.tensor([27, 12, 1]), None):
        valid = (torch.ones(3, 27) if lens is None else (torch.arange(27)[None, :] < lens[:, None]).float())[..., None]
        dy = torch.randn(3, 27, d_model) * valid

        def run():
            xg = x.clone().requires_grad_()
            y = module(xg, lens)
            return [y.detach() * valid] + list(torch.autograd.grad(y, [xg, *module.parameters()], dy))

        with torch.inference_mode():
            fast = module(x, lens) * valid
        kernels = run()
        with monkeypatch.context() as m:
            m.setattr(scan_cpu_kernel, "load", lambda: None)
            by_parts = run()
        assert torch.allclose(fast, by_parts[0], atol=2e-6), (fast - by_parts[0]).abs().max()
        for name, a, b in zip(["y", "x"] + [n for n, _ in module.named_parameters()], kernels, by_parts):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), (name, (a - b).abs().max())


def test_bimamba_inference_weights_follow_parameter_updates():
    """The cached inference weights are rebuilt after any in-place update (optimizer step, load_state_dict)."""
    torch.manual_seed(0)
    module, other = mamba1().eval(), mamba1().eval()
    x = torch.randn(2, 15, 32)

    def expect():  # with autograd: the training path, straight from the parameters
        with torch.enable_grad():
            return module(x).detach()

    with torch.no_grad():
        first = module(x)
        assert torch.allclose(first, expect(), atol=2e-6)
        assert module(x).data_ptr() != first.data_ptr() and torch.equal(module(x), first)
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    module(x).square().sum().backward()
    opt.step()
    with torch.no_grad():
        stepped = module(x)
    assert not torch.allclose(stepped, first) and torch.allclose(stepped, expect(), atol=2e-6)
    module.load_state_dict(other.state_dict())
    with torch.no_grad():
        assert torch.allclose(module(x), other(x).detach(), atol=1e-7)
    with torch.no_grad():
        module.D_b.fill_(3.0)
        assert torch.allclose(module(x), expect(), atol=2e-6)
    assert "_inference_cache" not in module.state_dict()


def test_bimamba_built_under_inference_mode_runs():
    """Parameters that are inference tensors have no version counter: their weights are prepared every call."""
    torch.manual_seed(0)
    ref = mamba1().eval()
    x = torch.randn(2, 9, 32)
    with torch.inference_mode():
        module = mamba1().eval()
        module.load_state_dict(ref.state_dict())
        assert module.D.is_inference()
        first = module(x)
        module.D_b.add_(1.0)       # allowed on inference tensors, inside inference_mode
        second = module(x)
    with torch.no_grad():
        assert torch.allclose(first, ref(x), atol=1e-7)
        ref.D_b.add_(1.0)
        assert torch.allclose(second, ref(x), atol=1e-7) and not torch.allclose(first, second)


@pytest.mark.parametrize("make", [mamba1, mamba2], ids=["mamba1", "mamba2"])
def test_bimamba_gradients_stay_inside_each_sequence(make):
    module = make().eval()
    x = torch.randn(2, 24, 32, requires_grad=True)
    lens = torch.tensor([24, 11])
    y = module(x, lens)
    y[1, :11].sum().backward(retain_graph=True)
    assert x.grad[1, 11:].abs().max() == 0            # padding never reaches a valid frame
    assert x.grad[0].abs().max() == 0                 # nor another sequence
    assert x.grad[1, 10].abs().max() > 0              # the last valid frame reaches the first (backward scan)
    x.grad = None
    y[1, 0].sum().backward()
    assert x.grad[1, 10].abs().max() > 0


def test_unidirectional_is_causal():
    module = mamba1(bidirectional=False).eval()
    x = torch.randn(1, 20, 32, requires_grad=True)
    module(x, torch.tensor([20]))[0, 9].sum().backward()
    assert x.grad[0, 10:].abs().max() == 0 and x.grad[0, :10].abs().max() > 0


def test_reverse_index_is_its_own_inverse():
    lens = torch.tensor([5, 3, 1])
    idx = masking.reverse_index(lens, 5)
    assert idx.tolist() == [[4, 3, 2, 1, 0], [2, 1, 0, 3, 4], [0, 1, 2, 3, 4]]
    x = torch.randn(3, 5, 2)
    assert torch.equal(masking.reverse_time(masking.reverse_time(x, idx, 1), idx, 1), x)


def test_scan_backend_choice_logged_and_cuda_refused_on_cpu(caplog):
    x = torch.zeros(1, 2, 3)
    backends._logged.clear()
    with caplog.at_level(logging.INFO, logger="mlma_cli.model.backends"):
        fn = backends.selective_scan_for(x, "auto")
        backends.selective_scan_for(x, "auto")
    from mlma_cli.model.scan import selective_scan

    assert fn is selective_scan
    msgs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("selective scan: mlma's own scan")]
    assert len(msgs) == 1 and "(" in msgs[0]
    with pytest.raises(MissingDependencyError, match="pip install mamba-ssm"):
        backends.ssd_scan_for(x, "cuda")
    with pytest.raises(ValueError):
        backends.selective_scan_for(x, "fast")


def test_torch_scan_on_cuda_tensors_warns(caplog, monkeypatch):
    """Without mamba-ssm, CUDA tensors take the PyTorch scan: allowed, but said loudly (it is slow there)."""
    import types

    monkeypatch.setattr(backends, "_cache", {"scan": (None, "mamba-ssm not importable: test")})
    backends._logged.clear()
    fake_cuda = types.SimpleNamespace(is_cuda=True, device=torch.device("cuda"))
    with caplog.at_level(logging.INFO, logger="mlma_cli.model.backends"):
        backends.selective_scan_for(fake_cuda, "auto")
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "install mamba-ssm" in warned[0].getMessage()


def test_mamba_ssm_kernels_import_without_package_init(tmp_path, monkeypatch):
    """A mamba-ssm whose __init__ fails (no compiled selective_scan_cuda) still yields its Triton SSD kernel."""
    import sys

    pkg = tmp_path / "mamba_ssm"
    (pkg / "ops" / "triton").mkdir(parents=True)
    (pkg / "__init__.py").write_text("import selective_scan_cuda\n")
    (pkg / "ops" / "__init__.py").write_text("")
    (pkg / "ops" / "triton" / "__init__.py").write_text("")
    (pkg / "ops" / "selective_scan_interface.py").write_text("import selective_scan_cuda\n")
    (pkg / "ops" / "triton" / "ssd_combined.py").write_text("def mamba_chunk_scan_combined(*a, **k):\n    return 'ssd'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for key in [k for k in sys.modules if k.startswith("mamba_ssm")]:
        monkeypatch.delitem(sys.modules, key)
    monkeypatch.setattr(backends, "_cache", {})
    try:
        info = backends.describe()
        assert "selective_scan_cuda" in info["selective_scan"] and info["selective_scan"].startswith("unavailable")
        fn, _ = backends._load_cuda_ssd()
        assert fn() == "ssd"
        # CPU tensors still take the torch path, with the reason logged
        from mlma_cli.model.ssd import ssd_chunk_scan

        assert backends.ssd_scan_for(torch.zeros(1), "auto") is ssd_chunk_scan
    finally:
        for key in [k for k in sys.modules if k.startswith("mamba_ssm")]:
            del sys.modules[key]


def _bare_mamba_ssm(monkeypatch):
    """mamba-ssm's source importable on CPU: its package __init__ (which loads the CUDA extension) skipped, the
    extension stubbed; everything undone after the test (monkeypatch). Skips or fails as scan_helpers says."""
    import importlib.util
    import sys
    import types

    from scan_helpers import mamba_ssm_source_dir, mamba_ssm_unavailable

    src = mamba_ssm_source_dir()
    if src is not None:
        monkeypatch.syspath_prepend(src)
    spec = importlib.util.find_spec("mamba_ssm")
    if spec is None or importlib.util.find_spec("einops") is None:
        mamba_ssm_unavailable("mamba-ssm (installed or its source in .cache/mamba-ssm-src) and einops not importable")
    for key in [k for k in sys.modules if k == "mamba_ssm" or k.startswith("mamba_ssm.")]:
        monkeypatch.delitem(sys.modules, key)
    pkg = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "mamba_ssm", pkg)
    monkeypatch.setitem(sys.modules, "selective_scan_cuda", types.ModuleType("selective_scan_cuda"))


def _import_or_unavailable(name):
    import importlib

    from scan_helpers import mamba_ssm_unavailable

    try:
        return importlib.import_module(name)
    except ImportError as err:
        mamba_ssm_unavailable(f"{name} not importable on CPU: {err}")


def _mamba_ssm_simple(monkeypatch):
    """mamba-ssm's own Mamba module (mamba_simple) on CPU: its Triton layer norm stubbed and its slow path's
    selective_scan_fn replaced by mamba-ssm's pure-torch selective_scan_ref (see scan_helpers)."""
    import sys
    import types

    _bare_mamba_ssm(monkeypatch)
    fake_ln = types.ModuleType("mamba_ssm.ops.triton.layer_norm")  # Triton-only module
    fake_ln._layer_norm_fwd = fake_ln.RMSNorm = fake_ln.layer_norm_fn = fake_ln.rms_norm_fn = None
    monkeypatch.setitem(sys.modules, "mamba_ssm.ops.triton.layer_norm", fake_ln)
    ms = _import_or_unavailable("mamba_ssm.modules.mamba_simple")
    ssi = _import_or_unavailable("mamba_ssm.ops.selective_scan_interface")
    monkeypatch.setattr(ms, "selective_scan_fn", ssi.selective_scan_ref)
    monkeypatch.setattr(ms, "causal_conv1d_fn", None)
    return ms


def _mamba_ssm_mamba2(monkeypatch):
    """mamba-ssm's Mamba2 module on CPU: its Triton SSD scan and gated RMSNorm replaced by mamba-ssm's own
    pure-torch references (ssd_chunk_scan_combined_ref, rms_norm_ref); the Hub mixin stubbed if missing."""
    import importlib.util
    import sys
    import types

    _bare_mamba_ssm(monkeypatch)
    if importlib.util.find_spec("huggingface_hub") is None:
        hub = types.ModuleType("huggingface_hub")
        hub.PyTorchModelHubMixin = type("PyTorchModelHubMixin", (), {})
        monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    m2 = _import_or_unavailable("mamba_ssm.modules.mamba2")
    ssd = _import_or_unavailable("mamba_ssm.ops.triton.ssd_combined")
    lng = _import_or_unavailable("mamba_ssm.ops.triton.layernorm_gated")

    def scan(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, dt_softplus=False, seq_idx=None,
             cu_seqlens=None, return_final_states=False, return_varlen_states=False, **kw):
        assert seq_idx is None and cu_seqlens is None and not return_final_states and not kw
        return ssd.ssd_chunk_scan_combined_ref(x, dt, A, B, C, chunk_size, D=D, z=z, dt_bias=dt_bias,
                                               dt_softplus=dt_softplus)

    def norm_forward(self, x, z=None):
        return lng.rms_norm_ref(x, self.weight, self.bias, z=z, eps=self.eps, group_size=self.group_size,
                                norm_before_gate=self.norm_before_gate)

    monkeypatch.setattr(m2, "mamba_chunk_scan_combined", scan)
    monkeypatch.setattr(m2, "causal_conv1d_fn", None)
    monkeypatch.setattr(lng.RMSNorm, "forward", norm_forward)
    return m2


def test_bimamba_equals_mamba_ssm_modules_on_same_weights(monkeypatch):
    """Load mamba-ssm's Mamba weights into our mixer (strict): forward equals mamba-ssm's; the bidirectional
    mixer equals the v2 recipe 0.5 * (M_f(x) + flip(M_b(flip(x)))) built from two mamba-ssm Mambas."""
    ms = _mamba_ssm_simple(monkeypatch)
    torch.manual_seed(0)
    ref_f = ms.Mamba(32, d_state=16, d_conv=4, expand=2, use_fast_path=False)
    ref_b = ms.Mamba(32, d_state=16, d_conv=4, expand=2, use_fast_path=False)
    ref_b.in_proj, ref_b.out_proj = ref_f.in_proj, ref_f.out_proj  # shared in v2
    x = torch.randn(2, 23, 32)
    uni = mamba1(bidirectional=False)
    uni.load_state_dict(ref_f.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.allclose(uni(x), ref_f(x), atol=1e-5)
        bi = mamba1()
        state = dict(ref_f.state_dict())
        for k, v in ref_b.state_dict().items():
            if not k.startswith(("in_proj", "out_proj")):
                state[k.replace("A_log", "A_b_log") if k == "A_log" else k.split(".")[0] + "_b" +
                      k[len(k.split(".")[0]):]] = v
        bi.load_state_dict(state, strict=True)
        expected = 0.5 * (ref_f(x) + ref_b(x.flip(1)).flip(1))   # out_proj is linear and bias-free
        assert torch.allclose(bi(x, torch.tensor([23, 23])), expected, atol=1e-5)


def test_mamba2_mixer_equals_mamba_ssm_mamba2_on_same_weights(monkeypatch):
    """mamba-ssm's Mamba2 weights load strictly into our unidirectional mixer and give the same output."""
    m2 = _mamba_ssm_mamba2(monkeypatch)
    torch.manual_seed(0)
    ref = m2.Mamba2(32, d_state=8, d_conv=4, expand=2, headdim=16, chunk_size=8, use_mem_eff_path=False)
    ours = mamba2(bidirectional=False)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 24, 32)   # the reference needs whole chunks
    with torch.no_grad():
        expected = ref(x)
        assert torch.allclose(ours(x), expected, atol=1e-5), (ours(x) - expected).abs().max()
        assert torch.allclose(ours(x, torch.tensor([24, 24])), expected, atol=1e-5)
