"""`mlma decode`, `mlma score`, `mlma transcribe`, `mlma lm {train,graph}`, `mlma report`, `mlma bench decode`."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

import typer

from mlma_cli.cli import options as opt
from mlma_cli.cli.options import bench_app, split_list
from mlma_cli.errors import MlmaError

log = logging.getLogger(__name__)

lm_app = typer.Typer(help="Word n-gram LMs and WFST decoding graphs (kaldilm + kaldifst).", no_args_is_help=True)


def _expand_test_sets(data_dir: Path, patterns: List[str]) -> List[str]:
    """Names or globs (synthetic/*/test) -> dataset names; globs look under fbank/ then manifests/."""
    from mlma_cli.data.layout import find_datasets

    names: List[str] = []
    for p in patterns:
        if any(ch in p for ch in "*?["):
            hits = find_datasets(data_dir, p, kind="fbank") or find_datasets(data_dir, p, kind="manifests")
            if not hits:
                raise MlmaError(f"--test-sets {p!r} matches no dataset under {data_dir}/fbank or {data_dir}/manifests")
            names += hits
        else:
            names.append(p)
    return list(dict.fromkeys(names))


def decode(
    checkpoint: List[str] = typer.Option(..., "--checkpoint", "-c",
                                         help="Checkpoint(s), model package dir(s) or hf:ORG/NAME; several are averaged."),
    use_averaged: bool = typer.Option(False, help="Use each checkpoint's running-average weights."),
    data_dir: Path = typer.Option(Path("data"), help="Data directory (fbank/ and manifests/)."),
    test_sets: List[str] = typer.Option(..., "--test-sets", "-t",
                                        help="corpus/lang/split names or globs; repeat or comma-separate."),
    method: str = opt.METHOD,
    beam: int = opt.BEAM,
    graph: Optional[Path] = opt.GRAPH,
    backend: str = opt.BACKEND,
    search_beam: float = opt.SEARCH_BEAM,
    output_beam: float = opt.OUTPUT_BEAM,
    max_active: int = opt.MAX_ACTIVE,
    lm_scale: float = opt.LM_SCALE,
    out_dir: Path = typer.Option(Path("exp/decode"), "--output-dir", "-o", help="Output directory."),
    device: str = opt.DEVICE,
    max_duration: float = opt.MAX_DURATION,
    suffix: str = typer.Option("", help="Appended to the setting name (e.g. avg-5)."),
) -> None:
    """Decode test sets and write icefall-layout results (recogs/errs/wer-summary + JSON, RTF)."""
    from mlma_cli.checkpoint import load_for_inference
    from mlma_cli.decode.runner import run_decode

    opts = opt.decode_options(method, beam, graph, backend, search_beam, output_beam, max_active, lm_scale, device,
                              max_duration, suffix)
    names = _expand_test_sets(data_dir, split_list(test_sets))
    inference = load_for_inference([str(c) for c in checkpoint], device=opts.device, use_averaged=use_averaged)
    from mlma_cli.cli.progress import progress_bar

    with progress_bar(f"decoding ({opts.setting})", "utts") as progress:
        results = run_decode(inference, data_dir, names, opts, out_dir, checkpoints=[str(c) for c in checkpoint],
                             progress=progress)
    for r in results:
        lo, hi = r["wer"]["ci95"]
        typer.echo(f"{r['dataset']}\t{opts.setting}\tWER {r['wer']['rate']:.2f}% [{lo:.2f}, {hi:.2f}]\t"
                   f"CER {r['cer']['rate']:.2f}%\tutts {r['num_utts']}\tRTF {r['rtf']:.4f}")
    typer.echo(f"results in {out_dir}")


def score(
    decode_dir: Optional[Path] = typer.Option(None, help="Directory written by `mlma decode`."),
    method: Optional[str] = typer.Option(None, help="Only this decoding method."),
    ref: Optional[Path] = typer.Option(None, help="Reference text file ('<utt-id> <text>' per line)."),
    hyp: Optional[Path] = typer.Option(None, help="Hypothesis text file (same format)."),
    lang: Optional[str] = typer.Option(None, help="Language of --ref/--hyp (en de fr es it nl)."),
    name: str = typer.Option("text", help="Dataset name used for --ref/--hyp rows."),
    out_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o",
                                           help="Where scores.md/json/png go (default: decode dir)."),
    bootstrap_samples: int = typer.Option(1000, help="Bootstrap replicates for the 95% CI."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
) -> None:
    """WER/CER (normalized text) per language and test set: ESPnet tables, 95% CIs, RESULTS.md section, PNG."""
    from mlma_cli.score.aggregate import collect_decodes, read_text_pairs, score_sets
    from mlma_cli.text.normalize import LANGUAGES

    if ref or hyp:
        if not (ref and hyp and lang):
            raise MlmaError("--ref, --hyp and --lang go together (e.g. --ref ref.txt --hyp hyp.txt --lang de)")
        if lang not in LANGUAGES:
            raise MlmaError(f"--lang {lang!r} is not one of {', '.join(LANGUAGES)}")
        sets = [(name, "text", read_text_pairs(ref, hyp, lang))]
        target = out_dir or Path(hyp).parent
    elif decode_dir:
        sets = collect_decodes(decode_dir, method)
        target = out_dir or decode_dir
    else:
        raise MlmaError("give --decode-dir DIR (from mlma decode) or --ref/--hyp/--lang")
    res = score_sets(sets, target, bootstrap_samples=bootstrap_samples, seed=seed)
    typer.echo(Path(res["markdown"]).read_text(encoding="utf-8"))
    typer.echo(f"wrote {res['markdown']}, {res['json']}" + (f", {res['png']}" if res["png"] else ""))


@lm_app.command("train")
def lm_train(
    out: Path = typer.Option(..., "--output", "-o", help="ARPA file to write, e.g. data/lm/de/lm.arpa"),
    data_dir: Path = typer.Option(Path("data"), help="Data directory (manifests/)."),
    datasets: Optional[List[str]] = typer.Option(None, help="Training sets corpus/lang/split (repeat or commas)."),
    text: Optional[Path] = typer.Option(None, help="Plain text file, one sentence per line (needs --lang)."),
    lang: Optional[str] = typer.Option(None, help="Language of --text, for normalization."),
    order: int = typer.Option(3, help="n-gram order."),
) -> None:
    """Train a small interpolated Kneser-Ney n-gram on normalized training text and write it as ARPA."""
    from mlma_cli.decode.lm import read_corpus_text, write_arpa
    from mlma_cli.text.normalize import LANGUAGES, normalize

    sents: List[str] = []
    names = split_list(datasets)
    if names:
        sents += read_corpus_text(data_dir, names)
    if text:
        if lang not in LANGUAGES:
            raise MlmaError(f"--text needs --lang (one of {', '.join(LANGUAGES)})")
        if not text.is_file():
            raise MlmaError(f"{text}: text file not found")
        sents += [s for s in (normalize(l, lang) for l in text.read_text(encoding="utf-8").splitlines()) if s]
    if not names and not text:
        raise MlmaError("give --datasets corpus/lang/split ... or --text FILE --lang L")
    if order < 1:
        raise MlmaError(f"--order must be >= 1, got {order}")
    stats = write_arpa(sents, out, order=order)
    typer.echo(f"wrote {out}: {len(sents)} sentences, " + ", ".join(f"{k}: {v}" for k, v in stats.items()))


@lm_app.command("graph")
def lm_graph(
    arpa: Path = typer.Option(..., help="Word n-gram LM (ARPA)."),
    out_dir: Path = typer.Option(..., "--output-dir", "-o", help="Graph directory to write (HLG.fst, G.fst, words.txt, ...)."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c",
                                            help="Take the tokenizer from this checkpoint, package dir or hf:ORG/NAME."),
    tokenizer: Optional[Path] = typer.Option(None, help="Or from this SentencePiece model."),
    topo: str = typer.Option("standard", help="CTC topology of H: standard (exact CTC, V^2 arcs) or compact "
                                              "(3V arcs, for vocabularies of thousands of tokens)."),
) -> None:
    """Build G from the ARPA file (kaldilm) and the decoding graph HLG (kaldifst) for a tokenizer."""
    from mlma_cli.decode.wfst import TOPOLOGIES, build_graph_for_tokenizer

    if topo not in TOPOLOGIES:
        raise MlmaError(f"--topo {topo}: expected one of {', '.join(TOPOLOGIES)}")
    if bool(checkpoint) == bool(tokenizer):
        raise MlmaError("give exactly one of --checkpoint CKPT or --tokenizer MODEL")
    if checkpoint:
        from mlma_cli.checkpoint import tokenizer_from_path

        tok = tokenizer_from_path(checkpoint)
    else:
        from mlma_cli.data.tokenizer import Tokenizer

        tok = Tokenizer.load(tokenizer)
    g = build_graph_for_tokenizer(arpa, tok, out_dir, topo=topo)
    typer.echo(f"wrote {out_dir}: HLG {g.num_states} states, {g.meta['num_words']} words ({topo} CTC topology)")


def report(
    exp_dir: Path = typer.Argument(..., help="Recipe experiment directory holding decode results."),
    out_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="Where report.md/json/png go (default: EXP_DIR)."),
    method: Optional[str] = typer.Option(None, help="Only this decoding method."),
    setting: Optional[str] = typer.Option(None, help="Only this setting (e.g. ctc-greedy-search)."),
) -> None:
    """Gather wer-summary files into one language x test-set table (markdown, JSON, PNG)."""
    from mlma_cli.score.report import write_report

    res = write_report(exp_dir, out_dir or exp_dir, method=method, setting=setting)
    typer.echo(Path(res["markdown"]).read_text(encoding="utf-8"))
    typer.echo(f"wrote {res['markdown']}, {res['json']}, {res['png']}")


def bench_decode(
    sizes: str = typer.Option("conmamba-tiny,conmamba-paper", help="Named model sizes (comma-separated)."),
    seconds: float = typer.Option(10.0, help="Audio length per utterance."),
    batch: int = typer.Option(4, help="Utterances per batch."),
    vocab_size: int = typer.Option(500, help="Vocabulary size of the random model."),
    beam: int = typer.Option(4, help="Prefix beam size."),
    out: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the results as JSON here."),
    device: str = typer.Option("auto", help="Where the model runs: auto, cpu, cuda (searches run on CPU)."),
) -> None:
    """Real-time factor of each decoding method (random weights, CPU) for the given model sizes."""
    from mlma_cli.bench.decode import run_bench

    rows = run_bench([s for s in sizes.split(",") if s], seconds=seconds, batch=batch, vocab_size=vocab_size, beam=beam,
                     device=device)
    for r in rows:
        typer.echo(f"{r['size']:<16} {r['method']:<26} RTF {r['rtf']:.4f} (model {r['rtf_model']:.4f}, "
                   f"search {r['rtf_search']:.4f})")
    if out:
        from mlma_cli.utils.io import write_json_atomic

        write_json_atomic(out, {"rows": rows})


def register(app: typer.Typer) -> None:
    app.command("decode")(decode)
    app.command("score")(score)
    app.command("report")(report)
    app.add_typer(lm_app, name="lm")
    bench_app.command("decode")(bench_decode)
