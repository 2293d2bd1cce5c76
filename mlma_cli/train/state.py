"""TrainState: everything a training run changes, and the one definition of the checkpoint format.

    state = TrainState.build(config, info, amp_dtype, ckpt)   # fresh (ckpt None) or resumed from a checkpoint
    ckpt_io.save_checkpoint(path, state.state_dict())
    state.load_state_dict(ckpt_io.load_checkpoint(path))

A checkpoint (``version`` 1; ``checkpoint.save_checkpoint`` adds ``"format": "mlma", "version": 1``) is the
plain dict ``TrainState.state_dict()`` returns::

    model_config        ModelConfig.to_dict()             decoding rebuilds the network from it alone
    model               state_dict of the model            (CMVN buffers inside)
    averaged_model      running average of the weights (RunningAverage, model dtypes) | None
    num_averaged        the optimizer steps that average covers (1..n)
    tokenizer           bytes: the SentencePiece model proto;   tokenizer_lang_tags: bool
    train_config        Config.to_dict()["train"];              data_config: Config.to_dict()["data"]
    optimizer, scheduler, grad_scaler                           their state_dict()s
    sampler             TrainData.state_dict(batches_in_epoch): the lhotse sampler at the loop's position
    rng                 checkpoint.capture_rng_state() (python, numpy, torch, cuda) of rank 0
    step, epoch         optimizer steps so far; the epoch being trained (the next one after an epoch end)
    batches_in_epoch    batches consumed in ``epoch``
    faults              BadBatchTracker.state_dict(): {"total", "by_reason"}
    metrics             {"valid_loss", "valid_wer": float | None (only when validated at this very step, so
                        `mlma average --best` ranks fairly), "valid": the last validation record}

Reading tolerates checkpoints that lack the keys added later (grad_scaler is required; faults,
batches_in_epoch, metrics, averaged_model, sampler may be absent).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from mlma_cli import checkpoint as ckpt_io
from mlma_cli.averaging import RunningAverage
from mlma_cli.data.cmvn import load_cmvn
from mlma_cli.data.tokenizer import Tokenizer
from mlma_cli.errors import MlmaError
from mlma_cli.model import ModelConfig, build_model
from mlma_cli.model.config import ARCHITECTURE_FIELDS
from mlma_cli.train.config import Config, resolve_model_config
from mlma_cli.train.data import TrainData, build_train_data
from mlma_cli.train.ddp import DistInfo
from mlma_cli.train.faults import BadBatchTracker
from mlma_cli.train.optim import WarmupScheduler, build_optimizer

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """The model and everything that moves with it during training (see the module docstring for the format).

    ``config``, ``model_config`` and ``tokenizer`` are fixed for the run but written into every checkpoint so
    that decoding and resuming need nothing else. ``pending_rng`` holds the RNG states read from a checkpoint
    until the epoch's loader iterator exists (creating it draws a seed).
    """

    config: Config
    model_config: ModelConfig
    tokenizer: Tokenizer
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: WarmupScheduler
    scaler: torch.amp.GradScaler
    averager: RunningAverage
    faults: BadBatchTracker
    data: TrainData
    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    valid: Dict[str, Any] = field(default_factory=dict)
    pending_rng: Optional[Dict[str, Any]] = None

    # ------------------------------------------------------------------------------------------- format
    def state_dict(self) -> Dict[str, Any]:
        """The checkpoint dict (rank 0's view; captures the current RNG states)."""
        cfg = self.config.to_dict()
        at_this_step = self.valid.get("step") == self.step
        return {
            "model_config": self.model_config.to_dict(),
            "model": self.model.state_dict(),
            "averaged_model": self.averager.state_dict_for(self.model),
            "num_averaged": self.averager.num_averaged,
            "tokenizer": self.tokenizer.to_bytes(),
            "tokenizer_lang_tags": self.tokenizer.lang_tags,
            "train_config": cfg["train"],
            "data_config": cfg["data"],
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "grad_scaler": self.scaler.state_dict(),
            "sampler": self.data.state_dict(self.batches_in_epoch),
            "rng": ckpt_io.capture_rng_state(),
            "step": self.step,
            "epoch": self.epoch,
            "batches_in_epoch": self.batches_in_epoch,
            "faults": self.faults.state_dict(),
            "metrics": {"valid_loss": self.valid.get("loss") if at_this_step else None,
                        "valid_wer": self.valid.get("wer") if at_this_step else None,
                        "valid": self.valid},
        }

    def load_state_dict(self, ckpt: Dict[str, Any], path: Any = "<checkpoint>") -> None:
        """Restore weights, optimizer, schedule, average, counters and the data position from ``ckpt``."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["grad_scaler"])
        self.averager.load(ckpt.get("averaged_model"), ckpt.get("num_averaged", 0))
        self.faults.load_state_dict(ckpt.get("faults"))
        self.step, self.epoch = int(ckpt["step"]), int(ckpt["epoch"])
        self.batches_in_epoch = int(ckpt.get("batches_in_epoch", 0))
        self.valid = dict(ckpt.get("metrics") or {}).get("valid") or {}
        try:
            if ckpt.get("sampler") is not None:
                self.epoch = self.data.load_state_dict(ckpt["sampler"])
        except AssertionError as err:
            raise MlmaError(f"checkpoint {path}: cannot restore the data position ({err}); resume with "
                            "the same number of processes and data settings") from err
        self.pending_rng = ckpt["rng"]

    def restore_rng(self, info: DistInfo) -> None:
        """Once per resume, after the loader iterator exists: rank 0's generators as saved; the other ranks
        derive theirs from the step (only rank 0's are in the checkpoint)."""
        if self.pending_rng is None:
            return
        ckpt_io.restore_rng_state(self.pending_rng)
        if not info.is_main:
            torch.manual_seed(self.config.train.seed + 1000 * info.rank + self.step)
        self.pending_rng = None

    # ------------------------------------------------------------------------------------------- build
    @classmethod
    def build(cls, config: Config, info: DistInfo, amp_dtype: Optional[torch.dtype] = None,
              ckpt: Optional[Dict[str, Any]] = None, ckpt_path: Any = None) -> "TrainState":
        """Tokenizer, model (+ CMVN), data, optimizer, schedule, scaler (active for float16 autocast only) and
        running average; then ``ckpt`` loaded when resuming."""
        tc, dc = config.train, config.data
        torch.manual_seed(tc.seed)  # the same initial weights on every rank
        cmvn = None
        if ckpt is not None:
            tokenizer = ckpt_io.tokenizer_from_checkpoint(ckpt)
            model_cfg = ModelConfig.from_dict(dict(ckpt["model_config"]))
            check_resumable(config, tokenizer, model_cfg, ckpt, ckpt_path)
        else:
            tokenizer = Tokenizer.load(dc.tokenizer_path)
            cmvn = _load_cmvn(dc.cmvn_path)
            model_cfg = resolve_model_config(config.model, tokenizer.vocab_size,
                                             num_features=len(cmvn.mean) if cmvn is not None else 80)
        model = build_model(model_cfg)
        if cmvn is not None:
            model.set_cmvn(torch.from_numpy(cmvn.mean), torch.from_numpy(cmvn.std))
        model.to(info.device)
        if info.is_main:
            log.info("model: %s, %.2f M parameters, vocab %d, device %s, world size %d", model_cfg.encoder,
                     sum(p.numel() for p in model.parameters()) / 1e6, tokenizer.vocab_size, info.device,
                     info.world_size)
        torch.manual_seed(tc.seed + 1000 * info.rank)  # but different dropout masks per rank

        data = build_train_data(dc, tokenizer, out_frames_of(model), seed=tc.seed, exp_dir=Path(tc.exp_dir),
                                is_main=info.is_main)
        optimizer = build_optimizer(model, tc.lr, tc.betas, tc.weight_decay, tc.eps)
        state = cls(config=config, model_config=model_cfg, tokenizer=tokenizer, model=model, optimizer=optimizer,
                    scheduler=WarmupScheduler(optimizer, tc.warmup_steps, tc.lr_schedule, tc.max_steps),
                    scaler=torch.amp.GradScaler(info.device.type, enabled=amp_dtype == torch.float16),
                    averager=RunningAverage(model, tc.average_every), faults=BadBatchTracker(tc.max_bad_batches),
                    data=data)
        if ckpt is not None:
            state.load_state_dict(ckpt, ckpt_path)
            log.info("resumed from %s: epoch %d, step %d, %d batches into the epoch", ckpt_path, state.epoch,
                     state.step, state.batches_in_epoch)
        return state


def out_frames_of(model: torch.nn.Module):
    """``n input frames -> encoder output frames`` of ``model`` (for the data filters)."""
    def out_frames(n: int) -> int:
        return int(model.output_lengths(torch.tensor([n]))[0])
    return out_frames


def check_resumable(config: Config, tokenizer: Tokenizer, model_cfg: ModelConfig, ckpt: Dict[str, Any],
                    path: Any) -> None:
    """MlmaError when ``config`` asks for another network or tokenizer than the checkpoint being resumed;
    a warning when only the data settings differ (the resume is then not exact)."""
    conflicts = resume_conflicts(config, tokenizer, model_cfg)
    if conflicts:
        raise MlmaError(f"{path} was trained with a different {'; '.join(conflicts)}. To continue that run "
                        f"restore its config; to start a new one use another exp_dir (or --no-resume, which "
                        f"overwrites {config.train.exp_dir}'s checkpoints)")
    if ckpt.get("data_config") and ckpt["data_config"] != config.to_dict()["data"]:
        log.warning("data configuration differs from the checkpoint's; resume will not be exact")


def resume_conflicts(config: Config, ckpt_tokenizer: Tokenizer, ckpt_model_cfg: ModelConfig) -> List[str]:
    """What the config asks for that the checkpoint being resumed does not have: another tokenizer (when the
    config's tokenizer file exists) or another network (ARCHITECTURE_FIELDS). Empty when resuming is sound."""
    out = []
    vocab_size = ckpt_tokenizer.vocab_size
    tok_path = config.data.tokenizer_path
    if tok_path.is_file():
        tok = Tokenizer.load(tok_path)
        if tok.to_bytes() != ckpt_tokenizer.to_bytes():
            out.append(f"tokenizer than {tok_path}")
            vocab_size = tok.vocab_size
    try:
        wanted = resolve_model_config(config.model, vocab_size, num_features=ckpt_model_cfg.num_features).to_dict()
    except ValueError as err:
        return out + [f"model config ({err})"]
    have = ckpt_model_cfg.to_dict()
    changed = [f"{f} {have[f]} -> {wanted[f]}" for f in ARCHITECTURE_FIELDS if have[f] != wanted[f]]
    if changed:
        out.append("model (" + ", ".join(changed) + ")")
    return out


def _load_cmvn(path: Path):
    if not Path(path).is_file():
        log.warning("no CMVN statistics at %s: training without global mean/variance normalization "
                    "(run `mlma features` to write them)", path)
        return None
    return load_cmvn(path)
