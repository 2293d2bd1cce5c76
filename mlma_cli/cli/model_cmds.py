"""`mlma model-info`, `mlma bench model`, `mlma bench scan`; attaches the bench group (defined in cli/options.py)."""
from __future__ import annotations

import logging
import re
from collections import OrderedDict
from pathlib import Path
from typing import List, Optional

import typer

from mlma_cli.cli.options import bench_app, write_or_print_json
from mlma_cli.errors import MlmaError

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- model-info
def load_model_config(spec: str, vocab_size: Optional[int] = None):
    """A ModelConfig from a named size, a YAML/JSON file (the config itself or under a `model:` key) or a checkpoint."""
    from mlma_cli.model import ModelConfig, named_config
    from mlma_cli.model.config import NAMED_SIZES

    extra = {} if vocab_size is None else {"vocab_size": vocab_size}
    if spec in NAMED_SIZES:
        return named_config(spec, **extra)
    path = Path(spec)
    if not path.exists():
        raise MlmaError(f"{spec}: neither a named size ({', '.join(sorted(NAMED_SIZES))}) nor an existing file")
    if path.suffix in (".yaml", ".yml", ".json"):
        import yaml

        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise MlmaError(f"{path}: not valid YAML ({err})") from err
        if isinstance(data, dict) and isinstance(data.get("model"), dict):
            data = data["model"]
        if not isinstance(data, dict):
            raise MlmaError(f"{path}: expected a mapping of model config fields")
    else:
        from mlma_cli.checkpoint import load_checkpoint

        data = load_checkpoint(path)["model_config"]
    data = {**data, **extra}
    name = data.pop("name", None)  # a training YAML's model section: a named size plus overrides
    try:
        return named_config(name, **data) if name else ModelConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise MlmaError(f"{path}: {err}") from err


def _component(name: str, encoder: str) -> str:
    if name.startswith("encoder.frontend."):
        return "front end (conv2d x2 + linear)"
    if name.startswith("encoder.final_norm."):
        return "final LayerNorm"
    if name.startswith("ctc_head."):
        return "CTC head"
    m = re.match(r"encoder\.layers\.\d+\.(\w+)\.?(.*)", name)
    if not m:
        return "other"
    part, rest = m.groups()
    if part == "mixer":
        leaf = rest.split(".")[0]
        if leaf in ("in_proj", "out_proj", "norm"):
            return "  mixer: shared in/out proj (+norm)"
        return "  mixer: backward direction" if "_b" in leaf else "  mixer: forward direction"
    return {"ffn1": "  feed-forward x2", "ffn2": "  feed-forward x2", "attn": "  rel-pos self-attention",
            "conv": "  conv module"}.get(part, "  layer norms")


def parameter_table(model) -> "OrderedDict[str, int]":
    """Parameter counts per component, in model order, with per-layer parts summed over all layers."""
    counts: "OrderedDict[str, int]" = OrderedDict()
    for name, p in model.named_parameters():
        key = _component(name, model.config.encoder)
        counts[key] = counts.get(key, 0) + p.numel()
    return counts


def model_info(
    spec: str = typer.Argument(..., metavar="SIZE_OR_YAML_OR_CHECKPOINT",
                               help="Named size (e.g. conmamba-paper), a YAML model config, or a checkpoint."),
    vocab_size: Optional[int] = typer.Option(None, help="Override the vocabulary size (named sizes default to 500)."),
    as_json: bool = typer.Option(False, "--json", help="Print config and counts as one JSON document instead of tables."),
    json_out: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write config and counts as JSON here."),
) -> None:
    """Print a model's configuration and its parameter count per component."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from mlma_cli.cli.tables import key_value_table
    from mlma_cli.model import build_model
    from mlma_cli.model.backends import describe

    cfg = load_model_config(spec, vocab_size)
    with torch.device("meta"):   # counts only: no memory, no init cost
        model = build_model(cfg)
    counts = parameter_table(model)
    total = sum(counts.values())
    backends = describe()
    doc = {"config": cfg.to_dict(), "parameters": dict(counts), "total": total, "backends": backends}
    if write_or_print_json(doc, json_out, as_json):
        return
    console = Console()
    console.print(key_value_table(f"model config: {spec}", cfg.to_dict(), "field"))
    ptab = Table(title=f"parameters ({cfg.encoder}, {cfg.num_layers} layers x d_model {cfg.d_model})")
    ptab.add_column("component")
    ptab.add_column("parameters", justify="right")
    ptab.add_column("share", justify="right")
    for k, n in counts.items():
        ptab.add_row(k, f"{n:,}", f"{100 * n / total:.1f}%")
    ptab.add_row("total", f"{total:,}", f"{total / 1e6:.2f} M", style="bold")
    console.print(ptab)
    console.print(key_value_table("scan backends on this machine", backends, "path", "uses"))


# ------------------------------------------------------------------------------------------------ bench
def _floats(csv: str, what: str) -> List[float]:
    try:
        return [float(s) for s in csv.split(",") if s.strip()]
    except ValueError as err:
        raise MlmaError(f"{what}: expected comma-separated numbers, got {csv!r}") from err


@bench_app.command("model")
def bench_model(
    size: str = typer.Option("tiny", help="Named size suffix: tiny, small or paper."),
    seconds: str = typer.Option("2,5,10,15", help="Utterance lengths in seconds of audio (100 frames/s); "
                                "the default is the everyday range, add e.g. 60,300 for long-form."),
    batch: int = typer.Option(1, min=1, help="Utterances per batch (all of the same length)."),
    device: str = typer.Option("auto", help="auto (CPU, plus GPU when present), cpu, cuda."),
    with_mamba2: bool = typer.Option(False, "--with-mamba2", help="Also time ConMamba with the Mamba-2 mixer."),
    repeats: int = typer.Option(3, min=1, help="Timed runs per point (median reported) after two warm-up rounds; "
                                "the variants' runs are interleaved."),
    budget: float = typer.Option(10.0, help="Stop repeating a point once its runs have taken this many seconds."),
    max_attn_gb: float = typer.Option(4.0, help="Skip Conformer runs whose attention would need more than this."),
    scan_backend: str = typer.Option("auto", help="auto | torch | cuda"),  # model.config.SCAN_BACKENDS (tested)
    threads: Optional[int] = typer.Option(None, help="torch CPU threads (default: torch's)."),
    onnx: bool = typer.Option(False, "--onnx", help="Also export the models (random weights) and time their "
                              "forward pass in onnxruntime on the CPU, same threads (needs mlma[onnx])."),
    forward_only: bool = typer.Option(False, "--forward-only", help="Skip the forward+backward (training) runs: "
                                      "inference timed as in a decode process, where no backward pass ran before "
                                      "(earlier backward passes shift forward timings by a few percent)."),
    out: Path = typer.Option(Path("bench_model.json"), "--output", "-o", help="JSON results."),
) -> None:
    """Forward and forward+backward time and peak memory, ConMamba vs Conformer, across utterance lengths."""
    from rich.console import Console

    from mlma_cli.bench.model import describe_crossover, render_table, run_model_bench
    from mlma_cli.model.config import check_scan_backend
    from mlma_cli.utils.io import write_json_atomic

    if size not in ("tiny", "small", "paper"):
        raise MlmaError(f"--size {size!r}: choose tiny, small or paper")
    try:
        check_scan_backend(scan_backend)
    except ValueError as err:
        raise MlmaError(f"--scan-backend: {err}") from err
    console = Console(width=max(Console().width, 140))  # the table is wide; don't squeeze it into 80 columns
    variants = ["conmamba", "conformer"] + (["conmamba-mamba2"] if with_mamba2 else [])

    def progress(row) -> None:
        console.print(f"[dim]{row.device} {row.seconds:g}s {row.variant}: fwd {row.fwd_ms} ms, "
                      f"fwd+bwd {row.fwdbwd_ms} ms {'; '.join(row.notes)}[/dim]")

    result = run_model_bench(size, _floats(seconds, "--seconds"), device, variants, repeats, budget, max_attn_gb,
                             scan_backend, threads, progress, batch, onnx, backward=not forward_only)
    console.print(render_table(result))
    for line in describe_crossover(result):
        console.print(line)
    write_json_atomic(out, result)
    console.print(f"wrote {out}")


@bench_app.command("scan")
def bench_scan(
    batch: int = typer.Option(8, help="Batch size B."),
    d_inner: int = typer.Option(512, help="Scan channels D (d_inner of ConMamba-256)."),
    d_state: int = typer.Option(16, help="State size N."),
    length: int = typer.Option(500, help="Sequence length L of the side-by-side table."),
    lengths: str = typer.Option("125,250,500,1000,2000,4000", help="Lengths of the time-vs-length sweep."),
    repeats: int = typer.Option(5, min=1, help="Timed runs per entry (minimum reported)."),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads (default: torch's)."),
    memory: bool = typer.Option(True, help="Measure peak memory (one subprocess per entry)."),
    mamba_ssm_backward: bool = typer.Option(True, help="Include mamba-ssm reference backward (slow)."),
    ssd: bool = typer.Option(True, help="Also benchmark the Mamba-2 SSD scan."),
    out: Path = typer.Option(Path("bench_scan.json"), "--output", "-o", help="JSON results."),
) -> None:
    """Our selective scan against the plain loop (and mambapy / mamba-ssm's reference when importable)."""
    from mlma_cli.bench.scan import run_scan_bench

    run_scan_bench(batch=batch, d_inner=d_inner, d_state=d_state, length=length,
                   lengths=[int(x) for x in _floats(lengths, "--lengths")], repeats=repeats, threads=threads,
                   memory=memory, mamba_ssm_backward=mamba_ssm_backward, ssd=ssd, json_path=str(out))


def register(app: typer.Typer) -> None:
    app.command("model-info")(model_info)
    app.add_typer(bench_app, name="bench")  # the one bench group (cli/options.py); other modules add to it
