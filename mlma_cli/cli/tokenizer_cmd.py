"""`mlma tokenizer`: train one SentencePiece model over all languages' training text."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def tokenizer(
    cuts: List[Path] = typer.Option([], "--cuts", help="A cuts.jsonl.gz, or a dataset dir holding one (repeatable)."),
    data: Optional[Path] = typer.Option(None, "--data-dir", help="Data directory for --dataset (as for the other commands)."),
    dataset: List[str] = typer.Option([], "--dataset", help="Dataset pattern under DATA/manifests, e.g. 'synthetic/*/train' (repeatable)."),
    out_dir: Path = typer.Option(Path("data/lang"), "--output-dir", "-o", help="Where tokenizer.model, .vocab, tokens.txt go."),
    vocab_size: int = typer.Option(500, "--vocab-size", help="Target vocabulary size (soft limit; ignored for char)."),
    model_type: str = typer.Option("unigram", "--model-type", help="unigram | bpe | char."),
    lang_tags: bool = typer.Option(False, "--lang-tags/--no-lang-tags", help="Add <en> <de> ... as user-defined pieces."),
    alpha: float = typer.Option(0.0, "--balance-alpha", help="Language sampling n_l^alpha: 0 = equal share, 1 = natural."),
    max_sentences: int = typer.Option(2_000_000, "--max-sentences", help="Cap on training sentences after balancing."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train a language-balanced SentencePiece tokenizer (blank = id 0) from cut manifests."""
    from rich.console import Console
    from rich.table import Table

    from mlma_cli.data.tokenizer import MODEL_TYPES, resolve_cut_paths, train_tokenizer
    from mlma_cli.errors import MlmaError

    if model_type not in MODEL_TYPES:
        raise MlmaError(f"--model-type {model_type!r} is not one of {', '.join(MODEL_TYPES)}")
    if not 0.0 <= alpha <= 1.0:
        raise MlmaError(f"--balance-alpha must be between 0 and 1 (got {alpha})")
    if vocab_size <= 0 or max_sentences <= 0:
        raise MlmaError("--vocab-size and --max-sentences must be positive")
    paths = resolve_cut_paths(cuts, data, dataset)
    report = train_tokenizer(paths, out_dir, vocab_size=vocab_size, model_type=model_type, lang_tags=lang_tags,
                             alpha=alpha, max_sentences=max_sentences, seed=seed)
    table = Table(title=f"{model_type} tokenizer, {report.vocab_size} pieces -> {out_dir / 'tokenizer.model'}")
    for col in ("lang", "sentences", "used (balanced)"):
        table.add_column(col, justify="left" if col == "lang" else "right")
    for lang in sorted(report.sentences):
        table.add_row(lang, str(report.sentences[lang]), str(report.used.get(lang, 0)))
    Console().print(table)
    if report.skipped_empty:
        Console(stderr=True).print(f"skipped {report.skipped_empty} supervisions whose text is empty after normalization")


def register(app: typer.Typer) -> None:
    app.command("tokenizer")(tokenizer)
