"""PNG bar charts of WER per language and test set (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple

from mlma_cli.utils.io import atomic_path


def wer_bar_chart(values: Dict[Tuple[str, str], float], path: Path, title: str = "WER per language",
                  errors: Optional[Dict[Tuple[str, str], Tuple[float, float]]] = None, ylabel: str = "WER (%)") -> Path:
    """Grouped bars: x = language, one bar per series (test set / setting).

    Args:
        values: {(lang, series): WER %}.
        errors: optional {(lang, series): (low, high)} drawn as error bars (e.g. 95% CI).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    langs = sorted({k[0] for k in values})
    series = sorted({k[1] for k in values})
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(langs) * max(1, len(series)) ** 0.5 + 2), 4.5))
    for j, s in enumerate(series):
        xs, ys, lo, hi = [], [], [], []
        for i, lang in enumerate(langs):
            if (lang, s) not in values:
                continue
            v = values[(lang, s)]
            xs.append(i + (j - (len(series) - 1) / 2) * width)
            ys.append(v)
            if errors and (lang, s) in errors:
                low, high = errors[(lang, s)]
                lo.append(max(v - low, 0.0))
                hi.append(max(high - v, 0.0))
            else:
                lo.append(0.0)
                hi.append(0.0)
        bars = ax.bar(xs, ys, width=width, label=s, yerr=[lo, hi] if errors else None, capsize=3 if errors else 0)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    ax.set_xticks(range(len(langs)))
    ax.set_xticklabels(langs)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if series:
        ax.legend(fontsize=7, loc="best")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return Path(path)
