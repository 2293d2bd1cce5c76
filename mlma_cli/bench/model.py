"""Encoder cost vs utterance length: ConMamba against its Conformer twin (and optionally the Mamba-2 mixer).

Forward (eval, no grad) and forward+backward (train mode) time and peak memory of the whole CTC model on a batch
of utterances of S seconds (100 feature frames per second, 25 per second after subsampling), for several S.
At each length the variants' timed runs are interleaved (A B A B ...), so load from other processes hits all of
them alike; each time is the median of its repeats. Per length, the ConMamba / Conformer ratio of forward time is
reported beside the ratio of their multiply-add counts (``bench/macs.py``). With ``--onnx`` the same models (random
weights) are exported as ``mlma export`` does and their forward pass is timed in onnxruntime too (device
"onnxruntime-cpu", same threads, runs interleaved the same way).
Peak memory: torch.cuda.max_memory_allocated on GPU; on CPU the peak rise of the process RSS, sampled every 2 ms
(after returning freed heap to the OS), a close lower bound. Run through ``mlma bench model`` or::

    python -m mlma_cli.bench.model --size tiny --seconds 2,5,10,15 [--onnx]

Never part of the test suite.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import tempfile
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import torch

VARIANTS = {  # label -> (named size prefix, overrides)
    "conmamba": ("conmamba", {}),
    "conmamba-mamba2": ("conmamba", {"mixer": "mamba2"}),
    "conformer": ("conformer", {}),
}


@dataclass
class ModelBenchRow:
    variant: str
    size: str
    device: str
    params_m: float
    seconds: float
    frames: int
    batch: int = 1
    macs_g: Optional[float] = None   # multiply-adds of the whole batch, 1e9 (None: not counted for this variant)
    fwd_ms: Optional[float] = None
    fwd_peak_mb: Optional[float] = None
    fwdbwd_ms: Optional[float] = None
    fwdbwd_peak_mb: Optional[float] = None
    notes: List[str] = field(default_factory=list)


class _RssPeak:
    """Peak rise of this process's resident memory while the block runs (CPU)."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self) -> "_RssPeak":
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        self.base = self.peak = self._rss()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def rise_mb(self) -> float:
        return (self.peak - self.base) / 2 ** 20


@contextmanager
def _peak_memory(device: torch.device) -> Iterator[Dict[str, float]]:
    out: Dict[str, float] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield out
        torch.cuda.synchronize(device)
        out["mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
    else:
        with _RssPeak() as rss:
            yield out
        out["mb"] = rss.rise_mb


def _time_once(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def _timed_interleaved(fns: Dict[str, object], device: torch.device, repeats: int, budget_s: float,
                       warmup: int = 2) -> Dict[str, float]:
    """Median wall time (ms) of each fn: ``warmup`` untimed rounds, then timed rounds that run every fn once in turn,
    the order reversed every other round (so no fn always runs right after the same other one).

    A first call at a new shape builds oneDNN primitives, faults in fresh memory and wakes thread pools, and one
    call is not always enough to settle that (a point's first timed run used to be the slow one), hence two warm-up
    rounds. Stops after `repeats` timed rounds or once they have taken budget_s (at least one round always runs).
    """
    order = list(fns)
    for _ in range(warmup):
        for k in order:
            _time_once(fns[k], device)
    spent = 0.0
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for i in range(repeats):
        if all(times.values()) and spent > budget_s:
            break
        for k in (order if i % 2 == 0 else order[::-1]):
            times[k].append(_time_once(fns[k], device))
            spent += times[k][-1]
    return {k: 1000 * sorted(v)[len(v) // 2] for k, v in times.items()}


def _timed(fn, device: torch.device, repeats: int, budget_s: float) -> float:
    """Median wall time (ms) of one fn (see _timed_interleaved)."""
    return _timed_interleaved({"fn": fn}, device, repeats, budget_s)["fn"]


def _autocast(device: torch.device, amp: Optional[torch.dtype]):
    return nullcontext() if amp is None else torch.autocast(device.type, dtype=amp)


def _attention_bytes(cfg, frames: int, train: bool) -> int:
    """Rough peak of the Conformer's (B=1, H, T', T') attention tensors: about six T'xT' score-sized tensors live
    at once in a forward pass (position scores are (T', 2T'-1) before the shift), four more kept per layer for
    backward."""
    t = -(-frames // cfg.subsampling_factor)
    per = cfg.num_heads * t * t * 4
    return per * (6 + (4 * cfg.num_layers if train else 0))


@lru_cache(maxsize=6)
def _model(variant: str, size: str, device: str, scan_backend: str, vocab_size: int):
    """Built once per point set (a length sweep reuses it)."""
    from mlma_cli.model import build_model, named_config

    prefix, overrides = VARIANTS[variant]
    cfg = named_config(f"{prefix}-{size}", vocab_size=vocab_size, scan_backend=scan_backend, **overrides)
    torch.manual_seed(0)
    return build_model(cfg).to(device)


def _macs_g(cfg, frames: int, batch: int) -> Optional[float]:
    from mlma_cli.bench.macs import model_macs

    if cfg.encoder == "conmamba" and cfg.mixer != "mamba1":
        return None
    return round(batch * model_macs(cfg, frames)["total"] / 1e9, 3)


def bench_point(variants: Sequence[str], size: str, seconds: float, device: torch.device, repeats: int = 3,
                budget_s: float = 20.0, max_attn_gb: float = 4.0, scan_backend: str = "auto",
                vocab_size: int = 500, amp: Optional[torch.dtype] = None, batch: int = 1,
                backward: bool = True) -> List[ModelBenchRow]:
    """Time every variant at one (size, length, batch) point, their repeats interleaved; one row per variant.

    Forward: eval mode under torch.inference_mode(). Forward+backward: train mode (skipped when ``backward`` is
    False). Peak memory comes from one extra run per variant after the timing (the RSS sampler would disturb timed
    runs). amp: autocast dtype (e.g. torch.bfloat16) or None.
    """
    frames = int(round(seconds * 100))
    models = {v: _model(v, size, str(device), scan_backend, vocab_size) for v in variants}
    rows = {v: ModelBenchRow(v, size, str(device), sum(p.numel() for p in m.parameters()) / 1e6, seconds, frames,
                             batch, _macs_g(m.config, frames, batch)) for v, m in models.items()}
    num_features = next(iter(models.values())).config.num_features
    feats = torch.randn(batch, frames, num_features, device=device)
    lens = torch.full((batch,), frames, device=device)

    def fwd(model):
        def run() -> None:
            with torch.inference_mode(), _autocast(device, amp):
                model(feats, lens)
        return run

    def fwdbwd(model):
        def run() -> None:
            with _autocast(device, amp):
                log_probs, _ = model(feats, lens)
            log_probs.logsumexp(-1).sum().backward()   # any scalar: the backward pass is what we time
            model.zero_grad(set_to_none=True)
        return run

    for name, make, train in (("fwd", fwd, False), ("fwdbwd", fwdbwd, True))[:2 if backward else 1]:
        fns = {}
        for v, model in models.items():
            cfg = model.config
            if cfg.encoder == "conformer" and batch * _attention_bytes(cfg, frames, train) > max_attn_gb * 2 ** 30:
                gb = batch * _attention_bytes(cfg, frames, train) / 2 ** 30
                rows[v].notes.append(f"{name} skipped: attention ~{gb:.1f} GB > {max_attn_gb:g} GB cap")
                continue
            model.train(train)
            fns[v] = make(model)
        try:
            times = _timed_interleaved(fns, device, repeats, budget_s) if fns else {}
        except (MemoryError, RuntimeError) as err:  # CUDA OOM is a RuntimeError; CPU says "can't allocate"
            if "out of memory" not in str(err) and "allocate" not in str(err):
                raise
            for v in fns:
                rows[v].notes.append(f"{name}: out of memory")
            continue
        for v, ms in times.items():
            with _peak_memory(device) as mem:
                fns[v]()
            setattr(rows[v], f"{name}_ms", round(ms, 2))
            setattr(rows[v], f"{name}_peak_mb", round(mem["mb"], 1))
    return [rows[v] for v in variants]


ORT_DEVICE = "onnxruntime-cpu"  # the device label of the exported models' rows


def onnx_sessions(variants: Sequence[str], size: str, vocab_size: int, threads: int, work_dir) -> Dict[str, object]:
    """Each variant's model (the same random weights as its PyTorch rows) exported with ``mlma export``'s exporter
    into work_dir and opened in an onnxruntime CPU session with ``threads`` intra-op threads."""
    import onnxruntime as ort

    from mlma_cli.export.onnx_export import export_model

    out = {}
    for v in variants:
        path = Path(work_dir) / f"{v}-{size}.onnx"
        export_model(_model(v, size, "cpu", "auto", vocab_size), path, {})
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
        out[v] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return out


def bench_onnx_point(sessions: Dict[str, object], size: str, seconds: float, repeats: int = 3,
                     budget_s: float = 20.0, vocab_size: int = 500, batch: int = 1) -> List[ModelBenchRow]:
    """Forward time of the exported models in onnxruntime at one (length, batch) point, runs interleaved as in
    :func:`bench_point`. One row per variant, device ORT_DEVICE; no peak memory (onnxruntime keeps its arena
    between runs, so a run's rise in RSS says nothing)."""
    import numpy as np

    frames = int(round(seconds * 100))
    cpu = torch.device("cpu")
    models = {v: _model(v, size, "cpu", "auto", vocab_size) for v in sessions}
    num_features = next(iter(models.values())).config.num_features
    feed = {"x": np.random.default_rng(0).standard_normal((batch, frames, num_features)).astype(np.float32),
            "x_lens": np.full((batch,), frames, dtype=np.int64)}
    fns = {v: (lambda sess=sess: sess.run(None, feed)) for v, sess in sessions.items()}
    times = _timed_interleaved(fns, cpu, repeats, budget_s)
    return [ModelBenchRow(v, size, ORT_DEVICE, sum(p.numel() for p in models[v].parameters()) / 1e6, seconds, frames,
                          batch, _macs_g(models[v].config, frames, batch), fwd_ms=round(ms, 2))
            for v, ms in times.items()]


def bench_variant(variant: str, size: str, seconds: float, device: torch.device, repeats: int = 3,
                  budget_s: float = 20.0, max_attn_gb: float = 4.0, scan_backend: str = "auto",
                  vocab_size: int = 500, amp: Optional[torch.dtype] = None) -> ModelBenchRow:
    """Time one (variant, size, length) point on device, batch 1 (see bench_point)."""
    return bench_point([variant], size, seconds, device, repeats, budget_s, max_attn_gb, scan_backend, vocab_size,
                       amp)[0]


def ratios(rows: Sequence[ModelBenchRow], a: str = "conmamba", b: str = "conformer") -> List[Dict]:
    """Per (device, length): a / b forward time, forward+backward time and multiply-adds (None where missing)."""
    by = {(r.device, r.seconds, r.variant): r for r in rows}
    out = []
    for dev, s in dict.fromkeys((r.device, r.seconds) for r in rows):
        ra, rb = by.get((dev, s, a)), by.get((dev, s, b))
        if ra is None or rb is None:
            continue
        div = lambda x, y: None if x is None or not y else round(x / y, 3)  # noqa: E731
        out.append({"device": dev, "seconds": s, "fwd": div(ra.fwd_ms, rb.fwd_ms),
                    "fwdbwd": div(ra.fwdbwd_ms, rb.fwdbwd_ms), "macs": div(ra.macs_g, rb.macs_g)})
    return out


def crossover(rows: Sequence[ModelBenchRow], a: str = "conmamba", b: str = "conformer") -> Dict[str, Optional[float]]:
    """Per metric, the shortest tested length (s) from which on `a` beats `b` at every longer tested length.

    A missing `b` measurement (skipped: too much memory) counts as `a` winning. None: no such length.
    """
    by = {(r.variant, r.seconds): r for r in rows}
    lengths = sorted({r.seconds for r in rows if r.variant == a})
    out: Dict[str, Optional[float]] = {}
    for metric in ("fwd_ms", "fwdbwd_ms", "fwd_peak_mb", "fwdbwd_peak_mb"):
        if all(getattr(r, metric) is None for r in rows if r.variant == a):
            continue                                   # not measured (e.g. no training in onnxruntime)
        wins = []
        for s in lengths:
            va = getattr(by[(a, s)], metric) if (a, s) in by else None
            vb = getattr(by[(b, s)], metric) if (b, s) in by else None
            wins.append(va is not None and (vb is None or va < vb))
        start = None
        for s, w in zip(reversed(lengths), reversed(wins)):
            if not w:
                break
            start = s
        out[metric] = start
    return out


def run_model_bench(size: str = "tiny", seconds: Sequence[float] = (2, 5, 10, 15),
                    device: str = "auto", variants: Sequence[str] = ("conmamba", "conformer"), repeats: int = 3,
                    budget_s: float = 10.0, max_attn_gb: float = 4.0, scan_backend: str = "auto",
                    threads: Optional[int] = None, progress=None, batch: int = 1, onnx: bool = False,
                    backward: bool = True) -> Dict:
    """Run the grid; returns {"env": ..., "rows": [...], "ratios": [...], "crossover": {...}} (JSON-ready).

    onnx: also export the variants (random weights, as their PyTorch rows) and time their forward pass in
    onnxruntime on the CPU with the same thread count (rows with device ORT_DEVICE).
    backward: also time forward+backward (training). False times inference as a decode process sees it: with no
    backward pass run before in the process, which shifts later forward timings by a few percent (RESULTS.md)."""
    if threads:
        torch.set_num_threads(threads)
    load_at_start = os.getloadavg()[0]  # other processes on the machine skew CPU timings
    devices = [torch.device("cpu")]
    if device == "auto" and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    elif device not in ("auto", "cpu"):
        devices = [torch.device(device)]
        if devices[0].type == "cuda" and not torch.cuda.is_available():
            from mlma_cli.errors import MlmaError

            raise MlmaError(f"--device {device}: no CUDA device visible to torch {torch.__version__}")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    rows: List[ModelBenchRow] = []
    for dev in devices:
        for s in seconds:
            for row in bench_point(variants, size, s, dev, repeats, budget_s, max_attn_gb, scan_backend,
                                   batch=batch, backward=backward):
                rows.append(row)
                if progress:
                    progress(row)
    if onnx:
        try:
            import onnxruntime
        except ImportError as err:
            from mlma_cli.errors import MissingDependencyError

            raise MissingDependencyError(f"--onnx needs onnxruntime ({err}): pip install 'mlma[onnx]'") from err
        with tempfile.TemporaryDirectory(prefix="mlma-bench-onnx-") as work:
            sessions = onnx_sessions(variants, size, 500, torch.get_num_threads(), work)
            for s in seconds:
                for row in bench_onnx_point(sessions, size, s, repeats, budget_s, batch=batch):
                    rows.append(row)
                    if progress:
                        progress(row)
    cross = {dev: crossover([r for r in rows if r.device == dev]) for dev in dict.fromkeys(r.device for r in rows)}
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "size": size, "batch": batch,
           "repeats": repeats, "backward": backward, "loadavg_1min_at_start": load_at_start, "loadavg_1min_at_end": os.getloadavg()[0],
           "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "onnxruntime": onnxruntime.__version__ if onnx else None}
    return {"env": env, "rows": [asdict(r) for r in rows], "ratios": ratios(rows), "crossover": cross}


def render_table(result: Dict):
    """A rich Table of the rows: one line per (device, length, variant); the ConMamba line of each length also
    carries ConMamba / Conformer forward time and multiply-add ratios."""
    from rich.table import Table

    env = result["env"]
    table = Table(title=f"mlma bench model (size {env['size']}, batch {env.get('batch', 1)}, "
                        f"{env['threads']} threads, median of {env.get('repeats', '?')} interleaved runs)")
    for col in ("device", "audio s", "frames", "variant", "params M", "GMAC", "fwd ms", "ConMamba / Conformer fwd",
                "MAC ratio", "fwd MB", "fwd+bwd ms", "fwd+bwd MB", "notes"):
        table.add_column(col, justify="left" if col in ("device", "variant", "notes") else "right",
                         no_wrap=col != "notes")

    def f(v, fmt="{:,.1f}"):
        return "-" if v is None else fmt.format(v)

    ratio = {(q["device"], q["seconds"]): q for q in result.get("ratios", [])}
    for r in result["rows"]:
        q = ratio.get((r["device"], r["seconds"])) if r["variant"] == "conmamba" else None
        table.add_row(r["device"], f"{r['seconds']:g}", str(r["frames"]), r["variant"], f"{r['params_m']:.2f}",
                      f(r.get("macs_g"), "{:.2f}"), f(r["fwd_ms"]), f(q and q["fwd"], "{:.2f}x"),
                      f(q and q["macs"], "{:.2f}x"), f(r["fwd_peak_mb"]), f(r["fwdbwd_ms"]), f(r["fwdbwd_peak_mb"]),
                      "; ".join(r["notes"]))
    return table


def describe_crossover(result: Dict) -> List[str]:
    lines = []
    names = {"fwd_ms": "forward time", "fwdbwd_ms": "forward+backward time", "fwd_peak_mb": "forward memory",
             "fwdbwd_peak_mb": "forward+backward memory"}
    for dev, cross in result["crossover"].items():
        for metric, s in cross.items():
            what = f"from {s:g} s of audio" if s is not None else "at none of the tested lengths"
            lines.append(f"{dev}: ConMamba beats the Conformer in {names[metric]} {what}")
    return lines


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="tiny", choices=["tiny", "small", "paper"])
    p.add_argument("--seconds", default="2,5,10,15")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--variants", default="conmamba,conformer")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--onnx", action="store_true", help="also time the exported models in onnxruntime")
    p.add_argument("--forward-only", action="store_true", help="skip the forward+backward (training) runs")
    p.add_argument("--out", default="bench_model.json")
    a = p.parse_args(argv)
    res = run_model_bench(a.size, [float(s) for s in a.seconds.split(",")], a.device, a.variants.split(","),
                          a.repeats, threads=a.threads, batch=a.batch, onnx=a.onnx, backward=not a.forward_only)
    from rich.console import Console

    Console().print(render_table(res))
    for line in describe_crossover(res):
        print(line)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
