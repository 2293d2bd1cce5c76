"""icefall-layout result files for one test set and one decoding setting.

    recogs-<testset>-<setting>.txt   "<utt>:\tref=[...]" / "<utt>:\thyp=[...]" per utterance (normalized words)
    errs-<testset>-<setting>.txt     %WER, error counts, per-utterance alignments, most frequent errors, per-word stats
    wer-summary-<testset>.txt        "settings\tWER" then one row per setting, best first (rows merged across runs)
    hyps-<testset>-<setting>.jsonl   one JSON object per utterance: id, lang, ref, hyp (normalized), ref_raw, hyp_raw
    results-<testset>-<setting>.json WER/CER counts, 95% bootstrap CI, RTF and run metadata
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from mlma_cli.errors import MlmaError
from mlma_cli.score.scoring import score_utts
from mlma_cli.score.utts import Utt
from mlma_cli.score.wer import EPS, WerDetails
from mlma_cli.utils.io import write_json_atomic, write_text_atomic


def recogs_text(utts: Sequence[Utt]) -> str:
    lines = []
    for u in sorted(utts, key=lambda x: x.id):
        lines.append(f"{u.id}:\tref={u.ref.split()!r}")
        lines.append(f"{u.id}:\thyp={u.hyp.split()!r}")
    return "\n".join(lines) + ("\n" if lines else "")


def _fmt_pair(r: str, h: str) -> str:
    return r if r == h else f"({r}->{h})"


def errs_text(utts: Sequence[Utt], det: WerDetails) -> str:
    """The icefall `errs-*` report for word-level details `det` computed on `utts` (same order)."""
    t = det.total
    subs: Counter = Counter()
    dels: Counter = Counter()
    ins: Counter = Counter()
    # word -> [corr, errs, count_in_ref, count_in_hyp]
    stats: Dict[str, List[int]] = {}

    def st(w: str) -> List[int]:
        return stats.setdefault(w, [0, 0, 0, 0])

    per_utt = []
    for u, ali in sorted(zip(utts, det.alignments), key=lambda x: x[0].id):
        per_utt.append(f"{u.id}:\t" + " ".join(_fmt_pair(r, h) for r, h in ali))
        for r, h in ali:
            if r == h:
                s = st(r)
                s[0] += 1
                s[2] += 1
                s[3] += 1
            elif r == EPS:
                ins[h] += 1
                s = st(h)
                s[1] += 1
                s[3] += 1
            elif h == EPS:
                dels[r] += 1
                s = st(r)
                s[1] += 1
                s[2] += 1
            else:
                subs[(r, h)] += 1
                sr, sh = st(r), st(h)
                sr[1] += 1
                sr[2] += 1
                sh[1] += 1
                sh[3] += 1
    out = [
        f"%WER = {t.rate:.2f}",
        f"Errors: {t.ins} insertions, {t.dels} deletions, {t.sub} substitutions, over {t.ref_len} reference "
        f"words ({t.corr} correct)",
        "Search below for sections starting with PER-UTT DETAILS:, SUBSTITUTIONS:, DELETIONS:, INSERTIONS:, "
        "PER-WORD STATS:",
        "",
        "PER-UTT DETAILS: corr or (ref->hyp)",
        *per_utt,
        "",
        "SUBSTITUTIONS: count ref -> hyp",
        *[f"{n}   {r} -> {h}" for (r, h), n in sorted(subs.items(), key=lambda x: (-x[1], x[0]))],
        "",
        "DELETIONS: count ref",
        *[f"{n}   {w}" for w, n in sorted(dels.items(), key=lambda x: (-x[1], x[0]))],
        "",
        "INSERTIONS: count hyp",
        *[f"{n}   {w}" for w, n in sorted(ins.items(), key=lambda x: (-x[1], x[0]))],
        "",
        "PER-WORD STATS: word  corr tot_errs count_in_ref count_in_hyp",
        *[f"{w}   {s[0]} {s[1]} {s[2]} {s[3]}" for w, s in sorted(stats.items(), key=lambda x: (-x[1][1], x[0]))],
    ]
    return "\n".join(out) + "\n"


def read_wer_summary(path: Path) -> List[Tuple[str, float]]:
    """Rows (setting, WER%) of a `wer-summary-*.txt` file."""
    rows = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines()):
        if not line.strip() or (i == 0 and line.startswith("settings")):
            continue
        parts = line.split("\t")
        try:
            rows.append((parts[0], float(parts[1])))
        except (IndexError, ValueError) as err:
            raise MlmaError(f"{path}: line {i + 1} is not 'setting<TAB>WER' ({line!r}); delete the file and re-run decode") from err
    return rows


def update_wer_summary(path: Path, setting: str, wer: float) -> None:
    """Add or replace `setting`'s row, keep rows sorted by WER (best first)."""
    rows = dict(read_wer_summary(path)) if Path(path).exists() else {}
    rows[setting] = wer
    body = "".join(f"{s}\t{w:.2f}\n" for s, w in sorted(rows.items(), key=lambda x: (x[1], x[0])))
    write_text_atomic(path, "settings\tWER\n" + body)


def write_hyps_jsonl(path: Path, utts: Iterable[Utt]) -> None:
    text = "".join(json.dumps(u.__dict__, ensure_ascii=False) + "\n" for u in utts)
    write_text_atomic(path, text)


def read_hyps_jsonl(path: Path) -> List[Utt]:
    utts = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            utts.append(Utt(**json.loads(line)))
        except (ValueError, TypeError) as err:
            raise MlmaError(f"{path}: line {i + 1} is not a hypothesis record; re-run mlma decode") from err
    return utts


def write_json(path: Path, obj: dict) -> None:
    write_json_atomic(path, obj)


def result_paths(method_dir: Path, testset: str, setting: str) -> Dict[str, Path]:
    d = Path(method_dir)
    return {
        "recogs": d / f"recogs-{testset}-{setting}.txt",
        "errs": d / f"errs-{testset}-{setting}.txt",
        "wer_summary": d / f"wer-summary-{testset}.txt",
        "hyps": d / f"hyps-{testset}-{setting}.jsonl",
        "results": d / f"results-{testset}-{setting}.json",
    }


def write_testset_results(
    method_dir: Path, testset: str, setting: str, utts: Sequence[Utt], extra: Optional[dict] = None
) -> dict:
    """Score `utts` and write every icefall-layout file for this test set / setting. Returns the results dict."""
    res = score_utts(utts)
    res.update({"testset": testset, "setting": setting})
    if extra:
        res.update(extra)
    paths = result_paths(method_dir, testset, setting)
    write_text_atomic(paths["recogs"], recogs_text(utts))
    write_text_atomic(paths["errs"], errs_text(utts, res.pop("_word_details")))
    write_hyps_jsonl(paths["hyps"], utts)
    update_wer_summary(paths["wer_summary"], setting, res["wer"]["rate"])
    write_json(paths["results"], res)
    return res
