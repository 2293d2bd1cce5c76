"""What several commands share: the `mlma bench` group, list-valued options, the search options of decode and
transcribe, and turning those into `DecodeOptions`.

    from mlma_cli.cli import options as opt

    def decode(method: str = opt.METHOD, beam: int = opt.BEAM, ...):
        search = opt.decode_options(method, beam, graph, backend, search_beam, output_beam, max_active, lm_scale,
                                    device, max_duration)

Light on purpose (typer only): every command module imports it when `mlma --help` builds the command tree.
The defaults equal `decode.runner.DecodeOptions`'s (tests/test_cli_options.py checks that).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

# The one `mlma bench` group; each command module adds its benchmarks to it in register().
bench_app = typer.Typer(help="Benchmarks (never part of the test suite).", no_args_is_help=True)


def split_list(values: Optional[List[str]]) -> List[str]:
    """Repeatable list options: ``--langs de,fr --langs 'it nl'`` -> ["de", "fr", "it", "nl"] ([] when not given)."""
    out: List[str] = []
    for v in values or []:
        out += [x for x in v.replace(",", " ").split() if x]
    return out


def write_or_print_json(doc: dict, json_out: Optional[Path], as_json: bool) -> bool:
    """``-o FILE`` writes ``doc`` as JSON; ``--json`` prints it. True when printed (the caller then skips tables)."""
    if json_out:
        from mlma_cli.utils.io import write_json_atomic

        write_json_atomic(json_out, doc)
    if as_json:
        import json

        typer.echo(json.dumps(doc, indent=2))
    return as_json


# ----------------------------------------------------------------------------------------------- search options
METHOD = typer.Option("ctc-greedy-search", help="ctc-greedy-search | ctc-prefix-beam-search | wfst")
BEAM = typer.Option(4, help="Prefix beam size (ctc-prefix-beam-search).")
GRAPH = typer.Option(None, help="Graph dir from `mlma lm graph` (or one with <lang>/ subdirs) for --method wfst.")
BACKEND = typer.Option("kaldi", help="WFST backend: kaldi (kaldi-decoder, CPU) or k2 (batched, GPU).")
SEARCH_BEAM = typer.Option(16.0, help="WFST search beam.")
OUTPUT_BEAM = typer.Option(8.0, help="k2 output (lattice) beam.")
MAX_ACTIVE = typer.Option(7000, help="WFST max active states.")
LM_SCALE = typer.Option(1.0, help="LM weight relative to the acoustic log-probs (WFST).")
DEVICE = typer.Option("auto", help="auto (GPU when present), cpu or cuda[:N].")
MAX_DURATION = typer.Option(200.0, help="Seconds of padded audio per batch.")


def decode_options(method: str, beam: int, graph: Optional[Path], backend: str, search_beam: float,
                   output_beam: float, max_active: int, lm_scale: float, device: str, max_duration: float = 200.0,
                   suffix: str = ""):
    """DecodeOptions from the shared search options, checked before any model loads (device resolved)."""
    from mlma_cli.decode.runner import DecodeOptions  # torch: only once a command runs
    from mlma_cli.utils.device import pick_device

    opts = DecodeOptions(method=method, beam=beam, graph=Path(graph) if graph else None, backend=backend,
                         search_beam=search_beam, output_beam=output_beam, max_active=max_active,
                         lm_scale=lm_scale, device=pick_device(device), max_duration=max_duration, suffix=suffix)
    opts.validate()
    if opts.method == "wfst" and opts.backend == "k2":
        from mlma_cli.decode.k2_backend import require_k2

        require_k2()  # fail before loading checkpoints, with the install hint
    return opts
