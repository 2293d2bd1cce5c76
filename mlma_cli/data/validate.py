"""Check manifests after they are written: lhotse's validation plus mlma's own rules."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from lhotse import CutSet, RecordingSet, SupervisionSet, validate_recordings_and_supervisions

from mlma_cli.data.layout import manifest_dir
from mlma_cli.errors import MlmaError
from mlma_cli.text.normalize import LANGUAGES


@dataclass
class DatasetStats:
    """One row of the prepare table."""

    corpus: str
    lang: str
    split: str
    utterances: int
    hours: float
    skipped: int = 0


def validate_dataset(
    data_dir: str | Path, corpus: str, lang: str, split: str, max_duration: Optional[float] = None
) -> DatasetStats:
    """Re-read ``DATA/manifests/<corpus>/<lang>/<split>`` and check it; raises ``MlmaError`` naming the problem.

    Checks: lhotse's recording/supervision consistency, every supervision has ``language == lang``
    (one of ours), a non-empty text, a positive duration (at most ``max_duration`` when given), and the
    cuts manifest holds one cut per supervision.
    """
    mdir = Path(manifest_dir(data_dir, corpus, lang, split))
    paths = {k: mdir / f"{k}.jsonl.gz" for k in ("recordings", "supervisions", "cuts")}
    for p in paths.values():
        if not p.is_file():
            raise MlmaError(f"{p} not found; run `mlma prepare {corpus}` again")
    recs = RecordingSet.from_file(paths["recordings"]).to_eager()
    sups = SupervisionSet.from_file(paths["supervisions"]).to_eager()
    try:
        validate_recordings_and_supervisions(recs, sups)
    except (AssertionError, ValueError) as err:
        raise MlmaError(f"{mdir}: manifests fail lhotse validation ({err}); run `mlma prepare {corpus}` again") from err
    problems: List[str] = []
    if lang not in LANGUAGES:
        problems.append(f"language directory '{lang}' is not one of {' '.join(LANGUAGES)}")
    for s in sups:
        if s.language != lang:
            problems.append(f"{s.id}: language {s.language!r} != {lang!r}")
        if not (s.text or "").strip():
            problems.append(f"{s.id}: empty text")
        if s.duration <= 0 or (max_duration is not None and s.duration > max_duration + 1e-6):
            problems.append(f"{s.id}: duration {s.duration:.2f} s out of range")
        if len(problems) > 3:
            break
    num_cuts = sum(1 for _ in CutSet.from_file(paths["cuts"]))
    if num_cuts != len(sups):
        problems.append(f"cuts.jsonl.gz has {num_cuts} cuts for {len(sups)} supervisions")
    if problems:
        raise MlmaError(f"{mdir}: invalid manifests: {'; '.join(problems[:3])}; run `mlma prepare {corpus}` again")
    hours = sum(s.duration for s in sups) / 3600.0
    return DatasetStats(corpus, lang, split, len(sups), hours)
