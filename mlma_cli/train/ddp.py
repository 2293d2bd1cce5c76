"""Distributed data parallel through torchrun: process group setup, rank helpers, small reductions.

Single node, 4 GPUs::

    torchrun --standalone --nproc-per-node 4 -m mlma_cli train --config conf/train.yaml

Two nodes with 8 GPUs each (run on every node; the rendezvous host is any node reachable by all)::

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \
        --rdzv-id my-run -m mlma_cli train --config conf/train.yaml

CPU (gloo), e.g. to test: ``torchrun --standalone --nproc-per-node 2 -m mlma_cli train ... --set train.device=cpu``.
torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; lhotse's samplers read them to shard batches by rank.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import List

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        from mlma_cli.errors import MlmaError

        raise MlmaError(f"train.device={name} but CUDA is not available; use train.device=cpu")
    return device


def setup(device_name: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); NCCL on CUDA, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
        log.info("DDP: rank %d/%d (local %d), backend %s, device %s", rank, world_size, local_rank, backend, device)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: List[float], info: DistInfo) -> List[float]:
    """Sum a list of numbers over ranks (identity without DDP)."""
    if not info.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=info.device if info.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_ranks_ok(ok: bool, info: DistInfo) -> bool:
    """True only when every rank says ok: ranks must agree before a backward pass, or DDP would hang."""
    if not info.distributed:
        return ok
    return all_reduce_sum([0.0 if ok else 1.0], info)[0] == 0.0


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()
