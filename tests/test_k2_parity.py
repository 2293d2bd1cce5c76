"""k2 backend: same best path as kaldi-decoder (run in the Python 3.9 k2 venv), clear message when k2 is missing."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from mlma_cli.errors import MissingDependencyError

ROOT = Path(__file__).resolve().parents[1]
K2_PY = ROOT / ".venv-k2" / "bin" / "python"


@pytest.mark.k2
def test_k2_matches_kaldi_decoder_best_path():
    if not K2_PY.exists():
        pytest.skip(f"{K2_PY} does not exist; create the k2 venv with `tools/setup_env.sh --k2` (CI does)")
    proc = subprocess.run([str(K2_PY), str(ROOT / "tests" / "k2_parity_script.py")], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    assert lines, f"parity script printed no result; stderr:\n{proc.stderr[-3000:]}"
    out = json.loads(lines[-1])
    assert proc.returncode == 0, f"k2 and kaldi-decoder disagree: {out}\n{proc.stderr[-2000:]}"
    assert out["cases"] >= 50 and not out["mismatches"]


def test_missing_k2_gives_install_hint(monkeypatch):
    import builtins

    from mlma_cli.decode import k2_backend

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "k2" or name.startswith("k2."):
            raise ImportError("No module named 'k2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(MissingDependencyError) as err:
        k2_backend.require_k2()
    msg = str(err.value)
    assert "tools/setup_env.sh --k2" in msg and "wheel index" in msg and "--backend kaldi" in msg
    assert "\n" not in msg
    with pytest.raises(MissingDependencyError):
        k2_backend.K2Decoder(graph=None)


def test_decode_with_k2_backend_fails_early_with_hint(tmp_path, monkeypatch):
    """`mlma decode --backend k2` without k2: the install hint, before any checkpoint is read."""
    import builtins

    from typer.testing import CliRunner

    from mlma_cli.cli.main import app

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "k2" or name.startswith("k2."):
            raise ImportError("No module named 'k2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    r = CliRunner().invoke(app, ["decode", "--checkpoint", str(tmp_path / "missing.pt"), "--test-sets",
                                 "synthetic/de/test", "--method", "wfst", "--graph", str(tmp_path),
                                 "--backend", "k2"])
    assert isinstance(r.exception, MissingDependencyError)
    assert "tools/setup_env.sh --k2" in str(r.exception)
