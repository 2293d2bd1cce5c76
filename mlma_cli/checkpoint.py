"""Checkpoints: one plain dict per file, written atomically, enough to resume training or decode alone.

The format (``version`` 1) has one definition, ``TrainState.state_dict()`` in ``train/state.py``; its docstring
lists the keys. Decoding needs only ``model_config``, ``model`` (or ``averaged_model``, the running average of the
weights, icefall-style, over ``num_averaged`` steps) and ``tokenizer``; `mlma average` writes checkpoints without
the optimizer, scheduler, scaler, sampler and RNG states, with ``averaged_from`` / ``averaging`` added. The
averaging arithmetic is in ``averaging.py``.

Files in an experiment directory::

    exp_dir/checkpoint-<step>.pt      every train.checkpoint_every steps (only the newest train.keep_last kept)
    exp_dir/epoch-<epoch>.pt          at the end of every epoch (all kept)
    exp_dir/checkpoint-last.pt        symlink to the newest of those; `mlma train` resumes from it
    exp_dir/averaged-*.pt             written by `mlma average` (model weights + configuration only)
"""
from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from mlma_cli.averaging import average_state_dicts
from mlma_cli.data.tokenizer import Tokenizer
from mlma_cli.errors import MlmaError
from mlma_cli.model import ModelConfig, build_model
from mlma_cli.package.load import TOKENIZER, read_package, read_package_config, resolve_model_path
from mlma_cli.utils.io import atomic_path

FORMAT = "mlma"
VERSION = 1
LAST_NAME = "checkpoint-last.pt"
_STEP_RE = re.compile(r"^checkpoint-(\d+)\.pt$")
_EPOCH_RE = re.compile(r"^epoch-(\d+)\.pt$")

PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------------------------- save / load
def _with_header(contents: Dict[str, Any]) -> Dict[str, Any]:
    """``contents`` behind the ``format`` / ``version`` marker that ``load_checkpoint`` checks."""
    return {"format": FORMAT, "version": VERSION, **contents}


def save_checkpoint(path: PathLike, ckpt: Dict[str, Any]) -> Path:
    """Write ``ckpt`` to ``path`` atomically (an interrupted save never leaves a truncated file)."""
    path = Path(path)
    ckpt = _with_header(ckpt)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


# torch 1.13's restricted unpickler (the k2 venv) cannot read what torch 2.x writes; there the full one is used.
_SAFE_LOAD = int(torch.__version__.split(".")[0]) >= 2


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu",
                    mmap: bool = False) -> Dict[str, Any]:
    """Read and check a checkpoint. Missing, corrupt, foreign or newer-version files raise MlmaError naming the file.

    ``path`` may also be a model package directory (``mlma pack``) or ``hf:ORG/NAME[@revision]`` (downloaded):
    both come back in this checkpoint format, weights read from safetensors (see ``mlma_cli/package/load.py``).
    ``mmap=True`` maps tensors lazily (cheap when only metadata is needed; torch >= 2.1).
    """
    path = resolve_model_path(path)
    if path.is_dir():
        return _with_header(read_package(path))
    if not path.exists():
        raise MlmaError(f"checkpoint {path} not found")
    kwargs: Dict[str, Any] = {"weights_only": True, "mmap": mmap} if _SAFE_LOAD else {}
    try:
        ckpt = torch.load(path, map_location=map_location, **kwargs)
    except Exception as err:  # truncated zip, pickle garbage, disallowed globals ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MlmaError(f"checkpoint {path} is corrupt or not a torch file ({first}); "
                        "use another checkpoint or retrain") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise MlmaError(f"checkpoint {path} is not an mlma checkpoint (no format='mlma' marker)")
    if ckpt.get("version") != VERSION:
        raise MlmaError(f"checkpoint {path} has format version {ckpt.get('version')}, this mlma reads "
                        f"version {VERSION}; use the mlma release that wrote it")
    for key in ("model_config", "model", "tokenizer"):
        if key not in ckpt:
            raise MlmaError(f"checkpoint {path} lacks '{key}' and cannot be used")
    return ckpt


# ----------------------------------------------------------------------------------------------- RNG states
def capture_rng_state() -> Dict[str, Any]:
    """Python, numpy, torch (and CUDA) generator states, in types ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# ----------------------------------------------------------------------------------------------- exp_dir files
def step_checkpoint_path(exp_dir: PathLike, step: int) -> Path:
    return Path(exp_dir) / f"checkpoint-{step}.pt"


def epoch_checkpoint_path(exp_dir: PathLike, epoch: int) -> Path:
    return Path(exp_dir) / f"epoch-{epoch}.pt"


def update_last_link(exp_dir: PathLike, target: PathLike) -> None:
    """Point ``exp_dir/checkpoint-last.pt`` at ``target`` (a relative symlink swapped in atomically)."""
    exp_dir = Path(exp_dir)
    link = exp_dir / LAST_NAME
    tmp = exp_dir / f".{LAST_NAME}.{os.getpid()}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(Path(target).name, tmp)
    os.replace(tmp, link)


def find_last_checkpoint(exp_dir: PathLike) -> Optional[Path]:
    """The checkpoint ``mlma train`` resumes from: checkpoint-last.pt if it resolves, else the newest by mtime."""
    exp_dir = Path(exp_dir)
    link = exp_dir / LAST_NAME
    if link.exists():
        return link.resolve()
    candidates = list_step_checkpoints(exp_dir) + list_epoch_checkpoints(exp_dir)
    if not candidates:
        return None
    return max(candidates, key=lambda p: p.stat().st_mtime)


def list_step_checkpoints(exp_dir: PathLike) -> List[Path]:
    """``checkpoint-<step>.pt`` files, oldest step first."""
    found = [(int(m.group(1)), p) for p in Path(exp_dir).glob("checkpoint-*.pt") if (m := _STEP_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def list_epoch_checkpoints(exp_dir: PathLike) -> List[Path]:
    """``epoch-<epoch>.pt`` files, oldest epoch first."""
    found = [(int(m.group(1)), p) for p in Path(exp_dir).glob("epoch-*.pt") if (m := _EPOCH_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def prune_step_checkpoints(exp_dir: PathLike, keep_last: int) -> List[Path]:
    """Delete all but the newest ``keep_last`` step checkpoints (never the one checkpoint-last points to)."""
    exp_dir = Path(exp_dir)
    last = (exp_dir / LAST_NAME).resolve() if (exp_dir / LAST_NAME).exists() else None
    steps = list_step_checkpoints(exp_dir)
    removed = []
    for p in steps[: max(0, len(steps) - keep_last)]:
        if last is not None and p.resolve() == last:
            continue
        p.unlink()
        removed.append(p)
    return removed


# ----------------------------------------------------------------------------------------------- inference
@dataclass
class Inference:
    """What decoding needs, rebuilt from checkpoint(s) alone.

    Attributes:
        model: the CTC model in eval mode on the requested device (CMVN buffers inside).
        tokenizer: the tokenizer the model was trained with.
        config: the ModelConfig.
        meta: {"paths", "step", "epoch", "train_config", "data_config", "num_averaged", "averaged", "package",
            "averaged_from", "averaging"}.
    """

    model: torch.nn.Module
    tokenizer: Any
    config: Any
    meta: Dict[str, Any] = field(default_factory=dict)


def tokenizer_from_checkpoint(ckpt: Dict[str, Any]):
    return Tokenizer.from_bytes(ckpt["tokenizer"])


def tokenizer_from_path(path: PathLike):
    """The tokenizer of a checkpoint, package directory or ``hf:`` spec (a package's weights are not read)."""
    path = resolve_model_path(path)
    if path.is_dir():
        read_package_config(path)
        return Tokenizer.load(path / TOKENIZER)
    return tokenizer_from_checkpoint(load_checkpoint(path, mmap=_SAFE_LOAD))


def model_from_checkpoint(ckpt: Dict[str, Any], path: PathLike = "<checkpoint>", use_averaged: bool = False,
                          state_dict: Optional[Dict[str, torch.Tensor]] = None):
    """Build the model described by ``ckpt['model_config']`` and load its weights (or ``state_dict``)."""
    try:
        cfg = ModelConfig.from_dict(dict(ckpt["model_config"]))
    except (TypeError, ValueError) as err:
        raise MlmaError(f"checkpoint {path}: model configuration not understood ({err})") from err
    model = build_model(cfg)
    if state_dict is None:
        state_dict = select_weights(ckpt, path, use_averaged)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise MlmaError(f"checkpoint {path}: weights do not match its model configuration "
                        f"({str(err).splitlines()[0]})") from err
    return model, cfg


def select_weights(ckpt: Dict[str, Any], path: PathLike, use_averaged: bool) -> Dict[str, torch.Tensor]:
    if not use_averaged:
        return ckpt["model"]
    if ckpt.get("package"):
        raise MlmaError(f"model package {path} holds the one set of weights chosen when it was packed (no running "
                        "average); drop --use-averaged")
    if ckpt.get("averaged_model") is None:
        raise MlmaError(f"checkpoint {path} holds no running average of the weights; drop --use-averaged")
    return ckpt["averaged_model"]


def load_for_inference(paths: Union[PathLike, Sequence[PathLike]], device: Union[str, torch.device] = "cpu",
                       use_averaged: bool = False) -> Inference:
    """Model + tokenizer + config from one checkpoint, or the plain weight average of several.

    Args:
        paths: one checkpoint path or a list; several are averaged (same model configuration required).
            Each may be a ``.pt`` file, a model package directory or ``hf:ORG/NAME[@revision]``.
        device: where the model goes.
        use_averaged: take each checkpoint's running average (``averaged_model``) instead of its weights.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise MlmaError("load_for_inference: no checkpoint given")
    first = load_checkpoint(paths[0])
    states = [select_weights(first, paths[0], use_averaged)]
    for p in paths[1:]:
        ck = load_checkpoint(p)
        if not _same_config(ck["model_config"], first["model_config"]):
            raise MlmaError(f"checkpoint {p} has a different model configuration than {paths[0]}; "
                            "only checkpoints of one run can be averaged")
        if ck["tokenizer"] != first["tokenizer"]:
            raise MlmaError(f"checkpoint {p} was trained with a different tokenizer than {paths[0]}")
        state = select_weights(ck, p, use_averaged)
        if set(state) == set(states[0]):  # a package's safetensors keys come sorted: align to the first's order
            state = {k: state[k] for k in states[0]}
        states.append(state)
        del ck
    state = states[0] if len(states) == 1 else average_state_dicts(states)
    model, cfg = model_from_checkpoint(first, paths[0], state_dict=state)
    model.to(device).eval()
    meta = {
        "paths": [str(p) for p in paths],
        "step": first.get("step"),
        "epoch": first.get("epoch"),
        "train_config": first.get("train_config"),
        "data_config": first.get("data_config"),
        "num_averaged": first.get("num_averaged"),
        "averaged": len(paths) > 1 or use_averaged or bool(first.get("averaged_from")),
        "package": first.get("package"),
        "averaged_from": [str(p) for p in paths] if len(paths) > 1 else first.get("averaged_from"),
        "averaging": (f"mean of {len(paths)} checkpoints" + (" (running averages)" if use_averaged else ""))
        if len(paths) > 1 else first.get("averaging"),
    }
    return Inference(model=model, tokenizer=tokenizer_from_checkpoint(first), config=cfg, meta=meta)


def _same_config(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    # a package's config went through JSON (tuples became lists); compare in that form
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
