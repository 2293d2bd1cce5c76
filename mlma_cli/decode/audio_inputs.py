"""What `mlma transcribe` reads: input lists -> audio sources read at 16 kHz mono, by ranges.

    collect_inputs(["a.wav", "dir/", "@list.txt", "cuts.jsonl.gz"]) -> List[Input]
    src = open_source(input);  src.num_samples;  src.read(start, stop) -> (n,) float32;  src.blocks(n)

An argument is an audio file, a directory (searched recursively for AUDIO_EXTENSIONS, sorted), `@FILE` (one
path per line, `#` comments; relative paths are relative to the list file), or a lhotse recordings / cuts
manifest (`*.jsonl`, `*.jsonl.gz`; one input per recording or cut, named by its id).
Files longer than `STREAM_SECONDS` are never loaded whole: `read` decodes only the asked range (plus a
resampling margin) with soundfile, so memory stays bounded by the segment length, not the file length.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from math import ceil, floor, gcd
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from mlma_cli.errors import MlmaError

log = logging.getLogger(__name__)

SAMPLING_RATE = 16000
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".wma", ".webm", ".sph", ".aiff", ".aif")
STREAM_SECONDS = 120.0  # longer files are read by ranges
_MANIFEST_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")


@dataclass
class Input:
    """One thing to transcribe: a path, or a lhotse manifest item (`loader` returns its 16 kHz samples)."""

    name: str
    loader: Optional[Callable[[], np.ndarray]] = None
    num_samples: Optional[int] = None  # known length at 16 kHz (manifests), so planning need not load audio


def _is_manifest(p: Path) -> bool:
    return p.is_file() and any(p.name.endswith(s) for s in _MANIFEST_SUFFIXES)


def _manifest_inputs(p: Path) -> List[Input]:
    from lhotse import load_manifest

    try:
        man = load_manifest(p)
    except Exception as err:  # lhotse raises plain ValueError / KeyError for foreign JSON
        raise MlmaError(f"{p}: not a lhotse recordings or cuts manifest ({err})") from err
    kind = type(man).__name__
    if kind not in ("RecordingSet", "CutSet"):
        raise MlmaError(f"{p}: a {kind}; give a recordings or cuts manifest (the audio is in those)")

    def loader(item):
        def load() -> np.ndarray:
            audio = item.resample(SAMPLING_RATE).load_audio()  # (C, n)
            return np.ascontiguousarray(audio.mean(axis=0), dtype=np.float32)
        return load

    return [Input(item.id, loader(item), int(round(item.duration * SAMPLING_RATE))) for item in man]


def _list_file(p: Path) -> List[str]:
    if not p.is_file():
        raise MlmaError(f"{p}: list file not found")
    out = []
    for line in p.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            q = Path(line)
            out.append(str(q if q.is_absolute() else p.parent / q))
    return out


def collect_inputs(args: Sequence[str], list_files: Sequence[str] = ()) -> List[Input]:
    """Expand arguments (files, directories, @lists, manifests) into inputs, in order, duplicates kept.

    A path that does not exist stays an input: reading it reports the error for that file alone.
    """
    out: List[Input] = []
    pending = [str(a) for a in args] + [f"@{f}" for f in list_files]
    for a in pending:
        if a.startswith("@") and not Path(a).exists():
            out += collect_inputs(_list_file(Path(a[1:])))
            continue
        p = Path(a)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                log.warning("%s: no audio files (%s) under this directory", p, " ".join(AUDIO_EXTENSIONS))
            out += [Input(str(q)) for q in found]
        elif _is_manifest(p):
            out += _manifest_inputs(p)
        else:
            out.append(Input(a))
    return out


class AudioSource:
    """16 kHz mono audio read by sample ranges. `num_samples` may be an estimate for mp3 (reads pad with 0)."""

    name: str
    num_samples: int

    @property
    def duration(self) -> float:
        return self.num_samples / SAMPLING_RATE

    def read(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def blocks(self, size: int) -> Iterator[Tuple[int, np.ndarray]]:
        """(start sample, samples) blocks of `size` covering the whole source."""
        for s in range(0, self.num_samples, size):
            yield s, self.read(s, min(s + size, self.num_samples))

    def release(self) -> None:
        """Drop cached samples (called once every segment of the source has been decoded)."""


class ArraySource(AudioSource):
    """Samples in memory, or loaded on first read by `loader` (then `num_samples` is the expected length)."""

    def __init__(self, name: str, samples: Optional[np.ndarray] = None,
                 loader: Optional[Callable[[], np.ndarray]] = None, num_samples: Optional[int] = None):
        self.name = name
        self._samples = samples
        self._loader = loader
        self.num_samples = len(self._get()) if num_samples is None else int(num_samples)

    def _get(self) -> np.ndarray:
        if self._samples is None:
            try:
                self._samples = self._loader()
            except MlmaError:
                raise
            except Exception as err:  # lhotse / soundfile errors of a manifest item: that input fails, not the run
                raise MlmaError(f"{self.name}: audio could not be loaded ({type(err).__name__}: {err})") from err
        return self._samples

    def read(self, start: int, stop: Optional[int]) -> np.ndarray:
        """Samples [start, stop); stop None = to the end (the real end, whatever `num_samples` estimated)."""
        return self._get()[start:stop]

    def release(self) -> None:
        if self._loader is not None:
            self._samples = None


class StreamedFile(AudioSource):
    """A long file read by ranges with soundfile at its own rate, each range resampled with a margin."""

    MARGIN = 0.05  # seconds of extra audio on each side of a range, so resampling edges fall outside it

    def __init__(self, path: str, info):
        self.name = path
        self.sr = int(info.samplerate)
        self.native = int(info.frames)
        self.num_samples = int(round(self.native * SAMPLING_RATE / self.sr))

    def read(self, start: int, stop: Optional[int]) -> np.ndarray:
        import soundfile as sf

        stop = self.num_samples if stop is None else stop
        from mlma_cli.data.audio import resample

        ratio = self.sr / SAMPLING_RATE
        margin = 0 if self.sr == SAMPLING_RATE else int(self.MARGIN * self.sr)
        step = self.sr // gcd(self.sr, SAMPLING_RATE)  # native starts on this grid map to whole 16 kHz samples
        n0 = max(0, floor(start * ratio) - margin) // step * step
        n1 = min(self.native, ceil(stop * ratio) + margin)
        try:
            data, _ = sf.read(self.name, start=n0, stop=n1, dtype="float32", always_2d=True)
        except Exception as err:
            raise MlmaError(f"{self.name}: unreadable audio at {start / SAMPLING_RATE:.1f} s ({err})") from err
        mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
        y = resample(mono, self.sr, SAMPLING_RATE)
        off = int(round(start - n0 / ratio))
        y = y[off : off + (stop - start)]
        if len(y) < stop - start:  # the header overstated the length (lossy formats)
            y = np.concatenate([y, np.zeros(stop - start - len(y), dtype=np.float32)])
        return y


def open_source(inp: Input, stream_seconds: float = STREAM_SECONDS) -> AudioSource:
    """An AudioSource for an input; raises MlmaError naming the file when it cannot be read."""
    if inp.loader is not None:
        return ArraySource(inp.name, loader=inp.loader, num_samples=inp.num_samples)
    from mlma_cli.data.audio import load_audio, require_audio_file, sound_info

    path = require_audio_file(inp.name)
    try:
        info = sound_info(path)
    except Exception:
        info = None  # not for libsndfile: load_audio tries ffmpeg (whole file)
    if info is not None and info.frames > stream_seconds * info.samplerate:
        return StreamedFile(path, info)

    def load() -> np.ndarray:
        return load_audio(path, target_sr=SAMPLING_RATE)[0]

    if info is None or info.frames <= 0:
        return ArraySource(path, load(), loader=load)  # length unknown without decoding
    return ArraySource(path, loader=load, num_samples=int(round(info.frames * SAMPLING_RATE / info.samplerate)))
