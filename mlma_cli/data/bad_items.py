"""Skipped corpus items: collected while preparing, written to ``DATA/manifests/<corpus>/bad_items.tsv``.

Columns: ``id  file  reason  lang  split`` (tab-separated, header line first). Re-preparing some
languages/splits of a corpus replaces their rows and keeps the rows of the others.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Set, Tuple

from mlma_cli.utils.io import write_text_atomic

COLUMNS = ("id", "file", "reason", "lang", "split")


@dataclass(frozen=True)
class BadItem:
    """One utterance left out of the manifests, and why."""

    id: str
    file: str
    reason: str
    lang: str = ""
    split: str = ""


def read_bad_items(path: str | Path) -> List[BadItem]:
    """Rows of an existing report ([] when there is none)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [BadItem(**{c: (r.get(c) or "") for c in COLUMNS}) for r in rows]


def write_bad_items(path: str | Path, items: Iterable[BadItem], replaced: Set[Tuple[str, str]] = frozenset()) -> Path:
    """Write the report atomically; rows already there whose ``(lang, split)`` is not in ``replaced`` are kept."""
    kept = [b for b in read_bad_items(path) if (b.lang, b.split) not in replaced]
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE, escapechar="\\")
    writer.writerow(COLUMNS)
    for b in kept + list(items):
        writer.writerow([_clean(getattr(b, c)) for c in COLUMNS])
    write_text_atomic(path, buf.getvalue())
    return Path(path)


def _clean(value: str) -> str:
    return " ".join(str(value).replace("\t", " ").split())
