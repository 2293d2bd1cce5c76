"""`mlma env`: versions, accelerators and the path each optional component takes on this machine."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def env(json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the report as JSON here.")) -> None:
    """Print what this machine offers mlma: package versions, GPUs, and which backend each component uses."""
    from rich.console import Console

    from mlma_cli.cli.tables import key_value_table
    from mlma_cli.utils.environment import collect_environment

    report = collect_environment()
    console = Console()
    for section, items in report.items():
        console.print(key_value_table(section, items))
    if json_out:
        from mlma_cli.utils.io import write_json_atomic

        write_json_atomic(json_out, report)


def register(app: typer.Typer) -> None:
    app.command("env")(env)
