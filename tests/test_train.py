"""End-to-end training tests on the tiny synthetic corpus (CPU): overfitting, exact resume, bad batches."""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import torch
from lhotse import CutSet

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import make_config, write_subset  # noqa: E402

from mlma_cli.errors import MlmaError  # noqa: E402


def _train_losses(exp_dir: Path):
    recs = [json.loads(line) for line in (exp_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in recs if r["kind"] == "train"]


@pytest.mark.parametrize("name, steps", [("conmamba-tiny", 45), ("conformer-tiny", 80)])
def test_tiny_model_overfits_a_few_utterances(tiny_data_dir, tmp_path, name, steps):
    """The named tiny sizes learn two utterances by heart: loss falls 20x and greedy output equals the text."""
    from mlma_cli.checkpoint import load_for_inference
    from mlma_cli.decode.greedy import ctc_greedy
    from mlma_cli.text.normalize import normalize
    from mlma_cli.train.loop import train

    src = CutSet.from_file(tiny_data_dir.data_dir / "fbank/synthetic/en/train/cuts.jsonl.gz")
    cuts = sorted(src, key=lambda c: c.duration)[:2]
    data = tmp_path / "data"
    write_subset(cuts, data, "synthetic/en/train", repeat=10)  # an "epoch" of 20 cuts: fewer epoch boundaries
    cfg = make_config(tiny_data_dir, tmp_path / "exp", model={"name": name, "dropout": 0.0},
                      data={"data_dir": str(data), "train": ["synthetic/en/train"], "spec_augment": None,
                            "max_duration": 2 * max(c.duration for c in cuts) + 0.1, "max_cut_duration": 3.0},
                      train={"lr": 3e-3, "warmup_steps": 8, "max_steps": steps, "log_every": 5, "weight_decay": 0.0})
    result = train(cfg, resume=False)
    assert result.step == steps and result.skipped_batches == 0

    losses = _train_losses(tmp_path / "exp")
    assert losses[-1] < losses[0] / 20, losses
    inf = load_for_inference(result.last_checkpoint, "cpu")
    for cut in cuts:
        feats = torch.from_numpy(cut.load_features())[None]                       # (1, T, 80)
        log_probs, out_lens = inf.model(feats, torch.tensor([feats.shape[1]]))
        hyp = inf.tokenizer.decode(ctc_greedy(log_probs, out_lens)[0])
        assert hyp == normalize(cut.supervisions[0].text, "en")


def test_resume_mid_epoch_gives_the_same_weights_and_batches(tiny_data_dir, tmp_path):
    """N steps straight == N/2 steps, SIGTERM (checkpoint + exit), resume, N/2 more: same batches, same weights.

    Dropout, SpecAugment, temperature mixing over two languages and an epoch boundary are all on the path.
    """
    from mlma_cli.checkpoint import load_checkpoint
    from mlma_cli.train.loop import train

    total, stop_at = 9, 4
    common = dict(train={"max_steps": total, "average_every": 2})

    seen_straight = []
    cfg = make_config(tiny_data_dir, tmp_path / "straight", **common)
    r_straight = train(cfg, resume=False, on_batch=lambda s, e, ids: seen_straight.append((e, list(ids))))
    assert r_straight.step == total
    assert r_straight.epoch >= 1, "the run should cross an epoch boundary"

    seen_split = []

    def interrupt(step, epoch, ids):
        seen_split.append((epoch, list(ids)))
        if step == stop_at - 1:  # the batch that completes step `stop_at`
            os.kill(os.getpid(), signal.SIGTERM)

    cfg2 = make_config(tiny_data_dir, tmp_path / "split", **common)
    r1 = train(cfg2, resume=False, on_batch=interrupt)
    assert r1.interrupted and r1.step == stop_at
    assert (tmp_path / "split" / "checkpoint-last.pt").resolve() == r1.last_checkpoint.resolve()
    r2 = train(cfg2, resume="auto", on_batch=lambda s, e, ids: seen_split.append((e, list(ids))))
    assert r2.step == total and not r2.interrupted

    assert seen_split == seen_straight
    # running the finished experiment again changes nothing
    mtime = r2.last_checkpoint.stat().st_mtime_ns
    r3 = train(cfg2, resume="auto", on_batch=lambda *a: pytest.fail("no batch expected"))
    assert r3.step == total and r2.last_checkpoint.stat().st_mtime_ns == mtime
    a = load_checkpoint(r_straight.last_checkpoint)
    b = load_checkpoint(r2.last_checkpoint)
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=1e-5, atol=1e-6, msg=f"weights differ at {k}")
    for k, v in a["averaged_model"].items():
        torch.testing.assert_close(b["averaged_model"][k], v, rtol=1e-5, atol=1e-6)
    assert a["num_averaged"] == b["num_averaged"]
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]


def test_nan_loss_batch_is_skipped_and_counted(tiny_data_dir, tmp_path, monkeypatch, caplog):
    from mlma_cli.train import loop

    real = loop.compute_loss
    calls = {"n": 0, "ids": None}

    def flaky(model, batch, device, amp_dtype):
        calls["n"] += 1
        loss, n, lp, ol = real(model, batch, device, amp_dtype)
        if calls["n"] == 2:
            calls["ids"] = batch["cut_ids"]
            return loss * float("nan"), n, lp, ol
        return loss, n, lp, ol

    monkeypatch.setattr(loop, "compute_loss", flaky)
    cfg = make_config(tiny_data_dir, tmp_path / "exp", train={"max_steps": 3})
    with caplog.at_level("WARNING"):
        result = loop.train(cfg, resume=False)
    assert result.skipped_batches == 1
    assert result.step == 3  # the skipped batch does not count as a step
    assert "skipped batch (loss is nan" in caplog.text
    assert all(cut_id in caplog.text for cut_id in calls["ids"])  # the batch's cut ids are logged
    final = torch.load(result.last_checkpoint, weights_only=True)
    assert all(torch.isfinite(v).all() for v in final["model"].values() if v.is_floating_point())
    assert final["faults"]["total"] == 1


def test_repeated_bad_batches_stop_the_run(tiny_data_dir, tmp_path, monkeypatch):
    from mlma_cli.train import loop

    real = loop.compute_loss

    def always_inf(model, batch, device, amp_dtype):
        loss, n, lp, ol = real(model, batch, device, amp_dtype)
        return loss + float("inf"), n, lp, ol

    monkeypatch.setattr(loop, "compute_loss", always_inf)
    cfg = make_config(tiny_data_dir, tmp_path / "exp", train={"max_steps": 5, "max_bad_batches": 3})
    with pytest.raises(MlmaError, match="3 consecutive batches failed"):
        loop.train(cfg, resume=False)


def test_validation_reports_per_language_and_writes_outputs(tiny_data_dir, tmp_path):
    from mlma_cli.train.loop import train

    cfg = make_config(tiny_data_dir, tmp_path / "exp",
                      data={"dev": ["synthetic/*/dev"]},
                      train={"max_steps": 4, "valid_every": 2, "checkpoint_every": 2, "keep_last": 1})
    result = train(cfg, resume=False)
    exp = tmp_path / "exp"
    valid = [json.loads(l) for l in (exp / "metrics.jsonl").read_text().splitlines() if '"valid"' in l]
    assert [v["step"] for v in valid] == [2, 4]
    for lang in ("en", "de"):
        assert valid[-1][f"{lang}/utts"] == 4 and 0 <= valid[-1][f"{lang}/cer"]
    assert result.valid["loss"] == pytest.approx(valid[-1]["loss"])
    assert (exp / "curves.png").stat().st_size > 1000
    assert (exp / "train.log").read_text().count("dev @ step") == 2
    assert list((exp / "tensorboard").iterdir())
    # keep_last=1: only the newest step checkpoint survives; checkpoint-last points at it
    assert sorted(p.name for p in exp.glob("checkpoint-*.pt")) == ["checkpoint-4.pt", "checkpoint-last.pt"]
    ck = torch.load(exp / "checkpoint-last.pt", weights_only=True)
    assert ck["metrics"]["valid_loss"] == pytest.approx(valid[-1]["loss"])


def test_on_the_fly_features_and_explicit_cli_options(tiny_data_dir, tmp_path):
    """`mlma train` without a config file: options only; features computed from audio in the data loader."""
    from typer.testing import CliRunner

    from mlma_cli.checkpoint import load_checkpoint
    from mlma_cli.cli.main import app

    exp = tmp_path / "exp"
    res = CliRunner().invoke(app, [
        "train", "--data-dir", str(tiny_data_dir.data_dir), "--train", "synthetic/en/train", "--model",
        "conformer-tiny", "--exp-dir", str(exp), "--max-steps", "2", "--max-duration", "8",
        "--set", "data.features=on-the-fly", "--set", "max_cut_duration=8", "--set", "train.progress=false",
        "--set", "train.threads=1", "--set", "model.num_layers=1"])
    assert res.exit_code == 0, res.output
    assert "training finished at step 2" in res.output
    ck = load_checkpoint(exp / "checkpoint-last.pt")
    assert ck["data_config"]["features"] == "on-the-fly" and ck["model_config"]["encoder"] == "conformer"
    assert "features: computed on the fly" in (exp / "train.log").read_text()


def test_resume_refuses_another_network_or_tokenizer(tiny_data_dir, tmp_path):
    """checkpoint-last.pt of another architecture or tokenizer is never resumed silently (a recipe rerun after a
    config change would otherwise continue the old model); dropout and other non-architecture fields may change."""
    from mlma_cli.data.layout import fbank_dir
    from mlma_cli.data.tokenizer import train_tokenizer
    from mlma_cli.train.loop import train
    from train_helpers import MICRO_MODEL

    exp = tmp_path / "exp"
    assert train(make_config(tiny_data_dir, exp, train={"max_steps": 2}), resume=False).step == 2
    wider = dict(MICRO_MODEL, d_model=48)
    with pytest.raises(MlmaError, match=r"different model \(d_model 32 -> 48, dt_rank 2 -> 3\).*another exp_dir"):
        train(make_config(tiny_data_dir, exp, model=wider, train={"max_steps": 3}), resume="auto")
    train_tokenizer([fbank_dir(tiny_data_dir.data_dir, "synthetic", "en", "train") / "cuts.jsonl.gz"],
                    tmp_path / "lang_en", vocab_size=100, model_type="char")
    en_only = tmp_path / "lang_en" / "tokenizer.model"
    with pytest.raises(MlmaError, match="different tokenizer"):
        train(make_config(tiny_data_dir, exp, data={"tokenizer": str(en_only)}, train={"max_steps": 3}),
              resume="auto")
    less_dropout = dict(MICRO_MODEL, dropout=0.0)
    assert train(make_config(tiny_data_dir, exp, model=less_dropout, train={"max_steps": 3}), resume="auto").step == 3
