"""`mlma export`: a checkpoint (or the average of several) to ONNX for onnxruntime / sherpa-onnx; `mlma bench export`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mlma_cli.cli.options import bench_app

EXPORT_HELP = (
    "Export a ConMamba (Mamba-1 / Mamba-2 mixer) or Conformer CTC checkpoint to ONNX.\n\n"
    "DIR gets model.onnx: x (N, T, 80) float32 raw fbank and x_lens (N,) int64 in, log_probs (N, T', V) and "
    "log_probs_len (N,) out; global CMVN inside; dynamic batch and length; the Mamba scans as ONNX Scan loops. "
    "Also model.int8.onnx with --int8, tokens.txt (sherpa-onnx symbol table, <blk> = 0), tokenizer.model and "
    "config.json. Several --checkpoint are averaged as in `mlma decode`.\n\n"
    "sherpa-onnx runs it as a zipformer-CTC model: OfflineRecognizer.from_zipformer_ctc(model='DIR/model.onnx', "
    "tokens='DIR/tokens.txt'), or sherpa-onnx-offline --zipformer-ctc-model=DIR/model.onnx --tokens=DIR/tokens.txt "
    "a.wav. In Python without torch: mlma_cli.export.runtime.OnnxCtcModel(DIR).\n\n"
    "With --check-data DATA --test-sets A,B the export is then compared with the checkpoint on those test sets "
    "(log-prob difference, identical greedy outputs, WER of PyTorch / ONNX fp32 / int8 / sherpa-onnx / "
    "`mlma transcribe`, fbank gap); the table goes to DIR/check.md and DIR/check.json."
)


def export(
    checkpoint: List[Path] = typer.Option(..., "--checkpoint", "-c",
                                          help="Checkpoint .pt or model package dir; repeat to average several."),
    out: Path = typer.Option(..., "--output-dir", "-o", help="Export directory DIR (created)."),
    int8: bool = typer.Option(False, "--int8", help="Also write model.int8.onnx (dynamic int8 weight quantization)."),
    opset: int = typer.Option(18, "--opset", help="ONNX opset (>= 18; 18 runs on onnxruntime >= 1.14 and sherpa-onnx)."),
    use_averaged: bool = typer.Option(False, "--use-averaged",
                                      help="Export each checkpoint's running weight average instead of its weights."),
    check_data: Optional[Path] = typer.Option(None, "--check-data",
                                              help="DATA dir: after exporting, compare with the checkpoint on --test-sets."),
    test_sets: str = typer.Option("", "--test-sets", help="Comma-separated datasets, e.g. synthetic/de/test,synthetic/en/test."),
    max_utts: Optional[int] = typer.Option(None, "--max-utts", help="With --check-data: at most this many utterances per set."),
    threads: int = typer.Option(1, "--threads", help="Threads for the checks (PyTorch, onnxruntime, sherpa-onnx)."),
    skip_export: bool = typer.Option(False, "--skip-export", help="With --check-data: check the existing DIR as it is."),
) -> None:
    from mlma_cli.errors import MlmaError

    if check_data is not None and not test_sets.strip():
        raise MlmaError("--check-data needs --test-sets (e.g. synthetic/de/test)")
    if not skip_export:
        from mlma_cli.export.onnx_export import export_checkpoint

        res = export_checkpoint(checkpoint, out, int8=int8, opset=opset, use_averaged=use_averaged)
        typer.echo(f"exported {res.metadata['model_type']} ({res.loop_nodes} Scan/Loop nodes) -> "
                   + ", ".join(str(p) for p in res.files))
    if check_data is not None:
        from mlma_cli.export.evaluate import check_export, checks_to_dict, format_checks
        from mlma_cli.utils.io import write_json_atomic, write_text_atomic

        sets = [s.strip() for s in test_sets.split(",") if s.strip()]
        rows = check_export(checkpoint, out, check_data, sets, use_averaged=use_averaged, threads=threads,
                            max_utts=max_utts)
        table = format_checks(rows)
        write_text_atomic(out / "check.md", table + "\n")
        write_json_atomic(out / "check.json", checks_to_dict(rows))
        typer.echo(table)


def bench_export(
    sizes: str = typer.Option("tiny,paper", help="Named size suffixes (conmamba-<size> vs conformer-<size>)."),
    seconds: str = typer.Option("5,20,60", help="Utterance lengths in seconds of audio."),
    threads: str = typer.Option("1,2", help="Thread counts to run each row with."),
    runtimes: str = typer.Option("torch,onnx-fp32,onnx-int8,sherpa", help="Which runtimes to time."),
    repeats: int = typer.Option(2, help="Timed runs per row (after one warm-up); the best is reported."),
    vocab_size: int = typer.Option(500, help="Vocabulary size of the random-weight models."),
    work_dir: Optional[Path] = typer.Option(None, help="Where the exports go (default: a temporary dir)."),
    json_out: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the rows as JSON to this file."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON instead of a table."),
) -> None:
    """CPU real-time factor and peak memory (RSS) of PyTorch vs onnxruntime fp32 / int8 vs sherpa-onnx.

    Random weights; each row runs in its own subprocess so its peak memory is its own.
    """
    from mlma_cli.bench.export import format_table, run_bench

    rows = run_bench(sizes=_split(sizes), seconds=[float(s) for s in _split(seconds)],
                     threads=[int(t) for t in _split(threads)], runtimes=_split(runtimes), repeats=repeats,
                     vocab_size=vocab_size, work_dir=work_dir)
    if json_out:
        from mlma_cli.utils.io import write_json_atomic

        write_json_atomic(json_out, [r.__dict__ for r in rows])
    if as_json:
        import json

        typer.echo(json.dumps([r.__dict__ for r in rows], indent=2))
        return
    typer.echo(format_table(rows))


def _split(text: str) -> List[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def register(app: typer.Typer) -> None:
    app.command("export", help=EXPORT_HELP)(export)
    bench_app.command("export")(bench_export)
