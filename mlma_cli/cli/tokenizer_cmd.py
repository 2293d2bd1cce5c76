"""Placeholder: the owner of this command group fills it in."""
import typer


def register(app: typer.Typer) -> None:
    pass
