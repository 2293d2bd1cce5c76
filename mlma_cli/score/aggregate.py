"""`mlma score`: re-score decode outputs (or a ref/hyp file pair) into ESPnet tables, a per-language
RESULTS.md section, JSON and a PNG.

Reads OUT/<corpus>/<lang>/<method>/results-*.json + hyps-*.jsonl written by `mlma decode`; both sides are
normalized again with `normalize(text, lang)` from their raw text, so every number comes from one normalizer.
Writes to the output directory:

    scores.md    "## WER" and "## CER" ESPnet tables (one row per test set and setting, plus one per language
                 when a test set mixes languages) and "## Per-language results" (lang, test set, setting,
                 WER, 95% CI, CER, utterances) ready to paste into RESULTS.md
    scores.json  the same numbers
    wer.png      WER per language and test set (bars with 95% CI)
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from mlma_cli.errors import MlmaError
from mlma_cli.score.files import read_hyps_jsonl
from mlma_cli.score.plot import wer_bar_chart
from mlma_cli.score.scoring import score_utts
from mlma_cli.score.tables import espnet_table
from mlma_cli.score.utts import Utt
from mlma_cli.score.wer import ErrorCounts
from mlma_cli.text.normalize import normalize
from mlma_cli.utils.io import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)


def _counts(d: dict) -> ErrorCounts:
    return ErrorCounts(ref_len=d["ref_len"], hyp_len=d["hyp_len"], corr=d["corr"], sub=d["sub"], dels=d["del"],
                       ins=d["ins"], sents=d["sents"], sent_errs=d["sent_errs"])


def collect_decodes(decode_dir: Path, method: Optional[str] = None) -> List[Tuple[str, str, List[Utt]]]:
    """(dataset, setting, utterances) for every decode result under `decode_dir` (optionally one method)."""
    found = []
    for res_path in sorted(Path(decode_dir).rglob("results-*.json")):
        try:
            res = json.loads(res_path.read_text())
            dataset, setting, split = res["dataset"], res["setting"], res["split"]
        except (ValueError, KeyError) as err:
            raise MlmaError(f"{res_path}: not an mlma decode result ({err}); re-run mlma decode") from err
        if method and res.get("method") != method:
            continue
        hyps = res_path.parent / f"hyps-{split}-{setting}.jsonl"
        if not hyps.is_file():
            raise MlmaError(f"{hyps}: missing beside {res_path.name}; re-run mlma decode for {dataset}")
        found.append((dataset, setting, read_hyps_jsonl(hyps)))
    if not found:
        raise MlmaError(f"{decode_dir}: no decode results (results-*.json) found; run `mlma decode --out-dir {decode_dir}` first")
    return found


def read_text_pairs(ref: Path, hyp: Path, lang: str) -> List[Utt]:
    """Kaldi-style text files ("<utt-id> <text>" per line) -> utterances; hypotheses missing for a reference
    count as empty (all deletions), hypotheses without a reference are an error."""
    def read(p: Path) -> Dict[str, str]:
        if not Path(p).is_file():
            raise MlmaError(f"{p}: file not found")
        out = {}
        for i, line in enumerate(Path(p).read_text(encoding="utf-8").splitlines()):
            if not line.strip():
                continue
            parts = line.split(maxsplit=1)
            out[parts[0]] = parts[1] if len(parts) > 1 else ""
        return out

    refs, hyps = read(ref), read(hyp)
    extra = sorted(set(hyps) - set(refs))
    if extra:
        raise MlmaError(f"{hyp}: {len(extra)} utterance ids have no reference in {ref} (e.g. {extra[0]})")
    return [Utt(k, lang, "", "", refs[k], hyps.get(k, "")) for k in sorted(refs)]


def renormalize(utts: Sequence[Utt]) -> List[Utt]:
    return [Utt(u.id, u.lang, normalize(u.ref_raw, u.lang), normalize(u.hyp_raw, u.lang), u.ref_raw, u.hyp_raw)
            for u in utts]


def score_sets(sets: Sequence[Tuple[str, str, List[Utt]]], out_dir: Path, bootstrap_samples: int = 1000,
               seed: int = 0) -> dict:
    """Score every (dataset, setting, utts) and write scores.md, scores.json and wer.png to `out_dir`."""
    rows = []
    for dataset, setting, utts in sets:
        utts = renormalize(utts)
        by_lang: Dict[str, List[Utt]] = {}
        for u in utts:
            by_lang.setdefault(u.lang, []).append(u)
        groups = [(None, utts)] + ([(l, us) for l, us in sorted(by_lang.items())] if len(by_lang) > 1 else [])
        for lang, us in groups:
            res = score_utts(us, bootstrap_samples=bootstrap_samples, seed=seed)
            res.pop("_word_details")
            rows.append({"dataset": dataset, "setting": setting,
                         "lang": lang or (us[0].lang if len(by_lang) == 1 else "mixed"),
                         "subset": lang is not None, **res})
    name = lambda r: f"{r['dataset']}{'[' + r['lang'] + ']' if r['subset'] else ''} ({r['setting']})"  # noqa: E731
    md = ["# Scores", "", "WER/CER on text normalized with mlma_cli.text.normalize; 95% CIs by bootstrap over "
          f"utterances ({bootstrap_samples} samples, seed {seed}).", ""]
    md.append(espnet_table([(name(r), _counts(r["wer"])) for r in rows], title="WER"))
    md.append(espnet_table([(name(r), _counts(r["cer"])) for r in rows], title="CER"))
    md += ["## Per-language results", "", "| language | test set | setting | WER % | 95% CI | CER % | utterances |",
           "|---|---|---|---|---|---|---|"]
    per_lang = [r for r in rows if r["lang"] != "mixed"]
    for r in sorted(per_lang, key=lambda r: (r["lang"], r["dataset"], r["wer"]["rate"])):
        lo, hi = r["wer"]["ci95"]
        md.append(f"| {r['lang']} | {r['dataset']} | {r['setting']} | {r['wer']['rate']:.2f} | "
                  f"{lo:.2f}-{hi:.2f} | {r['cer']['rate']:.2f} | {r['num_utts']} |")
    out_dir = Path(out_dir)
    write_text_atomic(out_dir / "scores.md", "\n".join(md) + "\n")
    write_json_atomic(out_dir / "scores.json", {"bootstrap_samples": bootstrap_samples, "seed": seed, "rows": rows})
    values, errors = {}, {}
    for r in per_lang:
        key = (r["lang"], f"{r['dataset']} {r['setting']}")
        values[key] = r["wer"]["rate"]
        errors[key] = tuple(r["wer"]["ci95"])
    if values:
        wer_bar_chart(values, out_dir / "wer.png", errors=errors)
    return {"rows": rows, "markdown": out_dir / "scores.md", "json": out_dir / "scores.json",
            "png": out_dir / "wer.png" if values else None}
