"""Checkpoint format: round trip of the configuration, loading for inference, clear errors, averaging."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import MICRO_MODEL, make_config  # noqa: E402

from mlma_cli.errors import MlmaError  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tiny_data_dir, tmp_path_factory):
    """A 6-step micro run with checkpoints at steps 2, 4, 6 and dev loss recorded in each."""
    from mlma_cli.train.loop import train

    exp = tmp_path_factory.mktemp("ckpt") / "exp"
    cfg = make_config(tiny_data_dir, exp, data={"dev": ["synthetic/en/dev"]},
                      train={"max_steps": 6, "checkpoint_every": 2, "valid_every": 2, "average_every": 1, "keep_last": 5})
    result = train(cfg, resume=False)
    return cfg, result, exp


def test_round_trip_keeps_the_configuration(tiny_run, tiny_data_dir):
    from mlma_cli.checkpoint import load_checkpoint, tokenizer_from_checkpoint
    from mlma_cli.data.tokenizer import Tokenizer
    from mlma_cli.model import ModelConfig

    cfg, result, exp = tiny_run
    ck = load_checkpoint(result.last_checkpoint)
    assert ck["format"] == "mlma" and ck["version"] == 1
    assert ck["step"] == 6
    mc = ModelConfig.from_dict(ck["model_config"])
    for k, v in MICRO_MODEL.items():
        assert getattr(mc, k) == (tuple(v) if isinstance(v, list) else v)
    tok = Tokenizer.load(tiny_data_dir.tokenizer)
    assert mc.vocab_size == tok.vocab_size
    assert ck["train_config"] == cfg.to_dict()["train"]
    assert ck["data_config"] == cfg.to_dict()["data"]
    assert ck["tokenizer"] == tok.to_bytes()
    assert tokenizer_from_checkpoint(ck).encode("the cat", "en") == tok.encode("the cat", "en")
    for key in ("optimizer", "scheduler", "grad_scaler", "sampler", "rng", "averaged_model"):
        assert ck[key] is not None, key
    assert ck["num_averaged"] == 6
    # CMVN travels inside the weights
    import json

    cmvn = json.loads(tiny_data_dir.cmvn.read_text())
    torch.testing.assert_close(ck["model"]["cmvn_mean"], torch.tensor(cmvn["mean"]))


def test_load_for_inference_needs_only_the_checkpoint(tiny_run):
    from mlma_cli.checkpoint import load_checkpoint, load_for_inference

    _, result, exp = tiny_run
    inf = load_for_inference(exp / "checkpoint-last.pt", "cpu")
    assert not inf.model.training
    assert inf.meta["step"] == 6 and inf.tokenizer.blank_id == 0
    x = torch.randn(2, 120, 80)
    lens = torch.tensor([120, 90])
    log_probs, out_lens = inf.model(x, lens)
    assert log_probs.shape[0] == 2 and log_probs.shape[2] == inf.config.vocab_size
    # several paths: plain mean of their weights
    paths = [exp / "checkpoint-4.pt", exp / "checkpoint-6.pt"]
    avg = load_for_inference(paths, "cpu")
    a, b = (load_checkpoint(p)["model"] for p in paths)
    k = "ctc_head.weight"
    torch.testing.assert_close(avg.model.state_dict()[k], (a[k] + b[k]) / 2)
    run_avg = load_for_inference(paths[-1], "cpu", use_averaged=True)
    torch.testing.assert_close(run_avg.model.state_dict()[k], load_checkpoint(paths[-1])["averaged_model"][k])


def test_bad_checkpoints_raise_mlma_error_naming_the_file(tmp_path, tiny_run):
    from mlma_cli.checkpoint import load_checkpoint, load_for_inference

    _, result, _ = tiny_run
    missing = tmp_path / "nope.pt"
    with pytest.raises(MlmaError, match="nope.pt not found"):
        load_for_inference(missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(MlmaError, match="garbage.pt is corrupt"):
        load_checkpoint(garbage)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(result.last_checkpoint.read_bytes()[:5000])
    with pytest.raises(MlmaError, match="truncated.pt is corrupt"):
        load_for_inference(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(MlmaError, match="foreign.pt is not an mlma checkpoint"):
        load_checkpoint(foreign)
    newer = tmp_path / "newer.pt"
    ck = torch.load(result.last_checkpoint, weights_only=True)
    torch.save({**ck, "version": 99}, newer)
    with pytest.raises(MlmaError, match="newer.pt has format version 99"):
        load_checkpoint(newer)
    mismatched = tmp_path / "mismatched.pt"
    bad_cfg = dict(ck["model_config"], d_model=48)
    torch.save({**ck, "model_config": bad_cfg}, mismatched)
    with pytest.raises(MlmaError, match="mismatched.pt: weights do not match"):
        load_for_inference(mismatched)


def test_save_is_atomic_and_last_link_and_pruning(tmp_path):
    from mlma_cli.checkpoint import (find_last_checkpoint, list_step_checkpoints, prune_step_checkpoints,
                                     save_checkpoint, step_checkpoint_path, update_last_link)

    for step in (2, 4, 6, 8):
        p = save_checkpoint(step_checkpoint_path(tmp_path, step), {"model_config": {}, "model": {}, "tokenizer": b"",
                                                                   "step": step})
        update_last_link(tmp_path, p)
    assert not list(tmp_path.glob(".*tmp*"))
    assert find_last_checkpoint(tmp_path).name == "checkpoint-8.pt"
    prune_step_checkpoints(tmp_path, keep_last=2)
    assert [p.name for p in list_step_checkpoints(tmp_path)] == ["checkpoint-6.pt", "checkpoint-8.pt"]


def test_average_state_dicts_and_running_average():
    from mlma_cli.averaging import RunningAverage, average_range, average_state_dicts

    s1 = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    s2 = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(5)}
    out = average_state_dicts([s1, s2])
    torch.testing.assert_close(out["w"], torch.tensor([2.0, 4.0]))
    assert out["n"].item() == 5  # integer buffers come from the newest

    # running average over steps equals the mean of the per-step weights
    model = torch.nn.Linear(3, 2)
    avg = RunningAverage(model, every=1)
    snapshots, snaps_at = [], {}
    for step in range(1, 9):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        avg.maybe_update(model, step)
        if step in (3, 8):
            snaps_at[step] = {k: v.clone() for k, v in avg.state.items()}
    for k in model.state_dict():
        torch.testing.assert_close(avg.state[k], torch.stack([s[k] for s in snapshots]).mean(0))
        # mean over steps 4..8 recovered from the running averages at steps 3 and 8
        rng = average_range(snaps_at[3], 3, snaps_at[8], 8)
        torch.testing.assert_close(rng[k], torch.stack([s[k] for s in snapshots[3:]]).mean(0))

    # updating every 2 steps: the current weights stand in for both steps since the last update
    model2 = torch.nn.Linear(2, 1)
    avg2 = RunningAverage(model2, every=2)
    w0 = model2.weight.detach().clone()
    assert not avg2.maybe_update(model2, 1)
    assert avg2.maybe_update(model2, 2)
    torch.testing.assert_close(avg2.state["weight"], w0)


def test_mlma_average_last_best_and_running(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from mlma_cli.checkpoint import load_checkpoint, load_for_inference
    from mlma_cli.cli.main import app
    from mlma_cli.train.average import select_checkpoints

    _, _, exp = tiny_run
    ck = {p.name: load_checkpoint(p) for p in exp.glob("checkpoint-[0-9]*.pt")}
    assert sorted(ck) == ["checkpoint-2.pt", "checkpoint-4.pt", "checkpoint-6.pt"]
    runner = CliRunner()
    out = tmp_path / "avg-last2.pt"
    res = runner.invoke(app, ["average", "--exp-dir", str(exp), "--last", "2", "-o", str(out)])
    assert res.exit_code == 0, res.output
    k = "ctc_head.weight"
    expect = (ck["checkpoint-4.pt"]["model"][k] + ck["checkpoint-6.pt"]["model"][k]) / 2
    torch.testing.assert_close(load_checkpoint(out)["model"][k], expect)
    assert load_for_inference(out).meta["averaged"]

    by_loss = sorted(ck, key=lambda n: ck[n]["metrics"]["valid_loss"])[:2]
    best = [p.name for p in select_checkpoints(exp, best=2)]
    assert sorted(best) == sorted(by_loss)

    out_run = tmp_path / "avg-running.pt"
    res = runner.invoke(app, ["average", "--exp-dir", str(exp), "--last", "2", "--use-averaged", "-o", str(out_run)])
    assert res.exit_code == 0, res.output
    a4, a6 = ck["checkpoint-4.pt"], ck["checkpoint-6.pt"]
    expect = (a6["averaged_model"][k] * 6 - a4["averaged_model"][k] * 4) / 2  # mean of the weights at steps 5, 6
    torch.testing.assert_close(load_checkpoint(out_run)["model"][k], expect, rtol=1e-5, atol=1e-6)

    with pytest.raises(MlmaError, match="choose exactly one"):
        select_checkpoints(exp, last=2, best=2)
