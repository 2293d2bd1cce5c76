"""On-the-fly speed perturbation (data.speed_perturb_factors, the ConMamba reference's 0.95/1.0/1.05)."""
from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import make_config  # noqa: E402

PAPER_CONFS = sorted(Path(__file__).resolve().parents[1].glob("egs/*/conf/train_*_paper.yaml"))


def test_speed_draw_is_uniform_per_epoch_and_reproducible():
    from mlma_cli.train.data import AsrDataset

    ds = AsrDataset(tokenizer=None, input_strategy=None, seed=7, speed_factors=[0.95, 1.0, 1.05])
    ids = [f"utt{i}" for i in range(3000)]
    first = [ds.speed_of(i) for i in ids]
    counts = Counter(first)
    assert set(counts) == {0.95, 1.0, 1.05} and min(counts.values()) > 900   # ~1000 each
    assert [ds.speed_of(i) for i in ids] == first                             # same seed and epoch: same draw
    ds.set_epoch(1)
    again = [ds.speed_of(i) for i in ids]
    assert sum(a != b for a, b in zip(first, again)) > 1500                   # a fresh draw every epoch


def test_config_checks_the_factors():
    with pytest.raises(ValueError, match="speed_perturb_factors"):
        make_config_dict_only({"speed_perturb_factors": [0.95, 3.0]})
    with pytest.raises(ValueError, match="needs the audio"):
        make_config_dict_only({"speed_perturb_factors": [0.95, 1.05], "features": "precomputed"})


def make_config_dict_only(data):
    from mlma_cli.train.config import DataConfig

    DataConfig(train=["synthetic/en/train"], **data).validate()


def test_training_with_on_the_fly_speed_perturbation(tiny_data_dir, tmp_path, caplog):
    """Training cuts are perturbed (lhotse's _sp<factor> ids), features computed from the audio; dev is not."""
    from mlma_cli.train.loop import train

    seen = []
    cfg = make_config(tiny_data_dir, tmp_path / "exp", data={"speed_perturb_factors": [0.9, 1.1],
                                                             "dev": ["synthetic/en/dev"]},
                      train={"max_steps": 2, "valid_every": 2})
    with caplog.at_level("INFO"):
        result = train(cfg, resume=False, on_batch=lambda s, e, ids: seen.extend(ids))
    assert result.step == 2 and result.skipped_batches == 0 and result.valid["en/utts"] > 0
    assert seen and all(i.endswith(("_sp0.9", "_sp1.1")) for i in seen)
    assert "changes the audio's speed" in caplog.text


def test_training_with_the_paper_configs_speed_perturbation(tiny_data_dir, tmp_path):
    """The paper configs' data keys (the reference's 0.95/1.0/1.05 on the fly, offline copies off) train end to end."""
    from mlma_cli.train.loop import train

    keys = ("speed_perturb_factors", "speed_perturb", "features")
    datas = [yaml.safe_load(p.read_text())["data"] for p in PAPER_CONFS]
    assert len(PAPER_CONFS) == 6 and all({k: d.get(k) for k in keys} == {k: datas[0].get(k) for k in keys}
                                         for d in datas)
    data = {k: datas[0][k] for k in keys if k in datas[0]}
    assert data["speed_perturb_factors"] == [0.95, 1.0, 1.05]
    seen = []
    cfg = make_config(tiny_data_dir, tmp_path / "exp", data=data, train={"max_steps": 2})
    result = train(cfg, resume=False, on_batch=lambda s, e, ids: seen.extend(ids))
    assert result.step == 2 and result.skipped_batches == 0
    speeds = {m.group(1) if (m := re.search(r"_sp([0-9.]+)$", i)) else "1.0" for i in seen}
    assert seen and speeds <= {"0.95", "1.0", "1.05"} and len(speeds) > 1
