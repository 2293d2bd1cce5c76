"""One rule for `--device` in every command: auto picks the GPU when one is visible, and says so."""
from __future__ import annotations

import logging

from mlma_cli.errors import MlmaError

log = logging.getLogger(__name__)


def pick_device(name: str = "auto") -> str:
    """'auto' -> 'cuda' when CUDA is available, else 'cpu' (logged); 'cpu', 'cuda', 'cuda:N' are checked.

    Raises MlmaError for an unknown name or a CUDA device on a machine without one.
    """
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        chosen = "cuda" if torch.cuda.is_available() else "cpu"
        log.info("device: %s (--device auto; %s)", chosen,
                 "CUDA is available" if chosen == "cuda" else "no CUDA GPU visible")
        return chosen
    if name != "cpu" and not (name == "cuda" or name.startswith("cuda:") and name[5:].isdigit()):
        raise MlmaError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MlmaError(f"--device {name} asked for but CUDA is not available here; use --device cpu or auto")
    return name
