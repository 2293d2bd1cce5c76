"""mamba-ssm's pure-torch reference functions for the scan tests, imported without its package __init__."""
import importlib
import importlib.util
import sys
import types

import pytest


def import_mamba_ssm_ref(module: str, name: str):
    """mamba-ssm's pure-torch reference function, or skip with the reason.

    ``import mamba_ssm`` runs a package __init__ that needs the compiled CUDA extension and the model
    stack (transformers, ...). Only the ops submodules are wanted, so a bare package object stands in
    for ``mamba_ssm`` (its __init__ is not run) and a stub for ``selective_scan_cuda``; all of them are
    dropped from sys.modules afterwards so nothing else in the session believes mamba-ssm is usable.
    """
    spec = importlib.util.find_spec("mamba_ssm")
    if spec is None:
        pytest.skip("mamba-ssm is not installed (optional); the independent float64 reference covers correctness")
    saved = {k: sys.modules.get(k) for k in ("mamba_ssm", "selective_scan_cuda")}
    pkg = types.ModuleType("mamba_ssm")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["mamba_ssm"] = pkg
    sys.modules.setdefault("selective_scan_cuda", types.ModuleType("selective_scan_cuda"))
    try:
        return getattr(importlib.import_module(module), name)
    except Exception as e:  # e.g. triton missing on a CPU-only machine
        pytest.skip(f"mamba-ssm is installed but {module} cannot be imported here: {type(e).__name__}: {e}")
    finally:
        for key in list(sys.modules):
            if key.split(".")[0] == "mamba_ssm" or key == "selective_scan_cuda":
                del sys.modules[key]
        sys.modules.update({k: v for k, v in saved.items() if v is not None})
