"""The `mlma` command: a thin Typer layer; each group of subcommands lives in its own module.

Exit statuses follow POSIX tools: 0 success, 1 error (one ``mlma: error:`` line on stderr), 2 usage error
(one ``Usage: ... Error: ...`` line), 130 interrupted. No user mistake ever shows a Python traceback;
``--verbose`` adds one for unexpected internal errors.
"""
from __future__ import annotations

import logging
import sys
import traceback
from typing import List, Optional, Sequence

import typer

from mlma_cli import __version__
from mlma_cli.cli.aliases import rewrite_deprecated
from mlma_cli.errors import MlmaError

# Typer >= 0.24 vendors its own click: its exceptions are not click's (the tested range is pinned in pyproject).
try:
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # older typer on plain click (the Python 3.9 k2 venv)
    from click.exceptions import ClickException, UsageError

    NoArgsIsHelpError = None  # type: ignore[assignment,misc]

PROG = "mlma"
log = logging.getLogger("mlma")

app = typer.Typer(
    help="mlma: multilingual CTC speech recognition with ConMamba encoders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"{PROG} {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging (and tracebacks of internal errors)."),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the mlma version and exit."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _register_all() -> None:
    # Each module adds its subcommands with register(app); imported lazily so `mlma --help` stays fast.
    from mlma_cli.cli import (data_cmds, decode_cmds, env_cmd, export_cmd, model_cmds, pack_cmd, tokenizer_cmd,
                              train_cmds, transcribe_cmd)

    for module in (data_cmds, tokenizer_cmd, model_cmds, train_cmds, decode_cmds, transcribe_cmd, export_cmd,
                   pack_cmd, env_cmd):
        module.register(app)


_register_all()


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def usage_error_line(err: "UsageError") -> str:
    """`Usage: mlma decode [OPTIONS]  Error: No such option: --bogus (see 'mlma decode --help')` as one line."""
    ctx = getattr(err, "ctx", None)
    if ctx is None:
        return f"Usage: {PROG} [OPTIONS] COMMAND [ARGS]...  Error: {one_line(err.format_message())}"
    return (f"{one_line(ctx.get_usage())}  Error: {one_line(err.format_message())} "
            f"(see '{ctx.command_path} --help')")


def _error(message: str) -> None:
    typer.secho(f"{PROG}: error: {one_line(message)}", err=True, fg=typer.colors.RED)


def run(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI on ``argv`` (default: sys.argv[1:]) and return the exit status instead of exiting."""
    args: List[str] = list(sys.argv[1:] if argv is None else argv)
    args = rewrite_deprecated(args, warn=lambda msg: typer.secho(f"{PROG}: warning: {msg}", err=True))
    try:
        rv = app(args=args, prog_name=PROG, standalone_mode=False)
    except MlmaError as err:
        _error(str(err))
        return 1
    except KeyboardInterrupt:
        typer.secho(f"{PROG}: interrupted", err=True)
        return 130
    except SystemExit as err:  # sys.exit() inside a command
        return err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
    except Exception as err:  # noqa: BLE001 - the last line of defence against tracebacks
        return _unexpected(err, args)
    # standalone_mode=False returns typer.Exit's code as the value; typer turns Ctrl-C into Exit(130)
    status = rv if isinstance(rv, int) else 0
    if status == 130:
        typer.secho(f"{PROG}: interrupted", err=True)
    return status


def _unexpected(err: Exception, args: Sequence[str]) -> int:
    if NoArgsIsHelpError is not None and isinstance(err, NoArgsIsHelpError):
        typer.echo(err.ctx.get_help())  # `mlma` or `mlma lm` alone: the help, as a usage error
        return 2
    if isinstance(err, UsageError):
        typer.secho(usage_error_line(err), err=True)
        return 2
    if isinstance(err, ClickException):
        _error(err.format_message())
        return err.exit_code
    if type(err).__name__ == "Abort":
        typer.secho(f"{PROG}: aborted", err=True)
        return 1
    if isinstance(err, OSError) and getattr(err, "filename", None):
        # a path the user gave that cannot be read or written (missing, a directory, no permission, disk full)
        _error(f"{err.filename}: {err.strerror or err}; check the path and its permissions")
        return 1
    if "-v" in args or "--verbose" in args:
        traceback.print_exc()
    _error(f"internal error: {type(err).__name__}: {err} (a bug in mlma: rerun with --verbose for the "
           "traceback and please report it)")
    return 1


def main() -> None:
    """Console-script entry point (`mlma`)."""
    sys.exit(run())
