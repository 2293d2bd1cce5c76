"""`mlma train`, `mlma average`, `mlma bench train`: option parsing over mlma_cli.train.

    mlma train --config conf/train-tiny.yaml --set train.exp_dir=exp/tiny --set data.alpha=0.3
    mlma train --data-dir data --train 'synthetic/*/train' --dev 'synthetic/*/dev' --model conmamba-tiny \
        --exp-dir exp/tiny --max-steps 2000
    torchrun --standalone --nproc-per-node 4 -m mlma_cli train --config conf/train.yaml     # DDP
    mlma average --exp-dir exp/tiny --best 5 -o exp/tiny/averaged-best5.pt
"""
from __future__ import annotations

import os

from pathlib import Path
from typing import List, Optional

import typer

from mlma_cli.cli.options import bench_app
from mlma_cli.errors import MlmaError


def train(
    config: Optional[Path] = typer.Option(None, "--config", help="Training YAML (sections model, data, train)."),
    overrides: List[str] = typer.Option([], "--set", help="Override a config value: section.key=value or key=value (YAML value), e.g. train.lr=5e-4."),
    data_dir: Optional[str] = typer.Option(None, help="= --set data.data_dir=..."),
    train_sets: List[str] = typer.Option([], "--train", help="Training dataset corpus/lang/split ('*' globs); repeatable."),
    dev_sets: List[str] = typer.Option([], "--dev", help="Dev dataset(s); repeatable."),
    tokenizer: Optional[str] = typer.Option(None, help="= --set data.tokenizer=..."),
    model: Optional[str] = typer.Option(None, help="= --set model.name=... (conmamba-tiny, conformer-paper ...)."),
    exp_dir: Optional[str] = typer.Option(None, help="= --set train.exp_dir=..."),
    max_duration: Optional[float] = typer.Option(None, help="= --set data.max_duration=..."),
    max_epochs: Optional[int] = typer.Option(None, help="= --set train.max_epochs=..."),
    max_steps: Optional[int] = typer.Option(None, help="= --set train.max_steps=..."),
    lr: Optional[float] = typer.Option(None, help="= --set train.lr=..."),
    device: Optional[str] = typer.Option(None, help="= --set train.device=... (auto, cpu, cuda)"),
    resume: Optional[Path] = typer.Option(None, help="Resume from this checkpoint (default: exp_dir/checkpoint-last.pt)."),
    no_resume: bool = typer.Option(False, "--no-resume", help="Start fresh even if exp_dir holds checkpoints."),
) -> None:
    """Train a CTC model; resumes automatically from EXP_DIR/checkpoint-last.pt (refused when the config asks for
    another network or tokenizer than that checkpoint's). Ctrl-C saves and stops."""
    from mlma_cli.train.config import load_config
    from mlma_cli.train.loop import train as run_train

    sets = list(overrides)
    explicit = {"data.data_dir": data_dir, "data.tokenizer": tokenizer, "train.exp_dir": exp_dir,
                "data.max_duration": max_duration, "train.max_epochs": max_epochs, "train.max_steps": max_steps,
                "train.lr": lr, "train.device": device}
    sets += [f"{k}={v}" for k, v in explicit.items() if v is not None]
    if train_sets:
        sets.append("data.train=[" + ", ".join(f"'{t}'" for t in train_sets) + "]")
    if dev_sets:
        sets.append("data.dev=[" + ", ".join(f"'{d}'" for d in dev_sets) + "]")
    if model:
        sets.append(f"model.name={model}")
    try:
        cfg = load_config(config, sets)
    except ValueError as err:
        raise MlmaError(str(err)) from err
    if resume is not None and no_resume:
        raise MlmaError("--resume and --no-resume exclude each other")
    exp = Path(cfg.train.exp_dir)
    made_here = not exp.exists()
    try:
        result = run_train(cfg, resume=resume if resume is not None else (False if no_resume else "auto"))
    except (MlmaError, ValueError):
        _remove_if_unused(exp, made_here)  # a run that failed its checks leaves nothing half-made behind
        raise
    state = "interrupted" if result.interrupted else "finished"
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        typer.echo(f"training {state} at step {result.step} (epoch {result.epoch}); last checkpoint: "
                   f"{result.last_checkpoint}; {result.skipped_batches} batch(es) skipped")
    if result.interrupted:  # non-zero so recipes do not mark the stage done; rerun the command to resume
        raise typer.Exit(code=130)


def _remove_if_unused(exp: Path, made_here: bool) -> None:
    """Delete an exp dir this run created when it holds no checkpoint (only the config copy and an early log)."""
    if made_here and exp.is_dir() and not any(exp.glob("*.pt")) and os.environ.get("RANK", "0") == "0":
        import shutil

        shutil.rmtree(exp, ignore_errors=True)


def average(
    exp_dir: Path = typer.Option(..., help="Experiment directory holding checkpoint-*.pt / epoch-*.pt."),
    output: Path = typer.Option(..., "--output", "-o", help="Averaged checkpoint to write."),
    last: Optional[int] = typer.Option(None, help="Average the K newest checkpoints."),
    best: Optional[int] = typer.Option(None, help="Average the K checkpoints with the best dev score (--best-by)."),
    best_by: str = typer.Option("loss", help="What --best ranks by: loss (dev CTC loss) or wer (dev greedy WER, "
                                             "the ConMamba reference's choice)."),
    use_averaged: bool = typer.Option(False, help="Use the running averages: mean over the steps spanned by the chosen checkpoints."),
    epochs_only: bool = typer.Option(False, help="Choose among epoch-*.pt only."),
) -> None:
    """Average checkpoints (last K, best K by dev loss or WER, or the running average) into one checkpoint."""
    from mlma_cli.train.average import average_checkpoints, select_checkpoints

    paths = select_checkpoints(exp_dir, last=last, best=best, include="epoch" if epochs_only else "all", by=best_by)
    out = average_checkpoints(paths, output, use_averaged=use_averaged)
    typer.echo(f"averaged {len(paths)} checkpoint(s) ({', '.join(p.name for p in paths)}) -> {out}")


def bench_train(
    models: str = typer.Option("conmamba-tiny,conformer-tiny", help="Comma-separated named sizes."),
    device: str = typer.Option("auto", help="cpu, cuda or auto."),
    batch: int = typer.Option(8, help="Utterances per batch."),
    utt_seconds: float = typer.Option(10.0, help="Seconds per utterance."),
    steps: int = typer.Option(5, help="Timed steps (after 2 warm-up steps)."),
    dtype: str = typer.Option("auto", help="auto (bf16 on CUDA), float32, bfloat16."),
) -> None:
    """Training throughput in seconds of audio per second (random features; data loading excluded)."""
    import torch

    from mlma_cli.bench.train import format_table, run_bench

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    res = run_bench([m.strip() for m in models.split(",") if m.strip()], device, batch, utt_seconds, steps,
                    dtype=dtype)
    typer.echo(format_table(res))


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("average")(average)
    bench_app.command("train")(bench_train)
