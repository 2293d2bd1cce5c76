"""The built-in synthetic corpus: espeak-ng speech of generated sentences in the six mlma languages.

Sentences come from the grammars in ``mlma_cli/data/sentences`` (no download). Each utterance gets a voice
variant, speed and pitch drawn from a generator seeded by (seed, lang, split, index), so the corpus is
deterministic for a seed. Audio is resampled to 16 kHz mono 16-bit wav under ``DATA/audio/synthetic/<lang>/<split>``,
manifests go to ``DATA/manifests/synthetic/<lang>/<split>`` (recording paths are absolute).
"""
from __future__ import annotations

import io
import logging
import math
import random
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mlma_cli.data.bad_items import BadItem, write_bad_items
from mlma_cli.data.layout import MANIFEST_FILES, audio_dir, bad_items_path, manifest_dir, write_manifests
from mlma_cli.data.sentences import split_sentences
from mlma_cli.errors import MlmaError
from mlma_cli.text.normalize import LANGUAGES
from mlma_cli.utils.io import atomic_path

log = logging.getLogger(__name__)

CORPUS = "synthetic"
SAMPLE_RATE = 16000
DEFAULT_UTTS = {"train": 500, "dev": 50, "test": 100}
TEST_UTTS = {"train": 8, "dev": 8, "test": 8}
BASE_VOICE = {"en": "en-us", "de": "de", "fr": "fr-fr", "es": "es", "it": "it", "nl": "nl"}
VARIANTS = ("m1", "m3", "m6", "f1", "f3", "f4")
SPEED_RANGE = (135, 185)  # words per minute
PITCH_RANGE = (30, 70)  # espeak-ng 0..99
ESPEAK_HINT = "install it: sudo apt-get install espeak-ng (Debian/Ubuntu) or brew install espeak-ng (macOS)"


@dataclass
class SplitStats:
    lang: str
    split: str
    utterances: int
    seconds: float
    failed: int

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0


@dataclass
class SyntheticReport:
    """What ``prepare_synthetic`` wrote: one row per (lang, split), and the utterances that failed."""

    output_dir: Path
    rows: List[SplitStats] = field(default_factory=list)
    failures: List[BadItem] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def utterances(self) -> int:
        return sum(r.utterances for r in self.rows)

    @property
    def hours(self) -> float:
        return sum(r.hours for r in self.rows)

    def to_table(self):
        """A rich Table: utterances, hours and failures per language and split."""
        from rich.table import Table

        table = Table(title=f"synthetic corpus in {self.output_dir} ({self.elapsed:.1f} s)")
        for col in ("lang", "split", "utterances", "hours", "failed"):
            table.add_column(col, justify="left" if col in ("lang", "split") else "right")
        for r in self.rows:
            table.add_row(r.lang, r.split, str(r.utterances), f"{r.hours:.3f}", str(r.failed))
        table.add_row("all", "", str(self.utterances), f"{self.hours:.3f}", str(len(self.failures)))
        return table


@dataclass
class _Job:
    utt_id: str
    text: str
    voice: str
    speed: int
    pitch: int
    path: Path


def espeak_binary() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise MlmaError(f"espeak-ng is not on PATH but the synthetic corpus needs it; {ESPEAK_HINT}")
    return exe


def available_voices(lang: str, exe: Optional[str] = None) -> List[str]:
    """The ``<base>+<variant>`` voices of ``lang`` that this espeak-ng installation can speak."""
    exe = exe or espeak_binary()
    voices = []
    for variant in VARIANTS:
        voice = f"{BASE_VOICE[lang]}+{variant}"
        res = subprocess.run([exe, "-q", "-v", voice, "a"], capture_output=True, timeout=30)
        if res.returncode == 0 and not res.stderr.strip():
            voices.append(voice)
        else:
            log.warning("espeak-ng voice %s unavailable (%s); not using it", voice, res.stderr.decode().strip())
    if not voices:
        raise MlmaError(f"espeak-ng has no usable voice for {lang} ({BASE_VOICE[lang]}); {ESPEAK_HINT}")
    return voices


def synthesize(exe: str, text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """Speak ``text`` with espeak-ng; return 16 kHz mono float32 samples. RuntimeError on failure."""
    import soundfile as sf
    from scipy.signal import resample_poly

    cmd = [exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-b", "1", "--stdout", text]
    res = subprocess.run(cmd, capture_output=True, timeout=60)
    if res.returncode != 0 or not res.stdout:
        raise RuntimeError(f"espeak-ng exit {res.returncode}: {res.stderr.decode(errors='replace').strip()}")
    samples, sr = sf.read(io.BytesIO(res.stdout), dtype="float32")
    if samples.ndim > 1:
        samples = samples.mean(axis=1)
    if sr != SAMPLE_RATE:
        g = math.gcd(sr, SAMPLE_RATE)
        samples = resample_poly(samples, SAMPLE_RATE // g, sr // g).astype(np.float32)
    if samples.size < SAMPLE_RATE // 10:
        raise RuntimeError(f"espeak-ng produced only {samples.size} samples")
    return np.clip(samples, -1.0, 1.0)


def _run_job(exe: str, job: _Job) -> Tuple[_Job, Optional[int], Optional[str]]:
    import soundfile as sf

    try:
        samples = synthesize(exe, job.text, job.voice, job.speed, job.pitch)
        with atomic_path(job.path) as tmp:
            sf.write(str(tmp), samples, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        return job, int(samples.size), None
    except Exception as err:  # a failed utterance is skipped and reported, never fatal
        return job, None, f"{type(err).__name__}: {err}".replace("\t", " ").replace("\n", " ")


def _make_jobs(lang: str, split: str, sentences: List[str], voices: List[str], seed: int, out: Path) -> List[_Job]:
    jobs = []
    for i, text in enumerate(sentences):
        rng = random.Random(f"mlma-synthetic-voice:{seed}:{lang}:{split}:{i}")
        utt_id = f"{CORPUS}-{lang}-{split}-{i:06d}"
        jobs.append(_Job(utt_id, text, voices[rng.randrange(len(voices))], rng.randint(*SPEED_RANGE),
                         rng.randint(*PITCH_RANGE), out / f"{utt_id}.wav"))
    return jobs


def _manifest_items(lang: str, job: _Job, num_samples: int):
    from lhotse import AudioSource, Recording, SupervisionSegment

    duration = num_samples / SAMPLE_RATE
    rec = Recording(id=job.utt_id, sources=[AudioSource(type="file", channels=[0], source=str(job.path))],
                    sampling_rate=SAMPLE_RATE, num_samples=num_samples, duration=duration)
    sup = SupervisionSegment(id=job.utt_id, recording_id=job.utt_id, start=0.0, duration=duration, channel=0,
                             text=job.text, language=lang, speaker=job.voice,
                             custom={"speed": job.speed, "pitch": job.pitch})
    return rec, sup


def prepare_synthetic(
    output_dir: Path,
    languages: Sequence[str] = LANGUAGES,
    utts_per_split: Optional[Dict[str, int]] = None,
    seed: int = 0,
    num_jobs: int = 1,
    minutes_per_lang: Optional[float] = None,
) -> SyntheticReport:
    """Synthesize the corpus under ``output_dir`` (the data directory) and write its manifests.

    ``utts_per_split`` defaults to ``DEFAULT_UTTS`` ({"train": 500, "dev": 50, "test": 100} per language).
    ``minutes_per_lang`` instead sizes the train split by audio duration (dev/test keep their counts).
    Failed utterances are skipped, counted, and listed in ``DATA/manifests/synthetic/bad_items.tsv``;
    MlmaError when espeak-ng is missing or nothing at all could be synthesized.
    """
    start = time.time()
    output_dir = Path(output_dir).resolve()
    counts = dict(DEFAULT_UTTS if utts_per_split is None else utts_per_split)
    bad = [lang for lang in languages if lang not in LANGUAGES]
    if bad:
        raise MlmaError(f"unknown language code(s) {', '.join(map(repr, bad))} for the synthetic corpus; "
                        f"supported: {', '.join(LANGUAGES)}")
    if any(n < 0 for n in counts.values()) or (not any(counts.values()) and minutes_per_lang is None):
        raise MlmaError(f"utterances per split must be >= 0 and not all 0 (got {counts})")
    if minutes_per_lang is not None:
        if minutes_per_lang <= 0:
            raise MlmaError(f"--minutes-per-lang must be > 0 (got {minutes_per_lang})")
        counts["train"] = int(math.ceil(minutes_per_lang * 60 / 1.0))  # upper bound: utterances last > 1 s
    exe = espeak_binary()
    report = SyntheticReport(output_dir)
    chunk = max(16, 8 * max(1, num_jobs))
    with ThreadPoolExecutor(max_workers=max(1, num_jobs)) as pool:
        for lang in languages:
            voices = available_voices(lang, exe)
            sentences = split_sentences(lang, counts, seed)
            for split in counts:
                target = minutes_per_lang * 60 if (split == "train" and minutes_per_lang) else None
                jobs = _make_jobs(lang, split, sentences[split], voices, seed, audio_dir(output_dir, CORPUS, lang, split))
                recs, sups, failed, seconds = [], [], 0, 0.0
                for i in range(0, len(jobs), chunk):
                    if target is not None and seconds >= target:
                        break
                    for job, n, err in pool.map(lambda j: _run_job(exe, j), jobs[i:i + chunk]):
                        if target is not None and seconds >= target:
                            job.path.unlink(missing_ok=True)  # synthesized past the duration target
                            continue
                        if n is None:
                            failed += 1
                            report.failures.append(BadItem(job.utt_id, str(job.path), err or "", lang, split))
                            log.warning("synthesis of %s failed (%s); skipped", job.utt_id, err)
                            continue
                        rec, sup = _manifest_items(lang, job, n)
                        recs.append(rec)
                        sups.append(sup)
                        seconds += rec.duration
                if recs:
                    write_manifests(recs, sups, manifest_dir(output_dir, CORPUS, lang, split))
                else:
                    for name in MANIFEST_FILES:  # no stale manifests from an earlier run
                        (manifest_dir(output_dir, CORPUS, lang, split) / name).unlink(missing_ok=True)
                    if counts[split]:
                        log.warning("synthetic %s/%s: no utterance synthesized; no manifests written", lang, split)
                report.rows.append(SplitStats(lang, split, len(recs), seconds, failed))
    done = {(r.lang, r.split) for r in report.rows}
    write_bad_items(bad_items_path(output_dir, CORPUS), report.failures, replaced=done)
    report.elapsed = time.time() - start
    if report.utterances == 0:
        raise MlmaError(f"no synthetic utterance could be made; see {bad_items_path(output_dir, CORPUS)}")
    return report
