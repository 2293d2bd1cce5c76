"""`mlma average`: choose checkpoints of one run and write their average as one checkpoint.

Three ways to get averaged weights:
- ``last K``: plain mean of the K newest checkpoints' weights.
- ``best K``: plain mean of the K checkpoints with the best recorded validation score, the lowest dev loss
  (``by="loss"``) or the lowest dev WER (``by="wer"``, what the ConMamba reference recipe ranks by).
- running average (``--use-averaged``): the mean over the steps the chosen checkpoints span, from their
  ``averaged_model`` (the arithmetic is in ``mlma_cli/averaging.py``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from mlma_cli.averaging import average_range, average_state_dicts
from mlma_cli.checkpoint import list_epoch_checkpoints, list_step_checkpoints, load_checkpoint, save_checkpoint
from mlma_cli.errors import MlmaError

log = logging.getLogger(__name__)

RANK_BY = ("loss", "wer")


def valid_score(ckpt: Dict[str, Any], by: str = "loss") -> Optional[float]:
    """The dev loss or WER measured at the checkpoint's own step (None when it was not validated then).

    Checkpoints carry ``metrics.valid_loss`` / ``metrics.valid_wer`` for that; older ones only the last
    validation record ``metrics.valid`` (with its step), which counts when its step is the checkpoint's.
    """
    metrics = ckpt.get("metrics") or {}
    value = metrics.get(f"valid_{by}")
    if value is None:
        record = metrics.get("valid") or {}
        if record.get("step") is not None and record.get("step") == ckpt.get("step"):
            value = record.get(by)
    return None if value is None else float(value)


def select_checkpoints(exp_dir: str | Path, last: Optional[int] = None, best: Optional[int] = None,
                       include: str = "all", by: str = "loss") -> List[Path]:
    """Pick checkpoints of one run: the ``last`` K newest (by step) or the ``best`` K by dev ``by`` (loss | wer).

    include: "all" (step and epoch checkpoints), "epoch" or "step".
    """
    if by not in RANK_BY:
        raise MlmaError(f"rank checkpoints by one of {', '.join(RANK_BY)}, not {by!r}")
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
        info.append((p, step, valid_score(ck, by)))
    k = last if last is not None else best
    if k < 1:
        raise MlmaError("K must be >= 1")
    if last is not None:
        chosen = sorted(info, key=lambda t: t[1])[-k:]
    else:
        scored = [t for t in info if t[2] is not None]
        if len(scored) < k:
            raise MlmaError(f"only {len(scored)} checkpoints in {exp_dir} carry a dev {by}, need {k}; "
                            "use --last K or validate more often (train.valid_every)")
        chosen = sorted(scored, key=lambda t: t[2])[:k]
    if len(chosen) < k:
        raise MlmaError(f"asked for {k} checkpoints, {exp_dir} has only {len(chosen)}")
    return [p for p, _, _ in sorted(chosen, key=lambda t: t[1])]


def average_checkpoints(paths: Sequence[str | Path], output: str | Path, use_averaged: bool = False) -> Path:
    """Write a checkpoint whose ``model`` is the average of ``paths`` (configs and tokenizer copied).

    With ``use_averaged`` the checkpoints' running averages are used: for two or more paths the mean over the
    steps between the oldest and the newest (see mlma_cli/averaging.py); for one path its running average.
    """
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
