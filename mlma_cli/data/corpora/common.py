"""Shared pieces of corpus preparation: raw items, per-item checks, manifest building with bad-item skipping."""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet
from lhotse.audio import AudioSource

from mlma_cli.data.audio import AudioInfo, probe_audio
from mlma_cli.data.bad_items import BadItem
from mlma_cli.errors import MlmaError
from mlma_cli.text.normalize import LANGUAGES

log = logging.getLogger(__name__)


DEFAULT_MAX_DURATION = 60.0
DEFAULT_MIN_DURATION = 0.1


@dataclass
class RawItem:
    """One utterance as a corpus lists it: a whole audio file and its transcript (``None`` = missing)."""

    id: str
    audio: Path
    text: Optional[str]
    speaker: Optional[str] = None
    gender: Optional[str] = None
    custom: Dict[str, str] = field(default_factory=dict)
    problem: Optional[str] = None  # set by a parser that already knows the item is unusable


@dataclass
class SplitResult:
    """Manifests for one ``corpus/lang/split`` plus the items left out."""

    lang: str
    split: str
    recordings: RecordingSet
    supervisions: SupervisionSet
    bad: List[BadItem]


def check_langs(corpus: str, requested: Optional[Sequence[str]], available: Iterable[str]) -> List[str]:
    """Validate ``--langs`` against our languages and what the corpus holds; ``None`` = all available ones."""
    available = [l for l in available if l in LANGUAGES]
    if requested is None:
        return sorted(available)
    unknown = [l for l in requested if l not in LANGUAGES]
    if unknown:
        raise MlmaError(f"{corpus}: unknown language code(s) {', '.join(unknown)}; choose from {' '.join(LANGUAGES)}")
    return list(dict.fromkeys(requested))


def require_dir(corpus: str, path: Path, expected: str) -> Path:
    if not path.is_dir():
        raise MlmaError(f"{corpus}: {path} not found or not a directory; expected {expected}")
    return path


def require_file(corpus: str, path: Path, expected: str) -> Path:
    if not path.is_file():
        raise MlmaError(f"{corpus}: {path} not found; expected {expected}")
    return path


def build_split(
    items: Sequence[RawItem],
    lang: str,
    split: str,
    num_jobs: int = 1,
    max_duration: float = DEFAULT_MAX_DURATION,
    min_duration: float = DEFAULT_MIN_DURATION,
    full_decode: bool = False,
    progress: Optional[Callable[[int, int], None]] = None,
) -> SplitResult:
    """Probe every item's audio (in ``num_jobs`` threads), drop unusable ones, build lhotse manifests.

    ``progress(probed, total)`` is called as audio files are probed.

    Every supervision gets ``language=lang``; a recording per audio file, id = utterance id.
    """
    seen: set = set()
    todo: List[RawItem] = []
    bad: List[BadItem] = []

    def skip(item: RawItem, reason: str) -> None:
        bad.append(BadItem(item.id, str(item.audio), reason, lang, split))

    for item in items:
        if item.problem:
            skip(item, item.problem)
        elif item.id in seen:
            skip(item, "duplicate utterance id")
        elif item.text is None:
            skip(item, "missing transcript")
        elif not item.text.strip():
            skip(item, "empty transcript")
        else:
            seen.add(item.id)
            todo.append(item)

    probes = []
    with ThreadPoolExecutor(max(1, num_jobs)) as pool:
        for probe in pool.map(lambda p: _probe(p, full_decode), [i.audio for i in todo]):
            probes.append(probe)
            if progress and (len(probes) % 20 == 0 or len(probes) == len(todo)):
                progress(len(probes), len(todo))

    recordings, supervisions = [], []
    for item, probe in zip(todo, probes):
        if isinstance(probe, str):
            skip(item, probe)
            continue
        dur = probe.duration
        if probe.num_samples == 0:
            skip(item, "zero-length audio")
        elif dur < min_duration:
            skip(item, f"too short ({dur:.3f} s < {min_duration:g} s)")
        elif dur > max_duration:
            skip(item, f"too long ({dur:.1f} s > max duration {max_duration:g} s; raise --max-duration to keep it)")
        else:
            rec = _recording(item.id, probe)
            recordings.append(rec)
            supervisions.append(
                SupervisionSegment(
                    id=item.id,
                    recording_id=item.id,
                    start=0.0,
                    duration=rec.duration,
                    channel=0,
                    text=" ".join(item.text.split()),
                    language=lang,
                    speaker=item.speaker,
                    gender=item.gender,
                    custom=item.custom or None,
                )
            )
    if bad:
        log.warning("%s/%s: skipped %d of %d items (see bad_items.tsv)", lang, split, len(bad), len(items))
    return SplitResult(
        lang, split, RecordingSet.from_recordings(recordings), SupervisionSet.from_segments(supervisions), bad
    )


def _probe(path: Path, full_decode: bool):
    try:
        return probe_audio(path, full_decode=full_decode)
    except MlmaError as err:
        # The bad-items row names the file already; keep only the reason.
        msg = str(err)
        prefix = f"{path}: "
        return msg[len(prefix):] if msg.startswith(prefix) else msg


def _recording(rec_id: str, info: AudioInfo) -> Recording:
    return Recording(
        id=rec_id,
        sources=[AudioSource(type="file", channels=list(range(info.channels)), source=str(info.path))],
        sampling_rate=info.sampling_rate,
        num_samples=info.num_samples,
        duration=info.num_samples / info.sampling_rate,
    )


# Key under which read_tsv reports a row that was not valid UTF-8 (the row's item is then skipped and counted).
PROBLEM = "__problem__"


def utf8_lines(path: Path) -> Iterator[Tuple[int, str, Optional[str]]]:
    """(line number, text, problem) for each line; a line that is not UTF-8 is decoded with replacement
    characters (so its id survives) and ``problem`` says so and what to do; the rest of the file still reads."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            raw = raw.rstrip(b"\r\n")
            try:
                yield n, raw.decode("utf-8"), None
            except UnicodeDecodeError as err:
                yield n, raw.decode("utf-8", errors="replace"), (
                    f"{path} line {n} is not UTF-8 (byte {err.start}); re-encode the file, "
                    "e.g. iconv -f latin1 -t utf-8")


def read_tsv(path: Path) -> Tuple[List[str], List[Dict[str, Optional[str]]]]:
    """Read a tab-separated file with a header, no quoting (Common Voice has unbalanced quotes).

    Rows whose line is not UTF-8 carry the reason under ``PROBLEM``; a header that is not UTF-8 is an error.
    """
    lines = list(utf8_lines(path))
    if not lines:
        return [], []
    _, header, problem = lines[0]
    if problem:
        raise MlmaError(problem.replace(" line 1 ", " (header line) "))
    columns = header.split("\t")
    rows = []
    for _, line, problem in lines[1:]:
        if not line:
            continue
        values = line.split("\t")
        row: Dict[str, Optional[str]] = dict(zip(columns, values + [None] * (len(columns) - len(values))))
        if problem:
            row[PROBLEM] = problem
        rows.append(row)
    return columns, rows
