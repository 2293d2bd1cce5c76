"""`mlma transcribe`: audio files -> text (a thin layer over `mlma_cli.decode.transcribe.transcribe_files`)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer


def transcribe(
    audio: List[Path] = typer.Argument(..., help="Audio files (wav, flac, mp3, ogg/opus; any rate, mono/stereo)."),
    checkpoint: List[Path] = typer.Option(..., "--checkpoint", "-c", help="Checkpoint(s); several are averaged."),
    use_averaged: bool = typer.Option(False, help="Use the running-average weights."),
    method: str = typer.Option("ctc-greedy-search", help="ctc-greedy-search | ctc-prefix-beam-search | wfst"),
    beam: int = typer.Option(4, help="Prefix beam size."),
    graph: Optional[Path] = typer.Option(None, help="Graph dir for --method wfst."),
    backend: str = typer.Option("kaldi", help="WFST backend: kaldi or k2."),
    search_beam: float = typer.Option(16.0, help="WFST search beam."),
    lm_scale: float = typer.Option(1.0, help="LM weight (WFST)."),
    language: Optional[str] = typer.Option(None, "--language", "-l", "--lang",
                                           help="Language, to pick a per-language graph (DIR/<lang>/)."),
    chunk_seconds: float = typer.Option(30.0, help="Window length for long files."),
    context_seconds: float = typer.Option(2.0, help="Audio context on each side of a window."),
    device: str = typer.Option("auto", help="auto (GPU when present), cpu or cuda[:N]."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document instead of text lines."),
) -> None:
    """Transcribe audio files; unreadable files are reported and the others still transcribed (exit 1 if any failed)."""
    from mlma_cli.checkpoint import load_for_inference
    from mlma_cli.cli.decode_cmds import _decode_options
    from mlma_cli.decode.transcribe import transcribe_files
    from mlma_cli.utils.device import pick_device

    opts = _decode_options(method, beam, graph, backend, search_beam, 8.0, 7000, lm_scale, pick_device(device))
    inference = load_for_inference([str(c) for c in checkpoint], device=opts.device, use_averaged=use_averaged)
    results, errors = transcribe_files(inference, [str(a) for a in audio], opts, lang=language,
                                       chunk_seconds=chunk_seconds, context_seconds=context_seconds)
    if as_json:
        typer.echo(json.dumps({"results": [r.to_dict() for r in results],
                               "errors": [{"file": f, "error": e} for f, e in errors]}, ensure_ascii=False, indent=2))
    else:
        for r in results:
            typer.echo(f"{r.file}\t{r.text}" if len(audio) > 1 else r.text)
    for f, e in errors:
        typer.secho(f"mlma: error: {e}", err=True, fg=typer.colors.RED)
    if errors:
        typer.secho(f"mlma: {len(errors)} of {len(audio)} files could not be transcribed", err=True)
        sys.exit(1)


def register(app: typer.Typer) -> None:
    app.command("transcribe")(transcribe)
