"""Training configuration, data mixing, filters and the optimizer/scheduler (fast unit tests)."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
import torch

from mlma_cli.train.config import Config, TrainConfig, load_config, resolve_model_config


def test_yaml_with_overrides(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(
        "model: {name: conformer-tiny, dropout: 0.2}\n"
        "data:\n  train: [synthetic/*/train, {datasets: [synthetic/nl/train], weight: 2}]\n  alpha: 0.3\n"
        "train: {exp_dir: exp/x, warmup_steps: 100}\n")
    cfg = load_config(path, ["train.lr=5e-4", "max_duration=50", "model.num_layers=2", "train.save_every=7",
                             "max_steps=9"])
    assert cfg.train.checkpoint_every == 7 and cfg.train.max_steps == 9
    assert cfg.train.lr == 5e-4 and cfg.train.warmup_steps == 100 and cfg.data.max_duration == 50
    assert cfg.data.alpha == 0.3 and cfg.train.betas == [0.9, 0.98] and cfg.train.weight_decay == 5e-4
    mc = resolve_model_config(cfg.model, vocab_size=77, num_features=80)
    assert (mc.encoder, mc.dropout, mc.num_layers, mc.vocab_size) == ("conformer", 0.2, 2, 77)
    # the dict form round-trips
    assert Config.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()


@pytest.mark.parametrize("override, match", [
    ("train.lr=-1", "lr=-1"),
    ("data.alpha=2", "alpha=2"),
    ("train.dtype=fp8", "dtype"),
    ("train.bogus=1", "unknown keys"),
    ("data.features=magic", "features"),
    ("data.max_cut_duration=500", "max_cut_duration"),
    ("data.train=[]", "no training datasets"),
    ("data.train=[{weight: 2}]", "dataset"),
    ("no_such_field=1", "no data or train field"),
])
def test_invalid_config_fails_early(override, match):
    with pytest.raises(ValueError, match=match):
        load_config(None, ["data.train=[synthetic/en/train]", override])


def test_model_vocab_must_match_tokenizer():
    with pytest.raises(ValueError, match="vocab_size"):
        resolve_model_config({"name": "conmamba-tiny", "vocab_size": 10}, vocab_size=77, num_features=80)


def _sources(hours_by_name, cuts_per_hour=100):
    from mlma_cli.train.data import Source

    out = []
    for name, (hours, weight) in hours_by_name.items():
        out.append(Source(name=name, lang=name.split("/")[1], manifest=Path("/dev/null"), weight=weight,
                          num_cuts=int(hours * cuts_per_hour), hours=hours))
    return out


def test_temperature_weights_follow_hours_to_the_alpha():
    from mlma_cli.train.data import temperature_weights

    srcs = _sources({"ls/en/train-a": (600.0, 1.0), "ls/en/train-b": (300.0, 1.0), "cv/de/train": (100.0, 1.0)})
    p = temperature_weights(srcs, alpha=0.5)
    assert sum(p) == pytest.approx(1.0)
    p_en, p_de = 900 ** 0.5 / (900 ** 0.5 + 100 ** 0.5), 100 ** 0.5 / (900 ** 0.5 + 100 ** 0.5)
    assert p[0] + p[1] == pytest.approx(p_en) and p[2] == pytest.approx(p_de)
    assert p[0] / p[1] == pytest.approx(2.0)  # within a language: by hours
    assert temperature_weights(srcs, alpha=1.0) == pytest.approx([0.6, 0.3, 0.1])
    assert temperature_weights(srcs, alpha=0.0)[2] == pytest.approx(0.5)
    # an entry weight multiplies its source's probability
    srcs_w = _sources({"ls/en/train": (900.0, 1.0), "cv/de/train": (100.0, 3.0)})
    p_w = temperature_weights(srcs_w, alpha=0.0)
    assert p_w[1] / p_w[0] == pytest.approx(3.0)


class _FakeCut:
    def __init__(self, id):
        self.id = id


def test_temperature_mixer_is_deterministic_and_cycles_across_epochs(monkeypatch):
    from mlma_cli.train import data as D

    srcs = _sources({"c/en/train": (1.0, 1.0), "c/de/train": (0.1, 1.0)}, cuts_per_hour=100)  # 100 and 10 cuts
    for s in srcs:
        ids = [f"{s.name}#{i}" for i in range(s.num_cuts)]
        monkeypatch.setattr(s, "cuts", lambda ids=ids: [_FakeCut(i) for i in ids], raising=False)
    probs = D.temperature_weights(srcs, alpha=0.0)  # 50/50 between en (100 cuts) and de (10 cuts)
    mixer = D.TemperatureMixer(srcs, probs, seed=7)
    assert mixer.draws == 110
    epochs = []
    for e in range(4):
        mixer.set_epoch(e)
        epochs.append([c.id for c in mixer])
    mixer.set_epoch(2)
    assert [c.id for c in mixer] == epochs[2]  # reproducible from (seed, epoch) alone
    counts = Counter(i.split("#")[0] for i in epochs[0])
    assert 35 < counts["c/de/train"] < 75  # ~55 of 110: de is up-sampled ~5x
    # en (subsampled) continues where the previous epoch stopped: over 4 epochs every en cut is seen
    en_seen = {i for ep in epochs for i in ep if i.startswith("c/en")}
    assert len(en_seen) == 100
    first_en_e1 = next(i for i in epochs[1] if i.startswith("c/en"))
    n_en_e0 = sum(1 for i in epochs[0] if i.startswith("c/en"))
    assert first_en_e1 == f"c/en/train#{n_en_e0 % 100}"


def test_cut_filter_counts_each_reason(tmp_path):
    from lhotse import MonoCut, SupervisionSegment

    from mlma_cli.train.data import CutFilter, ctc_min_frames

    class Tok:
        def encode(self, text, lang=None):
            return [ord(ch) % 50 + 1 for ch in text.replace(" ", "")]

    def cut(id, dur, text):
        return MonoCut(id=id, start=0, duration=dur, channel=0,
                       supervisions=[SupervisionSegment(id=id, recording_id=id, start=0, duration=dur, text=text,
                                                        language="en")])

    report = tmp_path / "filtered.tsv"
    f = CutFilter(Tok(), out_frames=lambda n: n // 4, min_duration=0.5, max_duration=10.0, report=report)
    assert f(cut("ok", 2.0, "hello world"))
    assert not f(cut("short", 0.2, "hi"))
    assert not f(cut("long", 12.0, "hi"))
    assert not f(cut("dense", 0.6, "a" * 40))          # 15 output frames for 79 CTC frames
    assert not f(cut("empty", 2.0, "  "))
    assert dict(f.counts) == {"kept": 1, "too_short": 1, "too_long": 1, "tokens_exceed_frames": 1, "empty_text": 1}
    assert [l.split("\t")[0] for l in report.read_text().splitlines()] == ["short", "long", "dense", "empty"]
    assert ctc_min_frames([1, 1, 2, 2, 2, 3]) == 9


def test_noam_schedule_and_no_decay_groups():
    from mlma_cli.train.optim import WarmupScheduler, build_optimizer, noam_factor

    assert noam_factor(1, 100) == pytest.approx(0.01)
    assert noam_factor(100, 100) == pytest.approx(1.0)
    assert noam_factor(400, 100) == pytest.approx(0.5)

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)
            self.norm = torch.nn.LayerNorm(4)
            self.A_log = torch.nn.Parameter(torch.zeros(4, 3))
            self.A_log._no_weight_decay = True

    m = M()
    opt = build_optimizer(m, lr=1e-3, betas=(0.9, 0.98), weight_decay=5e-4)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 5e-4 and [p.shape for p in decay["params"]] == [torch.Size([4, 4])]
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 4  # bias, norm w/b, A_log
    sched = WarmupScheduler(opt, warmup_steps=10)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-4) and max(lrs) == pytest.approx(1e-3) and lrs.index(max(lrs)) == 9
    state = sched.state_dict()
    opt2 = build_optimizer(M(), lr=1e-3, betas=(0.9, 0.98), weight_decay=5e-4)
    sched2 = WarmupScheduler(opt2, warmup_steps=10)
    sched2.load_state_dict(state)
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert math.isclose(sched2.lr_lambdas[0](39), noam_factor(40, 10))


def test_cosine_schedule_anneals_to_zero_at_max_steps():
    from mlma_cli.train.optim import WarmupScheduler, cosine_factor, lr_factor

    assert cosine_factor(5, 10, 110) == pytest.approx(0.5)           # warmup: linear
    assert cosine_factor(10, 10, 110) == pytest.approx(1.0)          # peak at the end of warmup
    mid = cosine_factor(60, 10, 110)
    assert mid == pytest.approx(0.5 * (1 + math.cos(math.pi * 50 / 101)))
    assert 0 < cosine_factor(110, 10, 110) < 1e-3 and cosine_factor(500, 10, 110) == 0.0
    factors = [cosine_factor(s, 10, 110) for s in range(10, 111)]
    assert all(a > b for a, b in zip(factors, factors[1:]))          # strictly decreasing after warmup
    with pytest.raises(ValueError, match="total_steps"):
        lr_factor(1, "cosine", 10)
    with pytest.raises(ValueError, match="linear"):
        lr_factor(1, "linear", 10, 100)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=2.0)
    sched = WarmupScheduler(opt, warmup_steps=10, schedule="cosine", total_steps=110)
    lrs = []
    for _ in range(110):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[9] == pytest.approx(2.0) and lrs[59] == pytest.approx(2.0 * mid) and lrs[-1] < 2e-3


def test_cosine_schedule_needs_max_steps():
    with pytest.raises(ValueError, match="max_steps"):
        TrainConfig(lr_schedule="cosine").validate()
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="step", max_steps=10).validate()
    TrainConfig(lr_schedule="cosine", max_steps=10).validate()


def test_real_model_marks_mamba_parameters_no_decay():
    from mlma_cli.model import build_model, named_config
    from mlma_cli.train.optim import param_groups

    model = build_model(named_config("conmamba-tiny", vocab_size=30, num_layers=1))
    no_decay = {id(p) for p in param_groups(model, 5e-4)[1]["params"]}
    names = [n for n, p in model.named_parameters() if "A_log" in n]
    assert names, "expected Mamba A_log parameters"
    assert all(id(p) in no_decay for n, p in model.named_parameters() if "A_log" in n or n.endswith(".D"))
    # the front end's LayerNorm over (freq, channel) has 2-D gains: exempt as norms, not decayed as matrices
    gains = [(n, p) for n, p in model.named_parameters() if n.startswith("encoder.frontend.") and ".norm." in n]
    assert gains and any(p.ndim == 2 for _, p in gains)
    assert all(id(p) in no_decay for _, p in gains)
    decayed = {id(p) for p in param_groups(model, 5e-4)[0]["params"]}
    assert id(model.encoder.frontend.block1.conv.weight) in decayed and id(model.ctc_head.weight) in decayed
