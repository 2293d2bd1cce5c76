"""ONNX export: parity with PyTorch (fp32 and int8), one file for any length, the torch-free runtime, sherpa-onnx
running the export unchanged, and one-line errors for bad input.

Three small models are exported once per module: a briefly trained ConMamba (Mamba-1 mixer; its outputs are
peaked, so transcript equality with sherpa-onnx means something), and random-weight ConMamba-Mamba-2 and Conformer.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_transcribe import make_tokenizer_bytes  # noqa: E402
from train_helpers import make_config, write_subset  # noqa: E402

from mlma_cli.errors import MlmaError  # noqa: E402

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(d_model=32, num_layers=1, ffn_dim=64, subsampling_channels=(8, 8), conv_kernel=7, dropout=0.0)
RANDOM_MODELS = {
    "mamba2": dict(encoder="conmamba", mixer="mamba2", d_state=16, mamba2_headdim=16, **SMALL),
    "conformer": dict(encoder="conformer", num_heads=2, **SMALL),
    "conmamba_utterance_cmn": dict(encoder="conmamba", utterance_mean_norm=True, **SMALL),  # padded batches too
    "conmamba_subsampling2": dict(encoder="conmamba", subsampling_factor=2, **SMALL),       # 20 ms output frames
}


def _save_random_checkpoint(path: Path, fields: dict, seed: int = 0) -> Path:
    from mlma_cli.checkpoint import save_checkpoint
    from mlma_cli.data.tokenizer import Tokenizer
    from mlma_cli.model import ModelConfig, build_model

    tok_bytes = make_tokenizer_bytes()
    tok = Tokenizer.from_bytes(tok_bytes)
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=tok.vocab_size, **fields)
    model = build_model(cfg)
    model.set_cmvn(torch.randn(80), torch.rand(80) + 0.5)  # CMVN must travel inside the graph
    save_checkpoint(path, {
        "model_config": cfg.to_dict(), "model": model.state_dict(), "averaged_model": None, "num_averaged": 0,
        "tokenizer": tok_bytes, "tokenizer_lang_tags": tok.lang_tags, "train_config": {},
        "data_config": {"train": ["synthetic/de/train", "synthetic/en/train"]}, "optimizer": None,
        "scheduler": None, "sampler": None, "rng": None, "step": 0, "epoch": 0, "metrics": {"valid_loss": None},
    })
    return path


@pytest.fixture(scope="module")
def trained(tiny_data_dir, tmp_path_factory, one_torch_thread):
    """A ConMamba (Mamba-1) that has learnt 3 utterances by heart (~15 s), its cuts and its export (+ int8) made
    with the CLI from the checkpoint given twice (the averaging path of several --checkpoint)."""
    from types import SimpleNamespace

    from lhotse import CutSet

    from mlma_cli.cli.main import run
    from mlma_cli.train.loop import train

    tmp = tmp_path_factory.mktemp("export_trained")
    src = CutSet.from_file(tiny_data_dir.data_dir / "fbank/synthetic/de/train/cuts.jsonl.gz")
    cuts = sorted(src, key=lambda c: c.duration)[:3]
    write_subset(cuts, tmp / "data", "synthetic/de/train", repeat=8)
    cfg = make_config(tiny_data_dir, tmp / "exp",
                      model=dict(encoder="conmamba", d_model=48, num_layers=1, ffn_dim=96,
                                 subsampling_channels=[8, 8], conv_kernel=7, dropout=0.0),
                      data={"data_dir": str(tmp / "data"), "train": ["synthetic/de/train"], "spec_augment": None,
                            "max_duration": 3 * max(c.duration for c in cuts) + 0.1, "max_cut_duration": 4.0},
                      train={"lr": 5e-3, "warmup_steps": 8, "max_steps": 90, "log_every": 10, "weight_decay": 0.0})
    ckpt = train(cfg, resume=False).last_checkpoint
    out = tmp / "onnx"
    assert run(["export", "-c", str(ckpt), "-c", str(ckpt), "-o", str(out), "--int8"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["export"]["checkpoints"] == [str(ckpt)] * 2 and "mean of 2" in cfg["export"]["averaging"]
    res = SimpleNamespace(out_dir=out, model_path=out / "model.onnx", int8_path=out / "model.int8.onnx",
                          loop_nodes=cfg["export"]["loop_nodes"], data_dir=tmp / "data")
    return ckpt, cuts, res


@pytest.fixture(scope="module")
def random_exports(tmp_path_factory, one_torch_thread):
    from mlma_cli.export.onnx_export import export_checkpoint

    tmp = tmp_path_factory.mktemp("export_random")
    out = {}
    for name, fields in RANDOM_MODELS.items():
        ck = _save_random_checkpoint(tmp / f"{name}.pt", fields)
        out[name] = (ck, export_checkpoint([ck], tmp / name))
    return out


def _feats(lengths, seed=0):
    g = np.random.default_rng(seed)
    return [(g.standard_normal((n, 80)) * 2 - 5).astype(np.float32) for n in lengths]


def _check_parity(ckpt, export_dir, lengths, batch_size, int8=False, bound=1e-3):
    from mlma_cli.checkpoint import load_for_inference
    from mlma_cli.export.parity import compare
    from mlma_cli.export.runtime import OnnxCtcModel

    model = load_for_inference([ckpt]).model
    rep = compare(model, OnnxCtcModel(export_dir, int8=int8), _feats(lengths), batch_size)
    assert rep.max_abs_diff <= bound, (lengths, batch_size, rep.max_abs_diff)
    return rep


# lengths x batch sizes: padded batches (mixed lengths), an unpadded batch (equal lengths), single utterances
CASES = [((100, 57, 313, 9), 4), ((100, 57, 313, 9), 1), ((240, 240, 240), 3), ((5,), 1), ((1000, 17), 2)]


@pytest.mark.parametrize("lengths, batch_size", CASES)
def test_fp32_parity_trained_conmamba(trained, lengths, batch_size):
    ckpt, _, res = trained
    rep = _check_parity(ckpt, res.out_dir, lengths, batch_size)
    assert rep.identical == rep.n


def test_metadata_carries_the_subsampling_factor(random_exports):
    from mlma_cli.export.runtime import OnnxCtcModel

    assert OnnxCtcModel(random_exports["conformer"][1].out_dir).metadata["subsampling_factor"] == 4
    assert OnnxCtcModel(random_exports["conmamba_subsampling2"][1].out_dir).metadata["subsampling_factor"] == 2


@pytest.mark.parametrize("name", sorted(RANDOM_MODELS))
@pytest.mark.parametrize("lengths, batch_size", CASES[:3])
def test_fp32_parity_random_models(random_exports, name, lengths, batch_size):
    ckpt, res = random_exports[name]
    rep = _check_parity(ckpt, res.out_dir, lengths, batch_size)
    assert rep.identical == rep.n


def test_int8_runs_and_is_close(trained):
    ckpt, cuts, res = trained
    from mlma_cli.checkpoint import load_for_inference
    from mlma_cli.export.parity import compare
    from mlma_cli.export.runtime import OnnxCtcModel

    m8 = OnnxCtcModel(res.out_dir, int8=True)
    assert m8.metadata["is_int8"] and res.int8_path.stat().st_size < res.model_path.stat().st_size
    feats = [c.load_features() for c in cuts]
    rep = compare(load_for_inference([ckpt]).model, m8, feats, batch_size=3)
    # int8 moves low-probability entries most; the best path of a trained model stays put
    assert rep.max_abs_diff < 2.0 and rep.identical == rep.n, (rep.max_abs_diff, rep.identical)


def test_int8_keeps_the_mixer_step_projections_float(trained):
    """Only in_proj of a Mamba mixer is quantized: x_proj, dt_proj (both directions) and out_proj stay MatMul."""
    import onnx

    from mlma_cli.export.onnx_export import _float_mixer_nodes

    _, _, res = trained
    kept = _float_mixer_nodes(res.model_path)
    assert len(kept) == 3  # one layer: x_proj and dt_proj (both directions batched in one MatMul each), out_proj
    ops = {n.name: n.op_type for n in onnx.load(str(res.int8_path)).graph.node}
    assert all(ops.get(name) == "MatMul" for name in kept), {k: ops.get(k) for k in kept}
    assert any(op in ("MatMulInteger", "DynamicQuantizeMatMul") for op in ops.values())  # the rest is int8


def test_graph_has_a_scan_loop_and_one_file_serves_any_length(trained):
    import onnx

    from mlma_cli.export.onnx_export import count_loop_nodes
    from mlma_cli.export.runtime import OnnxCtcModel

    ckpt, _, res = trained
    proto = onnx.load(str(res.model_path))
    assert count_loop_nodes(proto.graph) == 1 == res.loop_nodes  # both directions of the one layer in one Scan
    assert "Scan" in {n.op_type for n in proto.graph.node}
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["model_type"] == "conmamba" and meta["mixer"] == "mamba1" and meta["subsampling_factor"] == "4"
    assert meta["languages"] == "de" and int(meta["vocab_size"]) == len((res.out_dir / "tokens.txt").read_text().splitlines())
    m = OnnxCtcModel(res.out_dir)
    for n in (100, 60000):  # 1 s and 10 min of audio through the same file
        lp, = m.log_probs(_feats([n]))
        assert lp.shape == ((n + 3) // 4, m.vocab_size) and np.isfinite(lp).all()
    _check_parity(ckpt, res.out_dir, [6000], 1)


def test_files_config_and_tokens(trained):
    from mlma_cli.data.tokenizer import Tokenizer
    from mlma_cli.export.tokens import read_tokens

    _, _, res = trained
    d = res.out_dir
    assert {p.name for p in d.iterdir()} >= {"model.onnx", "model.int8.onnx", "tokens.txt", "tokenizer.model",
                                             "config.json"}
    tok = Tokenizer.load(d / "tokenizer.model")
    assert read_tokens(d / "tokens.txt") == tok.pieces() and read_tokens(d / "tokens.txt")[0] == "<blk>"
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["model_config"]["encoder"] == "conmamba" and cfg["metadata"]["mlma_format"] == "mlma-ctc-onnx"


def test_export_leaves_the_training_scans_alone(trained):
    from mlma_cli.model import backends
    from mlma_cli.model.scan import selective_scan

    assert backends.FORCED == {}
    assert backends.selective_scan_for(torch.zeros(1), "torch") is selective_scan


def test_check_data_command(trained, capsys):
    """The reusable figures command on the fixture's data: parity, WERs and sherpa-onnx in one table."""
    ckpt, _, res = trained
    assert _cli(["export", "-c", str(ckpt), "-o", str(res.out_dir), "--skip-export", "--check-data",
                 str(res.data_dir), "--test-sets", "synthetic/de/train", "--max-utts", "3"]) == 0
    row, = json.loads((res.out_dir / "check.json").read_text())
    assert row["utts"] == 3 and row["max_abs_diff_fp32"] <= 1e-3 and row["identical_fp32_pct"] == 100
    assert row["wer_fp32"] == row["wer_torch"] and row["sherpa_equal_ids_pct"] == 100 and row["fbank_gap"] < 5e-3
    assert "synthetic/de/train" in capsys.readouterr().out


def test_runtime_imports_without_torch(trained):
    _, cuts, res = trained
    wav = cuts[0].recording.sources[0].source
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now fails
        from mlma_cli.data.audio import load_audio
        from mlma_cli.export.runtime import OnnxCtcModel, compute_fbank
        m = OnnxCtcModel({str(res.out_dir)!r})
        a, _ = load_audio({wav!r})
        print(m.transcribe([a])[0])
        print(m.log_probs([compute_fbank(a)])[0].shape[1] == m.vocab_size)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    text, ok = out.stdout.strip().splitlines()[-2:]
    assert ok == "True" and text


def test_knf_features_match_lhotse(trained):
    from mlma_cli.data.audio import load_audio
    from mlma_cli.data.features import fbank_extractor
    from mlma_cli.export.runtime import compute_fbank

    _, cuts, _ = trained
    a, sr = load_audio(cuts[0].recording.sources[0].source)
    ours, lhotse = compute_fbank(a, sr), fbank_extractor().extract(a, sr)
    assert ours.shape == lhotse.shape and np.abs(ours - lhotse).max() < 5e-3


def test_sherpa_onnx_gives_the_same_transcripts(trained):
    pytest.importorskip("sherpa_onnx")
    from mlma_cli.checkpoint import load_for_inference
    from mlma_cli.data.audio import load_audio
    from mlma_cli.data.features import fbank_extractor
    from mlma_cli.decode.greedy import ctc_greedy
    from mlma_cli.export.evaluate import sherpa_decode, sherpa_recognizer
    from mlma_cli.export.runtime import OnnxCtcModel, compute_fbank
    from mlma_cli.text.normalize import normalize

    ckpt, cuts, res = trained
    m = OnnxCtcModel(res.out_dir)
    inf = load_for_inference([ckpt])
    audio = [load_audio(c.recording.sources[0].source)[0] for c in cuts]
    texts, ids = sherpa_decode(sherpa_recognizer(res.out_dir), audio, m.tokens)
    assert ids == m.greedy([compute_fbank(a) for a in audio])         # same tokens as onnxruntime
    with torch.no_grad():                                               # and as PyTorch on lhotse's features
        for a, got in zip(audio, ids):
            x = torch.from_numpy(fbank_extractor().extract(a, 16000))[None]
            assert ctc_greedy(*inf.model(x, torch.tensor([x.shape[1]])))[0] == got
    refs = [normalize(c.supervisions[0].text, "de") for c in cuts]
    assert [normalize(t, "de") for t in texts] == [normalize(inf.tokenizer.decode(i), "de") for i in ids]
    from mlma_cli.score.wer import wer_details

    cer = wer_details(refs, [normalize(t, "de") for t in texts], unit="char").total.rate
    assert cer < 20, (cer, refs, texts)  # it did learn them: the equalities above are between real transcripts


# ----------------------------------------------------------------------------------------------- bad input
def _cli(args):
    from mlma_cli.cli.main import run

    return run(args)


def test_cli_export_and_errors(trained, tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    from mlma_cli.export.runtime import OnnxCtcModel

    ckpt, _, res = trained
    # unknown architecture
    bad = torch.load(ckpt, map_location="cpu", weights_only=False)
    bad["model_config"]["encoder"] = "transformer"
    torch.save(bad, tmp_path / "bad.pt")
    assert _cli(["export", "-c", str(tmp_path / "bad.pt"), "-o", str(tmp_path / "o1")]) == 1
    # a path without weights
    (tmp_path / "empty").mkdir()
    assert _cli(["export", "-c", str(tmp_path / "empty"), "-o", str(tmp_path / "o2")]) == 1
    assert _cli(["export", "-c", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "o3")]) == 1
    stderr = capsys.readouterr().err
    err = [line for line in stderr.splitlines() if line.startswith("mlma: error: ")]
    assert len(err) == 3 and "transformer" in err[0] and "Traceback" not in stderr, stderr
    assert _cli(["export", "-c", str(ckpt), "-o", str(tmp_path / "o4"), "--opset", "17"]) == 1
    assert "opset 18 or newer" in capsys.readouterr().err
    # an ONNX file from another tool
    graph = helper.make_graph([helper.make_node("Identity", ["a"], ["b"])], "g",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "other.onnx"))
    with pytest.raises(MlmaError, match="not an mlma export"):
        OnnxCtcModel(tmp_path / "other.onnx")
    # a tokenizer / tokens.txt of another vocabulary size
    d = tmp_path / "mismatch"
    shutil.copytree(res.out_dir, d)
    (d / "tokenizer.model").write_bytes(make_tokenizer_bytes(vocab_size=30))
    with pytest.raises(MlmaError, match="vocabulary"):
        OnnxCtcModel(d)
    (d / "tokens.txt").write_text("<blk> 0\n<unk> 1\n")
    with pytest.raises(MlmaError, match="tokens"):
        OnnxCtcModel(d)


def test_bench_export_rows_smoke(trained):
    """`mlma bench export` row machinery on the small export: onnxruntime and sherpa-onnx rows in subprocesses."""
    from mlma_cli.bench.export import _subprocess_row, format_table

    _, _, res = trained
    m = {"name": "small", "dir": str(res.out_dir), "params_m": 0.1}
    rows = [_subprocess_row(m, rt, 1, 1.0, 1, timeout=120) for rt in ("onnx-int8", "sherpa")]
    assert all(not r.error and r.rtf > 0 and r.peak_rss_mb > 10 for r in rows), rows
    assert format_table(rows).count("\n") == 3
