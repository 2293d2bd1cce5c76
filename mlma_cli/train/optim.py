"""AdamW with decoupled weight decay on weight matrices only, and the Noam warmup schedule."""
from __future__ import annotations

import math
from typing import Dict, List

import torch


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


class NoamScheduler(torch.optim.lr_scheduler.LambdaLR):
    """``LambdaLR`` with the Noam factor; ``scheduler.step()`` once per optimizer step. state_dict() is resumable."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int):
        self.warmup_steps = warmup_steps
        # LambdaLR calls the lambda with the number of completed steps (0 first); the first update uses step 1.
        super().__init__(optimizer, lr_lambda=lambda n: noam_factor(n + 1, warmup_steps))

    def state_dict(self):
        sd = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}
        return sd

    def load_state_dict(self, state_dict):
        self.__dict__.update(state_dict)
