"""Training throughput benchmark: seconds of audio trained per wall-clock second (forward + CTC + backward + AdamW).

Random 80-dim features and random token targets stand in for data, so the number measures the model and the
optimizer only (data loading is excluded). Run through ``mlma bench train`` or::

    python -m mlma_cli.bench.train --models conmamba-tiny,conformer-tiny --device cpu

Never part of the test suite.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from typing import List, Optional

import torch
import torch.nn.functional as F

from mlma_cli.model import build_model, named_config
from mlma_cli.train.optim import build_optimizer


@dataclass
class TrainBenchResult:
    model: str
    device: str
    dtype: str
    params_m: float
    batch: int
    utt_seconds: float
    steps: int
    sec_per_step: float
    audio_sec_per_sec: float
    peak_mem_gb: Optional[float] = None


def bench_one(name: str, device: str = "cpu", batch: int = 8, utt_seconds: float = 10.0, steps: int = 5,
              warmup: int = 2, dtype: str = "auto", vocab_size: int = 500, scan_backend: str = "auto"
              ) -> TrainBenchResult:
    """Time ``steps`` training steps of the named model size on (batch, utt_seconds * 100, 80) random features."""
    dev = torch.device(device)
    cfg = named_config(name, vocab_size=vocab_size, scan_backend=scan_backend)
    model = build_model(cfg).to(dev).train()
    opt = build_optimizer(model, 1e-4, (0.9, 0.98), 5e-4)
    amp = {"auto": torch.bfloat16 if dev.type == "cuda" else None, "float32": None, "bfloat16": torch.bfloat16,
           "float16": torch.float16}[dtype]
    T = int(utt_seconds * 100)
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(batch, T, cfg.num_features, generator=g).to(dev)
    feat_lens = torch.full((batch,), T, dtype=torch.int64, device=dev)
    U = max(1, T // 4 // 3)  # ~ one token per 3 output frames
    targets = torch.randint(1, vocab_size, (batch * U,), generator=g).to(dev)
    target_lens = torch.full((batch,), U, dtype=torch.int64, device=dev)

    def step() -> None:
        with torch.autocast(device_type=dev.type, dtype=amp, enabled=amp is not None):
            log_probs, out_lens = model(feats, feat_lens)
        loss = F.ctc_loss(log_probs.transpose(0, 1).float(), targets, out_lens, target_lens, reduction="sum")
        (loss / target_lens.sum()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    return TrainBenchResult(
        model=name, device=str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev), dtype=str(amp or "float32"),
        params_m=sum(p.numel() for p in model.parameters()) / 1e6, batch=batch, utt_seconds=utt_seconds,
        steps=steps, sec_per_step=dt, audio_sec_per_sec=batch * utt_seconds / dt,
        peak_mem_gb=torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None,
    )


def run_bench(models: List[str], device: str = "cpu", batch: int = 8, utt_seconds: float = 10.0, steps: int = 5,
              warmup: int = 2, dtype: str = "auto") -> List[TrainBenchResult]:
    return [bench_one(m, device, batch, utt_seconds, steps, warmup, dtype) for m in models]


def format_table(results: List[TrainBenchResult]) -> str:
    lines = ["| model | device | dtype | params (M) | batch x s | s/step | audio-s/s |", "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.model} | {r.device} | {r.dtype} | {r.params_m:.1f} | {r.batch} x {r.utt_seconds:g} | "
                     f"{r.sec_per_step:.3f} | {r.audio_sec_per_sec:.1f} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="conmamba-tiny,conformer-tiny")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--utt-seconds", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--json", default=None, help="also write the results as JSON here")
    a = ap.parse_args(argv)
    res = run_bench(a.models.split(","), a.device, a.batch, a.utt_seconds, a.steps, a.warmup, a.dtype)
    print(format_table(res))
    if a.json:
        with open(a.json, "w") as f:
            json.dump([asdict(r) for r in res], f, indent=2)


if __name__ == "__main__":
    main()
