"""CTC alignments -> token and word times.

A token's frames are the frames its best CTC alignment assigns to it (non-blank); start = first frame,
end = last frame + 1, each times the encoder's frame duration (`frame_seconds(model)`: the fbank hop times the
subsampling factor that `model.output_lengths` implies, 40 ms for mlma's 4x front end). CTC posteriors are
peaky, so a token usually owns one or two frames: starts are reliable to about a frame, ends tend to be early.

    spans = ctc_forced_align(log_probs (T, V), ids)      # best (Viterbi) alignment of a known token sequence
    tokens = make_tokens(tokenizer, ids, spans, log_probs, offset, frame_s)
    words = group_words(tokenizer, tokens)                # `▁` starts a word; language tags are dropped
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from mlma_cli.decode.results import Token, Word, _mean

# no torch at import: the torch-free ONNX backend of `mlma.load` builds its tokens and words with this module

FBANK_SHIFT = 0.01  # seconds per fbank frame (data.features: 10 ms hop)
Span = Tuple[int, int]  # (first frame, last frame) of a token, inclusive


def frame_seconds(model, fbank_shift: float = FBANK_SHIFT) -> float:
    """Seconds per encoder output frame, from the model's own subsampling arithmetic."""
    import torch

    n = 100_000
    return fbank_shift * n / int(model.output_lengths(torch.tensor([n]))[0])


def _numpy(log_probs) -> np.ndarray:
    if hasattr(log_probs, "detach"):  # a torch.Tensor
        return log_probs.detach().cpu().float().numpy()
    return np.asarray(log_probs, dtype=np.float32)


def path_spans(path: Sequence[int], blank: int = 0) -> Tuple[List[int], List[Span]]:
    """A frame-level CTC path (T,) -> (token ids with repeats collapsed and blanks removed, their frame spans)."""
    ids: List[int] = []
    spans: List[Span] = []
    prev = blank
    for t, c in enumerate(int(x) for x in path):
        if c != blank:
            if c == prev:
                spans[-1] = (spans[-1][0], t)
            else:
                ids.append(c)
                spans.append((t, t))
        prev = c
    return ids, spans


def ctc_forced_align(log_probs, ids: Sequence[int], blank: int = 0) -> List[Span]:
    """Frame span of each token in the most probable CTC alignment of `ids`.

    Args:
        log_probs: (T, V) log-posteriors of one utterance.
        ids: the token sequence (no blanks) to align, e.g. a beam-search or WFST hypothesis.
    Returns:
        len(ids) (first, last) frame pairs. Raises ValueError when `ids` needs more frames than T.
    """
    lp = _numpy(log_probs)
    if lp.ndim != 2:
        raise ValueError(f"ctc_forced_align expects (T, V) log-probs, got shape {lp.shape}")
    ids = [int(i) for i in ids]
    if not ids:
        return []
    T = lp.shape[0]
    ext = np.full(2 * len(ids) + 1, blank, dtype=np.int64)  # blank y1 blank y2 ... blank
    ext[1::2] = ids
    S = len(ext)
    skip = np.zeros(S, dtype=bool)  # s may be entered from s - 2 (a token after a blank, unless a repeat)
    skip[3::2] = ext[3::2] != ext[1:-2:2]
    emit = lp[:, ext]  # (T, S)
    delta = np.full(S, -np.inf)
    delta[:2] = emit[0, :2]
    back = np.zeros((T, S), dtype=np.int8)
    for t in range(1, T):
        prev1 = np.concatenate(([-np.inf], delta[:-1]))
        prev2 = np.concatenate(([-np.inf, -np.inf], delta[:-2]))
        prev2[~skip] = -np.inf
        cand = np.stack([delta, prev1, prev2])  # stay, from s-1, from s-2
        back[t] = cand.argmax(axis=0)
        delta = cand.max(axis=0) + emit[t]
    s = S - 1 if S == 1 or delta[S - 1] >= delta[S - 2] else S - 2
    if not np.isfinite(delta[s]):
        raise ValueError(f"{len(ids)} tokens cannot be aligned to {T} frames")
    spans: List[Optional[List[int]]] = [None] * len(ids)
    for t in range(T - 1, -1, -1):
        if s % 2:
            k = s // 2
            if spans[k] is None:
                spans[k] = [t, t]
            spans[k][0] = t
        s -= int(back[t, s])
    return [(a, b) for a, b in spans]  # type: ignore[misc]


def make_tokens(tokenizer, ids: Sequence[int], spans: Sequence[Span], log_probs, offset: float,
                frame_s: float) -> List[Token]:
    """Tokens with times in seconds (`offset` = time of frame 0) and peak-posterior confidences.

    Language tags stay in (with their text `<xx>`): `group_words` drops them.
    """
    lp = _numpy(log_probs)
    out = []
    for i, (a, b) in zip(ids, spans):
        conf = float(np.exp(lp[a : b + 1, int(i)].max()))
        out.append(Token(int(i), tokenizer.id_to_piece(int(i)), offset + a * frame_s, offset + (b + 1) * frame_s, conf))
    return out


def group_words(tokenizer, tokens: Sequence[Token]) -> List[Word]:
    """Words from SentencePiece pieces: a piece starting with `▁` opens a word, others continue it.

    Language tags (and blank) are dropped; a word's text is the tokenizer's decoding of its pieces, its time
    spans its tokens, its confidence is the mean of its tokens'.
    """
    groups: List[List[Token]] = []
    for t in tokens:
        if t.id == 0 or tokenizer.lang_of([t.id]) is not None:
            continue
        if not groups or t.text.startswith("\u2581"):
            groups.append([t])
        else:
            groups[-1].append(t)
    words = []
    for g in groups:
        text = tokenizer.decode([t.id for t in g])
        if text:
            words.append(Word(text, g[0].start, g[-1].end, _mean(t.confidence for t in g), list(g)))
    return words
