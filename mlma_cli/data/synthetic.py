"""The built-in synthetic corpus: espeak-ng speech of generated sentences in the six mlma languages.

Text (``text=``):
  * ``"words"`` (default): open vocabulary, sentence-like sequences of the 10,000 most frequent words of each
    language from the installed wordfreq package, with held-out words (``mlma_cli/data/open_text.py``); the
    test split's utterances that contain a word never in the training text are also written as ``test_oov``,
    and the out-of-vocabulary rates go to ``DATA/manifests/synthetic/<lang>/oov.json``.
  * ``"grammar"``: the small closed-vocabulary sentence grammars in ``mlma_cli/data/sentences`` (about 150 words
    a language; every test word is a training word), for the smallest smoke tests.

Acoustics: every espeak-ng voice variant that speaks the language, speed and pitch, and with ``augment=True``
(default) lhotse speed perturbation, a synthetic room impulse response (exponential decay, 0-12 dB
direct-to-reverberant ratio), leading and trailing silence of varied length (on half of the utterances), white or
pink noise (15-40 dB SNR, else a 50-70 dB noise floor: never digital silence) and a peak level from -35 to -1 dBFS
(so quiet recordings occur). Everything is drawn from generators seeded by (seed, lang, split, index), so the
corpus is deterministic for a seed. Audio is 16 kHz mono 16-bit wav under ``DATA/audio/synthetic/<lang>/<split>``,
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
from lhotse import AudioSource, Recording, SupervisionSegment
from lhotse.augmentation import Speed  # imported here: a first import of lhotse inside the worker threads races

from mlma_cli.data.bad_items import BadItem, write_bad_items
from mlma_cli.data.layout import MANIFEST_FILES, audio_dir, bad_items_path, manifest_dir, write_manifests
from mlma_cli.data import open_text
from mlma_cli.data import sentences as grammar_text
from mlma_cli.errors import MlmaError
from mlma_cli.text.normalize import LANGUAGES
from mlma_cli.utils.io import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

CORPUS = "synthetic"
SAMPLE_RATE = 16000
DEFAULT_UTTS = {"train": 500, "dev": 50, "test": 100}
TEST_UTTS = {"train": 8, "dev": 8, "test": 8}
BASE_VOICE = {"en": "en-us", "de": "de", "fr": "fr-fr", "es": "es", "it": "it", "nl": "nl"}
VARIANTS = ("m1", "m3", "m6", "f1", "f3", "f4")  # the fallback when `espeak-ng --voices=variant` lists nothing
SPEED_RANGE = (130, 200)  # words per minute
PITCH_RANGE = (20, 80)  # espeak-ng 0..99
TEXT_SOURCES = ("words", "grammar")
OOV_SPLIT = "test_oov"  # the test utterances with at least one word never in the training text
# Augmentation (augment=True): probabilities and ranges, drawn per utterance.
# Leading and trailing silence (seconds, each end) on a share P_PADDED of the utterances; the rest start and end
# where espeak-ng does. Padding every utterance kept the tiny models on the CTC blank plateau (egs/mini/RESULTS.md).
P_PADDED, SILENCE_SHORT, SILENCE_LONG, P_LONG_SILENCE = 0.5, (0.05, 0.3), (0.3, 1.0), 0.1
PEAK_DB = (-35.0, -1.0)
P_SPEED, SPEED_FACTORS = 0.3, (0.9, 1.1)
P_REVERB, T60, DRR_DB = 0.15, (0.15, 0.6), (0.0, 12.0)  # direct-to-reverberant energy ratio of the impulse response
P_NOISE, SNR_DB = 0.4, (15.0, 40.0)
# The other utterances get a faint noise floor (SNR dB): a real recording is never digital silence.
FLOOR_SNR_DB = (50.0, 70.0)
ESPEAK_HINT = "install it: sudo apt-get install espeak-ng (Debian/Ubuntu) or brew install espeak-ng (macOS)"


@dataclass
class SplitStats:
    lang: str
    split: str
    utterances: int
    seconds: float
    failed: int
    oov_rate: Optional[float] = None  # % of word tokens never in the training text (open-vocabulary text only)

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
        """Utterances synthesized (the ``test_oov`` rows are a subset of ``test``, not counted twice)."""
        return sum(r.utterances for r in self.rows if r.split != OOV_SPLIT)

    @property
    def hours(self) -> float:
        return sum(r.hours for r in self.rows if r.split != OOV_SPLIT)

    def to_table(self):
        """A rich Table: utterances, hours and failures per language and split."""
        from rich.table import Table

        table = Table(title=f"synthetic corpus in {self.output_dir} ({self.elapsed:.1f} s)")
        for col in ("lang", "split", "utterances", "hours", "failed", "OOV %"):
            table.add_column(col, justify="left" if col in ("lang", "split") else "right")
        for r in self.rows:
            oov = "" if r.oov_rate is None else f"{r.oov_rate:.1f}"
            table.add_row(r.lang, r.split, str(r.utterances), f"{r.hours:.3f}", str(r.failed), oov)
        table.add_row("all", "", str(self.utterances), f"{self.hours:.3f}", str(len(self.failures)), "")
        return table


@dataclass
class _Job:
    utt_id: str
    text: str
    voice: str
    speed: int
    pitch: int
    path: Path
    aug: Dict[str, float] = field(default_factory=dict)


def espeak_binary() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise MlmaError(f"espeak-ng is not on PATH but the synthetic corpus needs it; {ESPEAK_HINT}")
    return exe


def voice_variants(exe: Optional[str] = None) -> List[str]:
    """Every voice variant this espeak-ng lists (``espeak-ng --voices=variant``: ``adam``, ``f1``, ``m3``, ...)."""
    exe = exe or espeak_binary()
    res = subprocess.run([exe, "--voices=variant"], capture_output=True, text=True, timeout=30)
    names = []
    for line in res.stdout.splitlines()[1:]:
        parts = line.split()
        files = [p for p in parts if p.startswith("!v/")]
        if files:
            names.append(files[0][3:])
    return sorted(set(names)) or list(VARIANTS)


def available_voices(lang: str, exe: Optional[str] = None, variants: Optional[Sequence[str]] = None) -> List[str]:
    """The ``<base>+<variant>`` voices of ``lang`` that this espeak-ng installation can speak (all variants that
    it lists unless ``variants`` is given); a variant that fails or warns is left out with a log line."""
    exe = exe or espeak_binary()
    voices = []
    for variant in (variants if variants is not None else voice_variants(exe)):
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


def draw_augmentation(rng: random.Random) -> Dict[str, float]:
    """One utterance's augmentation settings (see the module docstring); 0 means "not applied"."""
    def silence() -> float:
        lo, hi = SILENCE_LONG if rng.random() < P_LONG_SILENCE else SILENCE_SHORT
        return round(rng.uniform(lo, hi), 3)

    draw = {
        "lead": silence(),
        "trail": silence(),
        "peak_db": round(rng.uniform(*PEAK_DB), 1),
        "speed_factor": rng.choice(SPEED_FACTORS) if rng.random() < P_SPEED else 1.0,
        "t60": round(rng.uniform(*T60), 3) if rng.random() < P_REVERB else 0.0,
        "drr_db": round(rng.uniform(*DRR_DB), 1),
        "snr_db": round(rng.uniform(*SNR_DB), 1) if rng.random() < P_NOISE else 0.0,
        "pink": float(rng.random() < 0.5),
        "seed": rng.randrange(2**31),
    }
    if draw["snr_db"] == 0.0:
        draw["snr_db"] = round(rng.uniform(*FLOOR_SNR_DB), 1)
    if rng.random() >= P_PADDED:
        draw["lead"] = draw["trail"] = 0.0
    return draw


def room_impulse_response(t60: float, drr_db: float, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room impulse response at 16 kHz: a unit direct path, then Gaussian noise decaying by 60 dB in
    ``t60`` seconds whose energy lies ``drr_db`` below the direct path's (direct-to-reverberant ratio)."""
    t = np.arange(max(2, int(t60 * SAMPLE_RATE))) / SAMPLE_RATE
    rir = rng.standard_normal(t.size) * np.exp(-6.9 * t / t60)
    rir[0] = 0.0
    rir *= math.sqrt(10 ** (-drr_db / 10) / (float(np.sum(rir ** 2)) or 1.0))
    rir[0] = 1.0
    return rir


def augment(samples: np.ndarray, aug: Dict[str, float]) -> np.ndarray:
    """Apply ``draw_augmentation``'s settings to 16 kHz float32 ``samples``: lhotse speed perturbation, reverb with
    a synthetic exponentially decaying impulse response, silence padding, noise at an SNR, then the peak level."""
    from scipy.signal import fftconvolve, lfilter

    rng = np.random.default_rng(int(aug.get("seed", 0)))
    x = samples.astype(np.float32)
    if aug.get("speed_factor", 1.0) != 1.0:
        x = Speed(factor=float(aug["speed_factor"]))(x[None, :], SAMPLE_RATE)[0].astype(np.float32)
    if aug.get("t60", 0.0) > 0:
        rir = room_impulse_response(float(aug["t60"]), float(aug.get("drr_db", 6.0)), rng)
        peak = float(np.abs(x).max()) or 1.0
        x = fftconvolve(x, rir)[: x.size + rir.size // 2].astype(np.float32)
        x *= peak / (float(np.abs(x).max()) or 1.0)
    speech_rms = float(np.sqrt(np.mean(x ** 2))) or 1e-4
    lead, trail = (int(aug.get(k, 0.0) * SAMPLE_RATE) for k in ("lead", "trail"))
    x = np.concatenate([np.zeros(lead, np.float32), x, np.zeros(trail, np.float32)])
    if aug.get("snr_db", 0.0) > 0:
        noise = rng.standard_normal(x.size)
        if aug.get("pink"):  # 1/f noise, Paul Kellet's economy filter
            noise = lfilter([0.049922035, -0.095993537, 0.050612699, -0.004408786], [1, -2.494956002, 2.017265875, -0.522189400], noise)
        noise *= speech_rms / (float(np.sqrt(np.mean(noise ** 2))) or 1.0) / 10 ** (aug["snr_db"] / 20)
        x = x + noise.astype(np.float32)
    if "peak_db" in aug:
        x *= 10 ** (aug["peak_db"] / 20) / (float(np.abs(x).max()) or 1.0)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def _run_job(exe: str, job: _Job) -> Tuple[_Job, Optional[int], Optional[str]]:
    import soundfile as sf

    try:
        samples = synthesize(exe, job.text, job.voice, job.speed, job.pitch)
        if job.aug:
            samples = augment(samples, job.aug)
        with atomic_path(job.path) as tmp:
            sf.write(str(tmp), samples, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        return job, int(samples.size), None
    except Exception as err:  # a failed utterance is skipped and reported, never fatal
        return job, None, f"{type(err).__name__}: {err}".replace("\t", " ").replace("\n", " ")


def _make_jobs(lang: str, split: str, sentences: List[str], voices: List[str], seed: int, out: Path,
               with_augment: bool = True) -> List[_Job]:
    jobs = []
    for i, text in enumerate(sentences):
        rng = random.Random(f"mlma-synthetic-voice:{seed}:{lang}:{split}:{i}")
        utt_id = f"{CORPUS}-{lang}-{split}-{i:06d}"
        job = _Job(utt_id, text, voices[rng.randrange(len(voices))], rng.randint(*SPEED_RANGE),
                   rng.randint(*PITCH_RANGE), out / f"{utt_id}.wav")
        if with_augment:
            job.aug = draw_augmentation(rng)
        jobs.append(job)
    return jobs


def _manifest_items(lang: str, job: _Job, num_samples: int):
    duration = num_samples / SAMPLE_RATE
    rec = Recording(id=job.utt_id, sources=[AudioSource(type="file", channels=[0], source=str(job.path))],
                    sampling_rate=SAMPLE_RATE, num_samples=num_samples, duration=duration)
    sup = SupervisionSegment(id=job.utt_id, recording_id=job.utt_id, start=0.0, duration=duration, channel=0,
                             text=job.text, language=lang, speaker=job.voice,
                             custom={"speed": job.speed, "pitch": job.pitch, **job.aug})
    return rec, sup


def _write_split(output_dir: Path, lang: str, split: str, recs: list, sups: list, asked: int) -> None:
    if recs:
        write_manifests(recs, sups, manifest_dir(output_dir, CORPUS, lang, split))
    else:
        for name in MANIFEST_FILES:  # no stale manifests from an earlier run
            (manifest_dir(output_dir, CORPUS, lang, split) / name).unlink(missing_ok=True)
        if asked:
            log.warning("synthetic %s/%s: no utterance synthesized; no manifests written", lang, split)


def _write_oov(output_dir: Path, lang: str, seed: int, made: Dict[str, Tuple[list, list]],
               report: SyntheticReport) -> None:
    """OOV rates against the synthesized training text (``oov.json``), and the ``test_oov`` subset of test."""
    texts = {split: [sup.text for sup in sups] for split, (_, sups) in made.items()}
    stats = open_text.oov_stats(lang, texts)
    train_vocab = set(open_text.words_of(texts.get("train", ()), lang))
    for row in report.rows:
        if row.lang == lang and row.split in stats and "oov_rate" in stats[row.split]:
            row.oov_rate = stats[row.split]["oov_rate"]
    if "test" in made:
        recs, sups = made["test"]
        keep = [i for i, sup in enumerate(sups) if open_text.has_oov(sup.text, lang, train_vocab)]
        sub_recs, sub_sups = [recs[i] for i in keep], [sups[i] for i in keep]
        _write_split(output_dir, lang, OOV_SPLIT, sub_recs, sub_sups, len(recs))
        sub = open_text.oov_stats(lang, {"train": texts.get("train", []), OOV_SPLIT: [s.text for s in sub_sups]})
        stats[OOV_SPLIT] = sub[OOV_SPLIT]
        row = SplitStats(lang, OOV_SPLIT, len(sub_recs), sum(r.duration for r in sub_recs), 0,
                         sub[OOV_SPLIT].get("oov_rate"))
        report.rows.append(row)
    vocab = open_text.load_vocabulary(lang, seed)
    stats["source"] = {"text": open_text.SOURCE, "vocabulary_size": len(vocab.words),
                       "held_out_words": len(vocab.held_out)}
    write_json_atomic(output_dir / "manifests" / CORPUS / lang / "oov.json", stats)
    if "test" in stats:
        log.info("synthetic %s: %.1f%% of test word tokens never occur in the training text (%d held-out words)",
                 lang, stats["test"]["oov_rate"], len(vocab.held_out))


def prepare_synthetic(
    output_dir: Path,
    languages: Sequence[str] = LANGUAGES,
    utts_per_split: Optional[Dict[str, int]] = None,
    seed: int = 0,
    num_jobs: int = 1,
    minutes_per_lang: Optional[float] = None,
    text: str = "words",
    augment_audio: bool = True,
) -> SyntheticReport:
    """Synthesize the corpus under ``output_dir`` (the data directory) and write its manifests.

    ``utts_per_split`` defaults to ``DEFAULT_UTTS`` ({"train": 500, "dev": 50, "test": 100} per language).
    ``minutes_per_lang`` instead sizes the train split by audio duration (dev/test keep their counts).
    ``text``: "words" (open vocabulary, wordfreq) or "grammar" (closed vocabulary); ``augment_audio``: the
    augmentation of the module docstring (voices, speed and pitch vary either way).
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
    if text not in TEXT_SOURCES:
        raise MlmaError(f"unknown synthetic text source {text!r}; choose from {' | '.join(TEXT_SOURCES)}")
    if minutes_per_lang is not None:
        if minutes_per_lang <= 0:
            raise MlmaError(f"--minutes-per-lang must be > 0 (got {minutes_per_lang})")
        counts["train"] = int(math.ceil(minutes_per_lang * 60 / 1.0))  # upper bound: utterances last > 1 s
    exe = espeak_binary()
    source = open_text if text == "words" else grammar_text
    if text == "words" and languages:
        open_text.load_vocabulary(languages[0], seed)  # a missing wordfreq fails here, before any synthesis
    variants = voice_variants(exe)
    report = SyntheticReport(output_dir)
    chunk = max(16, 8 * max(1, num_jobs))
    with ThreadPoolExecutor(max_workers=max(1, num_jobs)) as pool:
        for lang in languages:
            voices = available_voices(lang, exe, variants)
            sentences = source.split_sentences(lang, counts, seed)
            made: Dict[str, Tuple[list, list]] = {}
            for split in sorted(counts, key=lambda s: (s != "train", s)):
                target = minutes_per_lang * 60 if (split == "train" and minutes_per_lang) else None
                jobs = _make_jobs(lang, split, sentences[split], voices, seed, audio_dir(output_dir, CORPUS, lang, split),
                                  augment_audio)
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
                _write_split(output_dir, lang, split, recs, sups, counts[split])
                made[split] = (recs, sups)
                report.rows.append(SplitStats(lang, split, len(recs), seconds, failed))
            if text == "words":
                _write_oov(output_dir, lang, seed, made, report)
    done = {(r.lang, r.split) for r in report.rows}
    write_bad_items(bad_items_path(output_dir, CORPUS), report.failures, replaced=done)
    report.elapsed = time.time() - start
    if report.utterances == 0:
        raise MlmaError(f"no synthetic utterance could be made; see {bad_items_path(output_dir, CORPUS)}")
    return report
