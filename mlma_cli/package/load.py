"""Reading model packages (see the package docstring) and resolving ``hf:ORG/NAME[@revision]`` specs.

``read_package(dir)`` returns the contents of a checkpoint (the keys of ``train/state.py``'s format that decoding
reads); ``checkpoint.load_checkpoint`` adds the format header, so every command that takes ``--checkpoint``
accepts a package directory. This module imports nothing from ``checkpoint.py`` (which imports it). Weights come
from safetensors, never from a pickle. torch is imported only inside ``read_package``.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from mlma_cli.errors import MissingDependencyError, MlmaError

PathLike = Union[str, os.PathLike]
PACKAGE_FORMAT = "mlma-package"
PACKAGE_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TOKENIZER = "tokenizer.model"
TOKENS = "tokens.txt"
CARD = "README.md"
ONNX_DIR = "onnx"
# safetensors metadata is str -> str
WEIGHTS_METADATA = {"format": "pt", "mlma": "model-package", "version": str(PACKAGE_VERSION)}
HF_PREFIX = "hf:"
_HF_RE = re.compile(r"^hf:([A-Za-z0-9][\w.-]*/[\w.-]+)(?:@([\w./-]+))?$")


def is_package_dir(path: PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / WEIGHTS).is_file() and (p / CONFIG).is_file()


# ----------------------------------------------------------------------------------------------- hf: specs
def parse_hf_spec(spec: str) -> Tuple[str, Optional[str]]:
    """``"hf:ORG/NAME@rev"`` -> ``("ORG/NAME", "rev")``; revision None when absent."""
    m = _HF_RE.match(spec)
    if not m:
        raise MlmaError(f"{spec!r} is not a Hub model spec; write hf:ORG/NAME or hf:ORG/NAME@REVISION")
    return m.group(1), m.group(2)


def download_hf(spec: str) -> Path:
    """Download (or find in the local Hub cache) the package ``spec`` names; returns its directory."""
    repo, revision = parse_hf_spec(spec)
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:
        raise MissingDependencyError(f"{spec} needs huggingface_hub: pip install 'mlma[hub]' (or download the "
                                     "repository elsewhere and pass its directory)") from err
    try:
        path = Path(snapshot_download(repo_id=repo, revision=revision, library_name="mlma"))
    except Exception as err:  # noqa: BLE001 - offline, missing repo, gated, network, ... all end the same way
        kind = type(err).__name__
        if kind in ("RepositoryNotFoundError", "RevisionNotFoundError", "GatedRepoError"):
            why = f"the Hub has no accessible repository {repo}" + (f" at revision {revision}" if revision else "")
            fix = "check the name (private or gated repos need `hf auth login`)"
        else:
            why = f"it could not be downloaded and is not in the local Hub cache ({kind})"
            fix = (f"on a machine with network run `hf download {repo} --local-dir DIR`"
                   + (f" --revision {revision}" if revision else "") + ", then pass that directory")
        raise MlmaError(f"{spec}: {why}; {fix}") from err
    if not is_package_dir(path):
        raise MlmaError(f"{spec}: the repository holds no mlma model package ({WEIGHTS} + {CONFIG}); "
                        "it must be one written by `mlma pack`")
    return path


def resolve_model_path(spec: PathLike) -> Path:
    """A local path as is; ``hf:ORG/NAME[@rev]`` downloaded to the Hub cache first."""
    s = os.fspath(spec)
    return download_hf(s) if s.startswith(HF_PREFIX) else Path(s)


# ----------------------------------------------------------------------------------------------- reading
def read_package_config(path: PathLike) -> Dict[str, Any]:
    """The checked ``config.json`` of package ``path`` (torch-free)."""
    path = Path(path)
    if not (path / WEIGHTS).is_file():
        raise MlmaError(f"{path} is a directory without {WEIGHTS}: not a model package; pass a checkpoint "
                        "(.pt) or a directory written by `mlma pack`")
    try:
        cfg = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise MlmaError(f"{path}: model package lacks {CONFIG}; repack it with `mlma pack`") from err
    except (ValueError, UnicodeDecodeError) as err:
        raise MlmaError(f"{path / CONFIG} is not valid JSON ({err}); repack with `mlma pack`") from err
    if not isinstance(cfg, dict) or cfg.get("format") != PACKAGE_FORMAT:
        raise MlmaError(f"{path / CONFIG} is not an mlma package config (no format={PACKAGE_FORMAT!r}); "
                        "pass a directory written by `mlma pack`")
    if cfg.get("version") != PACKAGE_VERSION:
        raise MlmaError(f"{path}: package version {cfg.get('version')}, this mlma reads version {PACKAGE_VERSION}; "
                        "use the mlma release that wrote it")
    if not isinstance(cfg.get("model_config"), dict):
        raise MlmaError(f"{path / CONFIG} has no model_config; repack with `mlma pack`")
    return cfg


def read_weights(path: Path) -> Dict[str, Any]:
    """state_dict from ``model.safetensors`` (torch tensors); corrupt or foreign files raise MlmaError."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise MlmaError(f"{path} is corrupt or not a safetensors file ({str(err).splitlines()[0]}); "
                        "download or repack the package") from err
    if meta.get("mlma") != WEIGHTS_METADATA["mlma"]:
        raise MlmaError(f"{path} was not written by `mlma pack` (metadata {meta}); repack the model")
    return state


def read_package(path: PathLike) -> Dict[str, Any]:
    """Package directory -> the checkpoint's contents (``package`` = the directory; no ``format`` / ``version``
    header: ``checkpoint.load_checkpoint`` adds it).

    Checks the tokenizer against the configuration (vocab size = CTC head size); ``load_state_dict`` later
    checks the weights against the configuration.
    """
    from mlma_cli.data.tokenizer import Tokenizer
    from mlma_cli.model.config import ENCODERS

    path = Path(path)
    cfg = read_package_config(path)
    arch = cfg["model_config"].get("encoder")
    if arch not in ENCODERS:
        raise MlmaError(f"{path / CONFIG}: unknown architecture encoder={arch!r} (this mlma knows "
                        f"{', '.join(ENCODERS)}); use the mlma release that wrote the package")
    tok_path = path / TOKENIZER
    tok = Tokenizer.load(tok_path)
    vocab = cfg["model_config"].get("vocab_size")
    if tok.vocab_size != vocab:
        raise MlmaError(f"{path}: {TOKENIZER} has {tok.vocab_size} tokens but the model's CTC head has {vocab}; "
                        "the tokenizer does not belong to these weights: repack with the checkpoint's own tokenizer")
    state = read_weights(path / WEIGHTS)
    return {
        "package": str(path),
        "model_config": cfg["model_config"], "model": state, "averaged_model": None,
        "num_averaged": cfg.get("num_averaged"), "averaged_from": cfg.get("averaged_from"),
        "tokenizer": tok_path.read_bytes(), "tokenizer_lang_tags": tok.lang_tags,
        "train_config": cfg.get("train_config"), "data_config": cfg.get("data_config"),
        "step": cfg.get("step"), "epoch": cfg.get("epoch"), "metrics": cfg.get("metrics") or {},
    }
