"""Scan benchmark: mlma's selective scan against the plain loop and public pure-PyTorch scans.

    from mlma_cli.bench.scan import run_scan_bench
    result = run_scan_bench(json_path="exp/bench/scan.json")

Everything runs side by side in one process, so ratios against the plain loop compare like with like
on a machine whose speed drifts (shared CPUs). Rows:
  mlma (compiled C kernel)  | mlma (pure-PyTorch chunked fallback) | plain torch loop (the reference)
  | mambapy parallel scan (optional import) | mamba-ssm selective_scan_ref (optional import)
and the Mamba-2 SSD chunked scan against its sequential reference.

Method (also stored in the JSON):
- time: median is noisy on shared CPUs, so each entry is the minimum over ``repeats`` runs after one
  warm-up run; forward under torch.no_grad, forward+backward = forward with grad + backward of sum(y * g).
- peak memory: torch CPU allocations are invisible to tracemalloc, so each (scan, mode) runs once in a
  fresh subprocess that builds its inputs, resets the kernel's peak-RSS mark (/proc/self/clear_refs),
  runs, and reports VmHWM - VmRSS-before: the extra resident memory the operation needed at its peak,
  inputs excluded (includes the glibc/torch allocator's retained pages, as the OS sees them).
All rows compute the same function: delta_softplus with delta_bias and D, no gate z (mambapy has none).
"""
from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from typing import Callable, Dict, Optional, Sequence

import torch

PLAIN = "plain torch loop"
MLMA_KERNEL = "mlma selective_scan (C kernel)"
MLMA_TORCH = "mlma selective_scan (pure PyTorch)"
MAMBAPY = "mambapy parallel scan"
MAMBA_SSM = "mamba-ssm selective_scan_ref"
MLMA_KERNEL_ZIG = "mlma selective_scan (C kernel built by zig cc)"
SSD_CHUNK = "mlma ssd_chunk_scan"
SSD_SEQ = "ssd sequential loop"

METHOD = ("time: min over repeats after one warm-up, same process for all rows; "
          "forward under no_grad; peak memory: peak RSS (VmHWM, reset before the call) minus RSS before, "
          "one fresh subprocess per (scan, mode), inputs excluded")


# ----------------------------------------------------------------------------------------- inputs
def _scan_inputs(batch: int, d_inner: int, d_state: int, length: int, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Mamba-1 inputs at the shapes a ConMamba layer produces: u, delta (B, D, L), A (D, N), B, C (B, N, L)."""
    g = torch.Generator().manual_seed(seed)
    return dict(
        u=torch.randn(batch, d_inner, length, generator=g),
        delta=torch.randn(batch, d_inner, length, generator=g) * 0.5 - 2.0,
        A=-torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1),  # S4D-real init
        B=torch.randn(batch, d_state, length, generator=g),
        C=torch.randn(batch, d_state, length, generator=g),
        D=torch.ones(d_inner),
        delta_bias=torch.rand(d_inner, generator=g) * 0.1,
    )


def _ssd_inputs(batch: int, nheads: int, headdim: int, d_state: int, length: int, ngroups: int = 1,
                seed: int = 0) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return dict(
        x=torch.randn(batch, length, nheads, headdim, generator=g),
        dt=torch.randn(batch, length, nheads, generator=g) * 0.5 - 2.0,
        A=-torch.rand(nheads, generator=g) * 4 - 0.5,
        B=torch.randn(batch, length, ngroups, d_state, generator=g),
        C=torch.randn(batch, length, ngroups, d_state, generator=g),
        D=torch.ones(nheads),
        dt_bias=torch.rand(nheads, generator=g) * 0.1,
    )


# ------------------------------------------------------------------------------------ scan rows
_DEFAULT = object()


def _mlma(lib=_DEFAULT) -> Callable:
    """mlma's selective_scan; with ``lib`` given, the CPU kernel library it runs on (None: the PyTorch path)."""
    from mlma_cli.model import scan as scan_mod

    def fn(u, delta, A, B, C, D, delta_bias):
        if lib is _DEFAULT:
            return scan_mod.selective_scan(u, delta, A, B, C, D, None, delta_bias, True)
        real = scan_mod.scan_cpu_kernel.load
        scan_mod.scan_cpu_kernel.load = lambda: lib  # the autograd node keeps it for the backward
        try:
            return scan_mod.selective_scan(u, delta, A, B, C, D, None, delta_bias, True)
        finally:
            scan_mod.scan_cpu_kernel.load = real
    return fn


def _plain() -> Callable:
    from mlma_cli.model.scan import selective_scan_sequential
    return lambda u, delta, A, B, C, D, delta_bias: selective_scan_sequential(u, delta, A, B, C, D, None, delta_bias, True)


def _mambapy() -> Optional[Callable]:
    try:
        from mambapy.mamba import MambaBlock
    except Exception:
        return None

    def fn(u, delta, A, B, C, D, delta_bias):
        # mambapy's own selective_scan (uses no instance state) in its (B, L, D) layout; softplus
        # happens in its caller, so it is applied here the same way.
        dt = torch.nn.functional.softplus(delta + delta_bias[:, None]).transpose(1, 2)
        y = MambaBlock.selective_scan(None, u.transpose(1, 2), dt, A, B.transpose(1, 2), C.transpose(1, 2), D)
        return y.transpose(1, 2)
    return fn


def _mamba_ssm_ref() -> Optional[Callable]:
    """mamba-ssm's selective_scan_ref (imported without its CUDA-only package __init__), or None."""
    from mlma_cli.model.backends import import_mamba_ssm_reference

    try:
        ref = import_mamba_ssm_reference("mamba_ssm.ops.selective_scan_interface", "selective_scan_ref")
    except Exception:
        return None
    return lambda u, delta, A, B, C, D, delta_bias: ref(u, delta, A, B, C, D, None, delta_bias, True)


def _ssd_fns() -> Dict[str, Callable]:
    from mlma_cli.model.ssd import ssd_chunk_scan, ssd_sequential
    return {SSD_CHUNK: ssd_chunk_scan, SSD_SEQ: ssd_sequential}


def _zig_kernel():
    """The C kernel built by zig cc (the ziglang wheel) when that is installed and is not already what the
    default row uses, so both compilers' builds are timed side by side; else None."""
    from mlma_cli.model import scan_cpu_kernel as kernel

    zig = [(label, cmd) for label, cmd in kernel.compiler_candidates() if label.startswith("zig cc")]
    if not zig or kernel.built_with() in (None, zig[0][0]):
        return None
    return kernel.build_with(zig[0][1], zig[0][0])


def _row_fns() -> Dict[str, Optional[Callable]]:
    zig = _zig_kernel()
    return {MLMA_KERNEL: _mlma(), MLMA_KERNEL_ZIG: _mlma(zig) if zig is not None else None, MLMA_TORCH: _mlma(None),
            PLAIN: _plain(), MAMBAPY: _mambapy(), MAMBA_SSM: _mamba_ssm_ref()}


# -------------------------------------------------------------------------------------- timing
def _call(fn: Callable, inputs: Dict[str, torch.Tensor], backward: bool, extra: Optional[dict] = None) -> None:
    extra = extra or {}
    if not backward:
        with torch.no_grad():
            fn(**inputs, **extra)
        return
    leaves = {k: v.detach().requires_grad_() for k, v in inputs.items()}
    y = fn(**leaves, **extra)
    gen = torch.Generator().manual_seed(1)
    y.backward(torch.randn(y.shape, generator=gen))


def _time_ms(fn: Callable, inputs, backward: bool, repeats: int, extra: Optional[dict] = None) -> float:
    _call(fn, inputs, backward, extra)  # warm-up: kernel build/load, allocator, thread pool
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        _call(fn, inputs, backward, extra)
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise KeyError(field)


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _probe(spec: dict) -> dict:
    """Run one (scan, mode) once in this (fresh) process and report its peak extra resident memory."""
    torch.set_num_threads(spec["threads"])
    if spec["kind"] == "ssd":
        fn = _ssd_fns()[spec["name"]]
        inputs = _ssd_inputs(**spec["shape"])
        extra = {"chunk_size": spec["chunk_size"], "dt_softplus": True}
    else:
        fn = _row_fns()[spec["name"]]
        inputs = _scan_inputs(**spec["shape"])
        extra = None
    if spec["name"] == MLMA_KERNEL:
        from mlma_cli.model import scan_cpu_kernel
        scan_cpu_kernel.load()  # the one-time library load is not the operation's memory
    if spec["backward"]:  # start autograd's engine threads now: a one-time cost, not the scan's memory
        torch.ones(1, requires_grad=True).sum().backward()
    reset = _reset_peak_rss()
    before = _status_mb("VmRSS")
    hwm_before = _status_mb("VmHWM")
    _call(fn, inputs, spec["backward"], extra)
    peak = _status_mb("VmHWM")
    # Without a reset, an earlier high-water mark (imports) can hide a smaller peak: say so.
    return {"peak_extra_mb": round(peak - before, 1), "hidden_by_earlier_peak": (not reset) and peak <= hwm_before}


def _peak_mb(spec: dict) -> Optional[float]:
    proc = subprocess.run([sys.executable, "-m", "mlma_cli.bench.scan", "--probe", json.dumps(spec)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"memory probe {spec['name']} failed: {proc.stderr.strip()[-800:]}", file=sys.stderr)
        return None
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return None if out["hidden_by_earlier_peak"] else out["peak_extra_mb"]


# ----------------------------------------------------------------------------------------- main
def run_scan_bench(
    batch: int = 8,
    d_inner: int = 512,
    d_state: int = 16,
    length: int = 500,
    lengths: Sequence[int] = (125, 250, 500, 1000, 2000, 4000),
    repeats: int = 5,
    threads: Optional[int] = None,
    memory: bool = True,
    mamba_ssm_backward: bool = True,
    plain_max_length: int = 2000,
    ssd: bool = True,
    ssd_heads: int = 8,
    ssd_headdim: int = 64,
    ssd_state: int = 64,
    ssd_chunk: int = 64,
    json_path: Optional[str] = None,
    console=None,
) -> dict:
    """Benchmark the scans and print rich tables; returns (and writes to ``json_path``) the results.

    Shapes: Mamba-1 rows use u (batch, d_inner, length), d_state; the length sweep runs mlma and the
    plain loop (up to ``plain_max_length``, whose autograd memory grows as B*D*L*N) over ``lengths``;
    SSD rows use x (batch, length, ssd_heads, ssd_headdim), d_state ``ssd_state``, chunk ``ssd_chunk``.
    ``mamba_ssm_backward=False`` skips mamba-ssm's reference backward (tens of seconds).
    """
    from rich.console import Console
    from rich.table import Table

    from mlma_cli.model import scan_cpu_kernel
    from mlma_cli.model.scan import scan_implementation

    console = console or Console()
    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    shape = dict(batch=batch, d_inner=d_inner, d_state=d_state, length=length)
    fns = _row_fns()
    if scan_implementation("cpu") != "c-kernel":
        fns[MLMA_KERNEL] = None  # no compiler here: only the fallback row is meaningful
    result: dict = {
        "machine": {"cpu": _cpu_name(), "threads": threads, "torch": torch.__version__,
                    "python": platform.python_version(), "scan_kernel_compiler": scan_cpu_kernel.built_with()},
        "method": METHOD, "repeats": repeats, "shape": shape, "rows": [], "length_sweep": [], "ssd": None,
    }

    # 1. side-by-side at one shape
    inputs = _scan_inputs(**shape)
    rows = []
    for name, fn in fns.items():
        row = {"name": name, "available": fn is not None}
        if fn is not None:
            console.print(f"[dim]timing {name} ...[/dim]")
            row["fwd_ms"] = _time_ms(fn, inputs, False, repeats)
            slow_bwd = name == MAMBA_SSM
            if slow_bwd and not mamba_ssm_backward:
                row["fwd_bwd_ms"] = None
            else:
                row["fwd_bwd_ms"] = _time_ms(fn, inputs, True, 1 if slow_bwd else repeats)
            if memory:
                spec = dict(kind="scan", name=name, shape=shape, threads=threads)
                row["peak_fwd_mb"] = _peak_mb(dict(spec, backward=False))
                row["peak_fwd_bwd_mb"] = (_peak_mb(dict(spec, backward=True))
                                          if row["fwd_bwd_ms"] is not None else None)
        rows.append(row)
    plain = next(r for r in rows if r["name"] == PLAIN)
    for r in rows:
        if r.get("fwd_ms"):
            r["fwd_speedup_vs_plain"] = plain["fwd_ms"] / r["fwd_ms"]
        if r.get("fwd_bwd_ms"):
            r["fwd_bwd_speedup_vs_plain"] = plain["fwd_bwd_ms"] / r["fwd_bwd_ms"]
    result["rows"] = rows

    table = Table(title=f"Mamba-1 selective scan, float32, B={batch} D={d_inner} N={d_state} L={length}, "
                        f"{threads} threads (min of {repeats})")
    for col in ("scan", "forward ms", "x plain", "fwd+bwd ms", "x plain", "peak MB fwd", "peak MB fwd+bwd"):
        table.add_column(col, justify="left" if col == "scan" else "right")
    for r in rows:
        if not r["available"]:
            why = "n/a (no 2nd compiler)" if r["name"] == MLMA_KERNEL_ZIG else "not installed"
            table.add_row(r["name"], why, "", "", "", "", "")
            continue
        table.add_row(r["name"], _f(r["fwd_ms"]), _x(r.get("fwd_speedup_vs_plain")), _f(r["fwd_bwd_ms"]),
                      _x(r.get("fwd_bwd_speedup_vs_plain")), _f(r.get("peak_fwd_mb")), _f(r.get("peak_fwd_bwd_mb")))
    console.print(table)

    # 2. time against length
    sweep_fns = {MLMA_KERNEL: fns[MLMA_KERNEL] or fns[MLMA_TORCH], PLAIN: fns[PLAIN]}
    sweep = []
    for L in lengths:
        inp = _scan_inputs(batch, d_inner, d_state, L)
        entry = {"length": L}
        for name, fn in sweep_fns.items():
            if name == PLAIN and L > plain_max_length:
                continue
            key = "mlma" if name == MLMA_KERNEL else "plain"
            console.print(f"[dim]L={L}: {key} ...[/dim]")
            entry[f"{key}_fwd_ms"] = _time_ms(fn, inp, False, repeats)
            entry[f"{key}_fwd_bwd_ms"] = _time_ms(fn, inp, True, max(1, repeats // 2) if key == "plain" else repeats)
        sweep.append(entry)
    result["length_sweep"] = sweep
    t2 = Table(title="time against length (ms; per 1000 frames in brackets: flat = linear)")
    for col in ("L", "mlma fwd", "mlma fwd+bwd", "plain fwd", "plain fwd+bwd"):
        t2.add_column(col, justify="right")
    for e in sweep:
        cells = [str(e["length"])]
        for k in ("mlma_fwd_ms", "mlma_fwd_bwd_ms", "plain_fwd_ms", "plain_fwd_bwd_ms"):
            v = e.get(k)
            cells.append("-" if v is None else f"{v:.1f} ({v * 1000 / e['length']:.1f})")
        t2.add_row(*cells)
    console.print(t2)

    # 3. Mamba-2 SSD
    if ssd:
        sshape = dict(batch=batch, nheads=ssd_heads, headdim=ssd_headdim, d_state=ssd_state, length=length)
        sinp = _ssd_inputs(**sshape)
        extra = {"chunk_size": ssd_chunk, "dt_softplus": True}
        srows = []
        for name, fn in _ssd_fns().items():
            console.print(f"[dim]timing {name} ...[/dim]")
            r = {"name": name, "fwd_ms": _time_ms(fn, sinp, False, repeats, extra),
                 "fwd_bwd_ms": _time_ms(fn, sinp, True, repeats if name == SSD_CHUNK else max(1, repeats // 2), extra)}
            if memory:
                spec = dict(kind="ssd", name=name, shape=sshape, threads=threads, chunk_size=ssd_chunk)
                r["peak_fwd_mb"] = _peak_mb(dict(spec, backward=False))
                r["peak_fwd_bwd_mb"] = _peak_mb(dict(spec, backward=True))
            srows.append(r)
        seq = srows[1]
        for r in srows:
            r["fwd_speedup_vs_seq"] = seq["fwd_ms"] / r["fwd_ms"]
            r["fwd_bwd_speedup_vs_seq"] = seq["fwd_bwd_ms"] / r["fwd_bwd_ms"]
        result["ssd"] = {"shape": dict(sshape, ngroups=1, chunk_size=ssd_chunk), "rows": srows}
        t3 = Table(title=f"Mamba-2 SSD, float32, B={batch} L={length} H={ssd_heads} P={ssd_headdim} "
                         f"N={ssd_state} chunk={ssd_chunk}")
        for col in ("scan", "forward ms", "x seq", "fwd+bwd ms", "x seq", "peak MB fwd", "peak MB fwd+bwd"):
            t3.add_column(col, justify="left" if col == "scan" else "right")
        for r in srows:
            t3.add_row(r["name"], _f(r["fwd_ms"]), _x(r["fwd_speedup_vs_seq"]), _f(r["fwd_bwd_ms"]),
                       _x(r["fwd_bwd_speedup_vs_seq"]), _f(r.get("peak_fwd_mb")), _f(r.get("peak_fwd_bwd_mb")))
        console.print(t3)

    console.print(f"[dim]{METHOD}[/dim]")
    if json_path:
        from mlma_cli.utils.io import write_json_atomic
        write_json_atomic(json_path, result)
        console.print(f"wrote {json_path}")
    return result


def _f(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def _x(v) -> str:
    return "" if v is None else f"{v:.2f}x"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    # Internal entry point for the memory probes; the user-facing command is `mlma bench scan`.
    if len(sys.argv) == 3 and sys.argv[1] == "--probe":
        print(json.dumps(_probe(json.loads(sys.argv[2]))))
    else:
        run_scan_bench(json_path=sys.argv[1] if len(sys.argv) > 1 else None)
