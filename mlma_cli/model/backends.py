"""Scan backends: mamba-ssm's fused kernels when importable and the tensors are on CUDA, else our PyTorch scans.

    fn = selective_scan_for(u, "auto")   # fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus) -> (B, D, L)
    fn = ssd_scan_for(x, "auto")         # fn(x, dt, A, B, C, chunk_size, D, z, dt_bias, dt_softplus) -> (B, L, H, P)

Both sides share mamba-ssm's argument layout, so the same module weights run on either. The choice and its
reason are logged once per (op, choice, reason).

mamba-ssm is imported without running its package ``__init__`` (which pulls in the compiled selective-scan
extension, transformers and tilelang): the Triton SSD kernels then work even where only the pure-Python part of
mamba-ssm is installed.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import types
from typing import Callable, Dict, Optional, Set, Tuple

import torch

from mlma_cli.errors import MissingDependencyError
from mlma_cli.model.config import check_scan_backend

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install mamba-ssm causal-conv1d --no-build-isolation (on a CUDA machine)"
_cache: Dict[str, Tuple[Optional[Callable], str]] = {}
_logged: Set[Tuple[str, str, str]] = set()
OWN = "mlma's own scan"  # scan.py / ssd.py: the C kernel or PyTorch on CPU, PyTorch on CUDA
# op -> scan used regardless of scan_backend; set only by export_scan.onnx_export_scans() during ONNX export
FORCED: Dict[str, Callable] = {}


def _import_mamba_ssm_module(name: str):
    """Import mamba_ssm.<name>; if the package __init__ fails, retry skipping it (see module docstring)."""
    if "mamba_ssm" in sys.modules:  # imported before, normally or bare by us
        return importlib.import_module(f"mamba_ssm.{name}")
    try:
        return importlib.import_module(f"mamba_ssm.{name}")
    except Exception:  # usually ImportError in __init__ (tilelang, transformers, the CUDA extension)
        for key in [k for k in sys.modules if k.startswith("mamba_ssm.")]:
            del sys.modules[key]  # left over from the failed attempt, their parent is gone
        spec = importlib.util.find_spec("mamba_ssm")
        if spec is None or spec.submodule_search_locations is None:
            raise
    pkg = importlib.util.module_from_spec(spec)  # the package object, its __init__ not executed
    pkg._mlma_bare = True
    sys.modules["mamba_ssm"] = pkg
    return importlib.import_module(f"mamba_ssm.{name}")


def import_mamba_ssm_reference(module: str, name: str) -> Callable:
    """mamba-ssm's pure-torch reference ``module.name`` (e.g. selective_scan_ref), for tests and benchmarks.

    Works without the compiled extension: a bare package object stands in for ``mamba_ssm`` (its __init__ is
    not run) and a stub for ``selective_scan_cuda``. Everything is dropped from sys.modules afterwards, so the
    backend choice of the running process is not affected. Raises ModuleNotFoundError when mamba-ssm is not
    installed, and whatever the import raises otherwise (e.g. triton missing for the SSD reference).
    """
    spec = importlib.util.find_spec("mamba_ssm")
    if spec is None or spec.submodule_search_locations is None:
        raise ModuleNotFoundError("mamba-ssm is not installed")
    saved = {k: sys.modules.get(k) for k in ("mamba_ssm", "selective_scan_cuda")}
    pkg = types.ModuleType("mamba_ssm")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["mamba_ssm"] = pkg
    sys.modules.setdefault("selective_scan_cuda", types.ModuleType("selective_scan_cuda"))
    try:
        return getattr(importlib.import_module(module), name)
    finally:
        for key in list(sys.modules):
            if key.split(".")[0] == "mamba_ssm" or key == "selective_scan_cuda":
                del sys.modules[key]
        sys.modules.update({k: v for k, v in saved.items() if v is not None})


def _load_cuda_selective_scan() -> Tuple[Optional[Callable], str]:
    if "scan" not in _cache:
        try:
            mod = _import_mamba_ssm_module("ops.selective_scan_interface")
            _cache["scan"] = (mod.selective_scan_fn, "mamba-ssm selective_scan_fn")
        except Exception as err:  # ImportError, or a broken build raising anything else at import
            _cache["scan"] = (None, f"mamba-ssm not importable: {err}")
    return _cache["scan"]


def _load_cuda_ssd() -> Tuple[Optional[Callable], str]:
    if "ssd" not in _cache:
        try:
            mod = _import_mamba_ssm_module("ops.triton.ssd_combined")
            _cache["ssd"] = (mod.mamba_chunk_scan_combined, "mamba-ssm Triton mamba_chunk_scan_combined")
        except Exception as err:
            _cache["ssd"] = (None, f"mamba-ssm Triton kernels not importable: {err}")
    return _cache["ssd"]


def _log_once(op: str, choice: str, reason: str, level: int = logging.INFO) -> None:
    key = (op, choice, reason)
    if key not in _logged:
        _logged.add(key)
        log.log(level, "%s: %s (%s)", op, choice, reason)


def _choose(op: str, x: torch.Tensor, backend: str, loader, torch_fn: Callable) -> Callable:
    check_scan_backend(backend)
    if op in FORCED:
        return FORCED[op]
    if backend == "torch":
        _log_once(op, OWN, "scan_backend=torch")
        return torch_fn
    fn, why = loader()
    if fn is not None and x.is_cuda:
        _log_once(op, "mamba-ssm kernels", why)
        return fn
    reason = why if fn is None else f"tensors on {x.device.type}"
    if backend == "cuda":
        raise MissingDependencyError(
            f"{op}: scan_backend=cuda but the mamba-ssm kernels cannot be used ({reason}); "
            f"install them with: {INSTALL_HINT}, or set scan_backend: auto")
    if x.is_cuda:  # works, but one small kernel per time step: far slower than mamba-ssm's fused kernels
        _log_once(op, OWN, f"{reason}; slow on a GPU, install mamba-ssm: {INSTALL_HINT}", logging.WARNING)
    else:
        _log_once(op, OWN, reason)
    return torch_fn


def selective_scan_for(x: torch.Tensor, backend: str = "auto") -> Callable:
    """The Mamba-1 selective scan to use for tensors like x under scan_backend."""
    from mlma_cli.model.scan import selective_scan  # imported lazily: owned by the scan module

    return _choose("selective scan", x, backend, _load_cuda_selective_scan, selective_scan)


def ssd_scan_for(x: torch.Tensor, backend: str = "auto") -> Callable:
    """The Mamba-2 chunked SSD scan to use for tensors like x under scan_backend."""
    from mlma_cli.model.ssd import ssd_chunk_scan

    return _choose("SSD scan", x, backend, _load_cuda_ssd, ssd_chunk_scan)


def describe() -> Dict[str, str]:
    """Which scan each path would use on this machine (model-info, benchmarks): CUDA kernels, CPU kernel."""
    out = {}
    for key, loader in (("selective_scan", _load_cuda_selective_scan), ("ssd", _load_cuda_ssd)):
        fn, why = loader()
        out[key] = why if fn is not None else f"unavailable: {why}"
    from mlma_cli.model import scan_cpu_kernel

    compiler = scan_cpu_kernel.built_with()
    out["cpu_selective_scan"] = (f"compiled C kernel (built with {compiler})" if compiler else
                                 "pure-PyTorch chunked scan (no C kernel: no working compiler, or MLMA_SCAN_KERNEL=0)")
    out["cuda_device"] = "yes" if torch.cuda.is_available() else "no"
    return out
