"""Weight averaging: the running average kept during training, and `mlma average` over saved checkpoints.

Three ways to get averaged weights:
- ``last K``: plain mean of the K newest checkpoints' weights.
- ``best K``: plain mean of the K checkpoints with the lowest recorded validation loss.
- running average (``--use-averaged``): every checkpoint carries ``averaged_model``, the mean of the weights
  over all optimizer steps 1..n (n = ``num_averaged``). From the newest checkpoint (n_end) and an older one
  (n_start) the mean over steps n_start+1..n_end is  (avg_end * n_end - avg_start * n_start) / (n_end - n_start).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from mlma_cli.errors import MlmaError

log = logging.getLogger(__name__)

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


def select_checkpoints(exp_dir: str | Path, last: Optional[int] = None, best: Optional[int] = None,
                       include: str = "all") -> List[Path]:
    """Pick checkpoints of one run: the ``last`` K newest (by step) or the ``best`` K by validation loss.

    include: "all" (step and epoch checkpoints), "epoch" or "step".
    """
    from mlma_cli.checkpoint import list_epoch_checkpoints, list_step_checkpoints, load_checkpoint

    if (last is None) == (best is None):
        raise MlmaError("choose exactly one of --last K or --best K")
    exp_dir = Path(exp_dir)
    candidates: List[Path] = []
    if include in ("all", "step"):
        candidates += list_step_checkpoints(exp_dir)
    if include in ("all", "epoch"):
        candidates += list_epoch_checkpoints(exp_dir)
    if not candidates:
        raise MlmaError(f"no checkpoints (checkpoint-*.pt / epoch-*.pt) in {exp_dir}")
    info = []
    seen_steps = set()
    for p in candidates:
        ck = load_checkpoint(p, mmap=True)
        step = int(ck.get("step", -1))
        if step in seen_steps:  # an epoch end that coincides with a step checkpoint: same weights, count once
            continue
        seen_steps.add(step)
        info.append((p, step, (ck.get("metrics") or {}).get("valid_loss")))
    k = last if last is not None else best
    if k < 1:
        raise MlmaError("K must be >= 1")
    if last is not None:
        chosen = sorted(info, key=lambda t: t[1])[-k:]
    else:
        scored = [t for t in info if t[2] is not None]
        if len(scored) < k:
            raise MlmaError(f"only {len(scored)} checkpoints in {exp_dir} carry a validation loss, need {k}; "
                            "use --last K or validate more often (train.valid_every)")
        chosen = sorted(scored, key=lambda t: t[2])[:k]
    if len(chosen) < k:
        raise MlmaError(f"asked for {k} checkpoints, {exp_dir} has only {len(chosen)}")
    return [p for p, _, _ in sorted(chosen, key=lambda t: t[1])]


def average_checkpoints(paths: Sequence[str | Path], output: str | Path, use_averaged: bool = False) -> Path:
    """Write a checkpoint whose ``model`` is the average of ``paths`` (configs and tokenizer copied).

    With ``use_averaged`` the checkpoints' running averages are used: for two or more paths the mean over the
    steps between the oldest and the newest (see module docstring); for one path its running average.
    """
    from mlma_cli.checkpoint import load_checkpoint, save_checkpoint

    paths = [Path(p) for p in paths]
    if not paths:
        raise MlmaError("no checkpoints to average")
    cks = []
    for p in paths:
        ck = load_checkpoint(p)
        if cks and ck["model_config"] != cks[0][1]["model_config"]:
            raise MlmaError(f"checkpoint {p} has a different model configuration than {paths[0]}")
        cks.append((p, ck))
    cks.sort(key=lambda t: t[1].get("step", 0))
    newest_path, newest = cks[-1]
    if use_averaged:
        for p, ck in cks:
            if ck.get("averaged_model") is None:
                raise MlmaError(f"checkpoint {p} holds no running average; drop --use-averaged")
        if len(cks) == 1:
            weights = newest["averaged_model"]
            how = f"running average of steps 1..{newest['num_averaged']}"
        else:
            oldest = cks[0][1]
            weights = average_range(oldest["averaged_model"], oldest["num_averaged"],
                                    newest["averaged_model"], newest["num_averaged"])
            how = f"running average of steps {oldest['num_averaged'] + 1}..{newest['num_averaged']}"
    else:
        weights = average_state_dicts([ck["model"] for _, ck in cks])
        how = f"mean of {len(cks)} checkpoints"
    out = {k: v for k, v in newest.items() if k not in ("format", "version", "optimizer", "scheduler", "grad_scaler",
                                                          "sampler", "rng")}
    out.update(model=weights, averaged_model=None, averaged_from=[str(p) for p, _ in cks], averaging=how)
    log.info("averaged %s -> %s (%s)", ", ".join(p.name for p, _ in cks), output, how)
    return save_checkpoint(output, out)
