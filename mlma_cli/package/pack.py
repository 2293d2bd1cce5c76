"""`mlma pack`: checkpoint(s) -> a model package directory (layout in ``mlma_cli/package/__init__.py``).

The directory is built beside ``out_dir`` and swapped in when complete, so an interrupted pack never leaves a
half-written package; an existing ``out_dir`` is replaced only when it is a package or empty.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from mlma_cli.errors import MlmaError
from mlma_cli.package.load import (CARD, CONFIG, ONNX_DIR, PACKAGE_FORMAT, PACKAGE_VERSION, TOKENIZER, WEIGHTS,
                                   WEIGHTS_METADATA, is_package_dir)
from mlma_cli.export.tokens import write_tokens
from mlma_cli.utils.io import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]
SAMPLE_RATE = 16000


@dataclass
class PackResult:
    out_dir: Path
    config: Dict[str, Any]
    files: List[str]


def dataset_languages(data_config: Optional[Dict[str, Any]]) -> List[str]:
    """Languages named by the training sets ``corpus/lang/split`` (globbed languages are not counted)."""
    from mlma_cli.text.normalize import LANGUAGES

    found = set()
    for e in (data_config or {}).get("train") or []:
        names = (e.get("datasets") or [e.get("dataset")]) if isinstance(e, dict) else [e]
        for n in names:
            parts = str(n or "").split("/")
            if len(parts) == 3 and parts[1] in LANGUAGES:
                found.add(parts[1])
    return sorted(found)


def read_report(path: Optional[PathLike]) -> Optional[Dict[str, Any]]:
    if path is None:
        return None
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MlmaError(f"--report {path}: cannot read it as JSON ({err}); give the report.json of `mlma report`") from err
    if not isinstance(report, dict) or not isinstance(report.get("cells"), list):
        raise MlmaError(f"--report {path}: no 'cells' list; give the report.json written by `mlma report`")
    return report


def onnx_files(onnx_dir: Optional[PathLike]) -> List[Path]:
    """The regular files of an `mlma export` directory; it must hold model.onnx."""
    if onnx_dir is None:
        return []
    d = Path(onnx_dir)
    if not (d / "model.onnx").is_file():
        raise MlmaError(f"--onnx {d}: no model.onnx there; give the directory written by `mlma export`")
    return sorted(p for p in d.iterdir() if p.is_file())


def package_config(inference, languages: Sequence[str], num_parameters: int) -> Dict[str, Any]:
    """config.json: the ModelConfig dict plus what the checkpoint recorded about data and training."""
    from mlma_cli import __version__

    m = inference.meta
    return {
        "format": PACKAGE_FORMAT, "version": PACKAGE_VERSION, "mlma_version": __version__,
        "architecture": "ctc", "model_config": inference.config.to_dict(),
        "languages": list(languages), "sample_rate": SAMPLE_RATE, "num_parameters": num_parameters,
        "tokenizer_lang_tags": inference.tokenizer.lang_tags, "blank_id": inference.tokenizer.blank_id,
        "step": m.get("step"), "epoch": m.get("epoch"), "num_averaged": m.get("num_averaged"),
        "use_averaged": m.get("use_averaged", False), "averaged_from": m.get("averaged_from"),
        "averaging": m.get("averaging"), "sources": [Path(p).name for p in m.get("paths", [])],
        "train_config": m.get("train_config"), "data_config": m.get("data_config"),
    }


def save_weights(state: Dict[str, Any], path: Path) -> None:
    from safetensors.torch import save_file

    # safetensors refuses shared or strided storage: give each tensor its own contiguous copy
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    save_file(tensors, str(path), metadata=dict(WEIGHTS_METADATA))


def pack_model(checkpoints: Sequence[PathLike], out_dir: PathLike, use_averaged: bool = False,
               report: Optional[PathLike] = None, onnx_dir: Optional[PathLike] = None,
               license: str = "apache-2.0", name: Optional[str] = None,
               languages: Optional[Sequence[str]] = None) -> PackResult:
    """Write the package of ``checkpoints`` (several: their weight average) to ``out_dir``.

    Args:
        checkpoints: ``.pt`` checkpoints, packages or ``hf:`` specs (as ``load_for_inference`` takes them).
        use_averaged: the checkpoints' running-average weights instead of their weights.
        report: ``report.json`` of ``mlma report``: its table goes into the model card.
        onnx_dir: an ``mlma export`` directory, copied to ``out_dir/onnx/``.
        languages: ISO codes for the card; default from the training sets, else from the report.
        name: the card's title (``ORG/NAME`` also gives ``hf:ORG/NAME`` usage lines); default out_dir's name.
    """
    from mlma_cli.checkpoint import load_for_inference
    from mlma_cli.package.card import model_card
    from mlma_cli.text.normalize import LANGUAGES

    out_dir = Path(out_dir)
    if out_dir.exists() and not (out_dir.is_dir() and (is_package_dir(out_dir) or not any(out_dir.iterdir()))):
        raise MlmaError(f"--output-dir {out_dir} exists and is not a model package; give a new or empty directory")
    rep = read_report(report)
    extra = onnx_files(onnx_dir)
    bad = [l for l in languages or [] if l not in LANGUAGES]
    if bad:
        raise MlmaError(f"--language {', '.join(bad)}: expected codes among {', '.join(LANGUAGES)}")
    inference = load_for_inference(list(checkpoints), device="cpu", use_averaged=use_averaged)
    inference.meta["use_averaged"] = use_averaged
    tok, model = inference.tokenizer, inference.model
    if tok.vocab_size != inference.config.vocab_size:
        raise MlmaError(f"{checkpoints[0]}: tokenizer has {tok.vocab_size} tokens, the CTC head "
                        f"{inference.config.vocab_size}; this checkpoint cannot be packed")
    langs = list(languages or dataset_languages(inference.meta.get("data_config")) or (rep or {}).get("languages") or [])
    num_params = sum(p.numel() for p in model.parameters())
    cfg = package_config(inference, langs, num_params)
    name = name or out_dir.resolve().name

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        save_weights(model.state_dict(), tmp / WEIGHTS)
        write_json_atomic(tmp / CONFIG, cfg)
        (tmp / TOKENIZER).write_bytes(tok.to_bytes())
        write_tokens(tok.pieces(), tmp / "tokens.txt")
        for f in extra:
            (tmp / ONNX_DIR).mkdir(exist_ok=True)
            shutil.copy2(f, tmp / ONNX_DIR / f.name)
        write_text_atomic(tmp / CARD, model_card(cfg, name, license=license, report=rep, onnx=bool(extra)))
        os.chmod(tmp, 0o777 & ~_umask())
        _swap_in(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    files = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file())
    log.info("packed %s -> %s (%d files)", ", ".join(map(str, checkpoints)), out_dir, len(files))
    return PackResult(out_dir=out_dir, config=cfg, files=files)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _swap_in(new: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` (absent, empty or an old package) with the complete directory ``new``."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old.{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(new, out_dir)
    if old is not None:
        shutil.rmtree(old)
