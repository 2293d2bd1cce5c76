"""The training loop of `mlma train`, readable top to bottom.

    train(config)
      TrainState.build (state.py): tokenizer, model (+ CMVN), data, optimizer, Noam schedule, running average;
          resuming from checkpoint-last.pt (or --resume PATH) restores all of it, the sampler position
          (mid-epoch) and the RNG states
      for epoch:
        for each group of accum_grad batches       # dynamic batches of <= max_duration s, sharded by rank
          train_step: forward under autocast -> CTC loss (sum over the batch / tokens); non-finite loss or CUDA
              OOM -> skip the batch (all ranks agree first), count, log cut ids; backward; then clip,
              AdamW step, Noam lr step, running average
          every log_every: log line + metrics; every valid_every: dev loss + greedy WER/CER per language;
          every checkpoint_every: checkpoint; SIGINT/SIGTERM -> checkpoint and return
        end of epoch: validation, checkpoint epoch-<e>.pt
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
import yaml

from mlma_cli import checkpoint as ckpt_io
from mlma_cli.decode.greedy import ctc_greedy
from mlma_cli.errors import MlmaError
from mlma_cli.text.normalize import normalize
from mlma_cli.train import ddp
from mlma_cli.train.config import Config, TrainConfig
from mlma_cli.train.data import build_dev_loaders, estimate_batches_per_epoch
from mlma_cli.train.faults import StopFlag, is_oom
from mlma_cli.train.metrics import (LangErrors, MetricsWriter, Progress, dev_table, setup_file_logging,
                                    valid_summary)
from mlma_cli.train.state import TrainState, out_frames_of
from mlma_cli.utils.io import write_text_atomic

log = logging.getLogger(__name__)

Batch = Dict[str, Any]


@dataclass
class TrainResult:
    step: int
    epoch: int
    exp_dir: Path
    last_checkpoint: Optional[Path]
    interrupted: bool = False
    skipped_batches: int = 0
    valid: Dict[str, Any] = field(default_factory=dict)


@dataclass
class StepResult:
    """What one train_step did: whether the optimizer stepped, and the sums the log line averages."""

    stepped: bool = False
    loss_sum: float = 0.0          # CTC loss summed over the batches that went through backward
    tokens: int = 0
    audio_seconds: float = 0.0
    grad_norm: float = math.nan    # before clipping


def train(config: Config, resume: Union[str, Path, bool, None] = "auto",
          on_batch: Optional[Callable[[int, int, List[str]], None]] = None) -> TrainResult:
    """Train as ``config`` says. ``resume``: "auto" (exp_dir/checkpoint-last.pt when present), a path, or False.

    ``on_batch(step, epoch, cut_ids)`` is called for every batch the loop consumes (tests record them).
    """
    tc = config.train
    with _session(config) as info:
        resume_path = ckpt_io.find_last_checkpoint(tc.exp_dir) if resume == "auto" else (Path(resume) if resume
                                                                                           else None)
        amp_dtype = amp_dtype_for(tc.dtype, info.device)
        state = TrainState.build(config, info, amp_dtype,
                                 ckpt_io.load_checkpoint(resume_path) if resume_path is not None else None,
                                 resume_path)
        train_model = _wrap_for_training(state.model, tc, info)
        with _Run(state, info, amp_dtype) as run:
            if _reached_max_steps(state) or state.epoch >= tc.max_epochs:
                log.info("nothing to do: the checkpoint is at step %d, epoch %d (max_steps %s, max_epochs %d)",
                         state.step, state.epoch, tc.max_steps, tc.max_epochs)
                return run.result(last_checkpoint=resume_path)
            interrupted = done = False
            while state.epoch < tc.max_epochs:
                state.data.set_epoch(state.epoch)
                train_model.train()
                batches = iter(state.data.loader)
                state.restore_rng(info)  # after iter(): creating the iterator draws a seed
                run.start_epoch()
                for group in _step_groups(batches, tc.accum_grad, state, on_batch):
                    outcome = train_step(state, train_model, group, amp_dtype, info)
                    run.account(outcome)
                    if not outcome.stepped:
                        continue
                    run.after_step(outcome, train_model)
                    interrupted = _stop_requested(run.stop, info)
                    done = _reached_max_steps(state)
                    if interrupted or done:
                        break
                run.progress.stop()
                if interrupted or done:
                    break
                run.end_epoch()
            if interrupted or done:
                run.save_final(validate=done and not interrupted, resume_path=resume_path)
            if interrupted and info.is_main:
                log.warning("stopped by %s at step %d; resume with the same command", run.stop.requested,
                            state.step)
            return run.result(interrupted=interrupted)


def train_step(state: TrainState, train_model: torch.nn.Module, batches: Sequence[Batch],
               amp_dtype: Optional[torch.dtype], info: ddp.DistInfo) -> StepResult:
    """One optimizer step over ``batches`` (gradients accumulate over them, each weighted 1/len(batches)).

    A batch whose loss is not finite, or that runs out of CUDA memory, is skipped on every rank and counted in
    ``state.faults``; so is a step whose gradient norm is not finite. ``train_model`` is ``state.model`` or its
    compiled / DDP wrapper. On a taken step: ``state.step`` += 1, the lr schedule and running average advance.
    """
    tc = state.config.train
    out, good = StepResult(), 0
    for i, batch in enumerate(batches):
        loss_sum, num_tokens, reason = _forward(train_model, batch, info.device, amp_dtype)
        if not ddp.all_ranks_ok(reason is None, info):  # a failure on any rank makes every rank skip the batch
            state.faults.skip(reason or "failure on another rank", batch["cut_ids"], batch["duration"], state.step)
            del loss_sum
            continue
        loss = loss_sum / max(num_tokens, 1) / len(batches)
        sync = i == len(batches) - 1 or not info.distributed  # DDP all-reduces the gradients on the last one
        if _backward(train_model, state.scaler, loss, sync, info):
            good += 1
            state.faults.ok()
            out.loss_sum += loss_sum.item()
            out.tokens += num_tokens
            out.audio_seconds += batch["duration"]
        else:  # out of memory in backward (single process): drop this step's gradients
            state.optimizer.zero_grad(set_to_none=True)
            good = 0
            state.faults.skip("CUDA out of memory in backward", batch["cut_ids"], batch["duration"], state.step)
    if good > 0:
        state.scaler.unscale_(state.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(state.model.parameters(), tc.grad_clip or math.inf)
        out.grad_norm = float(grad_norm)
        if torch.isfinite(grad_norm):
            state.scaler.step(state.optimizer)
            state.scaler.update()
            state.scheduler.step()
            out.stepped = True
        else:
            state.scaler.update()
            last = batches[-1]
            state.faults.skip(f"gradient norm is {grad_norm.item()}", last["cut_ids"], last["duration"], state.step)
    state.optimizer.zero_grad(set_to_none=True)
    if out.stepped:
        state.step += 1
        state.averager.maybe_update(state.model, state.step)
    return out


def compute_loss(model: torch.nn.Module, batch: Batch, device: torch.device, amp_dtype: Optional[torch.dtype]):
    """CTC loss of one batch.

    Returns (loss_sum: scalar tensor, summed over utterances; num_tokens: int; log_probs (B, T', V); out_lens (B,)).
    """
    feats = batch["feats"].to(device, non_blocking=True)            # (B, T, F)
    feat_lens = batch["feat_lens"].to(device)                       # (B,)
    with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        log_probs, out_lens = model(feats, feat_lens)               # (B, T', V), (B,)
    loss = F.ctc_loss(log_probs.transpose(0, 1).float(), batch["targets"].to(device), out_lens,
                      batch["target_lens"].to(device), blank=0, reduction="sum", zero_infinity=False)
    return loss, int(batch["target_lens"].sum()), log_probs, out_lens


def amp_dtype_for(dtype: str, device: torch.device) -> Optional[torch.dtype]:
    """Autocast dtype: "auto" -> bfloat16 on CUDA, none (float32) on CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


@torch.no_grad()
def validate(model: torch.nn.Module, loaders: Dict[str, Any], langs: List[str], tokenizer, info: ddp.DistInfo,
             amp_dtype: Optional[torch.dtype], max_batches: Optional[int] = None) -> Dict[str, LangErrors]:
    """Dev CTC loss and greedy WER/CER per language, summed over ranks. Leaves the RNG streams untouched."""
    was_training = model.training
    model.eval()
    per_lang = {lang: LangErrors() for lang in langs}
    with torch.random.fork_rng(devices=[info.device] if info.device.type == "cuda" else []):
        for name, loader in loaders.items():
            for i, batch in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                loss_sum, _, log_probs, out_lens = compute_loss(model, batch, info.device, amp_dtype)
                hyps = ctc_greedy(log_probs.float(), out_lens)
                per_utt_tokens = batch["target_lens"].tolist()
                for ids, text, lang, n_tok in zip(hyps, batch["texts"], batch["langs"], per_utt_tokens):
                    e = per_lang.setdefault(lang, LangErrors())
                    e.add_utt(normalize(text, lang), tokenizer.decode(ids))
                    e.tokens += n_tok
                # the batch loss is split over languages by token share (dev sets are single-language anyway)
                total_tok = max(sum(per_utt_tokens), 1)
                for lang in set(batch["langs"]):
                    share = sum(n for n, l in zip(per_utt_tokens, batch["langs"]) if l == lang) / total_tok
                    per_lang[lang].loss_sum += float(loss_sum) * share
    if info.distributed:
        keys = sorted(per_lang)
        flat = [v for k in keys for v in per_lang[k].as_list()]
        flat = ddp.all_reduce_sum(flat, info)
        n = len(LangErrors.FIELDS)
        per_lang = {k: LangErrors.from_list(flat[i * n:(i + 1) * n]) for i, k in enumerate(keys)}
    model.train(was_training)
    return per_lang


# ----------------------------------------------------------------------------------------------- around the loop
class _Run:
    """The loop's bookkeeping: log lines and metrics, validation, checkpoints, the progress bar, stop signals."""

    def __init__(self, state: TrainState, info: ddp.DistInfo, amp_dtype: Optional[torch.dtype]):
        self.state, self.info, self.amp_dtype = state, info, amp_dtype
        self.tc = state.config.train
        self.exp_dir = Path(self.tc.exp_dir)
        self.dev_loaders = build_dev_loaders(state.config.data, state.tokenizer, out_frames_of(state.model))
        self.dev_langs = sorted({name.split("/")[1] for name in self.dev_loaders})
        self.est_batches = estimate_batches_per_epoch(state.data.sources, state.config.data.max_duration,
                                                      info.world_size)
        self.last_ckpt: Optional[Path] = None
        self._reset_since()

    def __enter__(self) -> "_Run":
        self.writer = MetricsWriter(self.exp_dir, enabled=self.info.is_main)
        self.writer.drop_after(self.state.step)  # a resumed run rewrites what came after its checkpoint
        self.progress = Progress(enabled=self.info.is_main and self.tc.progress)
        self.stop = StopFlag().install()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()
        self.stop.close()
        self.writer.plot()
        self.writer.close()

    def result(self, interrupted: bool = False, last_checkpoint: Optional[Path] = None) -> TrainResult:
        s = self.state
        return TrainResult(step=s.step, epoch=s.epoch, exp_dir=self.exp_dir,
                           last_checkpoint=last_checkpoint or self.last_ckpt, interrupted=interrupted,
                           skipped_batches=s.faults.total, valid=s.valid)

    def _reset_since(self) -> None:
        self.t_last, self.audio_since, self.loss_since, self.tokens_since = time.time(), 0.0, 0.0, 0

    def _completed(self) -> int:
        """Progress-bar position: steps when max_steps bounds the run, else optimizer steps into the epoch."""
        s = self.state
        return s.step if self.tc.max_steps else s.batches_in_epoch // self.tc.accum_grad

    def start_epoch(self) -> None:
        total = self.tc.max_steps if self.tc.max_steps else self.est_batches // self.tc.accum_grad
        self.progress.start(f"epoch {self.state.epoch}", total=total, completed=self._completed())

    def account(self, step: StepResult) -> None:
        self.audio_since += step.audio_seconds
        self.loss_since += step.loss_sum
        self.tokens_since += step.tokens

    def after_step(self, step: StepResult, train_model: torch.nn.Module) -> None:
        """Log every log_every steps, validate every valid_every, checkpoint every checkpoint_every."""
        tc, s = self.tc, self.state
        if s.step % tc.log_every == 0:
            self._log_train(step.grad_norm)
        if tc.valid_every and s.step % tc.valid_every == 0:
            self.validate()
            train_model.train()
        if tc.checkpoint_every and s.step % tc.checkpoint_every == 0:
            self.save(ckpt_io.step_checkpoint_path(self.exp_dir, s.step))

    def _log_train(self, grad_norm: float) -> None:
        s = self.state
        speed = self.audio_since * self.info.world_size / max(time.time() - self.t_last, 1e-6)
        loss_avg = self.loss_since / max(self.tokens_since, 1)
        lr = s.scheduler.get_last_lr()[0]
        if self.info.is_main:
            log.info("epoch %d step %d: loss %.4f, lr %.2e, %.0f audio-s/s, %d batches skipped",
                     s.epoch, s.step, loss_avg, lr, speed, s.faults.total)
            self.writer.write("train", s.step, s.epoch, {"loss": loss_avg, "lr": lr, "audio_sec_per_sec": speed,
                                                         "grad_norm": grad_norm, "skipped_batches": s.faults.total})
        self.progress.update(self._completed(), loss_avg, lr, speed)
        self._reset_since()

    def validate(self) -> None:
        if not self.dev_loaders:
            return
        s = self.state
        per_lang = validate(s.model, self.dev_loaders, self.dev_langs, s.tokenizer, self.info, self.amp_dtype,
                            self.tc.valid_max_batches)
        s.valid = {"step": s.step, **valid_summary(per_lang)}
        if self.info.is_main:
            self.writer.write("valid", s.step, s.epoch, {k: v for k, v in s.valid.items() if k != "step"})
            self.progress.print(dev_table(per_lang, s.step))
            log.info("dev @ step %d: loss %.4f, %s", s.step, s.valid["loss"],
                     ", ".join(f"{lang} WER {per_lang[lang].wer:.2f}%" for lang in self.dev_langs))
            self.writer.plot()

    def end_epoch(self) -> None:
        """Validate (unless this step just did), move to the next epoch, write epoch-<e>.pt."""
        s, tc = self.state, self.tc
        if self.info.is_main:
            log.info("epoch %d done at step %d; %s", s.epoch, s.step, s.data.filter.summary())
        s.data.filter.reset_counts()
        if not tc.valid_every or s.step % tc.valid_every:
            self.validate()
        s.epoch, s.batches_in_epoch = s.epoch + 1, 0
        s.data.set_epoch(s.epoch)  # the checkpoint's sampler state then points at the start of the next epoch
        self.save(ckpt_io.epoch_checkpoint_path(self.exp_dir, s.epoch - 1))

    def save_final(self, validate: bool, resume_path: Optional[Path]) -> None:
        """The checkpoint of a run that stopped (max_steps or a signal) unless this step's is already written."""
        s, tc = self.state, self.tc
        step_path = ckpt_io.step_checkpoint_path(self.exp_dir, s.step)
        if self.last_ckpt is not None and self.last_ckpt in (step_path, resume_path):
            return
        if validate and tc.valid_every and s.step % tc.valid_every:
            self.validate()
        self.save(step_path)

    def save(self, path: Path) -> Path:
        """Write a checkpoint (rank 0), point checkpoint-last.pt at it, prune old step checkpoints."""
        if self.info.is_main:
            ckpt_io.save_checkpoint(path, self.state.state_dict())
            ckpt_io.update_last_link(self.exp_dir, path)
            ckpt_io.prune_step_checkpoints(self.exp_dir, self.tc.keep_last)
            log.info("saved %s", path)
        ddp.barrier(self.info)
        self.last_ckpt = path
        return path


@contextlib.contextmanager
def _session(config: Config) -> Iterator[ddp.DistInfo]:
    """CPU threads, the process group (torchrun), exp_dir with train.log and config.yaml; all undone on exit."""
    tc = config.train
    threads_before = torch.get_num_threads()
    if tc.threads is not None:
        torch.set_num_threads(tc.threads)
    handler = None
    try:
        info = ddp.setup(tc.device)
        if info.is_main:
            exp_dir = Path(tc.exp_dir)
            exp_dir.mkdir(parents=True, exist_ok=True)
            handler = setup_file_logging(exp_dir)
            write_text_atomic(exp_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
        yield info
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
        ddp.cleanup()
        torch.set_num_threads(threads_before)


def _wrap_for_training(model: torch.nn.Module, tc: TrainConfig, info: ddp.DistInfo) -> torch.nn.Module:
    """torch.compile and/or DistributedDataParallel around the model (the state keeps the plain one)."""
    if tc.compile:
        model = torch.compile(model)
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel  # imports the c10d machinery: only under torchrun

        model = DistributedDataParallel(model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    return model


def _step_groups(batches: Iterator[Batch], accum_grad: int, state: TrainState,
                 on_batch: Optional[Callable[[int, int, List[str]], None]]) -> Iterator[List[Batch]]:
    """The epoch's batches in groups of ``accum_grad``, one optimizer step each (the epoch's last group may be
    shorter: its gradients are not carried into the next epoch, where a resume from the epoch checkpoint
    would lose them). Each batch is counted in ``state.batches_in_epoch`` and shown to ``on_batch``."""
    group: List[Batch] = []
    for batch in batches:
        state.batches_in_epoch += 1
        if on_batch is not None:
            on_batch(state.step, state.epoch, batch["cut_ids"])
        group.append(batch)
        if len(group) == accum_grad:
            yield group
            group = []
    if group:
        yield group


def _forward(train_model: torch.nn.Module, batch: Batch, device: torch.device, amp_dtype: Optional[torch.dtype]):
    """(loss_sum, num_tokens, None) or (loss_sum | None, num_tokens, why the batch must be skipped)."""
    try:
        loss_sum, num_tokens, _, _ = compute_loss(train_model, batch, device, amp_dtype)
    except RuntimeError as err:
        if not is_oom(err):
            raise
        _free_cuda()
        return None, 0, "CUDA out of memory"
    reason = None if torch.isfinite(loss_sum) else f"loss is {loss_sum.item()}"
    return loss_sum, num_tokens, reason


def _backward(train_model, scaler, loss: torch.Tensor, sync: bool, info: ddp.DistInfo) -> bool:
    """loss.backward(), without DDP's gradient all-reduce unless ``sync``. False after a CUDA OOM (single process;
    under DDP an OOM in backward cannot be skipped safely and is raised with advice)."""
    try:
        with (contextlib.nullcontext() if sync else train_model.no_sync()):
            scaler.scale(loss).backward()
        return True
    except RuntimeError as err:
        if not is_oom(err):
            raise
        _free_cuda()
        if info.distributed:
            raise MlmaError("CUDA out of memory in the backward pass; lower data.max_duration and resume") from err
        return False


def _reached_max_steps(state: TrainState) -> bool:
    max_steps = state.config.train.max_steps
    return max_steps is not None and state.step >= max_steps


def _stop_requested(stop: StopFlag, info: ddp.DistInfo) -> bool:
    """A signal on any rank stops every rank (at the same step)."""
    return not ddp.all_ranks_ok(stop.requested is None, info)


def _free_cuda() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
