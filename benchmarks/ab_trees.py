"""Time one model in two (or more) source trees of mlma, alternating, for before/after comparisons on a shared CPU.

    git worktree add /tmp/mlma-before 9a2d5f3
    python benchmarks/ab_trees.py --trees /tmp/mlma-before,. --model conmamba-paper --seconds 2,5,10,15 \\
        --threads 2 --mode fwdbwd --rounds 5

Each round starts one subprocess per tree (its ``mlma_cli`` first on PYTHONPATH), the trees' order reversed every
other round, and each subprocess times every length (two warm-up runs, then ``--reps`` runs, median). The table
reports, per length and tree, the median over rounds, and each tree's time over the first tree's. Load from other
processes hits the trees alike, so the ratios hold where the absolute times do not; the load average is printed.
Only ``build_model`` / ``named_config`` are used, so any tree since they exist works. Modes: ``fwd`` (eval, under
torch.inference_mode) and ``fwdbwd`` (train mode, forward and backward of a scalar of the log-probs).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

INNER = r"""
import json, statistics, sys, time
import torch
from mlma_cli.model import build_model, named_config
model_name, seconds, threads, reps, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
torch.set_num_threads(threads)
torch.manual_seed(0)
model = build_model(named_config(model_name, vocab_size=500)).train(mode == "fwdbwd")
out = {}
for s in [float(x) for x in seconds.split(",")]:
    frames = int(round(s * 100))
    feats, lens = torch.randn(1, frames, 80), torch.full((1,), frames)
    def run():
        if mode == "fwd":
            with torch.inference_mode():
                model(feats, lens)
        else:
            log_probs, _ = model(feats, lens)
            log_probs.logsumexp(-1).sum().backward()
            model.zero_grad(set_to_none=True)
    for _ in range(2):
        run()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    out[s] = 1000 * statistics.median(times)
print(json.dumps(out))
"""


def run_round(tree: Path, args) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-c", INNER, args.model, args.seconds,
                        str(args.threads), str(args.reps), args.mode], capture_output=True, text=True, env=env,
                       cwd=tree)
    if p.returncode != 0:
        raise SystemExit(f"{tree}: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else 'failed'}")
    return {float(k): v for k, v in json.loads(p.stdout.strip().splitlines()[-1]).items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", required=True, help="comma-separated source trees; the first is the reference")
    ap.add_argument("--model", default="conmamba-paper", help="named size, e.g. conmamba-paper, conformer-tiny")
    ap.add_argument("--seconds", default="2,5,10,15")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mode", choices=("fwd", "fwdbwd"), default="fwdbwd")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3, help="timed runs per length in each subprocess (median)")
    args = ap.parse_args(argv)
    trees = [Path(t).resolve() for t in args.trees.split(",") if t]
    results = {t: [] for t in trees}
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    for r in range(args.rounds):
        for tree in (trees if r % 2 == 0 else trees[::-1]):
            results[tree].append(run_round(tree, args))
            print(f"round {r + 1} {tree}: " + ", ".join(f"{s:g}s {ms:.1f}" for s, ms in results[tree][-1].items())
                  + f"  (load {os.getloadavg()[0]:.2f})", flush=True)
    lengths = list(results[trees[0]][0])
    print(f"\n{args.model}, {args.mode}, {args.threads} threads, median over {args.rounds} rounds of medians of "
          f"{args.reps} (ms; ratio to the first tree); load average at end {os.getloadavg()[0]:.2f}")
    print("| tree | " + " | ".join(f"{s:g} s" for s in lengths) + " |")
    print("|---|" + "---|" * len(lengths))
    ref = {s: statistics.median(r[s] for r in results[trees[0]]) for s in lengths}
    for tree in trees:
        med = {s: statistics.median(r[s] for r in results[tree]) for s in lengths}
        print(f"| {tree} | " + " | ".join(f"{med[s]:.1f} ({med[s] / ref[s]:.2f}x)" for s in lengths) + " |")


if __name__ == "__main__":
    main()
