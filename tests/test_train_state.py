"""TrainState as the checkpoint format: what it writes, what it reads back (old layouts too), accumulation."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import make_config  # noqa: E402

# The keys of a version-1 checkpoint, as mlma has written them since resuming mid-epoch was added.
V1_KEYS = {"format", "version", "model_config", "model", "averaged_model", "num_averaged", "tokenizer",
           "tokenizer_lang_tags", "train_config", "data_config", "optimizer", "scheduler", "grad_scaler", "sampler",
           "rng", "step", "epoch", "batches_in_epoch", "faults", "metrics"}


def test_checkpoint_keys_are_the_version_1_layout(tiny_data_dir, tmp_path):
    from mlma_cli.checkpoint import load_checkpoint
    from mlma_cli.train.loop import train

    cfg = make_config(tiny_data_dir, tmp_path / "exp", data={"dev": ["synthetic/en/dev"]},
                      train={"max_steps": 2, "valid_every": 2})
    ck = load_checkpoint(train(cfg, resume=False).last_checkpoint)
    assert set(ck) == V1_KEYS
    assert ck["metrics"]["valid"]["step"] == 2
    assert ck["metrics"]["valid_loss"] == pytest.approx(ck["metrics"]["valid"]["loss"])
    assert ck["metrics"]["valid_wer"] == pytest.approx(ck["metrics"]["valid"]["wer"])


def test_a_checkpoint_without_the_later_keys_still_resumes(tiny_data_dir, tmp_path):
    """Checkpoints written before faults / batches_in_epoch / valid_wer existed: resumed, counters from zero."""
    from mlma_cli.checkpoint import load_checkpoint, save_checkpoint
    from mlma_cli.train.loop import train

    exp = tmp_path / "exp"
    first = train(make_config(tiny_data_dir, exp, train={"max_steps": 2}), resume=False)
    old = load_checkpoint(first.last_checkpoint)
    for key in ("faults", "batches_in_epoch", "format", "version"):
        old.pop(key)
    old["metrics"] = {"valid_loss": None}
    save_checkpoint(first.last_checkpoint, old)
    r = train(make_config(tiny_data_dir, exp, train={"max_steps": 3}), resume="auto")
    assert r.step == 3 and r.skipped_batches == 0
    assert load_checkpoint(r.last_checkpoint)["faults"] == {"total": 0, "by_reason": {}}


def test_resume_with_gradient_accumulation_gives_the_same_weights(tiny_data_dir, tmp_path):
    """accum_grad=2 across an epoch end (whose last, shorter group makes its own step): straight == split."""
    from mlma_cli.checkpoint import load_checkpoint
    from mlma_cli.train.loop import train

    common = dict(train={"max_steps": 6, "accum_grad": 2})
    seen_straight = []
    straight = train(make_config(tiny_data_dir, tmp_path / "straight", **common), resume=False,
                     on_batch=lambda s, e, ids: seen_straight.append((s, e, list(ids))))
    assert straight.epoch >= 1
    seen_split = []

    def interrupt(step, epoch, ids):
        seen_split.append((step, epoch, list(ids)))
        if step == 2 and sum(1 for s, _, _ in seen_split if s == 2) == 2:  # second batch of step 3
            os.kill(os.getpid(), signal.SIGTERM)

    cfg = make_config(tiny_data_dir, tmp_path / "split", **common)
    r1 = train(cfg, resume=False, on_batch=interrupt)
    assert r1.interrupted and r1.step == 3
    r2 = train(cfg, resume="auto", on_batch=lambda s, e, ids: seen_split.append((s, e, list(ids))))
    assert seen_split == seen_straight
    # every step consumed two batches except the last one of each epoch, which may have consumed one
    per_step = {}
    for s, e, _ in seen_straight:
        per_step[(s, e)] = per_step.get((s, e), 0) + 1
    assert set(per_step.values()) <= {1, 2} and list(per_step.values()).count(2) >= 3
    a, b = load_checkpoint(straight.last_checkpoint), load_checkpoint(r2.last_checkpoint)
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=1e-5, atol=1e-6, msg=f"weights differ at {k}")


def test_average_best_by_wer_or_loss(tmp_path):
    """--best K ranks by the dev score measured at the checkpoint's own step; older checkpoints' last
    validation record counts when its step is theirs."""
    from mlma_cli.checkpoint import save_checkpoint
    from mlma_cli.errors import MlmaError
    from mlma_cli.train.average import select_checkpoints, valid_score

    scores = {2: (1.0, 30.0), 4: (0.8, 35.0), 6: (0.9, 20.0), 8: (0.7, 40.0)}   # step: (loss, wer)
    for step, (loss, wer) in scores.items():
        metrics = ({"valid_loss": loss, "valid_wer": wer} if step != 6 else  # step 6: an older layout
                   {"valid_loss": loss, "valid": {"step": 6, "loss": loss, "wer": wer}})
        save_checkpoint(tmp_path / f"checkpoint-{step}.pt", {"model_config": {}, "model": {"w": torch.zeros(1)}, "tokenizer": b"spm",
                                                               "step": step, "metrics": metrics})
    assert [p.name for p in select_checkpoints(tmp_path, best=2)] == ["checkpoint-4.pt", "checkpoint-8.pt"]
    assert [p.name for p in select_checkpoints(tmp_path, best=2, by="wer")] == ["checkpoint-2.pt",
                                                                                  "checkpoint-6.pt"]
    assert valid_score({"step": 3, "metrics": {"valid": {"step": 2, "wer": 1.0}}}, "wer") is None
    with pytest.raises(MlmaError, match="rank checkpoints by"):
        select_checkpoints(tmp_path, best=2, by="cer")
