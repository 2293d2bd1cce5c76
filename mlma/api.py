"""`mlma.load` and the backend-neutral `Model` (see the package docstring)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

SAMPLE_RATE = 16000
PathLike = Union[str, os.PathLike]
AudioInput = Union[PathLike, np.ndarray, Tuple[np.ndarray, int]]
HF_PREFIX = "hf:"


def _error(msg: str):
    from mlma_cli.errors import MlmaError

    return MlmaError(msg)


def _torch_available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # sys.modules["torch"] = None, a broken install
        return False


def _resolve(spec: PathLike, backend: Optional[str]) -> Tuple[str, PathLike]:
    """(backend, what it loads): 'onnx' for an export directory or .onnx file, 'torch' for weights.

    A model package (or hf:ORG/NAME) that carries `onnx/` loads that export with backend="onnx", and also by
    default when torch is not installed (logged).
    """
    if backend not in (None, "torch", "onnx"):
        raise ValueError(f"backend must be 'torch', 'onnx' or None (from the path), got {backend!r}")
    s = os.fspath(spec)
    if s.startswith(HF_PREFIX):
        if backend == "torch" or (backend is None and _torch_available()):
            return "torch", s  # the torch backend resolves hf: itself (checkpoint.load_for_inference)
        from mlma_cli.package.load import download_hf

        p = download_hf(s)
    else:
        p = Path(s)
    if not p.exists():
        raise _error(f"{s}: no such model; give a .pt checkpoint, a model package directory (model.safetensors + "
                     "config.json), hf:ORG/NAME, or an `mlma export` directory / .onnx file")
    if p.is_file():
        found = "onnx" if p.suffix == ".onnx" else "torch"
    elif (p / "model.safetensors").is_file():
        found = "torch"
        has_onnx = (p / "onnx" / "model.onnx").is_file()
        if backend == "onnx" or (backend is None and has_onnx and not _torch_available()):
            if not has_onnx:
                raise _error(f"{s}: this model package has no onnx/ export; load it with backend='torch', or "
                             "repack it with `mlma pack --onnx DIR`")
            if backend is None:
                import logging

                logging.getLogger("mlma").info("%s: torch is not installed; using the package's onnx/ export", s)
            return "onnx", p / "onnx"
    elif (p / "model.onnx").is_file():
        found = "onnx"
    else:
        raise _error(f"{s}: directory is neither a model package (model.safetensors + config.json) nor an "
                     "`mlma export` directory (model.onnx)")
    if backend is not None and backend != found:
        what = "an ONNX export" if found == "onnx" else "PyTorch weights"
        raise _error(f"{s}: holds {what}; backend={backend!r} cannot load it (use backend={found!r})")
    return found, p


def load(path: PathLike, device: str = "auto", backend: Optional[str] = None, **kwargs) -> "Model":
    """Load a model for transcription.

    Args:
        path: a ``.pt`` checkpoint, a model package directory (``mlma pack``), ``hf:ORG/NAME[@rev]``, an
            ``mlma export`` directory (model.onnx) or a ``.onnx`` file.
        device: "auto" (GPU when visible), "cpu", "cuda", "cuda:N". An ONNX model runs on onnxruntime's CPU
            provider unless a CUDA device is asked for and onnxruntime has the CUDA provider.
        backend: None (from the path), "torch", or "onnx" (for a package or hf: repo: its ``onnx/`` export,
            which is also the default when torch is not installed).
        kwargs: ONNX only: ``threads`` (onnxruntime intra-op threads), ``int8`` (model.int8.onnx of a directory).
    Raises:
        MlmaError with a one-line message for a missing or unusable model.
    """
    backend, target = _resolve(path, backend)
    if backend == "onnx":
        from mlma.onnx_backend import OnnxBackend

        return Model(OnnxBackend(target, device=device, **kwargs))
    if kwargs:
        raise TypeError(f"unexpected arguments for a torch model: {', '.join(sorted(kwargs))}")
    from mlma.torch_backend import TorchBackend

    return Model(TorchBackend(target, device=device))


def split_inputs(audio: Sequence[AudioInput]) -> Tuple[List[Tuple[int, str]], List[Tuple[int, np.ndarray]]]:
    """(index, path) pairs and (index, 16 kHz float32 mono array) pairs of mixed inputs."""
    from mlma_cli.data.audio import resample  # numpy + scipy, no torch

    if isinstance(audio, (str, os.PathLike, np.ndarray, tuple)):
        raise TypeError("transcribe expects a list of inputs (paths, arrays or (array, sample_rate) pairs)")
    files, arrays = [], []
    for i, a in enumerate(audio):
        if isinstance(a, (str, os.PathLike)):
            files.append((i, os.fspath(a)))
            continue
        sr = SAMPLE_RATE
        if isinstance(a, tuple):
            if len(a) != 2:
                raise TypeError(f"input {i}: expected (array, sample_rate), got a tuple of {len(a)}")
            a, sr = a
        x = np.asarray(a, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"input {i}: expected a 1-D (mono) array, got shape {x.shape}")
        arrays.append((i, resample(x, int(sr), SAMPLE_RATE)))
    return files, arrays


class Model:
    """A loaded model; `transcribe` gives one `mlma.Result` per input, in input order.

    Attributes:
        backend: "torch" or "onnx".
        languages: ISO codes of the languages the model was trained on.
        sample_rate: 16000 (other rates are resampled).
        info: dict describing the model (path, backend, device, vocab_size, lang_tags, ...).
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, impl) -> None:
        self._impl = impl

    @property
    def backend(self) -> str:
        return self._impl.name

    @property
    def languages(self) -> List[str]:
        return list(self._impl.languages)

    @property
    def info(self) -> Dict[str, Any]:
        return dict(self._impl.info)

    def transcribe(self, audio: Sequence[AudioInput], batch_size: int = 8, language: Optional[str] = None,
                   **options) -> list:
        """Transcribe a list of inputs: audio file paths, 1-D float arrays in [-1, 1] at 16 kHz, or
        (array, sample_rate) pairs, mixed freely.

        Args:
            batch_size: utterances (segments) per batch; results do not depend on it.
            language: force a language (tagged tokenizers: the other languages' tags are ruled out).
            options: torch backend: any `mlma_cli.decode.transcribe.TranscribeOptions` / DecodeOptions field
                (method="ctc-prefix-beam-search", beam=..., vad=..., max_segment_seconds=...). ONNX backend
                (greedy search): max_segment_seconds, context_seconds and vad="none" (long audio is cut into
                windows at the quietest point, as the torch backend's vad="none"; silero-vad needs torch).
        Returns:
            one Result (`.text .language .duration .segments .words .tokens .to_dict()`) per input.
        Raises:
            MlmaError naming the unreadable file(s); ValueError for a bad array.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        files, arrays = split_inputs(audio)
        return self._impl.transcribe(files, arrays, len(audio), batch_size=batch_size, language=language, **options)

    def __repr__(self) -> str:
        return f"mlma.Model(backend={self.backend!r}, path={self._impl.info.get('path')!r}, languages={self.languages})"
