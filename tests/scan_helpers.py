"""Shared by the scan tests: float32-vs-float64 comparison and mamba-ssm's reference functions.

mamba-ssm's pure-torch references are imported from an installed mamba-ssm or, where it is not installed
(its package needs the CUDA extension), from the source that ``tools/setup_env.sh --dev`` unpacks into
``.cache/mamba-ssm-src``. Without either they skip, unless MLMA_REQUIRE_MAMBA_SSM_REF=1 (set by .ci/run)
turns the skip into a failure so CI can never pass without running them.
"""
import contextlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path

import pytest

from mlma_cli.model.backends import import_mamba_ssm_reference

MAMBA_SSM_SOURCE = Path(__file__).resolve().parents[1] / ".cache" / "mamba-ssm-src"


def mamba_ssm_unavailable(why: str):
    """Skip (or, under MLMA_REQUIRE_MAMBA_SSM_REF=1, fail) a test that needs mamba-ssm's references."""
    if os.environ.get("MLMA_REQUIRE_MAMBA_SSM_REF") == "1":
        pytest.fail(f"{why}; MLMA_REQUIRE_MAMBA_SSM_REF=1 requires it (run tools/setup_env.sh --dev)")
    pytest.skip(why)


def mamba_ssm_source_dir():
    """Directory to put on sys.path for mamba-ssm, or None when it is installed or absent."""
    if importlib.util.find_spec("mamba_ssm") is not None or not (MAMBA_SSM_SOURCE / "mamba_ssm").is_dir():
        return None
    return str(MAMBA_SSM_SOURCE)


@contextlib.contextmanager
def _source_on_path():
    src = mamba_ssm_source_dir()
    if src is not None:
        sys.path.insert(0, src)
        importlib.invalidate_caches()
    try:
        yield
    finally:
        if src is not None:
            sys.path.remove(src)


def import_mamba_ssm_ref(module: str, name: str):
    with _source_on_path():
        try:
            return import_mamba_ssm_reference(module, name)
        except ModuleNotFoundError as e:
            if e.name not in (None, "mamba_ssm"):  # mamba-ssm is there, one of its imports is not (e.g. triton)
                mamba_ssm_unavailable(f"mamba-ssm is there but {module} cannot be imported: {e}")
            mamba_ssm_unavailable("mamba-ssm is neither installed nor unpacked in .cache/mamba-ssm-src")
        except Exception as e:
            mamba_ssm_unavailable(f"mamba-ssm is there but {module} cannot be imported: {type(e).__name__}: {e}")


def assert_close_scaled(actual, expected, tol=1e-5, what=""):
    """|actual - expected| <= tol * max(1, max|expected|): float32 vs a float64 reference."""
    expected = expected.double()
    err = (actual.double() - expected).abs().max().item()
    scale = max(1.0, expected.abs().max().item())
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol:g} * {scale:.3g}"
