"""Miniature corpora in the real on-disk layouts, holding real speech (espeak-ng) encoded as each corpus ships it.

- LibriSpeech: ``<root>/LibriSpeech/<part>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac`` + ``<spk>-<chapter>.trans.txt`` (16 kHz)
- Common Voice: ``<root>/<lang>/clips/*.mp3`` (48 kHz) + validated/train/dev/test.tsv with a v17 header
- FLEURS: ``<root>/<code>/{train,dev,test}.tsv`` (no header) + ``audio/<split>/*.wav`` (16 kHz)
"""
from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Sequence

import numpy as np
import soundfile as sf

SENTENCES = {
    "en": ["the cat sat down", "good morning to you", "it is cold today", "we read a book"],
    "de": ["guten morgen", "das haus ist groß", "wir lesen ein buch", "es ist kalt heute"],
    "fr": ["bonjour à tous", "la maison est grande", "il fait froid", "nous lisons un livre"],
    "es": ["buenos días", "la casa es grande", "hace frío hoy", "leemos un libro"],
    "it": ["buongiorno a tutti", "la casa è grande", "fa freddo oggi", "leggiamo un libro"],
    "nl": ["goedemorgen", "het huis is groot", "het is koud vandaag", "wij lezen een boek"],
}
CV_HEADER = [
    "client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes",
    "age", "gender", "accents", "variant", "locale", "segment",
]
FLEURS_CODES = {"en": "en_us", "de": "de_de", "fr": "fr_fr", "es": "es_419", "it": "it_it", "nl": "nl_nl"}


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


@functools.lru_cache(maxsize=None)
def speech(text: str, lang: str, sr: int = 16000) -> np.ndarray:
    """espeak-ng speech for ``text`` as float32 at ``sr`` (cached)."""
    from scipy.signal import resample_poly

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "x.wav"
        subprocess.run(["espeak-ng", "-v", lang, "-s", "190", "-w", str(wav), text], check=True, capture_output=True)
        x, src = sf.read(wav, dtype="float32")
    from math import gcd

    g = gcd(src, sr)
    return resample_poly(x, sr // g, src // g).astype(np.float32)


def write_audio(path: Path, x: np.ndarray, sr: int) -> Path:
    """Encode by suffix: .flac/.wav (16-bit), .mp3, .opus (ogg)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".flac": ("FLAC", "PCM_16"), ".wav": ("WAV", "PCM_16"), ".mp3": ("MP3", None), ".opus": ("OGG", "OPUS")}
    f, sub = fmt[path.suffix]
    sf.write(path, x, sr, format=f, subtype=sub)
    return path


def make_librispeech(root: Path, parts: Dict[str, int] = None) -> Path:
    """``parts``: part name -> number of utterances (speaker 103, chapter 1240). Returns ``root``."""
    parts = parts or {"dev-clean": 2}
    for part, n in parts.items():
        chapter = root / "LibriSpeech" / part / "103" / "1240"
        lines = []
        for i in range(n):
            text = SENTENCES["en"][i % 4]
            utt = f"103-1240-{i:04d}"
            write_audio(chapter / f"{utt}.flac", speech(text, "en"), 16000)
            lines.append(f"{utt} {text.upper()}")
        (chapter / "103-1240.trans.txt").write_text("\n".join(lines) + "\n")
    return root


def cv_row(clip: str, sentence: str, lang: str, client: str = "a1b2c3") -> List[str]:
    return [client, clip, "f00d", sentence, "", "2", "0", "twenties", "female_feminine", "", "", lang, ""]


def write_cv_tsv(path: Path, rows: Iterable[Sequence[str]]) -> None:
    path.write_text("\t".join(CV_HEADER) + "\n" + "".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")


def make_commonvoice(root: Path, langs: Sequence[str] = ("de",), per_split: int = 2) -> Path:
    """48 kHz mp3 clips; train/dev/test each ``per_split`` clips, validated = all of them."""
    for lang in langs:
        ldir = root / lang
        everything = []
        for s, split in enumerate(("train", "dev", "test")):
            rows = []
            for i in range(per_split):
                text = SENTENCES[lang][(s + i) % 4].capitalize() + "."
                clip = f"common_voice_{lang}_{s}{i:03d}.mp3"
                write_audio(ldir / "clips" / clip, speech(text, lang, 48000), 48000)
                rows.append(cv_row(clip, text, lang))
            write_cv_tsv(ldir / f"{split}.tsv", rows)
            everything += rows
        write_cv_tsv(ldir / "validated.tsv", everything)
    return root


def fleurs_row(uid: int, name: str, text: str, num_samples: int) -> str:
    chars = " ".join("|" if c == " " else c for c in text.lower())
    return f"{uid}\t{name}\t{text}\t{text.lower()}\t{chars}\t{num_samples}\tFEMALE\n"


def make_fleurs(root: Path, langs: Sequence[str] = ("de",), per_split: int = 2, sr: int = 16000,
                layout: str = "hf") -> Path:
    """FLEURS with 16 kHz wav (``sr`` may differ to test resampling). layout "hf": the hub release,
    ``<code>/{split}.tsv`` + ``<code>/audio/<split>/``; "lhotse": what lhotse's download_fleurs writes,
    ``<code>/<split>/*.wav`` + ``metadata/<code>/<split>.tsv`` (and its completion marker)."""
    for lang in langs:
        cdir = root / FLEURS_CODES[lang]
        for s, split in enumerate(("train", "dev", "test")):
            lines = []
            for i in range(per_split):
                text = SENTENCES[lang][(s + i + 1) % 4]
                name = f"{1000 + 10 * s + i}.wav"
                x = speech(text, lang, sr)
                audio_dir = cdir / "audio" / split if layout == "hf" else cdir / split
                write_audio(audio_dir / name, x, sr)
                lines.append(fleurs_row(1000 + i, name, text.capitalize() + ".", len(x)))
            tsv = cdir / f"{split}.tsv" if layout == "hf" else root / "metadata" / FLEURS_CODES[lang] / f"{split}.tsv"
            tsv.parent.mkdir(parents=True, exist_ok=True)
            tsv.write_text("".join(lines), encoding="utf-8")
        if layout == "lhotse":
            (cdir / f".{FLEURS_CODES[lang]}_completed").touch()
    return root


def make_mls(root: Path, lang: str = "de", per_split: int = 2, opus: bool = False) -> Path:
    """``<root>/mls_<language>[_opus]/<split>/transcripts.txt`` + ``audio/<spk>/<book>/<spk>_<book>_<utt>.flac|opus``."""
    names = {"en": "english", "de": "german", "fr": "french", "es": "spanish", "it": "italian", "nl": "dutch"}
    ldir = root / (f"mls_{names[lang]}" + ("_opus" if opus else ""))
    ext, sr = (".opus", 48000) if opus else (".flac", 16000)
    for s, split in enumerate(("train", "dev", "test")):
        lines = []
        for i in range(per_split):
            utt = f"10{s}_20_{i:06d}"
            text = SENTENCES[lang][(s + i) % 4]
            write_audio(ldir / split / "audio" / f"10{s}" / "20" / f"{utt}{ext}", speech(text, lang, sr), sr)
            lines.append(f"{utt}\t{text}\n")
        (ldir / split / "transcripts.txt").write_text("".join(lines), encoding="utf-8")
    return root


def make_voxpopuli(root: Path, lang: str = "de", per_split: int = 2) -> Path:
    """``<root>/transcribed_data/<lang>/asr_<split>.tsv`` + ``<lang>/<year>/<id>.ogg`` (16 kHz vorbis)."""
    ldir = root / "transcribed_data" / lang
    header = "id\traw_text\tnormalized_text\tspeaker_id\tsplit\tgender\tis_gold_transcript\taccent\n"
    for s, split in enumerate(("train", "dev", "test")):
        lines = []
        for i in range(per_split):
            utt = f"2019011{s}-0900-PLENARY-{i}_{lang}_0"
            text = SENTENCES[lang][(s + i) % 4]
            path = ldir / utt[:4] / f"{utt}.ogg"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, speech(text, lang), 16000, format="OGG", subtype="VORBIS")
            lines.append(f"{utt}\t{text.capitalize()}.\t{text}\t{1000 + i}\t{split}\tfemale\tTrue\tNone\n")
        (ldir / f"asr_{split}.tsv").write_text(header + "".join(lines), encoding="utf-8")
    return root
