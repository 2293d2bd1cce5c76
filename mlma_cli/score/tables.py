"""ESPnet-style result tables: |dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err| (percentages of the reference)."""
from __future__ import annotations

from typing import Iterable, List, Tuple

from mlma_cli.score.wer import ErrorCounts

HEADER = "|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|"
RULE = "|---|---|---|---|---|---|---|---|---|"


def table_row(name: str, c: ErrorCounts) -> str:
    """One row; Corr/Sub/Del/Ins/Err are % of reference tokens, S.Err % of sentences (1 decimal, like ESPnet)."""
    n = max(c.ref_len, 1)
    pct = lambda x: f"{100.0 * x / n:.1f}"  # noqa: E731
    serr = 100.0 * c.sent_errs / max(c.sents, 1)
    return (
        f"|{name}|{c.sents}|{c.ref_len}|{pct(c.corr)}|{pct(c.sub)}|{pct(c.dels)}|{pct(c.ins)}|"
        f"{pct(c.errors)}|{serr:.1f}|"
    )


def espnet_table(rows: Iterable[Tuple[str, ErrorCounts]], title: str = "") -> str:
    """Markdown table; `title` (e.g. "WER") becomes a `### title` heading when given."""
    lines: List[str] = []
    if title:
        lines += [f"### {title}", ""]
    lines += [HEADER, RULE]
    lines += [table_row(name, c) for name, c in rows]
    return "\n".join(lines) + "\n"
