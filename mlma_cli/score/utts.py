"""The unit every scorer and result file works on: one utterance's reference and hypothesis."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Utt:
    """One scored utterance; `ref` / `hyp` are normalized, `*_raw` as produced (corpus text / decoder output)."""

    id: str
    lang: str
    ref: str
    hyp: str
    ref_raw: str = ""
    hyp_raw: str = ""
