"""Robust audio probing and loading (wav, flac, mp3, ogg/vorbis, opus, any rate) without torchaudio.

``probe_audio`` checks a file cheaply before it enters a manifest; ``load_audio`` reads it as 16 kHz mono
float32 for inference (``mlma transcribe``). Both raise ``MlmaError`` naming the file when it is unusable.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import Tuple, Union

import numpy as np
import soundfile as sf

from mlma_cli.errors import MlmaError

PathLike = Union[str, Path]

# Lossy formats whose header length is only an estimate: with full_decode, decoded fully to measure them.
_DECODE_FULLY = {"MP3", "OGG", "MPEG"}
# A decoded length this far from the declared one means a truncated / damaged file.
_LENGTH_TOLERANCE = 0.02


@dataclass(frozen=True)
class AudioInfo:
    """What a probe learned about an audio file; ``num_samples`` is per channel."""

    path: str
    sampling_rate: int
    num_samples: int
    channels: int
    format: str

    @property
    def duration(self) -> float:
        return self.num_samples / self.sampling_rate if self.sampling_rate else 0.0


def probe_audio(path: PathLike, full_decode: bool = False) -> AudioInfo:
    """Check that ``path`` is readable audio and return its rate / length.

    Cheap by default: the header plus a read of the last 0.1-0.3 s, which catches unreadable, empty and
    truncated files in every format. ``full_decode`` also decodes mp3/ogg/opus completely (their header
    length is an estimate) and returns the decoded length; slower, for suspicious corpora.
    Raises ``MlmaError("<file>: <why>")`` for missing, unreadable, truncated or corrupt files.
    """
    path = str(path)
    if not Path(path).is_file():
        raise MlmaError(f"{path}: audio file not found")
    try:
        info = sf.info(path)
    except Exception as err:  # libsndfile raises its own error types
        raise MlmaError(f"{path}: unreadable audio ({_short(err)}); re-download or re-extract this file") from err
    declared = int(info.frames)
    try:
        if declared > 0:
            with sf.SoundFile(path) as f:
                want = min(declared, 4800)
                f.seek(declared - want)
                if f.read(want, dtype="float32").shape[0] == 0:
                    raise MlmaError(f"{path}: truncated audio (no data where the header says it ends); re-download this file")
        if full_decode and declared > 0 and info.format.upper() in _DECODE_FULLY:
            decoded = _count_decoded_frames(path)
            if abs(decoded - declared) > _LENGTH_TOLERANCE * declared + info.samplerate * 0.05:
                raise MlmaError(
                    f"{path}: truncated or corrupt audio (header says {declared / info.samplerate:.2f} s, "
                    f"decodes to {decoded / info.samplerate:.2f} s); re-download this file"
                )
            declared = decoded
    except MlmaError:
        raise
    except Exception as err:
        raise MlmaError(f"{path}: corrupt audio ({_short(err)}); re-download this file") from err
    return AudioInfo(path, int(info.samplerate), declared, int(info.channels), info.format)


def load_audio(path: PathLike, target_sr: int = 16000) -> Tuple[np.ndarray, int]:
    """Read any supported file as mono float32 resampled to ``target_sr``; returns ``(samples (N,), target_sr)``.

    Stereo/multichannel audio is averaged to mono. Falls back to ffmpeg for formats libsndfile cannot read.
    """
    path = str(path)
    if not Path(path).is_file():
        raise MlmaError(f"{path}: audio file not found")
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as err:
        data, sr = _ffmpeg_read(path, err)
    if data.shape[0] == 0:
        raise MlmaError(f"{path}: audio is empty (0 samples)")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return resample(mono, int(sr), target_sr), target_sr


def resample(samples: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling of a 1-D float array from ``sr_in`` to ``sr_out`` (identity when equal)."""
    if sr_in == sr_out:
        return np.ascontiguousarray(samples, dtype=np.float32)
    from scipy.signal import resample_poly

    g = gcd(int(sr_in), int(sr_out))
    return resample_poly(samples, sr_out // g, sr_in // g).astype(np.float32)


def _count_decoded_frames(path: str, block: int = 65536) -> int:
    # SoundFile.blocks() pads to the declared length; plain reads stop where decoding stops.
    total = 0
    with sf.SoundFile(path) as f:
        while True:
            n = f.read(block, dtype="float32", always_2d=True).shape[0]
            total += n
            if n < block:
                return total


def _ffmpeg_read(path: str, first_err: Exception) -> Tuple[np.ndarray, int]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise MlmaError(f"{path}: unreadable audio ({_short(first_err)}); convert it to wav/flac or install ffmpeg")
    sr = 16000
    proc = subprocess.run(
        [ffmpeg, "-nostdin", "-loglevel", "error", "-i", path, "-f", "f32le", "-ac", "1", "-ar", str(sr), "-"],
        capture_output=True,
    )
    if proc.returncode != 0 or not proc.stdout:
        why = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no audio decoded"]
        raise MlmaError(f"{path}: unreadable audio ({why[0]}); check the file or convert it to wav")
    return np.frombuffer(proc.stdout, dtype=np.float32).reshape(-1, 1), sr


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:160] if text else type(err).__name__
