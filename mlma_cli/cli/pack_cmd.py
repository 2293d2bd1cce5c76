"""`mlma pack`: a model package directory (safetensors weights, config, tokenizer, model card) from checkpoints.

    mlma pack -c exp/conmamba/averaged-last5.pt --report exp/conmamba/report/report.json -o exp/conmamba/package
    mlma pack -c exp/a/checkpoint-400.pt -c exp/a/checkpoint-500.pt --onnx exp/a/export --name ORG/mlma-tiny -o pkg
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def pack(
    checkpoint: List[str] = typer.Option(..., "--checkpoint", "-c",
                                         help="Checkpoint(s), package dir(s) or hf:ORG/NAME; several are averaged."),
    out: Path = typer.Option(..., "--output-dir", "-o", help="Package directory to write (replaced if it is a package)."),
    use_averaged: bool = typer.Option(False, help="Use the checkpoints' running-average weights."),
    report: Optional[Path] = typer.Option(None, help="report.json of `mlma report`: the model card's result table."),
    onnx: Optional[Path] = typer.Option(None, help="Directory written by `mlma export`, copied into the package."),
    license: str = typer.Option("apache-2.0", help="License id for the model card (Hugging Face metadata)."),
    name: Optional[str] = typer.Option(None, help="Model name, e.g. ORG/NAME (default: the output directory's name)."),
    language: List[str] = typer.Option([], help="Languages for the card (default: from the training sets)."),
) -> None:
    """Write a model package: model.safetensors, config.json, tokenizer.model, tokens.txt, README.md model card."""
    from mlma_cli.package.pack import pack_model

    res = pack_model(checkpoint, out, use_averaged=use_averaged, report=report, onnx_dir=onnx, license=license,
                     name=name, languages=language or None)
    typer.echo(f"packed {len(checkpoint)} checkpoint(s) -> {res.out_dir} ({', '.join(res.files)}); "
               f"{res.config['num_parameters'] / 1e6:.2f} M parameters, languages "
               f"{', '.join(res.config['languages']) or 'not recorded'}")


def register(app: typer.Typer) -> None:
    app.command("pack")(pack)
