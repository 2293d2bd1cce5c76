"""CPU speed and memory of the deployment paths: PyTorch vs onnxruntime fp32 / int8 vs sherpa-onnx.

For each named size (conmamba-<size> and its conformer-<size> twin, random weights), utterance length and thread
count, one row per runtime, each in its own subprocess (so its peak RSS is its own, and onnxruntime / sherpa-onnx
rows never import torch). A row times the whole path from 16 kHz samples: fbank, the network, greedy search.
RTF = best wall time of ``repeats`` runs (after one warm-up) / audio seconds; peak RSS = the process's
VmHWM (imports and model load included). Run through ``mlma bench export`` or::

    python -m mlma_cli.bench.export --sizes tiny --seconds 5,20 --threads 1

Never part of the test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

RUNTIMES = ("torch", "onnx-fp32", "onnx-int8", "sherpa")
ENCODERS = ("conmamba", "conformer")


@dataclass
class ExportBenchRow:
    model: str
    params_m: float
    runtime: str
    threads: int
    seconds: float
    rtf: float
    wall_s: float
    peak_rss_mb: float
    error: str = ""


def prepare_models(sizes: Sequence[str], vocab_size: int, work: Path) -> List[dict]:
    """Random-weight models for each size and encoder: state dict + config (.pt), model.onnx, model.int8.onnx,
    tokens.txt. Returns one dict per model with its paths and parameter count."""
    import torch

    from mlma_cli import __version__
    from mlma_cli.export.metadata import build_metadata
    from mlma_cli.export.onnx_export import export_model, quantize_int8
    from mlma_cli.export.tokens import write_tokens
    from mlma_cli.model import build_model, named_config

    out = []
    for size in sizes:
        for enc in ENCODERS:
            name = f"{enc}-{size}"
            d = work / name
            d.mkdir(parents=True, exist_ok=True)
            torch.manual_seed(0)
            cfg = named_config(name, vocab_size=vocab_size)
            model = build_model(cfg).eval()
            if not (d / "model.int8.onnx").is_file():
                torch.save({"config": cfg.to_dict(), "model": model.state_dict()}, d / "weights.pt")
                meta = build_metadata(model_type=enc, mixer=cfg.mixer if enc == "conmamba" else "", languages=[],
                                      vocab_size=vocab_size, lang_tags=False, version=__version__)
                export_model(model, d / "model.onnx", meta)
                quantize_int8(d / "model.onnx", d / "model.int8.onnx")
                write_tokens(["<blk>"] + [f"t{i}" for i in range(1, vocab_size)], d / "tokens.txt")
            params = sum(p.numel() for p in model.parameters()) / 1e6
            out.append({"name": name, "dir": str(d), "params_m": round(params, 2)})
    return out


def _audio(seconds: float) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32)


def run_row(model_dir: str, runtime: str, threads: int, seconds: float, repeats: int) -> dict:
    """Time one runtime in this process (called in the row's subprocess); returns wall_s and peak_rss_mb."""
    samples = _audio(seconds)
    d = Path(model_dir)
    if runtime == "torch":
        import torch

        from mlma_cli.data.features import fbank_extractor
        from mlma_cli.decode.greedy import ctc_greedy
        from mlma_cli.model import ModelConfig, build_model

        torch.set_num_threads(threads)
        saved = torch.load(d / "weights.pt", map_location="cpu")
        model = build_model(ModelConfig.from_dict(saved["config"])).eval()
        model.load_state_dict(saved["model"])
        extractor = fbank_extractor()

        def once():
            with torch.inference_mode():
                x = torch.from_numpy(extractor.extract(samples, 16000))[None]
                ctc_greedy(*model(x, torch.tensor([x.shape[1]])))
    elif runtime in ("onnx-fp32", "onnx-int8"):
        from mlma_cli.export.runtime import OnnxCtcModel, compute_fbank

        m = OnnxCtcModel(d, threads=threads, int8=runtime == "onnx-int8")

        def once():
            m.greedy([compute_fbank(samples)])
    elif runtime == "sherpa":
        import sherpa_onnx

        rec = sherpa_onnx.OfflineRecognizer.from_zipformer_ctc(model=str(d / "model.onnx"),
                                                               tokens=str(d / "tokens.txt"), num_threads=threads)

        def once():
            s = rec.create_stream()
            s.accept_waveform(16000, samples)
            rec.decode_stream(s)
    else:
        raise ValueError(f"unknown runtime {runtime!r}; expected one of {RUNTIMES}")
    once()  # warm-up
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        once()
        best = min(best, time.perf_counter() - t0)
    return {"wall_s": best, "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's peak resident set size: VmHWM (ru_maxrss is inherited from the parent across fork+exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_bench(sizes: Sequence[str] = ("tiny", "paper"), seconds: Sequence[float] = (5, 20, 60),
              threads: Sequence[int] = (1, 2), runtimes: Sequence[str] = RUNTIMES, repeats: int = 2,
              vocab_size: int = 500, work_dir: Optional[Path] = None, timeout: float = 600.0) -> List[ExportBenchRow]:
    """All rows (model x runtime x threads x seconds), one subprocess each; a failing row records its error."""
    bad = [r for r in runtimes if r not in RUNTIMES]
    if bad:
        raise ValueError(f"unknown runtimes {bad}; expected some of {RUNTIMES}")
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="mlma-bench-export-")
        work_dir = Path(tmp.name)
    rows = []
    try:
        for m in prepare_models(sizes, vocab_size, Path(work_dir)):
            for rt in runtimes:
                for th in threads:
                    for sec in seconds:
                        rows.append(_subprocess_row(m, rt, th, sec, repeats, timeout))
    finally:
        if tmp is not None:
            tmp.cleanup()
    return rows


def _subprocess_row(m: dict, runtime: str, threads: int, seconds: float, repeats: int,
                    timeout: float) -> ExportBenchRow:
    cmd = [sys.executable, "-m", "mlma_cli.bench.export", "--row", m["dir"], runtime, str(threads), str(seconds),
           str(repeats)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    row = ExportBenchRow(m["name"], m["params_m"], runtime, threads, seconds, float("nan"), float("nan"), float("nan"))
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        row.error = f"timeout after {timeout:.0f} s"
        return row
    if p.returncode != 0:
        row.error = (p.stderr.strip().splitlines() or ["failed"])[-1][:200]
        return row
    res = json.loads(p.stdout.strip().splitlines()[-1])
    row.wall_s, row.peak_rss_mb = round(res["wall_s"], 3), round(res["peak_rss_mb"], 1)
    row.rtf = round(res["wall_s"] / seconds, 4)
    return row


def format_table(rows: Sequence[ExportBenchRow]) -> str:
    """Markdown table, one line per row."""
    lines = ["|model|params (M)|runtime|threads|audio (s)|RTF|wall (s)|peak RSS (MB)|",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.error:
            lines.append(f"|{r.model}|{r.params_m}|{r.runtime}|{r.threads}|{r.seconds:g}|error: {r.error}|||")
        else:
            lines.append(f"|{r.model}|{r.params_m}|{r.runtime}|{r.threads}|{r.seconds:g}|{r.rtf:.4f}|{r.wall_s:.3f}|"
                         f"{r.peak_rss_mb:.0f}|")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--row", nargs=5, metavar=("DIR", "RUNTIME", "THREADS", "SECONDS", "REPEATS"),
                    help="internal: time one row in this process and print its JSON")
    ap.add_argument("--sizes", default="tiny,paper")
    ap.add_argument("--seconds", default="5,20,60")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runtimes", default=",".join(RUNTIMES))
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    if args.row:
        d, rt, th, sec, rep = args.row
        print(json.dumps(run_row(d, rt, int(th), float(sec), int(rep))))
        return
    split = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    rows = run_bench(split(args.sizes), [float(x) for x in split(args.seconds)], [int(x) for x in split(args.threads)],
                     split(args.runtimes), args.repeats)
    print(format_table(rows))
    print(json.dumps([asdict(r) for r in rows]))


if __name__ == "__main__":
    main()
