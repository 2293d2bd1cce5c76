"""Scoring a list of normalized utterances: WER, CER, bootstrap CI, per language; jiwer cross-check."""
from __future__ import annotations

import logging
from typing import Dict, List, Sequence

from mlma_cli.score.bootstrap import bootstrap_ci
from mlma_cli.score.utts import Utt
from mlma_cli.score.wer import jiwer_error_count, wer_details

log = logging.getLogger(__name__)


def score_utts(utts: Sequence[Utt], bootstrap_samples: int = 1000, seed: int = 0) -> Dict:
    """WER and CER counts (our alignment, checked against jiwer), 95% bootstrap CI of WER and CER.

    Returns a JSON-able dict {"num_utts", "languages", "wer": {...}, "cer": {...}} plus the private key
    "_word_details" (WerDetails) for writing the errs file.
    """
    refs: List[str] = [u.ref for u in utts]
    hyps: List[str] = [u.hyp for u in utts]
    out: Dict = {"num_utts": len(utts), "languages": sorted({u.lang for u in utts})}
    for unit, key in (("word", "wer"), ("char", "cer")):
        det = wer_details(refs, hyps, unit=unit)
        check = jiwer_error_count(refs, hyps, unit=unit)
        if check is not None and check != det.total.errors:
            raise RuntimeError(f"internal error: {key} errors {det.total.errors} differ from jiwer's {check}")
        d = det.total.to_dict()
        low, high = bootstrap_ci([c.errors for c in det.per_utt], [c.ref_len for c in det.per_utt],
                                 num_samples=bootstrap_samples, seed=seed)
        d["ci95"] = [round(low, 4), round(high, 4)]
        out[key] = d
        if unit == "word":
            out["_word_details"] = det
    return out
