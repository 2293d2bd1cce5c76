"""Model config, named sizes / parameter counts, and a short CPU overfit."""
import pytest
import torch
import torch.nn.functional as F

from mlma_cli.model import CTCModel, ModelConfig, build_model, named_config
from mlma_cli.model.config import NAMED_SIZES


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _count(cfg):
    with torch.device("meta"):
        return sum(p.numel() for p in build_model(cfg).parameters())


@pytest.mark.parametrize("name,expected", [("conmamba-paper", 31.6e6), ("conformer-paper", 28.8e6)])
def test_model_paper_sizes_match_reference(name, expected):
    # the ConMamba CTC recipe: 31 characters, 18 x 256, FFN 1024 -> ~31.6 M / ~28.8 M parameters
    assert abs(_count(named_config(name, vocab_size=31)) - expected) / expected < 0.01


def test_model_named_sizes_build_and_count():
    counts = {name: _count(named_config(name, vocab_size=31)) for name in NAMED_SIZES}
    assert counts["conmamba-paper"] == 31_555_519          # counted by hand in docs: fixed architecture
    assert counts["conformer-paper"] == 28_799_935
    for size in ("tiny", "small", "paper"):  # twins of similar size, ConMamba a little larger
        ratio = counts[f"conmamba-{size}"] / counts[f"conformer-{size}"]
        assert 1.0 < ratio < 1.2
    assert counts["conmamba-tiny"] < 2e6


def test_model_config_round_trip():
    cfg = named_config("conmamba-tiny", vocab_size=77, mixer="mamba2", mamba2_headdim=48)
    again = ModelConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.dt_rank == 6 and again.subsampling_channels == (64, 32)
    import json
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("bad", [
    dict(encoder="transformer"), dict(mixer="mamba3"), dict(scan_backend="gpu"), dict(d_model=0),
    dict(conv_kernel=30), dict(encoder="conformer", d_model=30, num_heads=4), dict(dropout=1.0),
    dict(mixer="mamba2", mamba2_headdim=100), dict(dt_min=0.2, dt_max=0.1), dict(vocab_size=1),
    dict(subsampling_channels=(8,)),
])
def test_model_invalid_config_rejected(bad):
    with pytest.raises(ValueError, match="invalid model config"):
        named_config("conmamba-tiny", **bad)


def test_model_set_scan_backend_switches_every_mixer():
    with torch.device("meta"):
        model = build_model(named_config("conmamba-tiny", vocab_size=31))
    model.set_scan_backend("torch")
    mixers = [m for m in model.modules() if hasattr(m, "scan_backend")]
    assert mixers and {m.scan_backend for m in mixers} == {"torch"} and model.config.scan_backend == "torch"
    with pytest.raises(ValueError, match="expected one of auto, torch, cuda"):
        model.set_scan_backend("gpu")


def test_model_unknown_keys_and_sizes_rejected():
    with pytest.raises(ValueError, match="unknown keys"):
        ModelConfig.from_dict({"d_model": 64, "hidden": 3})
    with pytest.raises(ValueError, match="unknown model size"):
        named_config("conmamba-huge")


def test_model_xavier_option_overwrites_mamba_init():
    cfg = dict(vocab_size=11, d_model=32, num_layers=1, ffn_dim=64, subsampling_channels=(8, 4))
    keep = build_model(named_config("conmamba-tiny", **cfg))
    assert torch.allclose(keep.encoder.layers[0].mixer.A_log[0], torch.log(torch.arange(1, 17.0)))
    xav = build_model(named_config("conmamba-tiny", xavier_init=True, **cfg))
    assert not torch.allclose(xav.encoder.layers[0].mixer.A_log[0], torch.log(torch.arange(1, 17.0)))


def test_model_xavier_option_leaves_front_end_convs_norms_and_head_alone():
    """The reference re-initialises its encoder (and the Linear into it) only: same RNG stream, so the parts
    outside keep exactly the default init and the parts inside change."""
    cfg = dict(vocab_size=11, d_model=32, num_layers=1, ffn_dim=64, subsampling_channels=(8, 4))
    torch.manual_seed(0)
    keep = build_model(named_config("conmamba-tiny", **cfg)).state_dict()
    torch.manual_seed(0)
    xav = build_model(named_config("conmamba-tiny", xavier_init=True, **cfg)).state_dict()
    for name in ("encoder.frontend.block1.conv.weight", "encoder.frontend.block2.norm.weight", "ctc_head.weight",
                 "encoder.final_norm.weight"):
        torch.testing.assert_close(xav[name], keep[name], msg=name)
    for name in ("encoder.frontend.out.weight", "encoder.layers.0.ffn1.net.1.weight", "encoder.layers.0.mixer.in_proj.weight"):
        if name in keep:
            assert not torch.allclose(xav[name], keep[name]), name


def test_frontend_dropout_applies_to_the_conv_blocks_only():
    """frontend_dropout sets the two conv blocks' dropout; the one after the front end's Linear and the encoder's
    keep ``dropout``; None (old checkpoints) means ``dropout`` everywhere; out of [0, 1) is an early error."""
    cfg = dict(vocab_size=11, d_model=32, num_layers=1, ffn_dim=64, subsampling_channels=(8, 4), dropout=0.2)
    fe = build_model(named_config("conmamba-tiny", frontend_dropout=0.0, **cfg)).encoder.frontend
    assert (fe.block1.dropout.p, fe.block2.dropout.p, fe.dropout.p) == (0.0, 0.0, 0.2)
    fe = build_model(named_config("conmamba-tiny", **cfg)).encoder.frontend
    assert (fe.block1.dropout.p, fe.block2.dropout.p, fe.dropout.p) == (0.2, 0.2, 0.2)
    with pytest.raises(ValueError, match="frontend_dropout"):
        named_config("conmamba-tiny", frontend_dropout=1.0, **cfg)


@pytest.mark.parametrize("encoder", ["conmamba", "conformer"])
def test_subsampling_factor_2_keeps_the_frame_rate_of_the_first_block(encoder):
    """subsampling_factor 2: ceil(T/2) output frames of 20 ms (timestamps follow), padding-invariant like factor 4."""
    from mlma_cli.decode.timestamps import frame_seconds

    cfg = dict(vocab_size=11, d_model=32, num_layers=1, ffn_dim=64, subsampling_channels=(8, 4), num_heads=4)
    torch.manual_seed(0)
    model = build_model(named_config(f"{encoder}-tiny", subsampling_factor=2, **cfg)).eval()
    lens = torch.tensor([101, 57, 8])
    assert model.output_lengths(lens).tolist() == [51, 29, 4]
    assert frame_seconds(model) == pytest.approx(0.02)
    assert frame_seconds(build_model(named_config(f"{encoder}-tiny", **cfg))) == pytest.approx(0.04)
    x = torch.randn(3, 101, 80)
    with torch.no_grad():
        batch, out_lens = model(x, lens)
        alone, _ = model(x[1:2, :57], lens[1:2])
    assert out_lens.tolist() == [51, 29, 4] and batch.shape[1] == 51
    torch.testing.assert_close(batch[1, :29], alone[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="subsampling_factor"):
        named_config(f"{encoder}-tiny", subsampling_factor=3, **cfg)


@pytest.mark.parametrize("encoder", ["conmamba", "conformer"])
def test_model_utterance_mean_norm_ignores_gain_and_padding(encoder):
    """With utterance_mean_norm a recording's gain (a constant added to log-mel features) changes nothing, and an
    utterance padded into a batch with a longer one gives what it gives alone; without it the gain matters."""
    cfg = dict(vocab_size=11, d_model=32, num_layers=1, ffn_dim=64, subsampling_channels=(8, 4), num_heads=4)
    torch.manual_seed(0)
    model = build_model(named_config(f"{encoder}-tiny", utterance_mean_norm=True, **cfg)).eval()
    plain = build_model(named_config(f"{encoder}-tiny", **cfg)).eval()
    feats, lens = torch.randn(2, 90, 80), torch.tensor([90, 61])
    quiet = feats - 4.0                                                  # about -35 dB in natural-log mel energy
    with torch.no_grad():
        out, out_lens = model(feats, lens)
        torch.testing.assert_close(model(quiet, lens)[0], out, atol=1e-4, rtol=0)
        alone, alone_len = model(feats[1:, :61], lens[1:])
        torch.testing.assert_close(alone[0], out[1, :int(alone_len)], atol=1e-5, rtol=0)
        assert not torch.allclose(plain(quiet, lens)[0], plain(feats, lens)[0], atol=1e-2)
    assert "utterance_mean_norm" in ModelConfig.__dataclass_fields__ and model.config.to_dict()["utterance_mean_norm"]


@pytest.mark.parametrize("encoder", ["conmamba", "conformer"])
def test_model_overfits_a_few_utterances(encoder):
    """A short CPU overfit on random features: the CTC loss falls by a set factor."""
    torch.manual_seed(0)
    model = build_model(named_config(f"{encoder}-tiny", vocab_size=8, num_layers=2, d_model=64, ffn_dim=128,
                                     dropout=0.0))
    assert isinstance(model, CTCModel)
    feats, lens = torch.randn(3, 64, 80), torch.tensor([64, 56, 48])
    targets, target_lens = torch.randint(1, 8, (3, 6)), torch.tensor([6, 5, 4])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        log_probs, out_lens = model(feats, lens)
        loss = F.ctc_loss(log_probs.transpose(0, 1), targets, out_lens, target_lens)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 4, losses


def _cli():
    import typer

    from mlma_cli.cli import model_cmds

    app = typer.Typer()
    model_cmds.register(app)
    return app


def test_model_info_named_yaml_and_checkpoint(tmp_path):
    from typer.testing import CliRunner

    from mlma_cli.errors import MlmaError

    runner = CliRunner()
    res = runner.invoke(_cli(), ["model-info", "conmamba-paper", "--vocab-size", "31",
                                 "--output", str(tmp_path / "info.json")])
    assert res.exit_code == 0, res.output
    assert "31,555,519" in res.output and "mixer: backward direction" in res.output
    import json
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["total"] == 31_555_519 and info["config"]["d_model"] == 256
    assert "cpu_selective_scan" in res.output and info["backends"]["cpu_selective_scan"].startswith(
        ("compiled C kernel (built with", "pure-PyTorch"))

    cfg = dict(encoder="conformer", d_model=64, num_layers=2, ffn_dim=128, vocab_size=31)
    (tmp_path / "m.yaml").write_text("model:\n" + "".join(f"  {k}: {v}\n" for k, v in cfg.items()))
    res = runner.invoke(_cli(), ["model-info", str(tmp_path / "m.yaml")])
    assert res.exit_code == 0, res.output
    assert "rel-pos self-attention" in res.output

    from mlma_cli import checkpoint

    ckpt = {"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "model_config": ModelConfig(**cfg).to_dict(),
            "model": {}, "tokenizer": b"sp"}
    torch.save(ckpt, tmp_path / "c.pt")
    res = runner.invoke(_cli(), ["model-info", str(tmp_path / "c.pt")])
    assert res.exit_code == 0, res.output
    total = sum(p.numel() for p in build_model(ModelConfig(**cfg)).parameters())
    assert f"{total:,}" in res.output

    res = runner.invoke(_cli(), ["model-info", str(tmp_path / "missing.yaml")])
    assert isinstance(res.exception, MlmaError)
