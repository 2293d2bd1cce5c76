#!/usr/bin/env python3
"""Side-by-side WER / CER table (95% CIs) of the mini recipe's models, per language, test set and method.

    local/compare.py EXP_DIR MODEL [MODEL ...] > EXP_DIR/compare.md

Reads EXP_DIR/<model>/decode/scores.json (written by `mlma score`), and EXP_DIR/../data (or --data) for the OOV
rates in DATA/manifests/synthetic/<lang>/oov.json when present. Prints markdown: first each model's training
budget (steps; wall time from the first to the last line of its train.log, so equal steps and equal wall time can
be told apart), then the tables.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path


def _cell(metric: dict) -> str:
    lo, hi = metric.get("ci95") or (None, None)
    ci = f" [{lo:.1f}-{hi:.1f}]" if lo is not None else ""
    return f"{metric['rate']:.1f}{ci}"


def _log_time(line: str):
    try:
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    except ValueError:
        return None


def training_budget(model_dir: Path) -> str:
    """'steps | wall min | audio-s/s' of one model from its metrics.jsonl and train.log ('-' where missing)."""
    steps, speeds = "-", []
    metrics = model_dir / "metrics.jsonl"
    if metrics.is_file():
        records = [json.loads(line) for line in metrics.read_text().splitlines()]
        if records:  # the last step is logged by its validation when it is no multiple of log_every
            steps = f"{max(r.get('step', 0) for r in records):,}"
            speeds = [r["audio_sec_per_sec"] for r in records if r.get("kind") == "train" and "audio_sec_per_sec" in r]
    times = []
    log = model_dir / "train.log"
    if log.is_file():
        times = [t for t in map(_log_time, log.read_text().splitlines()) if t is not None]
    wall = f"{(times[-1] - times[0]).total_seconds() / 60:.1f}" if len(times) > 1 else "-"
    speed = f"{sum(speeds) / len(speeds):.0f}" if speeds else "-"
    return f"{steps} | {wall} | {speed}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("exp_dir", type=Path)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data", type=Path, default=None, help="data dir with manifests/synthetic/<lang>/oov.json")
    args = ap.parse_args(argv)
    rows = {}
    for model in args.models:
        path = args.exp_dir / model / "decode" / "scores.json"
        if not path.is_file():
            print(f"compare.py: {path} is missing (run stage 6 for {model})", file=sys.stderr)
            return 1
        for r in json.loads(path.read_text())["rows"]:
            if r.get("subset"):
                continue
            rows.setdefault((r["setting"], r["dataset"]), {})[model] = r
    data = args.data or args.exp_dir.parent / "data"
    oov = {}
    for f in sorted(data.glob("manifests/synthetic/*/oov.json")):
        stats = json.loads(f.read_text())
        for split, s in stats.items():
            if isinstance(s, dict) and "oov_rate" in s:
                oov[f"synthetic/{f.parent.name}/{split}"] = s["oov_rate"]
    print("Training: steps, wall minutes (first to last line of train.log) and mean audio seconds per second\n")
    print("| model | steps | wall min | audio-s/s |\n|---|---|---|---|")
    for model in args.models:
        print(f"| {model} | {training_budget(args.exp_dir / model)} |")
    for setting in sorted({s for s, _ in rows}):
        print(f"\n**{setting}**: WER % [95% CI] / CER % [95% CI]; OOV = % of word tokens never in the training text\n")
        head = "| test set | OOV % | utts | " + " | ".join(f"{m} WER | {m} CER" for m in args.models) + " |"
        print(head)
        print("|" + "---|" * (3 + 2 * len(args.models)))
        for (s, dataset), by_model in sorted(rows.items(), key=lambda kv: (kv[0][1].split("/")[2], kv[0][1])):
            if s != setting:
                continue
            any_row = next(iter(by_model.values()))
            cells = []
            for m in args.models:
                r = by_model.get(m)
                cells += [_cell(r["wer"]), _cell(r["cer"])] if r else ["-", "-"]
            rate = oov.get(dataset)
            print(f"| {dataset} | {'' if rate is None else f'{rate:.1f}'} | {any_row['num_utts']} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
