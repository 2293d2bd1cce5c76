#!/usr/bin/env python3
"""Side-by-side WER / CER table (95% CIs) of the mini recipe's models, per language, test set and method.

    local/compare.py EXP_DIR MODEL [MODEL ...] > EXP_DIR/compare.md

Reads EXP_DIR/<model>/decode/scores.json (written by `mlma score`), and EXP_DIR/../data (or --data) for the OOV
rates in DATA/manifests/synthetic/<lang>/oov.json when present. Prints markdown.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cell(metric: dict) -> str:
    lo, hi = metric.get("ci95") or (None, None)
    ci = f" [{lo:.1f}-{hi:.1f}]" if lo is not None else ""
    return f"{metric['rate']:.1f}{ci}"


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
