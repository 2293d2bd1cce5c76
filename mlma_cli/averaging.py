"""Weight averaging arithmetic, shared by training (the running average) and inference (averaging checkpoints).

Torch only: no checkpoint files, no training code, so `checkpoint.load_for_inference` and `mlma average`
(``train/average.py``) both build on it without importing each other.

- ``average_state_dicts``: plain element-wise mean of several state dicts (last K / best K checkpoints).
- ``RunningAverage``: the mean of the weights over all optimizer steps 1..n, kept during training and saved in
  every checkpoint as ``averaged_model`` with ``num_averaged`` = n (icefall's ``model_avg``).
- ``average_range``: from two running averages (n_start < n_end) the mean over steps n_start+1..n_end,
  (avg_end * n_end - avg_start * n_start) / (n_end - n_start).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch

StateDict = Dict[str, torch.Tensor]


def average_state_dicts(states: Sequence[StateDict]) -> StateDict:
    """Element-wise mean of floating-point tensors (accumulated in float64); other tensors from the last state."""
    if not states:
        raise ValueError("nothing to average")
    keys = list(states[0])
    for s in states[1:]:
        if list(s) != keys:
            raise ValueError("state dicts to average have different keys")
    out: StateDict = {}
    for k in keys:
        ref = states[-1][k]
        if ref.is_floating_point():
            acc = torch.zeros_like(ref, dtype=torch.float64)
            for s in states:
                acc += s[k].to(torch.float64)
            out[k] = (acc / len(states)).to(ref.dtype)
        else:
            out[k] = ref.clone()
    return out


class RunningAverage:
    """Mean of the model weights over every optimizer step so far, refreshed every ``every`` steps.

    At step s (after the previous refresh at step n): avg <- avg * n/s + weights * (s - n)/s, i.e. the current
    weights stand in for the s - n steps since the last refresh (icefall's ``model_avg``).
    Stored in float32 on the CPU so it never competes with training for GPU memory.
    """

    def __init__(self, model: torch.nn.Module, every: int):
        self.every = every
        self.num_averaged = 0
        self.state: StateDict = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).clone()
                                 for k, v in model.state_dict().items()}

    @torch.no_grad()
    def maybe_update(self, model: torch.nn.Module, step: int) -> bool:
        if step % self.every != 0 or step <= self.num_averaged:
            return False
        self.update(model, step)
        return True

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        n, s = self.num_averaged, step
        w_old, w_new = n / s, (s - n) / s
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.state[k].mul_(w_old).add_(v.detach().to("cpu", torch.float32), alpha=w_new)
            else:
                self.state[k].copy_(v.detach().cpu())
        self.num_averaged = s

    def state_dict_for(self, model: torch.nn.Module) -> StateDict:
        """The average cast back to the model's dtypes (what goes into a checkpoint's ``averaged_model``)."""
        ref = model.state_dict()
        return {k: v.to(ref[k].dtype) for k, v in self.state.items()}

    def load(self, state: Optional[StateDict], num_averaged: int) -> None:
        if state is None:
            return
        self.state = {k: v.to("cpu", torch.float32 if v.is_floating_point() else v.dtype).clone()
                      for k, v in state.items()}
        self.num_averaged = int(num_averaged)


def average_range(avg_start: StateDict, n_start: int, avg_end: StateDict, n_end: int) -> StateDict:
    """Mean of the weights over steps n_start+1..n_end from two running averages."""
    if n_end <= n_start:
        raise ValueError(f"need n_end > n_start, got {n_end} <= {n_start}")
    out: StateDict = {}
    for k, end in avg_end.items():
        if end.is_floating_point():
            v = (end.to(torch.float64) * n_end - avg_start[k].to(torch.float64) * n_start) / (n_end - n_start)
            out[k] = v.to(end.dtype)
        else:
            out[k] = end.clone()
    return out
