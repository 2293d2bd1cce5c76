"""benchmarks/gpu_check.py, the script the lent GPU machine runs, exercised off the GPU: with --allow-cpu
--self-test the sequential references stand in for mamba-ssm's kernels, so every check and the timing step run
and the report files are written, as they must be in the one device run a session gets."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_script_runs_every_step_off_the_gpu(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="", TRITON_F32_DEFAULT="ieee")
    res = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--allow-cpu", "--self-test", "--out",
                          str(tmp_path), "--seconds", "1", "--budget", "0.2"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["env"]["triton_f32_default"] == "ieee"
    assert data["errors"] == [], data["errors"]
    checks = data["checks"]
    assert checks and all(c["ok"] is True for c in checks), [c for c in checks if c["ok"] is not True]
    assert (tmp_path / "gpu_check.md").read_text().strip()
    assert "[step] timings took" in res.stdout
