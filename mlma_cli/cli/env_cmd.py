"""`mlma env`: versions, accelerators and the path each optional component takes on this machine."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mlma_cli.cli.options import write_or_print_json


def env(
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON document instead of tables."),
    json_out: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the report as JSON here."),
) -> None:
    """Print what this machine offers mlma: package versions, GPUs, and which backend each component uses."""
    from rich.console import Console

    from mlma_cli.cli.tables import key_value_table
    from mlma_cli.environment import collect_environment

    report = collect_environment()
    if write_or_print_json(report, json_out, as_json):
        return
    console = Console()
    for section, items in report.items():
        console.print(key_value_table(section, items))


def register(app: typer.Typer) -> None:
    app.command("env")(env)
