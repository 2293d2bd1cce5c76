"""GPU check: our PyTorch scan backend against mamba-ssm's kernels on the same weights, and timings of both.

Run by benchmarks/gpu_check.sh on the lent GPU machine (after it has built / unpacked mamba-ssm):

    PYTHONPATH=.:/tmp/site python3 benchmarks/gpu_check.py --out "$OUT"

Checks (each recorded even when it fails; results are rewritten after every step):
  1. ops:      selective_scan (ours, torch) vs mamba-ssm selective_scan_fn (CUDA), and ssd_chunk_scan vs
               mamba_chunk_scan_combined (Triton): values and gradients, fp32.
  2. blocks:   BiMamba (mamba1) and BiMamba2 (mamba2), d_model 256, padded batch: torch vs cuda backend,
               values and gradients, fp32 and bf16 autocast.
  3. encoder:  the full ConMamba-paper CTC model (dropout 0), padded batch, torch vs cuda backend; plus padding
               invariance with the cuda backend.
  4. timings:  fwd and fwd+bwd time and peak memory at several lengths: ConMamba (torch / cuda scan),
               ConMamba-Mamba2 (torch / Triton SSD) and the Conformer twin, bf16 autocast and fp32.
Writes gpu_check.json and gpu_check.md to --out. With --allow-cpu (no GPU) it runs the same code on CPU at a
tiny size, where every mamba-ssm side is recorded as skipped: that is how the script is tested off the GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlma_cli.bench.model import bench_variant  # noqa: E402
from mlma_cli.model import backends, build_model, named_config  # noqa: E402
from mlma_cli.model.bimamba import BiMamba  # noqa: E402
from mlma_cli.model.mamba2 import BiMamba2  # noqa: E402

TOL = {  # (values, gradients): relative L2 error, ||a - b|| / ||b||
    "float32": (1e-4, 1e-3),
    "bfloat16": (2e-2, 5e-2),
}
ENC_TOL = {"float32": (1e-3, 1e-2), "bfloat16": (5e-2, 1e-1)}  # 18 layers accumulate more


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


class Report:
    def __init__(self, out: Path) -> None:
        self.out, self.data = out, {"env": {}, "checks": [], "timings": [], "errors": []}

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu_check.json").write_text(json.dumps(self.data, indent=1))
        (self.out / "gpu_check.md").write_text(self.markdown())

    def check(self, name: str, dtype: str, values: Optional[float], grads: Optional[float], tol, note: str = ""):
        ok = None if values is None else bool(values <= tol[0] and (grads is None or grads <= tol[1]))
        row = dict(check=name, dtype=dtype, value_rel_err=values, grad_rel_err=grads, tol_values=tol[0],
                   tol_grads=tol[1], ok=ok, note=note)
        self.data["checks"].append(row)
        print(f"[check] {name} {dtype}: values {values} grads {grads} ok={ok} {note}", flush=True)
        self.save()

    def step(self, name: str, fn: Callable[[], None]) -> None:
        t0 = time.time()
        try:
            fn()
        except Exception as err:  # record and go on: one failure must not lose the other results
            self.data["errors"].append({"step": name, "error": repr(err), "traceback": traceback.format_exc()})
            print(f"[error] {name}: {err!r}", flush=True)
        print(f"[step] {name} took {time.time() - t0:.1f}s", flush=True)
        self.save()

    def markdown(self) -> str:
        env = self.data["env"]
        lines = [f"# mlma GPU check ({env.get('device', '?')})", "",
                 "Environment: " + ", ".join(f"{k}={v}" for k, v in env.items()), "",
                 "## PyTorch backend vs mamba-ssm kernels, same weights (relative L2 error)", "",
                 "| check | dtype | values | grads | tolerance (v / g) | ok | note |", "|---|---|---|---|---|---|---|"]

        def f(x):
            return "-" if x is None else f"{x:.2e}"

        for c in self.data["checks"]:
            lines.append(f"| {c['check']} | {c['dtype']} | {f(c['value_rel_err'])} | {f(c['grad_rel_err'])} | "
                         f"{c['tol_values']:.0e} / {c['tol_grads']:.0e} | {c['ok']} | {c['note']} |")
        lines += ["", "## Timings (batch 1, one utterance; peak = max allocated above the model)", "",
                  "| variant | scan backend | dtype | audio s | frames | fwd ms | fwd+bwd ms | fwd MB | fwd+bwd MB | notes |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for t in self.data["timings"]:
            lines.append(f"| {t['variant']} | {t['backend']} | {t['dtype']} | {t['seconds']:g} | {t['frames']} | "
                         f"{t['fwd_ms']} | {t['fwdbwd_ms']} | {t['fwd_peak_mb']} | {t['fwdbwd_peak_mb']} | "
                         f"{'; '.join(t['notes'])} |")
        if self.data["errors"]:
            lines += ["", "## Errors", ""] + [f"- {e['step']}: `{e['error']}`" for e in self.data["errors"]]
        return "\n".join(lines) + "\n"


SELF_TEST = False


def enable_self_test() -> None:
    """CPU script test: the sequential references stand in for mamba-ssm's kernels, so every comparison runs."""
    global SELF_TEST
    from mlma_cli.model.scan import selective_scan_sequential
    from mlma_cli.model.ssd import ssd_sequential

    SELF_TEST = True
    backends._cache["scan"] = (selective_scan_sequential, "self-test: selective_scan_sequential")
    backends._cache["ssd"] = (ssd_sequential, "self-test: ssd_sequential")
    choose = backends._choose

    def _choose(op, x, backend, loader, torch_fn):
        return loader()[0] if backend == "cuda" else choose(op, x, backend, loader, torch_fn)

    backends._choose = _choose


def cuda_ready(op: str, dev: torch.device) -> Optional[str]:
    """None when mamba-ssm's kernel for op ('selective_scan' | 'ssd') can run on dev, else the reason."""
    if SELF_TEST:
        return None
    if dev.type != "cuda":
        return "no CUDA device"
    fn, why = backends._load_cuda_selective_scan() if op == "selective_scan" else backends._load_cuda_ssd()
    return None if fn is not None else why


def check_ops(rep: Report, dev: torch.device) -> None:
    from mlma_cli.model.scan import selective_scan
    from mlma_cli.model.ssd import ssd_chunk_scan

    g = torch.Generator().manual_seed(0)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(dev).requires_grad_()

    why = cuda_ready("selective_scan", dev)
    if why:
        rep.check("op selective_scan", "float32", None, None, TOL["float32"], f"skipped: {why}")
    else:
        fn, _ = backends._load_cuda_selective_scan()
        b, d, n, length = (4, 512, 16, 1000) if dev.type == "cuda" else (2, 16, 4, 70)
        args = [r(b, d, length), r(b, d, length, scale=0.5), (-torch.rand(d, n, generator=g) - 0.1).to(dev),
                r(b, n, length), r(b, n, length), r(d), r(b, d, length), r(d, scale=0.1)]
        outs = []
        for f in (selective_scan, fn):
            leaves = [a.detach().clone().requires_grad_() for a in args]
            y = f(*leaves[:5], D=leaves[5], z=leaves[6], delta_bias=leaves[7], delta_softplus=True)
            y.backward(torch.ones_like(y))
            outs.append((y, [x.grad for x in leaves]))
        gerr = max(rel(a, b) for a, b in zip(outs[0][1], outs[1][1]) if b is not None)
        rep.check(f"op selective_scan (B{b} D{d} N{n} L{length})", "float32", rel(outs[0][0], outs[1][0]), gerr,
                  TOL["float32"])
    why = cuda_ready("ssd", dev)
    if why:
        rep.check("op ssd_chunk_scan", "float32", None, None, TOL["float32"], f"skipped: {why}")
    else:
        fn, _ = backends._load_cuda_ssd()
        b, length, h, p, n = (2, 1000, 8, 64, 64) if dev.type == "cuda" else (2, 70, 2, 4, 4)
        args = [r(b, length, h, p), r(b, length, h, scale=0.5), (-torch.rand(h, generator=g) - 0.5).to(dev),
                r(b, length, 1, n), r(b, length, 1, n), r(h), r(h, scale=0.1)]
        outs = []
        for f in (ssd_chunk_scan, fn):
            leaves = [a.detach().clone().requires_grad_() for a in args]
            y = f(*leaves[:5], 64 if dev.type == "cuda" else 16, D=leaves[5], dt_bias=leaves[6], dt_softplus=True)
            y.backward(torch.ones_like(y))
            outs.append((y, [x.grad for x in leaves]))
        gerr = max(rel(a, b) for a, b in zip(outs[0][1], outs[1][1]) if b is not None)
        rep.check(f"op ssd_chunk_scan (B{b} L{length} H{h} P{p} N{n})", "float32", rel(outs[0][0], outs[1][0]), gerr,
                  TOL["float32"])


def _run(module, x, lens, backend, amp):
    """Output (valid frames only) and parameter + input gradients of module under a scan backend."""
    for m in module.modules():
        if hasattr(m, "scan_backend"):
            m.scan_backend = backend
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        y = module(x, lens)
    y = y[0] if isinstance(y, tuple) else y
    mask = torch.arange(y.shape[1], device=y.device)[None, :] < _out_lens(module, lens)[:, None]
    (y.float() * mask[..., None]).square().sum().backward()
    grads = {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}
    grads["<input>"] = x.grad.detach().clone()
    return y.detach().float() * mask[..., None], grads


def _out_lens(module, lens):
    return module.output_lengths(lens) if hasattr(module, "output_lengths") else lens


def compare(rep: Report, name: str, module, x, lens, op: str, dev: torch.device, tol_table) -> None:
    why = cuda_ready(op, dev)
    for dtype, amp in (("float32", False), ("bfloat16", True)):
        if why:
            rep.check(name, dtype, None, None, tol_table[dtype], f"skipped: {why}")
            continue
        if amp and dev.type != "cuda":
            continue
        y_t, g_t = _run(module, x, lens, "torch", amp)
        y_c, g_c = _run(module, x, lens, "cuda", amp)
        worst = max(g_t, key=lambda k: rel(g_c[k], g_t[k]))
        rep.check(name, dtype, rel(y_c, y_t), rel(g_c[worst], g_t[worst]), tol_table[dtype],
                  f"worst grad: {worst}")


def check_blocks(rep: Report, dev: torch.device, d_model: int) -> None:
    torch.manual_seed(0)
    t = 1000 if dev.type == "cuda" else 60
    lens = torch.tensor([t, t * 3 // 4, t // 2, t // 10], device=dev)
    x = torch.randn(4, t, d_model, device=dev)
    m1 = BiMamba(d_model, d_state=16, dt_rank=-(-d_model // 16)).to(dev)
    compare(rep, f"BiMamba block d{d_model} padded B4 L{t}", m1, x, lens, "selective_scan", dev, TOL)
    hd, cs = (64, 64) if dev.type == "cuda" else (16, 16)
    m2 = BiMamba2(d_model, d_state=hd, headdim=hd, chunk_size=cs).to(dev)
    compare(rep, f"BiMamba2 block d{d_model} padded B4 L{t}", m2, x, lens, "ssd", dev, TOL)


def check_encoder(rep: Report, dev: torch.device, size: str) -> None:
    torch.manual_seed(0)
    model = build_model(named_config(f"conmamba-{size}", vocab_size=31, dropout=0.0)).to(dev)
    t = 3000 if dev.type == "cuda" else 200           # 30 s of features on GPU, padded batch
    lens = torch.tensor([t, t * 3 // 4, t * 2 // 5, t // 9], device=dev)
    feats = torch.randn(4, t, 80, device=dev)
    compare(rep, f"ConMamba-{size} CTC model (log-probs) B4 T{t}", model, feats, lens, "selective_scan", dev,
            ENC_TOL)
    why = cuda_ready("selective_scan", dev)
    if why:
        rep.check("padding invariance, cuda backend", "float32", None, None, (1e-5, 0), f"skipped: {why}")
        return
    model.eval().set_scan_backend("cuda")
    with torch.no_grad():
        lp, ol = model(feats, lens)
        err = 0.0
        for i in range(4):
            a, al = model(feats[i:i + 1, :lens[i]], lens[i:i + 1])
            err = max(err, (a[0, :al[0]] - lp[i, :ol[i]]).abs().max().item())
    rep.check("padding invariance, cuda backend (max abs diff of log-probs)", "float32", err, None, (1e-4, 0))


def timings(rep: Report, dev: torch.device, size: str, seconds: List[float], budget: float) -> None:
    plan = [("conmamba", "torch"), ("conmamba", "cuda"), ("conmamba-mamba2", "torch"), ("conmamba-mamba2", "cuda"),
            ("conformer", "torch")]
    dtypes = [("bfloat16", torch.bfloat16), ("float32", None)] if dev.type == "cuda" else [("float32", None)]
    for dtype, amp in dtypes:
        for s in (seconds if dtype == "bfloat16" or dev.type != "cuda" else seconds[:2]):
            for variant, backend in plan:
                op = "ssd" if "mamba2" in variant else "selective_scan"
                if backend == "cuda" and cuda_ready(op, dev):
                    continue
                try:
                    row = bench_variant(variant, size, s, dev, repeats=3, budget_s=budget, max_attn_gb=40.0,
                                        scan_backend=backend, vocab_size=31, amp=amp)
                    d = dict(row.__dict__, backend=backend if variant != "conformer" else "-", dtype=dtype)
                except Exception as err:
                    d = dict(variant=variant, backend=backend, dtype=dtype, seconds=s, frames=int(s * 100),
                             fwd_ms=None, fwdbwd_ms=None, fwd_peak_mb=None, fwdbwd_peak_mb=None,
                             notes=[f"error: {err!r}"[:200]])
                    if dev.type == "cuda":
                        torch.cuda.empty_cache()
                rep.data["timings"].append(d)
                print(f"[time] {variant} {backend} {dtype} {s:g}s: fwd {d['fwd_ms']} ms, fwd+bwd {d['fwdbwd_ms']} ms, "
                      f"peak {d['fwd_peak_mb']}/{d['fwdbwd_peak_mb']} MB {d['notes']}", flush=True)
                rep.save()


def main() -> None:
    p = argparse.ArgumentParser(description="mlma GPU check: torch vs mamba-ssm backends")
    p.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"))
    p.add_argument("--size", default=None, help="model size for encoder check and timings (default paper on GPU)")
    p.add_argument("--seconds", default="20,300,60,180,5", help="lengths, most informative first")
    p.add_argument("--budget", type=float, default=2.0, help="seconds of repeats per timing point")
    p.add_argument("--skip", default="", help="comma list of steps to skip: ops,blocks,encoder,timings")
    p.add_argument("--allow-cpu", action="store_true", help="run on CPU at a tiny size (script test)")
    p.add_argument("--self-test", action="store_true",
                   help="with --allow-cpu: sequential references stand in for mamba-ssm, so all checks run")
    a = p.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cpu" and not a.allow_cpu:
        sys.exit("no CUDA device (use --allow-cpu to test the script)")
    if a.self_test:
        enable_self_test()
    size = a.size or ("paper" if dev.type == "cuda" else "tiny")
    rep = Report(Path(a.out))
    env = rep.data["env"]
    env.update(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda, size=size,
               device=torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu")
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    env["triton_f32_default"] = os.environ.get("TRITON_F32_DEFAULT")  # "ieee": no TF32 in Triton's fp32 dots
    env.update({f"mamba_ssm_{k}": v for k, v in backends.describe().items()})
    print("[env]", json.dumps(env), flush=True)
    rep.save()
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False   # fp32 comparisons in true fp32
        torch.backends.cudnn.allow_tf32 = False
    skip = set(a.skip.split(","))
    steps = [("ops", lambda: check_ops(rep, dev)),
             ("blocks", lambda: check_blocks(rep, dev, 256 if dev.type == "cuda" else 32)),
             ("encoder", lambda: check_encoder(rep, dev, size)),
             ("timings", lambda: timings(rep, dev, size, [float(s) for s in a.seconds.split(",")], a.budget))]
    for name, fn in steps:
        if name not in skip:
            rep.step(name, fn)
    bad = [c["check"] for c in rep.data["checks"] if c["ok"] is False]
    print(f"[done] {len(rep.data['checks'])} checks, failed: {bad}, errors: {len(rep.data['errors'])}", flush=True)


if __name__ == "__main__":
    main()
