"""`mlma transcribe` (and `mlma bench transcribe`): a thin layer over `mlma_cli.decode.transcribe`.

stdout: one line per transcribed input, `<input><TAB><text>`, in input order (whatever the number of inputs),
or with --json one JSON document `{"results": [Transcript.to_dict()...], "errors": [{"file", "error"}...]}`.
stderr: logs, the progress bar (a terminal only, not with --quiet), one `mlma: error: <file>: ...` line per
input that could not be read, then a count; the exit status is then 1.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

import typer

from mlma_cli.cli import options as opt
from mlma_cli.cli.options import bench_app
from mlma_cli.cli.progress import progress_bar
from mlma_cli.errors import MlmaError

log = logging.getLogger(__name__)


def transcribe(
    audio: Optional[List[str]] = typer.Argument(None, help="Audio files, directories (recursive), @LIST files or "
                                                            "lhotse recordings/cuts manifests."),
    list_file: Optional[List[Path]] = typer.Option(None, "--list", help="File with one audio path per line."),
    checkpoint: List[Path] = typer.Option(..., "--checkpoint", "-c", help="Checkpoint(s), model package dir(s) or hf:ORG/NAME; several are averaged."),
    use_averaged: bool = typer.Option(False, help="Use the running-average weights."),
    method: str = opt.METHOD,
    beam: int = opt.BEAM,
    graph: Optional[Path] = opt.GRAPH,
    backend: str = opt.BACKEND,
    search_beam: float = opt.SEARCH_BEAM,
    output_beam: float = opt.OUTPUT_BEAM,
    max_active: int = opt.MAX_ACTIVE,
    lm_scale: float = opt.LM_SCALE,
    language: Optional[str] = typer.Option(None, "--language", "-l", "--lang",
                                           help="Language: picks DIR/<lang>/ graphs; with a tagged tokenizer forces "
                                                "that language's tag."),
    vad: str = typer.Option("silero", help="Long-audio segmentation: silero (speech regions ending in pauses) or "
                                           "none (fixed windows)."),
    vad_pad: float = typer.Option(0.03, help="Seconds of audio kept before and after each VAD speech region."),
    max_segment_seconds: float = typer.Option(30.0, "--max-segment-seconds", "--chunk-seconds",
                                              help="Longer audio is segmented; no segment is longer."),
    context_seconds: float = typer.Option(2.0, help="Audio context on each side of a cut inside speech."),
    batch_size: int = typer.Option(8, help="Segments per batch (sorted by length)."),
    max_duration: float = opt.MAX_DURATION,
    device: str = opt.DEVICE,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document instead of text lines."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="Write <stem>.<fmt> files here."),
    output_format: str = typer.Option("all", help="txt, json, tsv, srt, vtt (comma-separated) or all; with -o."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and only warnings in the log."),
) -> None:
    """Transcribe audio with word times: prints `<input><TAB><text>` per input (or --json), writes -o DIR files.

    Unreadable inputs are reported (`mlma: error: <file>: ...`) and the others still transcribed; exit 1 if any failed.
    """
    from mlma_cli.checkpoint import load_for_inference
    from mlma_cli.decode.audio_inputs import collect_inputs, open_source
    from mlma_cli.decode.outputs import output_stems, parse_formats, write_outputs
    from mlma_cli.decode.transcribe import TranscribeOptions, transcribe_sources

    if quiet:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        formats = parse_formats(output_format)
    except ValueError as err:
        raise MlmaError(f"--output-format: {err}") from err
    inputs = collect_inputs(audio or [], [str(f) for f in list_file or []])
    if not inputs:
        raise MlmaError("no audio to transcribe: give files, a directory, @LIST or --list FILE")
    decode = opt.decode_options(method, beam, graph, backend, search_beam, output_beam, max_active, lm_scale, device,
                                max_duration=max_duration)
    opts = TranscribeOptions(decode=decode, language=language, vad=vad, vad_pad=vad_pad, batch_size=batch_size,
                             max_segment_seconds=max_segment_seconds, context_seconds=context_seconds)
    opts.validate()
    inference = load_for_inference([str(c) for c in checkpoint], device=decode.device, use_averaged=use_averaged)
    with progress_bar("transcribing", "s audio", quiet) as progress:
        results, errors = transcribe_sources(inference, [(lambda i=i: open_source(i)) for i in inputs], opts,
                                             progress, names=[i.name for i in inputs])
    done = [(inp, r) for inp, r in zip(inputs, results) if r is not None]
    if output_dir is not None:
        for (inp, r), stem in zip(done, output_stems([inp.name for inp, _ in done])):
            write_outputs(r, output_dir, formats, stem)
        log.info("wrote %s for %d inputs to %s", ",".join(formats), len(done), output_dir)
    if as_json:
        typer.echo(json.dumps({"results": [r.to_dict() for _, r in done],
                               "errors": [{"file": f, "error": e} for f, e in errors]}, ensure_ascii=False, indent=2))
    else:
        for inp, r in done:
            typer.echo(f"{inp.name}\t{r.text}")
    for _, e in errors:
        typer.secho(f"mlma: error: {e}", err=True, fg=typer.colors.RED)
    if errors:
        typer.secho(f"mlma: {len(errors)} of {len(inputs)} files could not be transcribed", err=True)
        sys.exit(1)


def bench_transcribe(
    checkpoint: List[Path] = typer.Option(..., "--checkpoint", "-c", help="Checkpoint(s); several are averaged."),
    data_dir: Path = typer.Option(Path("data"), help="Data directory holding the test sets' manifests."),
    test_sets: str = typer.Option("synthetic/*/test", "--test-sets", "-t", help="Test sets (names or a glob)."),
    minutes: float = typer.Option(10.0, help="Length of the long file built from the test utterances."),
    pause: str = typer.Option("0.4,1.5", help="Pause between utterances: min,max seconds (uniform)."),
    seed: int = typer.Option(0, help="Seed for the utterance order and pauses."),
    method: str = typer.Option("ctc-greedy-search", help="Search method."),
    configs: str = typer.Option("utterances,silero,windows,whole",
                                help="What to run: utterances (each alone), silero (silero:PAD sets --vad-pad), "
                                     "windows, whole (one piece)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda[:N]."),
    out: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the figures as JSON here."),
) -> None:
    """WER and RTF of long-audio transcription (silero-vad segments, fixed windows) vs per-utterance decoding."""
    from mlma_cli.bench.transcribe import CONFIGS, run_bench_transcribe

    try:
        lo, hi = (float(x) for x in pause.split(","))
    except ValueError as err:
        raise MlmaError(f"--pause {pause!r}: expected MIN,MAX seconds, e.g. 0.4,1.5") from err
    names = [c for c in configs.replace(" ", ",").split(",") if c]
    bad = [c for c in names if c.split(":")[0] not in CONFIGS]
    if bad:
        raise MlmaError(f"--configs {','.join(bad)}: choose from {', '.join(CONFIGS)}")
    rep = run_bench_transcribe([str(c) for c in checkpoint], data_dir, test_sets, minutes=minutes, pause=(lo, hi),
                               seed=seed, method=method, device=device, configs=names, out=out)
    typer.echo(rep["table"])


def bench_lid(
    checkpoint: List[Path] = typer.Option(..., "--checkpoint", "-c", help="Checkpoint(s) with a language-tagged tokenizer."),
    data_dir: Path = typer.Option(Path("data"), help="Data directory holding the test sets' manifests."),
    test_sets: str = typer.Option("synthetic/*/test", "--test-sets", "-t", help="Test sets (names or a glob)."),
    method: str = typer.Option("ctc-greedy-search", help="Search method."),
    device: str = typer.Option("auto", help="auto, cpu or cuda[:N]."),
    out: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the figures as JSON here."),
) -> None:
    """Language-ID accuracy per test set from the language tags the model emits (`mlma transcribe`'s language)."""
    from mlma_cli.bench.transcribe import run_bench_lid

    typer.echo(run_bench_lid([str(c) for c in checkpoint], data_dir, test_sets, method=method, device=device,
                             out=out)["table"])


def register(app: typer.Typer) -> None:
    app.command("transcribe")(transcribe)
    bench_app.command("transcribe")(bench_transcribe)
    bench_app.command("lid")(bench_lid)
