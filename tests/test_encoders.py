"""Encoders and CTC model: padding invariance (eval mode), masking, output lengths, relative-position attention."""
import pytest
import torch

from mlma_cli.model import build_model, named_config
from mlma_cli.model.attention import rel_shift


pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = dict(vocab_size=11, d_model=32, num_layers=2, ffn_dim=64, num_heads=4, subsampling_channels=(8, 4))
CASES = {
    "conmamba": dict(encoder="conmamba"),
    "conformer": dict(encoder="conformer"),
    "conmamba-mamba2": dict(encoder="conmamba", mixer="mamba2", d_state=8, mamba2_headdim=16,
                            mamba2_chunk_size=8),
}


def _model(case):
    torch.manual_seed(0)
    model = build_model(named_config("conmamba-tiny", **{**SMALL, **CASES[case]})).eval()
    model.set_cmvn(torch.randn(80), torch.rand(80) + 0.5)
    return model


@pytest.mark.parametrize("case", sorted(CASES))
def test_encoder_padding_invariance(case):
    """Each utterance's output alone equals its output inside a padded batch with longer utterances."""
    model = _model(case)
    lens = torch.tensor([157, 120, 61, 37, 5])       # odd/even lengths hit both ends of each stride-2 conv
    feats = torch.randn(len(lens), 157, 80) * 3 + 1    # the padding holds junk, not zeros
    with torch.no_grad():
        log_probs, out_lens = model(feats, lens)
        assert out_lens.tolist() == model.output_lengths(lens).tolist() == [40, 30, 16, 10, 2]
        assert log_probs.shape == (5, 40, 11)
        for i, n in enumerate(lens.tolist()):
            alone, alone_len = model(feats[i:i + 1, :n], lens[i:i + 1])
            assert alone_len.item() == out_lens[i].item() == alone.shape[1]
            assert torch.allclose(alone[0], log_probs[i, :alone_len.item()], atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_encoder_padding_gets_no_gradient(case):
    model = _model(case)
    feats = torch.randn(2, 64, 80, requires_grad=True)
    lens = torch.tensor([64, 30])
    log_probs, out_lens = model(feats, lens)
    log_probs[1, :out_lens[1]].sum().backward()
    assert feats.grad[1, 30:].abs().max() == 0 and feats.grad[0].abs().max() == 0
    assert feats.grad[1, :30].abs().max() > 0


def test_output_lengths_arithmetic():
    model = _model("conformer")
    lens = torch.tensor([1, 2, 3, 4, 5, 8, 9, 100, 101])
    assert model.output_lengths(lens).tolist() == [1, 1, 1, 1, 2, 2, 3, 25, 26]


def test_rel_shift_matches_explicit_indexing():
    t = 6
    x = torch.randn(2, 3, t, 2 * t - 1)
    i = torch.arange(t)[:, None]
    j = torch.arange(t)[None, :]
    expected = x[..., i, t - 1 - i + j]
    assert torch.equal(rel_shift(x), expected)


def test_cmvn_is_applied_and_saved():
    model = _model("conmamba")
    mean, std = torch.randn(80), torch.rand(80) + 0.5
    model.set_cmvn(mean, std)
    feats = torch.randn(1, 40, 80)
    lens = torch.tensor([40])
    with torch.no_grad():
        a, _ = model(feats, lens)
        model.set_cmvn(torch.zeros(80), torch.ones(80))
        b, _ = model((feats - mean) / std, lens)
    assert torch.allclose(a, b, atol=1e-5)
    assert {"cmvn_mean", "cmvn_std"} <= set(model.state_dict())
    with pytest.raises(ValueError):
        model.set_cmvn(torch.zeros(40), torch.ones(40))
