"""The `mlma` command: a thin Typer layer; each group of subcommands lives in its own module."""
from __future__ import annotations

import logging
import sys

import typer

from mlma_cli.errors import MlmaError

app = typer.Typer(
    help="mlma: multilingual CTC speech recognition with ConMamba encoders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _register_all() -> None:
    # Each module adds its subcommands with register(app); imported lazily so `mlma --help` stays fast.
    from mlma_cli.cli import data_cmds, decode_cmds, env_cmd, model_cmds, tokenizer_cmd, train_cmds, transcribe_cmd

    for module in (data_cmds, tokenizer_cmd, model_cmds, train_cmds, decode_cmds, env_cmd, transcribe_cmd):
        module.register(app)
    from mlma_cli.cli import export_cmd  # `mlma export`, `mlma bench export`

    export_cmd.register(app)


_register_all()


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 1, never a traceback."""
    try:
        app(standalone_mode=False)
    except MlmaError as err:
        typer.secho(f"mlma: error: {err}", err=True, fg=typer.colors.RED)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.secho("mlma: interrupted", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as err:  # click usage errors etc.
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.Abort):
            sys.exit(1)
        raise
