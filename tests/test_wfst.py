"""WFST graphs (kaldifst + kaldilm) and kaldi-decoder decoding on hand-built log-probs; the n-gram trainer."""
from __future__ import annotations

import numpy as np
import pytest

from mlma_cli.decode.lm import arpa_text, train_ngram, write_arpa
from mlma_cli.decode.wfst import KaldiWfstDecoder, build_graph, lexicon_with_disambig, load_graph

pytest.importorskip("kaldifst")
pytest.importorskip("kaldi_decoder")
pytest.importorskip("kaldilm")

LETTERS = {"a": 1, "b": 2, "c": 3, "d": 4}  # token ids; 0 is blank
V = 5


def spell(word):
    return [LETTERS[ch] for ch in word]


def frames(spec, vocab=V, floor=1e-3):
    """spec: list of {token: prob} per frame -> (T, V) log-probs, the rest of the mass spread evenly."""
    lp = np.zeros((len(spec), vocab), dtype=np.float32)
    for t, probs in enumerate(spec):
        rest = (1.0 - sum(probs.values())) / (vocab - len(probs))
        row = np.full(vocab, max(rest, floor))
        for k, p in probs.items():
            row[k] = p
        lp[t] = np.log(row / row.sum())
    return lp


def graph_for(tmp_path, sentences, name="g", topo="standard"):
    arpa = tmp_path / f"{name}.arpa"
    write_arpa(sentences, arpa, order=2)
    return build_graph(arpa, spell, V, out_dir=tmp_path / name, topo=topo)


@pytest.fixture(params=["standard", "compact"])
def topo(request):
    return request.param


def test_disambiguation_of_prefixes_and_homophones():
    lex = {"a": [1], "ab": [1, 2], "x": [3], "y": [3], "z": [4]}
    out, k = lexicon_with_disambig(lex)
    assert out["a"] == [1] and out["ab"] == [] and sorted([out["x"], out["y"]]) == [[1], [2]] and out["z"] == []
    assert k == 2


def test_wfst_decodes_expected_words(tmp_path, topo):
    g = graph_for(tmp_path, ["ab cd", "cd ab", "a cd", "ad"], topo=topo)
    # "ab" "cd" with blanks and repeated frames:  a a b _ c d d
    lp = frames([{1: 0.9}, {1: 0.9}, {2: 0.9}, {0: 0.9}, {3: 0.9}, {4: 0.9}, {4: 0.9}])
    res = KaldiWfstDecoder(g, beam=16.0).decode(lp)
    assert res.words == ["ab", "cd"]
    assert res.tokens == [1, 2, 3, 4]
    # the prefix word "a" alone (needs its disambiguation symbol in L)
    res = KaldiWfstDecoder(g).decode(frames([{1: 0.9}, {0: 0.9}, {3: 0.9}, {4: 0.9}]))
    assert res.words == ["a", "cd"]
    # graph files round-trip
    g2 = load_graph(tmp_path / "g")
    assert KaldiWfstDecoder(g2).decode(lp).words == ["ab", "cd"]


def test_wfst_prefers_lm_likely_word_over_acoustically_equal_one(tmp_path, topo):
    # second token is b or d with equal probability: "ab" vs "ad" is decided by the LM alone
    lp = frames([{1: 0.9}, {2: 0.45, 4: 0.45}, {0: 0.9}])
    g_ab = graph_for(tmp_path, ["ab"] * 9 + ["ad"], "ab", topo)
    g_ad = graph_for(tmp_path, ["ad"] * 9 + ["ab"], "ad", topo)
    assert KaldiWfstDecoder(g_ab).decode(lp).words == ["ab"]
    assert KaldiWfstDecoder(g_ad).decode(lp).words == ["ad"]
    # with a strong acoustic preference the acoustics win over the LM (lm_scale small)
    lp2 = frames([{1: 0.9}, {2: 0.2, 4: 0.75}, {0: 0.9}])
    assert KaldiWfstDecoder(g_ab, lm_scale=0.05).decode(lp2).words == ["ad"]


def test_ctc_topologies_sizes_and_repeat_rule(tmp_path):
    from mlma_cli.decode.wfst import ctc_topo, fst_arcs

    for vocab in (2, 5, 40):
        std, _ = fst_arcs(ctc_topo(vocab, "standard"))
        compact, finals = fst_arcs(ctc_topo(vocab, "compact"))
        assert len(std) == vocab * vocab and len(compact) == 1 + 3 * (vocab - 1) and len(finals) == vocab
    with pytest.raises(ValueError, match="topo"):
        ctc_topo(5, "minimal")
    # two frames of "a" without a blank: CTC collapses them to one "a"; the compact topology may also read
    # them as "a a", so a lexicon with only the word "aa" is reachable there and not in the standard graph
    lp = frames([{1: 0.9}, {1: 0.9}])
    assert KaldiWfstDecoder(graph_for(tmp_path, ["aa"], "c", "compact")).decode(lp).words == ["aa"]
    assert KaldiWfstDecoder(graph_for(tmp_path, ["aa"], "s", "standard")).decode(lp).words != ["aa"]
    assert load_graph(tmp_path / "c").meta["ctc_topo"] == "compact"


def test_wfst_rejects_wrong_vocab(tmp_path):
    from mlma_cli.errors import MlmaError

    g = graph_for(tmp_path, ["ab"])
    with pytest.raises(MlmaError, match="vocab size 5"):
        KaldiWfstDecoder(g).decode(np.zeros((3, 7), dtype=np.float32))


def _prob(model, hist, w):
    """P(w | hist) in the back-off form of an ARPA model (base 10 exponents)."""
    order = max(model)
    hist = tuple(hist)[-(order - 1):] if order > 1 else ()
    bow = 0.0
    while True:
        g = hist + (w,)
        if g in model[len(g)]:
            return 10 ** (model[len(g)][g][0] + bow)
        if hist in model.get(len(hist), {}):
            bow += model[len(hist)][hist][1]
        hist = hist[1:]


@pytest.mark.parametrize("order", [1, 2, 3])
def test_ngram_distributions_sum_to_one(order):
    sents = ["the cat sat", "the dog sat", "a cat ran", "the cat ran away", "dog"]
    model = train_ngram(sents, order=order)
    vocab = [g[0] for g in model[1] if g[0] != "<s>"]
    for hist in [("<s>",), ("the",), ("the", "cat"), ("cat", "sat"), ("zebra",)]:
        total = sum(_prob(model, hist, w) for w in vocab)
        assert total == pytest.approx(1.0, abs=1e-4), hist
    text = arpa_text(model)
    assert f"ngram {order}=" in text and text.strip().endswith("\\end\\")


def test_per_language_graph_directory(tmp_path):
    from mlma_cli.decode.wfst import graph_for_lang

    (tmp_path / "de").mkdir()
    (tmp_path / "de" / "HLG.fst").write_bytes(b"x")
    assert graph_for_lang(tmp_path, "de") == tmp_path / "de"
    assert graph_for_lang(tmp_path, "en") == tmp_path
