"""`mlma prepare CORPUS` and `mlma features`: option parsing and printing over mlma_cli.data."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mlma_cli.cli.options import split_list
from mlma_cli.cli.progress import progress_bar
from mlma_cli.errors import MlmaError

def _print_prepare(report) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report.corpus} manifests")
    for col in ("corpus", "lang", "split", "utterances", "hours", "skipped"):
        table.add_column(col, justify="right" if col in ("utterances", "hours", "skipped") else "left")
    for r in report.rows:
        table.add_row(r.corpus, r.lang, r.split, str(r.utterances), f"{r.hours:.3f}", str(r.skipped))
    table.add_row("total", "", "", str(report.utterances), f"{report.hours:.3f}", str(report.num_bad), style="bold")
    console = Console()
    console.print(table)
    if report.num_bad:
        console.print(f"{report.num_bad} item(s) skipped, listed in {report.bad_items_path}")


def prepare(
    corpus: str = typer.Argument(..., help="librispeech | commonvoice | fleurs | mls | voxpopuli | synthetic"),
    corpus_dir: Optional[Path] = typer.Argument(None, help="Extracted corpus directory (not for synthetic)."),
    data_dir: Path = typer.Option(Path("data"), "--data-dir", help="Output data directory."),
    langs: Optional[List[str]] = typer.Option(None, "--langs", help="Languages, comma-separated (default: all found)."),
    splits: Optional[List[str]] = typer.Option(None, "--splits", help="Splits, comma-separated (default: the corpus' standard ones)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Parallel audio probing / synthesis jobs."),
    max_duration: float = typer.Option(60.0, "--max-duration", help="Skip training utterances longer than this (s)."),
    max_duration_eval: float = typer.Option(600.0, "--max-duration-eval", help="Same for dev/test splits (s)."),
    min_duration: float = typer.Option(0.1, "--min-duration", help="Skip utterances shorter than this (s)."),
    full_decode: bool = typer.Option(False, "--full-decode", help="Decode mp3/ogg/opus fully while checking (slower)."),
    train_utts: Optional[int] = typer.Option(None, "--train-utts", help="synthetic: train utterances per language."),
    dev_utts: Optional[int] = typer.Option(None, "--dev-utts", help="synthetic: dev utterances per language."),
    test_utts: Optional[int] = typer.Option(None, "--test-utts", help="synthetic: test utterances per language."),
    minutes: Optional[float] = typer.Option(None, "--minutes", help="synthetic: minutes of train audio per language."),
    seed: int = typer.Option(0, "--seed", help="synthetic: random seed."),
    text: str = typer.Option("words", "--text", help="synthetic: words (open vocabulary, wordfreq) | grammar (closed, ~150 words)."),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="synthetic: noise, reverb, gain, silence, speed."),
) -> None:
    """Write lhotse manifests for CORPUS under DATA/manifests/<corpus>/<lang>/<split>/, validate them, print a table."""
    from mlma_cli.data.corpora import CORPUS_NAMES, prepare_corpus, prepare_synthetic_corpus

    if corpus not in CORPUS_NAMES:
        raise MlmaError(f"unknown corpus '{corpus}'; choose from {' | '.join(CORPUS_NAMES)}")
    if corpus == "synthetic":
        counts = None
        if any(v is not None for v in (train_utts, dev_utts, test_utts)):
            from mlma_cli.data.synthetic import DEFAULT_UTTS

            counts = dict(DEFAULT_UTTS)
            for split, v in (("train", train_utts), ("dev", dev_utts), ("test", test_utts)):
                if v is not None:
                    counts[split] = v
        report = prepare_synthetic_corpus(data_dir, (split_list(langs) or None), counts, minutes, seed, jobs, text, augment)
    else:
        if corpus_dir is None:
            raise MlmaError(f"mlma prepare {corpus}: give the extracted corpus directory, e.g. `mlma prepare {corpus} /data/{corpus}`")
        with progress_bar(f"checking {corpus} audio", "files") as progress:
            report = prepare_corpus(
                corpus, corpus_dir, data_dir, (split_list(langs) or None), (split_list(splits) or None), jobs,
                max_duration=max_duration, max_duration_eval=max_duration_eval, min_duration=min_duration,
                full_decode=full_decode, progress=progress,
            )
    _print_prepare(report)


def features(
    datasets: Optional[List[str]] = typer.Argument(None, help="Datasets corpus/lang/split, e.g. synthetic/de/train."),
    data_dir: Path = typer.Option(Path("data"), "--data-dir", help="Data directory written by `mlma prepare`."),
    all_: bool = typer.Option(False, "--all", help="Every dataset under DATA/manifests."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Parallel feature extraction processes."),
    speed_perturb: bool = typer.Option(False, "--speed-perturb", help="Add 0.9/1.1 speed copies of training cuts."),
    on_the_fly: bool = typer.Option(False, "--on-the-fly", help="Store no features; the dataloader computes fbank."),
    shar: bool = typer.Option(False, "--shar", help="Also write lhotse Shar shards (DATA/fbank/.../shar/)."),
    shard_size: int = typer.Option(1000, "--shard-size", min=1, help="Cuts per Shar shard."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Recompute datasets that are already complete."),
    cmvn_max_cuts: int = typer.Option(5000, "--cmvn-max-cuts", min=1, help="Cuts sampled for the global CMVN."),
) -> None:
    """80-bin fbank (16 kHz, 25/10 ms) into lilcom storage under DATA/fbank/, plus DATA/fbank/cmvn.json."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from mlma_cli.data.features import compute_features
    from mlma_cli.data.layout import find_datasets, parse_dataset

    if all_ and datasets:
        raise MlmaError("give dataset names or --all, not both")
    if not all_ and not datasets:
        raise MlmaError("name the datasets (e.g. synthetic/de/train) or pass --all")
    names = find_datasets(data_dir) if all_ else list(datasets)
    for name in names:
        parse_dataset(name)
    console = Console()
    tasks = {}
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console, transient=True,
    ) as bar:

        def progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done)

        report = compute_features(
            data_dir, names, num_jobs=jobs, speed_perturb=speed_perturb, on_the_fly=on_the_fly, shar=shar,
            shard_size=shard_size, overwrite=overwrite, cmvn_max_cuts=cmvn_max_cuts, progress=progress,
        )
    table = Table(title=f"features in {Path(data_dir) / 'fbank'}")
    for col in ("dataset", "status", "mode", "cuts", "hours", "dropped"):
        table.add_column(col)
    for d in report.datasets:
        table.add_row(d.dataset, d.status, d.mode, str(d.cuts), f"{d.hours:.3f}", str(d.dropped))
    console.print(table)
    if report.cmvn_path:
        console.print(f"CMVN ({report.cmvn_frames} frames): {report.cmvn_path}")


def register(app: typer.Typer) -> None:
    app.command("prepare")(prepare)
    app.command("features")(features)
