"""`mlma env`: versions, accelerators and the path each optional component takes on this machine."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def env(json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the report as JSON here.")) -> None:
    """Print what this machine offers mlma: package versions, GPUs, and which backend each component uses."""
    from rich.console import Console
    from rich.table import Table

    from mlma_cli.utils.environment import collect_environment

    report = collect_environment()
    console = Console()
    for section, items in report.items():
        table = Table(title=section, title_justify="left")
        table.add_column("item")
        table.add_column("value")
        for k, v in items.items():
            table.add_row(k, v)
        console.print(table)
    if json_out:
        from mlma_cli.utils.io import write_json_atomic

        write_json_atomic(json_out, report)


def register(app: typer.Typer) -> None:
    app.command("env")(env)
