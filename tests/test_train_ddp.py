"""Two-process DDP (gloo, CPU) through torchrun and the real `mlma train` command line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import config_dict  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_torchrun_two_processes_gloo(tiny_data_dir, tmp_path):
    from mlma_cli.checkpoint import load_checkpoint, load_for_inference

    exp = tmp_path / "exp"
    cfg = config_dict(tiny_data_dir, exp, data={"dev": ["synthetic/*/dev"]},
                      train={"max_steps": 3, "valid_every": 3, "device": "cpu"})
    conf = tmp_path / "train.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "mlma_cli", "train", "--config", str(conf), "--set", "train.log_every=1"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    log = (exp / "train.log").read_text()
    assert "world size 2" in log
    assert "DDP: rank 0/2" in proc.stderr and "DDP: rank 1/2" in proc.stderr and "backend gloo" in proc.stderr
    assert log.count("saved ") == 1  # only rank 0 writes (one final checkpoint)
    ck = load_checkpoint(exp / "checkpoint-last.pt")
    assert ck["step"] == 3 and ck["sampler"]["world_size"] == 2
    inf = load_for_inference(exp / "checkpoint-last.pt")
    assert inf.meta["step"] == 3
    # the dev table covers both languages, summed over the two ranks (4 utterances each)
    valid = [l for l in (exp / "metrics.jsonl").read_text().splitlines() if '"valid"' in l]
    assert '"en/utts": 4' in valid[-1] and '"de/utts": 4' in valid[-1]
