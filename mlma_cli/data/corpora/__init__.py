"""``prepare_corpus``: corpus directory -> validated lhotse manifests under ``DATA/manifests/<corpus>/<lang>/<split>/``.

Each corpus module parses its real release layout into ``RawItem``s (``discover``); the shared code probes
audio, skips bad items (listed in ``DATA/manifests/<corpus>/bad_items.tsv``), writes the manifests with
``layout.write_manifests`` and validates what was written. lhotse's own recipes are not called directly:
they abort on the first unreadable file, and the FLEURS / VoxPopuli ones need network access.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from mlma_cli.data.bad_items import BadItem, write_bad_items
from mlma_cli.data.corpora import commonvoice, fleurs, librispeech, mls, voxpopuli
from mlma_cli.data.corpora.common import DEFAULT_MAX_DURATION, DEFAULT_MIN_DURATION, build_split
from mlma_cli.data.layout import bad_items_path, manifest_dir, write_manifests
from mlma_cli.data.validate import DatasetStats, validate_dataset
from mlma_cli.errors import MlmaError

log = logging.getLogger(__name__)

CORPORA = {
    "librispeech": librispeech,
    "commonvoice": commonvoice,
    "fleurs": fleurs,
    "mls": mls,
    "voxpopuli": voxpopuli,
}
CORPUS_NAMES = (*CORPORA, "synthetic")  # what `mlma prepare` takes: the corpus releases and the built-in corpus
DEFAULT_MAX_DURATION_EVAL = 600.0


def is_training_split(split: str) -> bool:
    """Training splits are those whose name starts with "train" (train, train-clean-100 ...)."""
    return split.startswith("train")


@dataclass
class PrepareReport:
    """What ``prepare_corpus`` wrote: one row per dataset, and where the skipped items are listed."""

    corpus: str
    rows: List[DatasetStats] = field(default_factory=list)
    bad_items_path: Optional[Path] = None
    num_bad: int = 0

    @property
    def utterances(self) -> int:
        return sum(r.utterances for r in self.rows)

    @property
    def hours(self) -> float:
        return sum(r.hours for r in self.rows)


def prepare_corpus(
    name: str,
    corpus_dir: str | Path,
    data_dir: str | Path = "data",
    langs: Optional[Sequence[str]] = None,
    splits: Optional[Sequence[str]] = None,
    num_jobs: int = 1,
    max_duration: float = DEFAULT_MAX_DURATION,
    max_duration_eval: float = DEFAULT_MAX_DURATION_EVAL,
    min_duration: float = DEFAULT_MIN_DURATION,
    full_decode: bool = False,
    progress: Optional[Callable[[int, int], None]] = None,
) -> PrepareReport:
    """Prepare ``name`` (librispeech | commonvoice | fleurs | mls | voxpopuli) from ``corpus_dir``.

    ``progress(items_probed, items_total)`` follows the audio probing over all splits.

    ``max_duration`` bounds training splits, ``max_duration_eval`` the others; ``full_decode`` decodes
    mp3/ogg/opus files completely while probing (exact lengths, slower). Raises ``MlmaError`` for a
    missing / wrongly laid-out corpus, unknown languages, or when no usable utterance remains.
    """
    if name not in CORPORA:
        raise MlmaError(f"unknown corpus '{name}'; choose from {' | '.join(CORPUS_NAMES)}")
    if max_duration <= 0 or min_duration < 0:
        raise ValueError("max_duration must be > 0 and min_duration >= 0")

    found = CORPORA[name].discover(Path(corpus_dir), langs, splits)
    report = PrepareReport(name)
    bad: List[BadItem] = []
    total, offset = sum(len(items) for items in found.values()), 0
    for (lang, split), items in found.items():
        limit = max_duration if is_training_split(split) else max(max_duration, max_duration_eval)
        tick = (lambda done, _n, base=offset: progress(base + done, total)) if progress else None
        res = build_split(
            items, lang, split, num_jobs=num_jobs, max_duration=limit, min_duration=min_duration,
            full_decode=full_decode, progress=tick,
        )
        offset += len(items)
        bad.extend(res.bad)
        if len(res.supervisions) == 0:
            log.warning("%s/%s/%s: no usable utterance (%d skipped); nothing written", name, lang, split, len(res.bad))
            report.rows.append(DatasetStats(name, lang, split, 0, 0.0, len(res.bad)))
            continue
        write_manifests(res.recordings, res.supervisions, manifest_dir(data_dir, name, lang, split))
        stats = validate_dataset(data_dir, name, lang, split, max_duration=limit)
        stats.skipped = len(res.bad)
        report.rows.append(stats)
    report.bad_items_path = write_bad_items(bad_items_path(data_dir, name), bad, replaced=set(found))
    report.num_bad = len(bad)
    if report.utterances == 0:
        raise MlmaError(
            f"{name}: no usable utterance in {corpus_dir} ({len(bad)} skipped, reasons in {report.bad_items_path})"
        )
    return report


def prepare_synthetic_corpus(
    data_dir: str | Path = "data",
    langs: Optional[Sequence[str]] = None,
    utts_per_split: Optional[dict] = None,
    minutes_per_lang: Optional[float] = None,
    seed: int = 0,
    num_jobs: int = 1,
    text: str = "words",
    augment_audio: bool = True,
) -> PrepareReport:
    """Synthesize the built-in corpus (``synthetic.prepare_synthetic``), then validate what it wrote."""
    from mlma_cli.data.synthetic import prepare_synthetic
    from mlma_cli.text.normalize import LANGUAGES

    syn = prepare_synthetic(
        Path(data_dir),
        languages=tuple(langs) if langs else LANGUAGES,
        utts_per_split=utts_per_split,
        seed=seed,
        num_jobs=num_jobs,
        minutes_per_lang=minutes_per_lang,
        text=text,
        augment_audio=augment_audio,
    )
    report = PrepareReport("synthetic", bad_items_path=bad_items_path(data_dir, "synthetic"), num_bad=len(syn.failures))
    for row in syn.rows:
        if row.utterances:
            stats = validate_dataset(data_dir, "synthetic", row.lang, row.split)
            stats.skipped = row.failed
        else:
            stats = DatasetStats("synthetic", row.lang, row.split, 0, 0.0, row.failed)
        report.rows.append(stats)
    return report
