"""The PyTorch backend of `mlma.load`: checkpoints, model packages and hf: specs (imported only when used)."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np


class TorchBackend:
    name = "torch"

    def __init__(self, path, device: str = "auto") -> None:
        from mlma_cli.checkpoint import load_for_inference
        from mlma_cli.utils.device import pick_device

        self.device = pick_device(device)
        self.inference = load_for_inference([path], device=self.device)
        meta = self.inference.meta
        self.languages = _languages(meta)
        cfg = self.inference.config
        tok = self.inference.tokenizer
        self.info: Dict[str, Any] = {
            "backend": self.name, "path": os.fspath(path), "device": self.device,
            "model_type": getattr(cfg, "encoder", None), "vocab_size": tok.vocab_size, "lang_tags": tok.lang_tags,
            "languages": self.languages, "step": meta.get("step"), "epoch": meta.get("epoch"),
            "averaging": meta.get("averaging"), "package": meta.get("package"),
            "model_config": cfg.to_dict() if hasattr(cfg, "to_dict") else None,
        }

    def transcribe(self, files: Sequence[Tuple[int, str]], arrays: Sequence[Tuple[int, np.ndarray]], n: int,
                   batch_size: int = 8, language=None, **options) -> list:
        import torch

        with torch.inference_mode():  # no autograd bookkeeping anywhere in the call
            return self._transcribe(files, arrays, n, dict(options, batch_size=batch_size, language=language,
                                                           device=self.device))

    def _transcribe(self, files, arrays, n: int, overrides: Dict[str, Any]) -> list:
        from mlma_cli.decode.transcribe import transcribe_arrays, transcribe_files
        from mlma_cli.errors import MlmaError

        out: List[Any] = [None] * n
        if files:
            res, errors = transcribe_files(self.inference, [p for _, p in files], **overrides)
            if errors:
                raise MlmaError("cannot transcribe " + "; ".join(f"{name}: {msg}" for name, msg in errors))
            if not arrays and len(res) != len(files):  # directories / lists / manifests expanded: their order
                return res
            if len(res) != len(files):
                raise MlmaError("a directory, @list or manifest among the inputs expanded to several files; "
                                "pass audio files only when mixing them with arrays")
            for (i, _), r in zip(files, res):
                out[i] = r
        if arrays:
            res = transcribe_arrays(self.inference, [a for _, a in arrays], names=[str(i) for i, _ in arrays],
                                    **overrides)
            for (i, _), r in zip(arrays, res):
                out[i] = r
        return out


def _languages(meta: Dict[str, Any]) -> List[str]:
    """The package's recorded languages, else the languages of the training sets in the data config."""
    pkg = meta.get("package")
    if isinstance(pkg, dict) and pkg.get("languages"):
        return sorted(pkg["languages"])
    from mlma_cli.text.normalize import LANGUAGES

    found: List[str] = []
    for e in (meta.get("data_config") or {}).get("train") or []:
        names = (e.get("datasets") or [e.get("dataset")]) if isinstance(e, dict) else [e]
        for name in names:
            parts = str(name or "").split("/")
            langs = LANGUAGES if len(parts) > 1 and parts[1] == "*" else [p for p in parts if p in LANGUAGES][:1]
            found += [lang for lang in langs if lang not in found]
    return sorted(found)
