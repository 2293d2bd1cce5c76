"""`mlma report`: gather a recipe's wer-summary files into one language x test-set table (markdown, JSON, PNG).

Finds EXP/**/<corpus>/<lang>/<method>/wer-summary-<split>.txt (the layout `mlma decode` writes). Each cell is
the WER of the requested setting (`--setting`), else the best setting of the requested method (`--method`),
else the best over all methods; the setting used is recorded per cell.

    report.md    | language | corpus/split | ... |  plus the settings used
    report.json  {"cells": [{"lang", "testset", "method", "setting", "wer", "source"}], "languages", "testsets"}
    report.png   WER per language and test set
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional

from mlma_cli.errors import MlmaError
from mlma_cli.score.files import read_wer_summary
from mlma_cli.score.plot import wer_bar_chart
from mlma_cli.text.normalize import LANGUAGES
from mlma_cli.utils.io import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)


def gather(exp_dir: Path, method: Optional[str] = None, setting: Optional[str] = None) -> List[dict]:
    """One cell per (lang, corpus/split): the chosen WER from the wer-summary files under `exp_dir`."""
    best: Dict[tuple, dict] = {}
    files = sorted(Path(exp_dir).rglob("wer-summary-*.txt"))
    for f in files:
        parts = f.parent.parts
        if len(parts) < 3 or parts[-2] not in LANGUAGES:
            log.warning("%s: not under <corpus>/<lang>/<method>/; skipped", f)
            continue
        corpus, lang, meth = parts[-3], parts[-2], parts[-1]
        if method and meth != method:
            continue
        split = f.name[len("wer-summary-"):-len(".txt")]
        for s, wer in read_wer_summary(f):
            if setting and s != setting:
                continue
            key = (lang, f"{corpus}/{split}")
            if key not in best or wer < best[key]["wer"]:
                best[key] = {"lang": lang, "testset": f"{corpus}/{split}", "method": meth, "setting": s,
                             "wer": wer, "source": str(f)}
    if not best:
        what = " ".join(x for x in (f"method {method}" if method else "", f"setting {setting}" if setting else "") if x)
        raise MlmaError(f"{exp_dir}: no wer-summary-*.txt files{' for ' + what if what else ''}; "
                        "run `mlma decode` (recipe decode stage) first")
    return sorted(best.values(), key=lambda c: (c["lang"], c["testset"]))


def write_report(exp_dir: Path, out_dir: Path, method: Optional[str] = None, setting: Optional[str] = None,
                 title: str = "WER per language and test set") -> dict:
    cells = gather(exp_dir, method, setting)
    langs = sorted({c["lang"] for c in cells})
    sets = sorted({c["testset"] for c in cells})
    table = {(c["lang"], c["testset"]): c for c in cells}
    md = [f"## {title}", "", f"WER (%) from `{exp_dir}`" + (f", method {method}" if method else "")
          + (f", setting {setting}" if setting else ", best setting per cell") + ".", "",
          "| language | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for lang in langs:
        row = [f"{table[(lang, s)]['wer']:.2f}" if (lang, s) in table else "-" for s in sets]
        md.append(f"| {lang} | " + " | ".join(row) + " |")
    used = sorted({(c["method"], c["setting"]) for c in cells})
    md += ["", "Settings used: " + ", ".join(f"`{s}`" for _, s in used)]
    out_dir = Path(out_dir)
    write_text_atomic(out_dir / "report.md", "\n".join(md) + "\n")
    write_json_atomic(out_dir / "report.json", {"exp_dir": str(exp_dir), "method": method, "setting": setting,
                                                "languages": langs, "testsets": sets, "cells": cells})
    wer_bar_chart({(c["lang"], c["testset"]): c["wer"] for c in cells}, out_dir / "report.png", title=title)
    return {"markdown": out_dir / "report.md", "json": out_dir / "report.json", "png": out_dir / "report.png",
            "cells": cells}
