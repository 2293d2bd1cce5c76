"""The data directory layout (see docs/DESIGN.md) and atomic manifest writing.

    DATA/manifests/<corpus>/<lang>/<split>/{recordings,supervisions,cuts}.jsonl.gz
    DATA/manifests/<corpus>/bad_items.tsv
    DATA/fbank/<corpus>/<lang>/<split>/cuts.jsonl.gz (+ feats/)
    DATA/audio/<corpus>/<lang>/<split>/        (audio that mlma itself writes, e.g. the synthetic corpus)
"""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterable, List, Sequence, Tuple, Union

from mlma_cli.errors import MlmaError
from mlma_cli.text.normalize import LANGUAGES
from mlma_cli.utils.io import atomic_path

PathLike = Union[str, os.PathLike]
MANIFEST_FILES = ("recordings.jsonl.gz", "supervisions.jsonl.gz", "cuts.jsonl.gz")


def dataset_name(corpus: str, lang: str, split: str) -> str:
    return f"{corpus}/{lang}/{split}"


def parse_dataset(name: str) -> Tuple[str, str, str]:
    """``"synthetic/de/train"`` -> ``("synthetic", "de", "train")``; anything else raises MlmaError."""
    parts = str(name).strip().strip("/").split("/")
    if len(parts) != 3 or not all(parts):
        raise MlmaError(f"dataset name {name!r} is not <corpus>/<lang>/<split>, e.g. synthetic/de/train")
    corpus, lang, split = parts
    if lang not in LANGUAGES:
        raise MlmaError(f"dataset {name!r}: unknown language {lang!r}; supported: {', '.join(LANGUAGES)}")
    return corpus, lang, split


def manifest_dir(data: PathLike, corpus: str, lang: str, split: str) -> Path:
    return Path(data) / "manifests" / corpus / lang / split


def fbank_dir(data: PathLike, corpus: str, lang: str, split: str) -> Path:
    return Path(data) / "fbank" / corpus / lang / split


def audio_dir(data: PathLike, corpus: str, lang: str, split: str) -> Path:
    return Path(data) / "audio" / corpus / lang / split


def bad_items_path(data: PathLike, corpus: str) -> Path:
    return Path(data) / "manifests" / corpus / "bad_items.tsv"


def find_datasets(data: PathLike, pattern: str = "*/*/*", kind: str = "manifests") -> List[str]:
    """Dataset names under ``DATA/<kind>/`` whose ``cuts.jsonl.gz`` exists and match a glob such as
    ``"synthetic/*/train"``; sorted."""
    root = Path(data) / kind
    hits = glob.glob(str(root / pattern / "cuts.jsonl.gz"))
    return sorted(Path(h).parent.relative_to(root).as_posix() for h in hits)


def write_manifests(recordings: Iterable, supervisions: Iterable, out_dir: PathLike, validate: bool = True):
    """Write recordings, supervisions and the cuts joining them into ``out_dir`` atomically; return the CutSet.

    ``recordings`` / ``supervisions`` are lhotse RecordingSet / SupervisionSet or iterables of their items.
    Each file is written under a temporary name and renamed into place, cuts last, so an interrupted run never
    leaves a readable-but-partial manifest (``cuts.jsonl.gz`` existing means the directory is complete).
    With ``validate`` the pair is checked with lhotse's validator first (MlmaError naming ``out_dir``).
    """
    from lhotse import CutSet, RecordingSet, SupervisionSet
    from lhotse.qa import validate_recordings_and_supervisions

    recs = recordings if isinstance(recordings, RecordingSet) else RecordingSet.from_recordings(recordings)
    sups = supervisions if isinstance(supervisions, SupervisionSet) else SupervisionSet.from_segments(supervisions)
    if validate:
        try:
            validate_recordings_and_supervisions(recs, sups)
        except (AssertionError, ValueError) as err:
            raise MlmaError(f"invalid manifests for {out_dir}: {err}; fix or drop the offending item") from err
    cuts = CutSet.from_manifests(recordings=recs, supervisions=sups)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stale = out_dir / "cuts.jsonl.gz"
    if stale.exists():
        stale.unlink()  # the directory is incomplete until the new cuts land
    for name, manifest in zip(MANIFEST_FILES, (recs, sups, cuts)):
        with atomic_path(out_dir / name) as tmp:
            manifest.to_file(tmp)
    return cuts


def manifests_exist(out_dir: PathLike, names: Sequence[str] = MANIFEST_FILES) -> bool:
    return all((Path(out_dir) / n).is_file() for n in names)
