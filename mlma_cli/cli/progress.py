"""One rich progress bar for the long commands (prepare, decode, transcribe), on stderr so stdout stays clean.

Shown only on a terminal and never with --quiet; the functions underneath take a plain callback
``update(done, total)`` and know nothing about rich.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator, Optional

Update = Callable[[float, float], None]


@contextlib.contextmanager
def progress_bar(label: str, unit: str = "", quiet: bool = False) -> Iterator[Optional[Update]]:
    """Yield ``update(done, total)`` drawing a transient bar (or None when quiet / not a terminal)."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    amount = "{task.completed:.0f}/{task.total:.0f}" + (f" {unit}" if unit else "")
    with Progress(TextColumn(label), BarColumn(), TextColumn(amount), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)
