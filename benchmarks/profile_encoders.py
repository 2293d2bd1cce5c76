"""Where the forward time of ConMamba and its Conformer twin goes, per model part and per op, on CPU.

For every point of the sweep (size x utterance length x batch x threads) both CTC models of the named size
(``conmamba-<size>``, ``conformer-<size>``, random weights, vocabulary 500) run inference (eval mode, under
torch.inference_mode) on random 80-dim features of S seconds (100 frames per second, no padding). Full sweep
(about 8 minutes on an idle 2-core machine, most of it the paper size at batch 8)::

    .venv/bin/python benchmarks/profile_encoders.py --sizes paper,tiny --seconds 2,5,10,15 --batches 1,8 \\
        --threads 1,2 --repeats 5 --output benchmarks/results/profile_encoders_cpu.json > profile_encoders.md

Run it on an otherwise idle machine: with other processes on the cores, points with as many threads as cores
wait on busy OpenMP threads and their times mean nothing (the load average is printed at start and end).

Quick check::

    .venv/bin/python benchmarks/profile_encoders.py --sizes tiny --seconds 2 --batches 1 --threads 1 --repeats 2

How each number is measured (per point, the two models interleaved: every round runs each model once, the order
reversed every other round, after two untimed warm-up rounds):

- forward ms: median wall time of ``repeats`` plain forward passes (no hooks, no profiler).
- parts: ``repeats`` more forward passes, interleaved with the plain ones, with forward pre-/post-hooks on the
  part modules that read time.perf_counter; a part's time is the median over those runs of the summed wall time
  of its modules. On CPU every op (the C kernels included, which run on torch's OpenMP pool) returns only when
  its work is done, so a module's wall time is its inclusive time. The parts do not nest, so they add up:
  frontend = encoder.frontend; ffn = ffn1 + ffn2 of every layer (each with its own LayerNorm); mixer = the
  layers' BiMamba (``mixer``, in/out projections included) or relative-position attention (``attn``); conv =
  the convolution modules (with their LayerNorms); norms = the LayerNorms before the mixer, after each layer and
  after the encoder; head = the CTC Linear. other = the hooked forward's wall time minus the parts: residual adds
  and scaling, CMVN, masks, the log-softmax, and the hooks' own cost. A part's share is its median over the sum
  of the parts' medians (the "sum" row), which comes close to the median hooked forward (``hooked ms``); that
  beside ``forward ms`` shows the hooks' cost (a few microseconds per hooked module call).
- MACs: ``mlma_cli/bench/macs.py`` (batch 1) times the batch; ms/GMAC = part time / its GMACs, so parts whose
  time is overhead rather than arithmetic stand out. norms and other have no count.
- top ops: one more forward per model under torch.profiler (CPU), key_averages sorted by self CPU time, with the
  custom C kernels under their own names (mlma_biconv_tm, mlma_biscan_tm_fwd: scan_cpu_kernel names them with
  record_function scopes). The profiler slows small ops down; its times rank ops, the part table gives times.

Output: markdown on stdout (per point, as it finishes, the part and op tables; then a summary table) and, with ``--output``, every
number as JSON. Not part of the test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List, Sequence

import torch
import torch.nn as nn

from mlma_cli.bench.macs import model_macs
from mlma_cli.model import build_model, named_config

ENCODERS = ("conmamba", "conformer")
PARTS = ("frontend", "ffn", "mixer", "conv", "norms", "head", "other")
MAC_PARTS = ("frontend", "ffn", "mixer", "conv", "head")   # the parts macs.py counts
VOCAB_SIZE = 500
WARMUP_ROUNDS = 2


def part_modules(model: nn.Module) -> Dict[str, List[nn.Module]]:
    """The modules of each timed part (all but "other"), none inside another."""
    enc = model.encoder
    parts: Dict[str, List[nn.Module]] = {"frontend": [enc.frontend], "ffn": [], "mixer": [], "conv": [],
                                         "norms": [], "head": [model.ctc_head]}
    for layer in enc.layers:
        parts["ffn"] += [layer.ffn1, layer.ffn2]
        parts["mixer"].append(layer.mixer if hasattr(layer, "mixer") else layer.attn)
        parts["conv"].append(layer.conv)
        parts["norms"] += [m for m in layer.children() if isinstance(m, nn.LayerNorm)]
    parts["norms"].append(enc.final_norm)
    return parts


class PartTimer:
    """Forward hooks that add each call's wall time (s) to its part in ``self.seconds`` while in the block."""

    def __init__(self, model: nn.Module) -> None:
        self.parts = part_modules(model)
        self.seconds: Dict[str, float] = {}

    def __enter__(self) -> "PartTimer":
        self.seconds = dict.fromkeys(self.parts, 0.0)
        self._handles, starts = [], {}
        for name, modules in self.parts.items():
            for m in modules:
                def pre(mod, args, key=id(m)):
                    starts[key] = time.perf_counter()

                def post(mod, args, out, key=id(m), name=name):
                    self.seconds[name] += time.perf_counter() - starts[key]

                self._handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()


def time_point(models: Dict[str, nn.Module], feats: torch.Tensor, lens: torch.Tensor, repeats: int) -> Dict:
    """Plain and hooked forward times of every model, interleaved (see the module docstring). Per model:
    {"fwd_ms": median, "fwd_runs_ms": [...], "hooked_ms": median, "parts_ms": {part: median}}."""
    def forward(model: nn.Module) -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            model(feats, lens)
        return time.perf_counter() - t0

    order = list(models)
    for _ in range(WARMUP_ROUNDS):
        for k in order:
            forward(models[k])
    plain = {k: [] for k in order}
    hooked = {k: [] for k in order}
    parts = {k: [] for k in order}
    for i in range(repeats):
        for k in (order if i % 2 == 0 else order[::-1]):
            plain[k].append(forward(models[k]))
            with PartTimer(models[k]) as timer:
                total = forward(models[k])
            hooked[k].append(total)
            parts[k].append({**timer.seconds, "other": total - sum(timer.seconds.values())})
    out = {}
    for k in order:
        out[k] = {"fwd_ms": 1e3 * statistics.median(plain[k]), "fwd_runs_ms": [round(1e3 * t, 3) for t in plain[k]],
                  "hooked_ms": 1e3 * statistics.median(hooked[k]),
                  "parts_ms": {p: 1e3 * statistics.median([run[p] for run in parts[k]]) for p in PARTS}}
    return out


def top_ops(model: nn.Module, feats: torch.Tensor, lens: torch.Tensor, n: int) -> Dict:
    """One forward under torch.profiler: its wall ms, the total self CPU ms and the n ops of most self CPU time."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        with torch.inference_mode():
            model(feats, lens)
        wall = time.perf_counter() - t0
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total_us = sum(e.self_cpu_time_total for e in events)
    return {"profiled_ms": 1e3 * wall, "self_total_ms": total_us / 1e3,
            "ops": [{"name": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1e3,
                     "share": e.self_cpu_time_total / total_us if total_us else 0.0} for e in events[:n]]}


def profile_point(models: Dict[str, nn.Module], size: str, seconds: float, batch: int, threads: int,
                  repeats: int, n_ops: int) -> Dict:
    """All numbers of one point: per model the times, parts with MACs, and top ops; the ConMamba/Conformer ratios."""
    torch.set_num_threads(threads)
    frames = int(round(seconds * 100))
    num_features = next(iter(models.values())).config.num_features
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(batch, frames, num_features, generator=g)
    lens = torch.full((batch,), frames, dtype=torch.int64)
    times = time_point(models, feats, lens, repeats)
    point = {"size": size, "seconds": seconds, "frames": frames, "batch": batch, "threads": threads, "models": {}}
    for k, model in models.items():
        macs = {p: batch * v for p, v in model_macs(model.config, frames).items()}
        t = times[k]
        parts, parts_sum = {}, sum(t["parts_ms"].values())
        for p in PARTS:
            ms = t["parts_ms"][p]
            gmacs = macs[p] / 1e9 if p in MAC_PARTS else None
            parts[p] = {"ms": round(ms, 3), "share": round(ms / parts_sum, 4),
                        "gmacs": None if gmacs is None else round(gmacs, 4),
                        "ms_per_gmac": None if not gmacs else round(ms / gmacs, 2)}
        point["models"][k] = {
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
            "fwd_ms": round(t["fwd_ms"], 3), "fwd_runs_ms": t["fwd_runs_ms"], "hooked_ms": round(t["hooked_ms"], 3),
            "gmacs": round(macs["total"] / 1e9, 4), "ms_per_gmac": round(t["fwd_ms"] / (macs["total"] / 1e9), 2),
            "parts": parts, **top_ops(model, feats, lens, n_ops)}
    a, b = (point["models"][k] for k in ENCODERS)
    point["fwd_ratio"] = round(a["fwd_ms"] / b["fwd_ms"], 3)
    point["mac_ratio"] = round(a["gmacs"] / b["gmacs"], 3)
    return point


def _fmt(x, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def point_markdown(point: Dict) -> str:
    """The part table (both models side by side) and the top-op table of one point."""
    a, b = (point["models"][k] for k in ENCODERS)
    lines = [f"### {point['size']}, {point['seconds']:g} s, batch {point['batch']}, {point['threads']} thread(s)",
             "",
             f"forward: ConMamba {a['fwd_ms']:.1f} ms, Conformer {b['fwd_ms']:.1f} ms, ratio {point['fwd_ratio']:.2f} "
             f"(MACs {point['mac_ratio']:.2f}); with hooks {a['hooked_ms']:.1f} / {b['hooked_ms']:.1f} ms; "
             f"under the profiler {a['profiled_ms']:.1f} / {b['profiled_ms']:.1f} ms",
             "",
             "| part | ConMamba ms | % | GMAC | ms/GMAC | Conformer ms | % | GMAC | ms/GMAC |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for p in PARTS:
        cells = []
        for m in (a, b):
            q = m["parts"][p]
            cells += [_fmt(q["ms"], 2), _fmt(100 * q["share"]), _fmt(q["gmacs"], 3), _fmt(q["ms_per_gmac"])]
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    cells = []
    for m in (a, b):
        ms, share = (sum(m["parts"][p][key] for p in PARTS) for key in ("ms", "share"))
        cells += [f"{ms:.2f}", f"{100 * share:.1f}", f"{m['gmacs']:.3f}", f"{ms / m['gmacs']:.1f}"]
    lines.append("| **sum** | " + " | ".join(cells) + " |")
    lines += ["", "| # | ConMamba op (self CPU) | calls | ms | % | Conformer op (self CPU) | calls | ms | % |",
              "|--:|---|--:|--:|--:|---|--:|--:|--:|"]
    for i in range(max(len(a["ops"]), len(b["ops"]))):
        cells = []
        for m in (a, b):
            if i < len(m["ops"]):
                o = m["ops"][i]
                cells += [f"`{o['name']}`", str(o["calls"]), _fmt(o["self_ms"], 2), _fmt(100 * o["share"])]
            else:
                cells += [""] * 4
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary_markdown(points: Sequence[Dict]) -> str:
    """One row per point: both forward times, their ratio, the MAC ratio and each model's two biggest parts."""
    def biggest(m: Dict) -> str:
        top = sorted(PARTS, key=lambda p: m["parts"][p]["ms"], reverse=True)[:2]
        return ", ".join(f"{p} {100 * m['parts'][p]['share']:.0f}%" for p in top)

    lines = ["| size | s | batch | threads | ConMamba ms | Conformer ms | ratio | MAC ratio | ConMamba top parts "
             "| Conformer top parts |", "|---|--:|--:|--:|--:|--:|--:|--:|---|---|"]
    for pt in points:
        a, b = (pt["models"][k] for k in ENCODERS)
        lines.append(f"| {pt['size']} | {pt['seconds']:g} | {pt['batch']} | {pt['threads']} | {a['fwd_ms']:.1f} | "
                     f"{b['fwd_ms']:.1f} | {pt['fwd_ratio']:.2f} | {pt['mac_ratio']:.2f} | {biggest(a)} | "
                     f"{biggest(b)} |")
    return "\n".join(lines) + "\n"


def build_models(size: str) -> Dict[str, nn.Module]:
    """Both encoders' CTC models of one named size, seeded, in eval mode."""
    models = {}
    for k in ENCODERS:
        torch.manual_seed(0)
        models[k] = build_model(named_config(f"{k}-{size}", vocab_size=VOCAB_SIZE)).eval()
    return models


def _csv(cast: Callable) -> Callable[[str], list]:
    return lambda s: [cast(x) for x in s.split(",") if x]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=_csv(str), default=["paper", "tiny"], help="named sizes (paper, small, tiny)")
    ap.add_argument("--seconds", type=_csv(float), default=[2.0, 5.0, 10.0, 15.0], help="utterance lengths (s)")
    ap.add_argument("--batches", type=_csv(int), default=[1, 8])
    ap.add_argument("--threads", type=_csv(int), default=[1, 2], help="torch.set_num_threads values")
    ap.add_argument("--repeats", type=int, default=5, help="timed forward passes per model, plain and hooked each")
    ap.add_argument("--top-ops", type=int, default=8, help="ops listed per model and point")
    ap.add_argument("--output", help="write every number to this JSON file")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")

    env = {"torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
           "loadavg_1min_at_start": os.getloadavg()[0], "repeats": args.repeats, "vocab_size": VOCAB_SIZE,
           "warmup_rounds": WARMUP_ROUNDS}
    t_start = time.perf_counter()
    points = []
    print("## Forward-pass profile: ConMamba vs Conformer (CPU, inference)\n")
    for size in args.sizes:
        models = build_models(size)
        for threads in args.threads:
            for seconds in args.seconds:
                for batch in args.batches:
                    point = profile_point(models, size, seconds, batch, threads, args.repeats, args.top_ops)
                    points.append(point)
                    print(point_markdown(point), flush=True)
    env["loadavg_1min_at_end"] = os.getloadavg()[0]
    env["wall_s"] = round(time.perf_counter() - t_start, 1)
    print("### Summary\n")
    print(summary_markdown(points))
    print(f"torch {env['torch']}, {env['cpus']} CPUs, load average {env['loadavg_1min_at_start']:.2f} -> "
          f"{env['loadavg_1min_at_end']:.2f}, {env['wall_s']:.0f} s in all")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"env": env, "points": points}, f, indent=1)
        print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
