"""Word n-gram LMs: train a small interpolated Kneser-Ney model on normalized text and write it as ARPA.

The ARPA file feeds `wfst.build_graph` (G via kaldilm). Counting follows the usual ARPA conventions:
each sentence is `<s> w1 ... wn </s>`; `<s>` is only a history (log10 prob -99); lower orders use
Kneser-Ney continuation counts (number of distinct left contexts) except for n-grams starting with `<s>`,
which keep raw counts. Every n-gram's probability is the interpolated one, and the back-off weight of a
history h is its interpolation weight gamma(h) = D * N1+(h .) / c(h), so the back-off form is exact.
"""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple
from lhotse import load_manifest_lazy

from mlma_cli.data.layout import manifest_dir, parse_dataset
from mlma_cli.errors import MlmaError
from mlma_cli.text.normalize import normalize
from mlma_cli.utils.io import write_text_atomic

log = logging.getLogger(__name__)

BOS, EOS = "<s>", "</s>"
Ngram = Tuple[str, ...]


def _discount(counts: Dict[Ngram, int]) -> float:
    """Kneser-Ney discount D = n1 / (n1 + 2 n2), clamped to [0.1, 0.9] (0.5 when undefined)."""
    n1 = sum(1 for c in counts.values() if c == 1)
    n2 = sum(1 for c in counts.values() if c == 2)
    if n1 == 0 or n2 == 0:
        return 0.5
    return min(0.9, max(0.1, n1 / (n1 + 2.0 * n2)))


def train_ngram(sentences: Iterable[str], order: int = 3) -> Dict[int, Dict[Ngram, Tuple[float, float]]]:
    """Estimate an interpolated Kneser-Ney n-gram model.

    Args:
        sentences: normalized sentences (words separated by spaces).
        order: n-gram order N >= 1.
    Returns:
        {k: {ngram (k words): (log10 prob, log10 backoff weight)}} for k = 1..N (backoff 0.0 when unused).
    """
    if order < 1:
        raise ValueError(f"n-gram order must be >= 1, got {order}")
    raw: List[Dict[Ngram, int]] = [defaultdict(int) for _ in range(order + 1)]
    num = 0
    for sent in sentences:
        ws = sent.split()
        if not ws:
            continue
        num += 1
        seq = [BOS] + ws + [EOS]
        for k in range(1, order + 1):
            for i in range(len(seq) - k + 1):
                g = tuple(seq[i : i + k])
                if g == (BOS,):
                    continue
                raw[k][g] += 1
    if num == 0:
        raise MlmaError("no training sentences for the n-gram LM; check the text source (empty after normalization?)")
    # counts used at each order: raw for the top order and for n-grams starting with <s>, continuation otherwise
    counts: List[Dict[Ngram, int]] = [dict() for _ in range(order + 1)]
    counts[order] = dict(raw[order])
    for k in range(1, order):
        cont: Dict[Ngram, int] = defaultdict(int)
        for g in raw[k + 1]:
            cont[g[1:]] += 1
        for g, c in raw[k].items():
            counts[k][g] = c if g[0] == BOS else cont.get(g, c)
    vocab = sorted({g[0] for g in counts[1]})  # words and </s>
    probs: List[Dict[Ngram, float]] = [dict() for _ in range(order + 1)]
    gammas: List[Dict[Ngram, float]] = [dict() for _ in range(order + 1)]
    # unigrams: interpolate the discounted continuation distribution with a uniform one
    d1 = _discount(counts[1])
    total1 = sum(counts[1].values())
    gamma0 = d1 * len(counts[1]) / total1
    for w in vocab:
        probs[1][(w,)] = max(counts[1][(w,)] - d1, 0.0) / total1 + gamma0 / len(vocab)
    for k in range(2, order + 1):
        dk = _discount(counts[k])
        ctx_total: Dict[Ngram, int] = defaultdict(int)
        ctx_types: Dict[Ngram, int] = defaultdict(int)
        for g, c in counts[k].items():
            ctx_total[g[:-1]] += c
            ctx_types[g[:-1]] += 1
        for h in ctx_total:
            gammas[k - 1][h] = dk * ctx_types[h] / ctx_total[h]
        for g, c in counts[k].items():
            h = g[:-1]
            lower = probs[k - 1].get(g[1:])
            if lower is None:  # cannot happen for consistent counts; keep the model proper anyway
                lower = _backoff_prob(probs, gammas, g[1:])
            probs[k][g] = max(c - dk, 0.0) / ctx_total[h] + gammas[k - 1][h] * lower
    model: Dict[int, Dict[Ngram, Tuple[float, float]]] = {}
    model[1] = {(BOS,): (-99.0, math.log10(gammas[1].get((BOS,), 1.0)) if order > 1 else 0.0)}
    for k in range(1, order + 1):
        table = model.setdefault(k, {})
        for g, p in probs[k].items():
            bow = gammas[k].get(g) if k < order else None
            table[g] = (math.log10(p), math.log10(bow) if bow else 0.0)
    return model


def _backoff_prob(probs, gammas, g: Ngram) -> float:
    k = len(g)
    if g in probs[k]:
        return probs[k][g]
    if k == 1:
        return 1e-10
    return gammas[k - 1].get(g[:-1], 1.0) * _backoff_prob(probs, gammas, g[1:])


def arpa_text(model: Dict[int, Dict[Ngram, Tuple[float, float]]]) -> str:
    """ARPA text of a model from `train_ngram` (tab-separated fields, as KenLM and kaldilm read)."""
    order = max(model)
    lines = ["", "\\data\\"]
    lines += [f"ngram {k}={len(model[k])}" for k in range(1, order + 1)]
    for k in range(1, order + 1):
        lines += ["", f"\\{k}-grams:"]
        for g in sorted(model[k]):
            lp, bow = model[k][g]
            if k < order and g[-1] != EOS:
                lines.append(f"{lp:.6f}\t{' '.join(g)}\t{bow:.6f}")
            else:
                lines.append(f"{lp:.6f}\t{' '.join(g)}")
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)


def write_arpa(sentences: Iterable[str], path: Path, order: int = 3) -> Dict[str, int]:
    """Train on `sentences` and write `path`. Returns {"order", "unigrams", ...} statistics."""
    model = train_ngram(sentences, order=order)
    write_text_atomic(path, arpa_text(model))
    stats = {"order": order, **{f"{k}-grams": len(v) for k, v in model.items()}}
    log.info("wrote %s (%s)", path, ", ".join(f"{k} {v}" for k, v in stats.items()))
    return stats


def read_corpus_text(data_dir: Path, datasets: Sequence[str]) -> List[str]:
    """Normalized supervision texts of `datasets` (corpus/lang/split) under DATA/manifests."""
    out: List[str] = []
    for name in datasets:
        corpus, lang, split = parse_dataset(name)
        path = Path(manifest_dir(data_dir, corpus, lang, split)) / "supervisions.jsonl.gz"
        if not path.exists():
            raise MlmaError(f"{path}: supervisions not found; run `mlma prepare {corpus}` first")
        for sup in load_manifest_lazy(path):
            text = normalize(sup.text or "", sup.language or lang)
            if text:
                out.append(text)
    return out
