"""The training loop of `mlma train`, readable top to bottom.

    train(config)
      setup: process group (torchrun), exp_dir logging, seeds, tokenizer, model (+ CMVN), data, optimizer
      resume: checkpoint-last.pt (or --resume PATH) restores weights, optimizer, scheduler, running average,
              sampler position (mid-epoch) and RNG states
      for epoch:
        for batch in loader:                 # dynamic batches of <= max_duration s, sharded by rank
          forward under autocast -> CTC loss (sum over the batch / tokens)
          non-finite loss or CUDA OOM -> skip the batch (all ranks agree first), count, log cut ids
          backward; every accum_grad batches: clip, AdamW step, Noam lr step, running average
          every log_every: log line + metrics; every valid_every: dev loss + greedy WER/CER per language;
          every checkpoint_every: checkpoint; SIGINT/SIGTERM -> checkpoint and return
        end of epoch: checkpoint epoch-<e>.pt
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import torch
import torch.nn.functional as F
import yaml

from mlma_cli import checkpoint as ckpt_io
from mlma_cli.errors import MlmaError
from mlma_cli.train import ddp
from mlma_cli.train.average import RunningAverage
from mlma_cli.train.config import Config, resolve_model_config
from mlma_cli.train.data import build_dev_loaders, build_train_data, estimate_batches_per_epoch
from mlma_cli.train.faults import BadBatchTracker, StopFlag, is_oom
from mlma_cli.train.metrics import (LangErrors, MetricsWriter, Progress, dev_table, setup_file_logging,
                                    valid_summary)
from mlma_cli.train.optim import NoamScheduler, build_optimizer
from mlma_cli.utils.io import write_text_atomic

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    step: int
    epoch: int
    exp_dir: Path
    last_checkpoint: Optional[Path]
    interrupted: bool = False
    skipped_batches: int = 0
    valid: Dict[str, Any] = field(default_factory=dict)


def compute_loss(model: torch.nn.Module, batch: Dict[str, Any], device: torch.device,
                 amp_dtype: Optional[torch.dtype]):
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


def resume_conflicts(config: Config, ckpt_tokenizer, ckpt_model_cfg) -> List[str]:
    """What the config asks for that the checkpoint being resumed does not have: another tokenizer (when the
    config's tokenizer file exists) or another network (ARCHITECTURE_FIELDS). Empty when resuming is sound."""
    from mlma_cli.data.tokenizer import Tokenizer
    from mlma_cli.model.config import ARCHITECTURE_FIELDS

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


def train(config: Config, resume: Union[str, Path, bool, None] = "auto",
          on_batch: Optional[Callable[[int, int, List[str]], None]] = None) -> TrainResult:
    """Train as ``config`` says. ``resume``: "auto" (exp_dir/checkpoint-last.pt when present), a path, or False.

    ``on_batch(step, epoch, cut_ids)`` is called for every batch the loop consumes (tests record them).
    """
    tc, dc = config.train, config.data
    threads_before = torch.get_num_threads()
    if tc.threads is not None:
        torch.set_num_threads(tc.threads)
    info = ddp.setup(tc.device)
    exp_dir = Path(tc.exp_dir)
    log_handler = None
    if info.is_main:
        exp_dir.mkdir(parents=True, exist_ok=True)
        log_handler = setup_file_logging(exp_dir)
        write_text_atomic(exp_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    torch.manual_seed(tc.seed)  # the same initial weights on every rank

    # ---------------------------------------------------------------- resume source
    resume_path: Optional[Path] = None
    if resume == "auto":
        resume_path = ckpt_io.find_last_checkpoint(exp_dir)
    elif resume:
        resume_path = Path(resume)
    state = ckpt_io.load_checkpoint(resume_path) if resume_path is not None else None

    # ---------------------------------------------------------------- tokenizer + model
    from mlma_cli.data.tokenizer import Tokenizer
    from mlma_cli.model import ModelConfig, build_model

    if state is not None:
        tokenizer = ckpt_io.tokenizer_from_checkpoint(state)
        model_cfg = ModelConfig.from_dict(dict(state["model_config"]))
        conflicts = resume_conflicts(config, tokenizer, model_cfg)
        if conflicts:
            raise MlmaError(f"{resume_path} was trained with a different {'; '.join(conflicts)}. To continue that run "
                            f"restore its config; to start a new one use another exp_dir (or --no-resume, which "
                            f"overwrites {exp_dir}'s checkpoints)")
        if state.get("data_config") and state["data_config"] != config.to_dict()["data"]:
            log.warning("data configuration differs from the checkpoint's; resume will not be exact")
    else:
        tokenizer = Tokenizer.load(dc.tokenizer_path)
        cmvn = _load_cmvn(dc.cmvn_path)
        model_cfg = resolve_model_config(config.model, tokenizer.vocab_size,
                                         num_features=len(cmvn.mean) if cmvn is not None else 80)
    model = build_model(model_cfg)
    if state is None and cmvn is not None:
        model.set_cmvn(torch.from_numpy(cmvn.mean), torch.from_numpy(cmvn.std))
    model.to(info.device)
    if info.is_main:
        n_params = sum(p.numel() for p in model.parameters())
        log.info("model: %s, %.2f M parameters, vocab %d, device %s, world size %d", model_cfg.encoder,
                 n_params / 1e6, tokenizer.vocab_size, info.device, info.world_size)

    torch.manual_seed(tc.seed + 1000 * info.rank)  # but different dropout masks per rank

    def out_frames(n: int) -> int:
        return int(model.output_lengths(torch.tensor([n]))[0])

    # ---------------------------------------------------------------- data
    data = build_train_data(dc, tokenizer, out_frames, seed=tc.seed, exp_dir=exp_dir, is_main=info.is_main)
    dev_loaders = build_dev_loaders(dc, tokenizer, out_frames)
    dev_langs = sorted({name.split("/")[1] for name in dev_loaders})

    # ---------------------------------------------------------------- optimizer, schedule, averaging
    optimizer = build_optimizer(model, tc.lr, tc.betas, tc.weight_decay, tc.eps)
    scheduler = NoamScheduler(optimizer, tc.warmup_steps)
    amp_dtype = amp_dtype_for(tc.dtype, info.device)
    scaler = torch.amp.GradScaler(info.device.type, enabled=amp_dtype == torch.float16)
    averager = RunningAverage(model, tc.average_every)
    bad = BadBatchTracker(tc.max_bad_batches)
    step, epoch, batches_done, pending_rng = 0, 0, 0, None
    last_valid: Dict[str, Any] = {}

    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["grad_scaler"])
        averager.load(state.get("averaged_model"), state.get("num_averaged", 0))
        bad.load_state_dict(state.get("faults"))
        step, epoch = int(state["step"]), int(state["epoch"])
        batches_done = int(state.get("batches_in_epoch", 0))
        last_valid = dict(state.get("metrics") or {})
        try:
            if state.get("sampler") is not None:
                epoch = data.load_state_dict(state["sampler"])
        except AssertionError as err:
            raise MlmaError(f"checkpoint {resume_path}: cannot restore the data position ({err}); resume with "
                            "the same number of processes and data settings") from err
        pending_rng = state["rng"]  # restored once the loader iterator exists (creating it draws a seed)
        log.info("resumed from %s: epoch %d, step %d, %d batches into the epoch", resume_path, epoch, step,
                 batches_done)
        del state

    train_model: torch.nn.Module = model
    if tc.compile:
        train_model = torch.compile(model)
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(
            train_model, device_ids=[info.device.index] if info.device.type == "cuda" else None)

    writer = MetricsWriter(exp_dir, enabled=info.is_main)
    writer.drop_after(step)
    progress = Progress(enabled=info.is_main and tc.progress)
    stop = StopFlag().install()
    last_ckpt: Optional[Path] = None

    def save(path: Path) -> Path:
        """Write a checkpoint (rank 0), point checkpoint-last.pt at it, prune old step checkpoints."""
        nonlocal last_ckpt
        if info.is_main:
            ckpt_io.save_checkpoint(path, {
                "model_config": model_cfg.to_dict(),
                "model": model.state_dict(),
                "averaged_model": averager.state_dict_for(model),
                "num_averaged": averager.num_averaged,
                "tokenizer": tokenizer.to_bytes(),
                "tokenizer_lang_tags": tokenizer.lang_tags,
                "train_config": config.to_dict()["train"],
                "data_config": config.to_dict()["data"],
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "grad_scaler": scaler.state_dict(),
                "sampler": data.state_dict(batches_done),
                "rng": ckpt_io.capture_rng_state(),
                "step": step,
                "epoch": epoch,
                "batches_in_epoch": batches_done,
                "faults": bad.state_dict(),
                # valid_loss only when validated at this very step, so `mlma average --best` ranks fairly
                "metrics": {"valid_loss": last_valid.get("loss") if last_valid.get("step") == step else None,
                            "valid": last_valid},
            })
            ckpt_io.update_last_link(exp_dir, path)
            ckpt_io.prune_step_checkpoints(exp_dir, tc.keep_last)
            log.info("saved %s", path)
        ddp.barrier(info)
        last_ckpt = path
        return path

    def run_validation() -> None:
        nonlocal last_valid
        if not dev_loaders:
            return
        per_lang = validate(model, dev_loaders, dev_langs, tokenizer, info, amp_dtype, tc.valid_max_batches)
        last_valid = {"step": step, **valid_summary(per_lang)}
        if info.is_main:
            writer.write("valid", step, epoch, {k: v for k, v in last_valid.items() if k != "step"})
            progress.print(dev_table(per_lang, step))
            log.info("dev @ step %d: loss %.4f, %s", step, last_valid["loss"],
                     ", ".join(f"{lang} WER {per_lang[lang].wer:.2f}%" for lang in dev_langs))
            writer.plot()

    # ---------------------------------------------------------------- the loop
    interrupted = False
    est_batches = estimate_batches_per_epoch(data.sources, dc.max_duration, info.world_size)
    t_last, audio_since, loss_since, tokens_since = time.time(), 0.0, 0.0, 0
    micro, good_micro = 0, 0
    done = tc.max_steps is not None and step >= tc.max_steps
    if done or epoch >= tc.max_epochs:
        log.info("nothing to do: the checkpoint is at step %d, epoch %d (max_steps %s, max_epochs %d)", step, epoch,
                 tc.max_steps, tc.max_epochs)
        last_ckpt = resume_path
    try:
        while epoch < tc.max_epochs and not done:
            data.set_epoch(epoch)
            train_model.train()
            batches = iter(data.loader)
            if pending_rng is not None:  # rank 0's generators; the other ranks derive theirs from the step
                ckpt_io.restore_rng_state(pending_rng)
                if not info.is_main:
                    torch.manual_seed(tc.seed + 1000 * info.rank + step)
                pending_rng = None
            progress.start(f"epoch {epoch}", total=tc.max_steps if tc.max_steps else est_batches // tc.accum_grad,
                           completed=step if tc.max_steps else batches_done // tc.accum_grad)
            for batch in batches:
                batches_done += 1
                if on_batch is not None:
                    on_batch(step, epoch, batch["cut_ids"])
                # ---- forward (a failure on any rank makes every rank skip the batch)
                reason = None
                try:
                    loss_sum, num_tokens, _, _ = compute_loss(train_model, batch, info.device, amp_dtype)
                    if not torch.isfinite(loss_sum):
                        reason = f"loss is {loss_sum.item()}"
                except RuntimeError as err:
                    if not is_oom(err):
                        raise
                    reason, loss_sum = "CUDA out of memory", None
                    _free_cuda()
                if not ddp.all_ranks_ok(reason is None, info):
                    bad.skip(reason or "failure on another rank", batch["cut_ids"], batch["duration"], step)
                    del loss_sum
                else:
                    # ---- backward (gradients accumulate over accum_grad batches)
                    loss = loss_sum / max(num_tokens, 1) / tc.accum_grad
                    last_of_step = (micro + 1) % tc.accum_grad == 0
                    if _backward(train_model, scaler, loss, sync=last_of_step or not info.distributed, info=info):
                        good_micro += 1
                        bad.ok()
                        audio_since += batch["duration"]
                        loss_since += loss_sum.item()
                        tokens_since += num_tokens
                    else:  # out of memory in backward (single process): drop this step's gradients
                        optimizer.zero_grad(set_to_none=True)
                        good_micro = 0
                        bad.skip("CUDA out of memory in backward", batch["cut_ids"], batch["duration"], step)
                micro += 1
                if micro < tc.accum_grad:
                    continue
                # ---- optimizer step
                micro, stepped = 0, False
                if good_micro > 0:
                    scaler.unscale_(optimizer)
                    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip or math.inf)
                    if torch.isfinite(grad_norm):
                        scaler.step(optimizer)
                        scaler.update()
                        scheduler.step()
                        stepped = True
                    else:
                        scaler.update()
                        bad.skip(f"gradient norm is {grad_norm.item()}", batch["cut_ids"], batch["duration"], step)
                optimizer.zero_grad(set_to_none=True)
                good_micro = 0
                if not stepped:
                    continue
                step += 1
                averager.maybe_update(model, step)

                if step % tc.log_every == 0:
                    elapsed = max(time.time() - t_last, 1e-6)
                    speed = audio_since * info.world_size / elapsed
                    loss_avg = loss_since / max(tokens_since, 1)
                    lr = scheduler.get_last_lr()[0]
                    if info.is_main:
                        log.info("epoch %d step %d: loss %.4f, lr %.2e, %.0f audio-s/s, %d batches skipped",
                                 epoch, step, loss_avg, lr, speed, bad.total)
                        writer.write("train", step, epoch, {"loss": loss_avg, "lr": lr, "audio_sec_per_sec": speed,
                                                            "grad_norm": float(grad_norm),
                                                            "skipped_batches": bad.total})
                    progress.update(step if tc.max_steps else batches_done // tc.accum_grad, loss_avg, lr, speed)
                    t_last, audio_since, loss_since, tokens_since = time.time(), 0.0, 0.0, 0
                if tc.valid_every and step % tc.valid_every == 0:
                    run_validation()
                    train_model.train()
                if tc.checkpoint_every and step % tc.checkpoint_every == 0:
                    save(ckpt_io.step_checkpoint_path(exp_dir, step))
                done = tc.max_steps is not None and step >= tc.max_steps
                if _stop_requested(stop, info):
                    interrupted = True
                    break
                if done:
                    break
            progress.stop()
            if interrupted or done:
                break
            # ---- end of epoch
            if info.is_main:
                log.info("epoch %d done at step %d; %s", epoch, step, data.filter.summary())
            data.filter.reset_counts()
            if not tc.valid_every or step % tc.valid_every:
                run_validation()
            epoch, batches_done = epoch + 1, 0
            data.set_epoch(epoch)  # the checkpoint's sampler state then points at the start of the next epoch
            save(ckpt_io.epoch_checkpoint_path(exp_dir, epoch - 1))
        already_saved = last_ckpt is not None and last_ckpt in (ckpt_io.step_checkpoint_path(exp_dir, step),
                                                                resume_path)
        if (interrupted or done) and not already_saved:
            if done and tc.valid_every and step % tc.valid_every and not interrupted:
                run_validation()
            save(ckpt_io.step_checkpoint_path(exp_dir, step))
        if interrupted and info.is_main:
            log.warning("stopped by %s at step %d; resume with the same command", stop.requested, step)
    finally:
        progress.stop()
        stop.close()
        writer.plot()
        writer.close()
        if log_handler is not None:
            logging.getLogger().removeHandler(log_handler)
            log_handler.close()
        ddp.cleanup()
        torch.set_num_threads(threads_before)
    return TrainResult(step=step, epoch=epoch, exp_dir=exp_dir, last_checkpoint=last_ckpt, interrupted=interrupted,
                       skipped_batches=bad.total, valid=last_valid)


@torch.no_grad()
def validate(model: torch.nn.Module, loaders: Dict[str, Any], langs: List[str], tokenizer, info: ddp.DistInfo,
             amp_dtype: Optional[torch.dtype], max_batches: Optional[int] = None) -> Dict[str, LangErrors]:
    """Dev CTC loss and greedy WER/CER per language, summed over ranks. Leaves the RNG streams untouched."""
    from mlma_cli.decode.greedy import ctc_greedy
    from mlma_cli.text.normalize import normalize

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


def _stop_requested(stop: StopFlag, info: ddp.DistInfo) -> bool:
    """A signal on any rank stops every rank (at the same step)."""
    return not ddp.all_ranks_ok(stop.requested is None, info)


def _free_cuda() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _load_cmvn(path: Path):
    from mlma_cli.data.cmvn import load_cmvn

    if not Path(path).is_file():
        log.warning("no CMVN statistics at %s: training without global mean/variance normalization "
                    "(run `mlma features` to write them)", path)
        return None
    return load_cmvn(path)
