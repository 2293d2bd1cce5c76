"""What this machine offers mlma, and which path each optional piece will take (``mlma env``).

Meant for bug reports and for checking a new cluster node: versions of the packages mlma builds on, the
accelerators torch sees, and for every component with a fallback (scan kernels, WFST backends, tools used
by the data pipeline) the path that will actually run here.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import shutil
import sys
from typing import Dict

import torch

from mlma_cli.decode.k2_backend import k2_available
from mlma_cli.model.backends import describe

# distribution name -> import name, for the packages mlma uses (required first, then optional)
PACKAGES = {
    "torch": "torch", "lhotse": "lhotse", "sentencepiece": "sentencepiece", "typer": "typer", "rich": "rich",
    "jiwer": "jiwer", "kaldialign": "kaldialign", "soundfile": "soundfile", "lilcom": "lilcom",
    "kaldifst": "kaldifst", "kaldi-decoder": "kaldi_decoder", "kaldilm": "kaldilm", "k2": "k2",
    "mamba-ssm": "mamba_ssm", "causal-conv1d": "causal_conv1d", "triton": "triton", "ziglang": "ziglang",
}
TOOLS = {"espeak-ng": "synthetic corpus (mlma prepare synthetic)", "ffmpeg": "audio formats soundfile cannot read",
         "sox": "audio conversion in recipes"}


def _version(dist: str, module: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "importable (no package metadata)" if importlib.util.find_spec(module) else "not installed"


def collect_environment() -> Dict[str, Dict[str, str]]:
    """{"system": ..., "packages": ..., "accelerators": ..., "paths": ..., "tools": ...}, all values strings."""
    system = {"mlma": _version("mlma", "mlma_cli"), "python": sys.version.split()[0],
              "platform": platform.platform(), "cpu threads (torch)": str(torch.get_num_threads())}
    packages = {dist: _version(dist, module) for dist, module in PACKAGES.items()}
    acc = {"cuda available": str(torch.cuda.is_available()), "torch cuda build": str(torch.version.cuda)}
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        acc[f"cuda:{i}"] = f"{torch.cuda.get_device_name(i)}, bf16 {torch.cuda.is_bf16_supported()}"
    scans = describe()
    wfst = "kaldi-decoder" if importlib.util.find_spec("kaldi_decoder") and importlib.util.find_spec("kaldifst") \
        else "unavailable: pip install 'mlma[lm]'"
    paths = {
        "selective scan, CPU tensors": scans["cpu_selective_scan"],
        "selective scan, CUDA tensors": (f"mamba-ssm ({scans['selective_scan']})"
                                         if not scans["selective_scan"].startswith("unavailable")
                                         else f"mlma PyTorch scan, slow on GPU ({scans['selective_scan']})"),
        "Mamba-2 SSD, CUDA tensors": (f"mamba-ssm Triton ({scans['ssd']})" if not scans["ssd"].startswith("unavailable")
                                      else f"mlma PyTorch SSD ({scans['ssd']})"),
        "WFST decoding (--backend kaldi)": wfst,
        "WFST decoding (--backend k2)": "k2" if k2_available() else
        "unavailable: k2 not importable (CPU: tools/setup_env.sh --k2 makes .venv-k2; GPU: k2-fsa's wheel)",
    }
    tools = {name: (shutil.which(name) or f"not found: needed for {why}") for name, why in TOOLS.items()}
    return {"system": system, "packages": packages, "accelerators": acc, "paths": paths, "tools": tools}
