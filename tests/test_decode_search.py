"""Greedy and prefix beam search: agreement on peaked posteriors, exactness against brute force."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from mlma_cli.decode.greedy import ctc_greedy
from mlma_cli.decode.prefix_beam import ctc_prefix_beam, ctc_prefix_beam_batch, ctc_prefix_beam_nbest


def _collapse(path, blank=0):
    out, prev = [], None
    for p in path:
        if p != prev and p != blank:
            out.append(p)
        prev = p
    return tuple(out)


def _exhaustive(lp: torch.Tensor):
    """Exact log P(labelling) for every labelling, by enumerating all V^T frame paths."""
    T, V = lp.shape
    probs = {}
    for path in itertools.product(range(V), repeat=T):
        score = sum(float(lp[t, s]) for t, s in enumerate(path))
        key = _collapse(path)
        probs[key] = probs.get(key, 0.0) + math.exp(score)
    return {k: math.log(v) for k, v in probs.items()}


def test_greedy_collapses_and_drops_blanks():
    # frames: a a _ a b b _  -> a a b
    ids = [1, 1, 0, 1, 2, 2, 0]
    lp = torch.full((1, len(ids) + 2, 3), -10.0)
    for t, i in enumerate(ids):
        lp[0, t, i] = 0.0
    lp[0, len(ids):, 2] = 0.0  # padding beyond lens must be ignored
    assert ctc_greedy(lp, torch.tensor([len(ids)])) == [[1, 1, 2]]


def test_greedy_and_beam_agree_on_peaked_posteriors():
    g = torch.Generator().manual_seed(0)
    B, T, V = 4, 30, 12
    ids = torch.randint(0, V, (B, T), generator=g)
    lp = torch.randn(B, T, V, generator=g) * 0.5
    lp.scatter_(2, ids.unsqueeze(-1), 12.0)  # one very likely token per frame
    lp = lp.log_softmax(-1)
    lens = torch.tensor([30, 25, 17, 1])
    greedy = ctc_greedy(lp, lens)
    beam = ctc_prefix_beam_batch(lp, lens, beam=4)
    assert greedy == beam
    assert any(len(h) > 3 for h in greedy)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_prefix_beam_matches_exhaustive_search(seed):
    g = torch.Generator().manual_seed(seed)
    T, V = 5, 3
    lp = (torch.randn(T, V, generator=g) * 1.5).log_softmax(-1)
    exact = _exhaustive(lp)
    best = max(exact, key=exact.get)
    # an unlimited beam keeps every prefix, so its scores are the exact prefix probabilities
    nbest = ctc_prefix_beam_nbest(lp, beam=10_000, token_beam=0)
    assert len(nbest) == len(exact)
    for prefix, score in nbest:
        assert score == pytest.approx(exact[prefix], abs=1e-6)
    assert ctc_prefix_beam(lp, beam=10_000, token_beam=0) == list(best)
    # a moderate beam still finds the best labelling on this tiny problem
    assert ctc_prefix_beam(lp, beam=8) == list(best)
    # total probability over all labellings is 1
    assert math.fsum(math.exp(v) for v in exact.values()) == pytest.approx(1.0, abs=1e-6)


def test_prefix_beam_beats_greedy_when_alignments_sum():
    # Greedy picks blank at every frame (p=0.4 each) -> empty output, but "a" collects more mass:
    # P(empty) = 0.4^3 = 0.064; P("a") sums 7 paths, far more.
    p = torch.tensor([[0.4, 0.35, 0.25]] * 3).log()
    assert ctc_greedy(p.unsqueeze(0), torch.tensor([3])) == [[]]
    assert ctc_prefix_beam(p, beam=4) == [1]


def test_prefix_beam_rejects_bad_input():
    with pytest.raises(ValueError):
        ctc_prefix_beam(torch.zeros(2, 3, 4), beam=2)
    with pytest.raises(ValueError):
        ctc_prefix_beam(torch.zeros(3, 4), beam=0)
