"""AdamW with decoupled weight decay on weight matrices only, and the warmup lr schedules (Noam, cosine)."""
from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch

from mlma_cli.train.config import LR_SCHEDULES


# Normalisation layers: their gains are exempt from weight decay whatever their shape (the front end's
# LayerNorm over (freq, channel) has 2-D gains, which the 1-D rule alone would decay).
NORM_TYPES = (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.modules.batchnorm._BatchNorm)


def param_groups(model: torch.nn.Module, weight_decay: float) -> List[Dict]:
    """Two AdamW groups: decayed weights, and parameters exempt from weight decay.

    Exempt: biases, other 1-D parameters (Mamba's D), every parameter of a normalisation layer (LayerNorm,
    GroupNorm, BatchNorm, or a module class named ``*Norm`` such as the Mamba-2 gated RMSNorm), and every
    parameter whose tensor carries ``_no_weight_decay = True`` (Mamba's A_log and D, the way mamba-ssm marks them).
    """
    norm_params = {id(p) for m in model.modules() if isinstance(m, NORM_TYPES) or type(m).__name__.endswith("Norm")
                   for p in m.parameters(recurse=False)}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if (getattr(p, "_no_weight_decay", False) or p.ndim < 2 or name.endswith(".bias")
                or id(p) in norm_params):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, lr: float, betas, weight_decay: float, eps: float = 1e-8
                    ) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=tuple(betas), eps=eps)


def noam_factor(step: int, warmup_steps: int) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (1-based): linear warmup to 1.0, then sqrt decay.

    factor(s) = min(s / warmup, sqrt(warmup / s)), which equals the Noam formula
    d^-0.5 * min(s^-0.5, s * warmup^-1.5) scaled so the peak is exactly the configured lr.
    """
    s = max(step, 1)
    return min(s / warmup_steps, math.sqrt(warmup_steps / s))


def cosine_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warmup to 1.0, then a half cosine from 1.0 at ``warmup_steps`` to ~0 at ``total_steps`` (0 after).

    Annealing to zero at the last step is what a fixed, short budget wants: Noam's sqrt decay still trains at half
    the peak lr at 4x the warmup, so the last checkpoints (the ones averaged) are taken at a high lr.
    """
    s = max(step, 1)
    if s <= warmup_steps:
        return s / warmup_steps
    progress = min(1.0, (s - warmup_steps) / (max(total_steps, warmup_steps) - warmup_steps + 1))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_factor(step: int, schedule: str, warmup_steps: int, total_steps: Optional[int] = None) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (1-based) under ``schedule`` (one of LR_SCHEDULES)."""
    if schedule == "noam":
        return noam_factor(step, warmup_steps)
    if schedule == "cosine":
        if total_steps is None:
            raise ValueError("the cosine lr schedule needs total_steps (train.max_steps)")
        return cosine_factor(step, warmup_steps, total_steps)
    raise ValueError(f"lr schedule {schedule!r}, expected one of {', '.join(LR_SCHEDULES)}")


class WarmupScheduler(torch.optim.lr_scheduler.LambdaLR):
    """``LambdaLR`` with ``lr_factor``; ``scheduler.step()`` once per optimizer step. state_dict() is resumable
    (the schedule itself comes from the config, so a resumed run with a new max_steps re-aims the cosine)."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int, schedule: str = "noam",
                 total_steps: Optional[int] = None):
        lr_factor(1, schedule, warmup_steps, total_steps)  # fail early on a bad schedule
        self.warmup_steps = warmup_steps
        # LambdaLR calls the lambda with the number of completed steps (0 first); the first update uses step 1.
        super().__init__(optimizer, lr_lambda=lambda n: lr_factor(n + 1, schedule, warmup_steps, total_steps))

    def state_dict(self):
        sd = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}
        return sd

    def load_state_dict(self, state_dict):
        self.__dict__.update(state_dict)
