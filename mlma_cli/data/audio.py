"""Robust audio probing and loading (wav, flac, mp3, ogg/vorbis, opus, any rate) without torchaudio.

``probe_audio`` checks a file cheaply before it enters a manifest; ``load_audio`` reads it as 16 kHz mono
float32 for inference (``mlma transcribe``). Both raise ``MlmaError`` naming the file when it is unusable.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
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


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence what C libraries print on fd 2 (libsndfile's mpg123 writes "Note: Illegal Audio-MPEG-Header"
    lines for broken mp3s); mlma reports the failure itself, in one line."""
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            sys.stderr.flush()
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def sound_info(path: str):
    """soundfile.info without the native library's stderr chatter."""
    with quiet_native_stderr():
        return sf.info(path)


def require_audio_file(path: PathLike) -> str:
    """``path`` as a string if it is a non-empty regular file, else MlmaError saying which of those it is not
    (libsndfile's own message for both is "File does not exist or is not a regular file")."""
    path = str(path)
    p = Path(path)
    if not p.exists():
        raise MlmaError(f"{path}: audio file not found")
    if not p.is_file():
        raise MlmaError(f"{path}: not a regular file (a directory or device); pass an audio file")
    if p.stat().st_size == 0:
        raise MlmaError(f"{path}: empty file (0 bytes); re-download or re-export it")
    return path


def probe_audio(path: PathLike, full_decode: bool = False) -> AudioInfo:
    """Check that ``path`` is readable audio and return its rate / length.

    Cheap by default: the header plus a read of the last 0.1-0.3 s, which catches unreadable, empty and
    truncated files in every format. ``full_decode`` also decodes mp3/ogg/opus completely (their header
    length is an estimate) and returns the decoded length; slower, for suspicious corpora.
    Raises ``MlmaError("<file>: <why>")`` for missing, unreadable, truncated or corrupt files.
    """
    path = require_audio_file(path)
    try:
        info = sound_info(path)
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
    path = require_audio_file(path)
    try:
        with quiet_native_stderr():
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
        raise MlmaError(f"{path}: not audio that libsndfile or ffmpeg can decode ({why[0]}); check the file "
                        "or convert it to wav")
    return np.frombuffer(proc.stdout, dtype=np.float32).reshape(-1, 1), sr


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:160] if text else type(err).__name__
