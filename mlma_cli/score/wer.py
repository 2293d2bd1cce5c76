"""Edit-distance alignment and error counts (WER / CER), our own Levenshtein with a backtrace.

Ties in the backtrace (walked from the end) prefer insertion over deletion over match/substitution, which
splits the errors exactly like kaldialign does; the total number of errors is the Levenshtein distance either way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

EPS = "*"  # placeholder for a missing word in an alignment (icefall uses "*")


@dataclass
class ErrorCounts:
    """Corpus (or utterance) error counts. `ref_len` = number of reference tokens (words or chars)."""

    ref_len: int = 0
    hyp_len: int = 0
    corr: int = 0
    sub: int = 0
    dels: int = 0
    ins: int = 0
    sents: int = 0
    sent_errs: int = 0

    @property
    def errors(self) -> int:
        return self.sub + self.dels + self.ins

    @property
    def rate(self) -> float:
        """Error rate in percent (100 * errors / ref_len); errors * 100 when the reference is empty."""
        return 100.0 * self.errors / max(self.ref_len, 1)

    def __iadd__(self, other: "ErrorCounts") -> "ErrorCounts":
        for k in ("ref_len", "hyp_len", "corr", "sub", "dels", "ins", "sents", "sent_errs"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        return self

    def to_dict(self) -> dict:
        return {
            "rate": round(self.rate, 4), "ref_len": self.ref_len, "hyp_len": self.hyp_len, "corr": self.corr,
            "sub": self.sub, "del": self.dels, "ins": self.ins, "errors": self.errors,
            "sents": self.sents, "sent_errs": self.sent_errs,
        }


def align(ref: Sequence[str], hyp: Sequence[str], eps: str = EPS) -> List[Tuple[str, str]]:
    """Minimum-edit-distance alignment.

    Args:
        ref: reference tokens (N,); hyp: hypothesis tokens (M,).
    Returns:
        list of (ref_token | eps, hyp_token | eps) pairs in order; length between max(N, M) and N + M.
    """
    n, m = len(ref), len(hyp)
    # cost[i][j] = edit distance between ref[:i] and hyp[:j]
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        cost[i][0] = i
    for j in range(1, m + 1):
        cost[0][j] = j
    for i in range(1, n + 1):
        ri = ref[i - 1]
        row, prev = cost[i], cost[i - 1]
        for j in range(1, m + 1):
            diag = prev[j - 1] + (0 if ri == hyp[j - 1] else 1)
            dele = prev[j] + 1
            ins = row[j - 1] + 1
            row[j] = min(diag, dele, ins)
    out: List[Tuple[str, str]] = []
    i, j = n, m
    while i > 0 or j > 0:
        # backtrace preference insertion > deletion > match/substitution: the same split as kaldialign
        if j > 0 and cost[i][j] == cost[i][j - 1] + 1:
            out.append((eps, hyp[j - 1]))
            j -= 1
        elif i > 0 and cost[i][j] == cost[i - 1][j] + 1:
            out.append((ref[i - 1], eps))
            i -= 1
        else:
            out.append((ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
    out.reverse()
    return out


def edit_counts(ref: Sequence[str], hyp: Sequence[str]) -> Tuple[ErrorCounts, List[Tuple[str, str]]]:
    """Counts for one pair plus its alignment (see `align`)."""
    ali = align(ref, hyp)
    c = ErrorCounts(ref_len=len(ref), hyp_len=len(hyp), sents=1)
    for r, h in ali:
        if r == EPS:
            c.ins += 1
        elif h == EPS:
            c.dels += 1
        elif r == h:
            c.corr += 1
        else:
            c.sub += 1
    c.sent_errs = int(c.errors > 0)
    return c, ali


def words(text: str) -> List[str]:
    return text.split()


def chars(text: str) -> List[str]:
    """Characters of a normalized text; runs of whitespace count as one space character (like jiwer's CER)."""
    return list(" ".join(text.split()))


@dataclass
class WerDetails:
    """Corpus-level result of `wer_details`: totals, per-utterance counts and alignments."""

    total: ErrorCounts
    per_utt: List[ErrorCounts] = field(default_factory=list)
    alignments: List[List[Tuple[str, str]]] = field(default_factory=list)


def wer_details(refs: Sequence[str], hyps: Sequence[str], unit: str = "word") -> WerDetails:
    """Error counts over a corpus of (already normalized) texts.

    Args:
        refs, hyps: N reference / hypothesis strings each.
        unit: "word" (WER) or "char" (CER).
    """
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    split = words if unit == "word" else chars if unit == "char" else None
    if split is None:
        raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
    det = WerDetails(total=ErrorCounts())
    for r, h in zip(refs, hyps):
        c, ali = edit_counts(split(r), split(h))
        det.total += c
        det.per_utt.append(c)
        det.alignments.append(ali)
    return det


def jiwer_error_count(refs: Sequence[str], hyps: Sequence[str], unit: str = "word") -> Optional[int]:
    """Total errors (S + D + I) according to jiwer, the cross-check of our counts; None without jiwer."""
    try:
        import jiwer
    except ImportError:  # pragma: no cover
        return None
    if not refs:
        return 0
    if unit == "word":
        out = jiwer.process_words(list(refs), list(hyps))
    else:
        out = jiwer.process_characters([" ".join(x.split()) for x in refs], [" ".join(x.split()) for x in hyps])
    return out.substitutions + out.deletions + out.insertions
