"""CTC prefix beam search (no LM): keeps the `beam` most probable label prefixes, summing over alignments.

Each prefix carries two log-probabilities: paths ending in blank (p_b) and ending in its last label (p_nb),
so the score of a prefix is the exact total probability of all its alignments seen so far (up to pruning).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from mlma_cli.decode.timestamps import ctc_forced_align

NEG_INF = -math.inf


def _logadd(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


def ctc_prefix_beam_nbest(
    log_probs, beam: int = 4, blank: int = 0, token_beam: Optional[int] = None
) -> List[Tuple[Tuple[int, ...], float]]:
    """Prefix beam search returning the surviving prefixes with their total log-probabilities.

    Args:
        log_probs: (T, V) log-posteriors of one utterance (torch tensor or numpy array).
        beam: number of prefixes kept after each frame (>= 1).
        blank: blank token id.
        token_beam: per frame only the `token_beam` best non-blank tokens are expanded
            (None: `beam` tokens; 0 or negative: all tokens, exact for an unlimited beam).
    Returns:
        List of (prefix token ids, log P(prefix | x)), best first.
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    lp = log_probs.detach().cpu().float().numpy() if isinstance(log_probs, torch.Tensor) else np.asarray(log_probs)
    if lp.ndim != 2:
        raise ValueError(f"ctc_prefix_beam expects (T, V) log-probs, got shape {lp.shape}")
    T, V = lp.shape
    if token_beam is None:
        token_beam = beam
    # prefix -> [log p ending in blank, log p ending in last label]
    beams: Dict[Tuple[int, ...], List[float]] = {(): [0.0, NEG_INF]}
    for t in range(T):
        frame = lp[t]
        if token_beam is not None and 0 < token_beam < V - 1:
            cand = np.argpartition(-frame, token_beam)[: token_beam + 1]
            tokens = [int(c) for c in cand if c != blank][:token_beam]
        else:
            tokens = [c for c in range(V) if c != blank]
        p_blank = float(frame[blank])
        nxt: Dict[Tuple[int, ...], List[float]] = {}

        def get(prefix: Tuple[int, ...]) -> List[float]:
            entry = nxt.get(prefix)
            if entry is None:
                entry = [NEG_INF, NEG_INF]
                nxt[prefix] = entry
            return entry

        for prefix, (pb, pnb) in beams.items():
            total = _logadd(pb, pnb)
            # blank: prefix unchanged, now ends in blank
            e = get(prefix)
            e[0] = _logadd(e[0], total + p_blank)
            last = prefix[-1] if prefix else None
            for c in tokens:
                pc = float(frame[c])
                if c == last:
                    # repeat without blank in between collapses onto the same prefix
                    e[1] = _logadd(e[1], pnb + pc)
                    # a new copy of c needs a blank before it
                    ext = get(prefix + (c,))
                    ext[1] = _logadd(ext[1], pb + pc)
                else:
                    ext = get(prefix + (c,))
                    ext[1] = _logadd(ext[1], total + pc)
        ranked = sorted(((k, v) for k, v in nxt.items() if v[0] > NEG_INF or v[1] > NEG_INF), key=lambda kv: _logadd(kv[1][0], kv[1][1]), reverse=True)
        beams = dict(ranked[:beam])
    result = [(prefix, _logadd(pb, pnb)) for prefix, (pb, pnb) in beams.items()]
    result.sort(key=lambda x: x[1], reverse=True)
    return result


def ctc_prefix_beam(log_probs, beam: int = 4, blank: int = 0, token_beam: Optional[int] = None) -> List[int]:
    """Best label sequence of one utterance. log_probs: (T, V). Returns token ids (no blanks)."""
    return list(ctc_prefix_beam_nbest(log_probs, beam=beam, blank=blank, token_beam=token_beam)[0][0])


def ctc_prefix_beam_batch(
    log_probs: torch.Tensor, lens: Sequence[int], beam: int = 4, blank: int = 0
) -> List[List[int]]:
    """Batched wrapper. log_probs: (B, T, V); lens: (B,). Returns B token id lists."""
    if log_probs.dim() != 3:
        raise ValueError(f"expected (B, T, V) log-probs, got shape {tuple(log_probs.shape)}")
    lp = log_probs.detach().cpu().float()
    lens = torch.as_tensor(lens).cpu().tolist()
    return [ctc_prefix_beam(lp[b, : int(n)], beam=beam, blank=blank) for b, n in enumerate(lens)]


def ctc_prefix_beam_aligned(log_probs, beam: int = 4, blank: int = 0, token_beam: Optional[int] = None):
    """`ctc_prefix_beam` plus the frames of each token: (token ids, [(first, last)] inclusive).

    The prefix score sums over alignments, so no single path is kept during the search; the frames are those
    of the best (Viterbi) alignment of the winning prefix, computed after it (`timestamps.ctc_forced_align`).
    """
    ids = ctc_prefix_beam(log_probs, beam=beam, blank=blank, token_beam=token_beam)
    return ids, ctc_forced_align(log_probs, ids, blank=blank)
