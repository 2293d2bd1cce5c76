"""Model packages (`mlma pack`): safetensors weights + config + tokenizer + tokens.txt + model card, and every
`--checkpoint` accepting the directory or `hf:ORG/NAME` (mocked: tests have no network)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_export import SMALL, _save_random_checkpoint  # noqa: E402
from test_transcribe import make_tokenizer_bytes  # noqa: E402

from mlma_cli.errors import MlmaError  # noqa: E402

pytest.importorskip("safetensors")
MLMA = Path(sys.executable).parent / "mlma"

REPORT = {"cells": [{"lang": "de", "testset": "synthetic/test", "setting": "ctc-greedy-search", "wer": 12.5},
                    {"lang": "en", "testset": "synthetic/test", "setting": "ctc-prefix-beam-search-beam-4",
                     "wer": 20.0}],
          "languages": ["de", "en"], "testsets": ["synthetic/test"]}


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    from mlma_cli.package.pack import pack_model

    tmp = tmp_path_factory.mktemp("pack")
    ckpt = _save_random_checkpoint(tmp / "conmamba.pt", dict(encoder="conmamba", **SMALL), seed=3)
    (tmp / "report.json").write_text(json.dumps(REPORT))
    res = pack_model([ckpt], tmp / "pkg", report=tmp / "report.json", name="someorg/mlma-test")
    return ckpt, res.out_dir, tmp


def _log_probs(path, x, lens):
    from mlma_cli.checkpoint import load_for_inference

    inf = load_for_inference([str(path)])
    with torch.inference_mode():
        return inf.model(x, lens)[0]


def test_layout_and_no_pickle(packed):
    _, pkg, _ = packed
    names = sorted(p.name for p in pkg.iterdir())
    assert names == ["README.md", "config.json", "model.safetensors", "tokenizer.model", "tokens.txt"]
    assert (pkg / "model.safetensors").read_bytes()[8:9] == b"{"  # a safetensors JSON header, not a zip/pickle
    cfg = json.loads((pkg / "config.json").read_text())
    assert cfg["format"] == "mlma-package" and cfg["model_config"]["encoder"] == "conmamba"
    assert cfg["languages"] == ["de", "en"] and cfg["num_parameters"] > 0
    lines = (pkg / "tokens.txt").read_text().splitlines()
    assert lines[0] == "<blk> 0" and len(lines) == cfg["model_config"]["vocab_size"]


def test_package_reads_as_a_checkpoint(packed):
    """checkpoint.load_checkpoint puts the format header on what package/load.read_package returns."""
    from mlma_cli.checkpoint import FORMAT, VERSION, load_checkpoint

    _, pkg, _ = packed
    ckpt = load_checkpoint(pkg)
    assert (ckpt["format"], ckpt["version"], ckpt["package"]) == (FORMAT, VERSION, str(pkg))
    assert {"model_config", "model", "tokenizer"} <= set(ckpt)


def test_weights_give_identical_log_probs(packed):
    ckpt, pkg, _ = packed
    torch.manual_seed(0)
    x, lens = torch.randn(2, 120, 80), torch.tensor([120, 77])
    assert torch.equal(_log_probs(ckpt, x, lens), _log_probs(pkg, x, lens))


def test_model_card(packed):
    _, pkg, _ = packed
    card = (pkg / "README.md").read_text()
    front = card.split("---")[1]
    assert "license: apache-2.0" in front and "- de" in front and "library_name: mlma" in front
    assert "pipeline_tag: automatic-speech-recognition" in front and "- mamba" in front
    assert "| de | 12.50 [1] |" in card and "| en | 20.00 [2] |" in card and "[2] `ctc-prefix-beam-search-beam-4`" in card
    assert "mlma transcribe --checkpoint hf:someorg/mlma-test" in card and 'mlma.load("hf:someorg/mlma-test")' in card


def test_hf_spec_downloads_through_the_hub_client(packed, monkeypatch):
    import huggingface_hub

    _, pkg, _ = packed
    seen = {}

    def fake_snapshot_download(repo_id, revision=None, **kw):
        seen.update(repo=repo_id, revision=revision)
        return str(pkg)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    from mlma_cli.checkpoint import load_for_inference

    inf = load_for_inference(["hf:someorg/mlma-test@v1"])
    assert seen == {"repo": "someorg/mlma-test", "revision": "v1"} and inf.meta["package"] == str(pkg)


def test_hf_offline_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    from mlma_cli.checkpoint import load_for_inference

    with pytest.raises(MlmaError, match=r"hf:nobody/none: it could not be downloaded .* pass that directory"):
        load_for_inference(["hf:nobody/none"])
    with pytest.raises(MlmaError, match="not a Hub model spec"):
        load_for_inference(["hf:no-slash"])


def test_bad_packages(packed, tmp_path):
    import shutil

    from mlma_cli.checkpoint import load_for_inference
    from mlma_cli.package.pack import pack_model

    _, pkg, tmp = packed
    (tmp_path / "empty").mkdir()
    with pytest.raises(MlmaError, match="directory without model.safetensors"):
        load_for_inference([tmp_path / "empty"])
    bad_tok = tmp_path / "bad_tok"
    shutil.copytree(pkg, bad_tok)
    (bad_tok / "tokenizer.model").write_bytes(make_tokenizer_bytes(vocab_size=60))
    with pytest.raises(MlmaError, match="tokenizer does not belong to these weights"):
        load_for_inference([bad_tok])
    corrupt = tmp_path / "corrupt"
    shutil.copytree(pkg, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(MlmaError, match="corrupt or not a safetensors file"):
        load_for_inference([corrupt])
    arch = tmp_path / "arch"
    shutil.copytree(pkg, arch)
    cfg = json.loads((arch / "config.json").read_text())
    cfg["model_config"]["encoder"] = "transformer-xl"
    (arch / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MlmaError, match="unknown architecture encoder='transformer-xl'"):
        load_for_inference([arch])
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "notes.txt").write_text("mine")
    with pytest.raises(MlmaError, match="exists and is not a model package"):
        pack_model([pkg], tmp_path / "occupied")
    with pytest.raises(MlmaError, match="no running average"):
        load_for_inference([pkg], use_averaged=True)


def test_repack_and_average_packages(packed, tmp_path):
    """A package packs again (same weights), and two packages average like two checkpoints."""
    from mlma_cli.checkpoint import load_for_inference
    from mlma_cli.package.pack import pack_model

    ckpt, pkg, _ = packed
    again = pack_model([pkg], tmp_path / "again").out_dir
    a, b = load_for_inference([pkg]).model.state_dict(), load_for_inference([again]).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    avg = load_for_inference([pkg, again])
    assert avg.meta["averaged"] and torch.equal(avg.model.state_dict()["ctc_head.weight"], a["ctc_head.weight"])


def test_cli_takes_the_directory(packed, tmp_path):
    """The installed mlma: pack, then transcribe and lm graph with the package directory as --checkpoint."""
    import numpy as np
    import soundfile as sf

    ckpt, _, _ = packed
    env = {**os.environ, "COLUMNS": "200"}
    pkg = tmp_path / "cli_pkg"
    p = subprocess.run([str(MLMA), "pack", "-c", str(ckpt), "-o", str(pkg)], capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert (pkg / "model.safetensors").is_file() and "packed 1 checkpoint(s)" in p.stdout
    wav = tmp_path / "a.wav"
    sf.write(str(wav), (0.1 * np.random.default_rng(0).standard_normal(16000)).astype("float32"), 16000)
    t = subprocess.run([str(MLMA), "transcribe", "-c", str(pkg), str(wav), "--vad", "none"], capture_output=True,
                       text=True, env=env, timeout=300)
    assert t.returncode == 0, t.stderr
    assert t.stdout.startswith(f"{wav}\t")
    bad = subprocess.run([str(MLMA), "transcribe", "-c", str(tmp_path), str(wav)], capture_output=True, text=True,
                         env=env, timeout=300)
    lines = [l for l in bad.stderr.splitlines() if " INFO " not in l]
    assert bad.returncode == 1 and len(lines) == 1 and "directory without model.safetensors" in lines[0]
