"""`mlma env`: the report says which path each component takes here, consistently with what mlma then does."""
import json

import torch
from typer.testing import CliRunner

from mlma_cli.cli.main import app
from mlma_cli.model import scan_cpu_kernel


def test_env_report_matches_the_paths_taken(tmp_path):
    out = tmp_path / "env.json"
    res = CliRunner().invoke(app, ["env", "--output", str(out)])
    assert res.exit_code == 0, res.output
    for title in ("system", "packages", "accelerators", "paths", "tools"):
        assert title in res.output
    report = json.loads(out.read_text())
    assert report["packages"]["torch"] == torch.__version__
    assert report["accelerators"]["cuda available"] == str(torch.cuda.is_available())
    cpu_path = report["paths"]["selective scan, CPU tensors"]
    compiler = scan_cpu_kernel.built_with()
    assert (compiler in cpu_path) if compiler else cpu_path.startswith("pure-PyTorch")
    if not torch.cuda.is_available():
        assert "slow on GPU" in report["paths"]["selective scan, CUDA tensors"] or "mamba-ssm (" in \
            report["paths"]["selective scan, CUDA tensors"]
    assert set(report["tools"]) == {"espeak-ng", "ffmpeg", "sox"}
