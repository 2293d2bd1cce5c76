"""Shared by the scan tests: float32-vs-float64 comparison and mamba-ssm's reference functions (or a skip)."""
import pytest

from mlma_cli.model.backends import import_mamba_ssm_reference


def import_mamba_ssm_ref(module: str, name: str):
    try:
        return import_mamba_ssm_reference(module, name)
    except ModuleNotFoundError as e:
        if e.name not in (None, "mamba_ssm"):  # mamba-ssm is there, one of its imports is not (e.g. triton)
            pytest.skip(f"mamba-ssm is installed but {module} cannot be imported here: {e}")
        pytest.skip("mamba-ssm is not installed (optional); the independent float64 reference covers correctness")
    except Exception as e:
        pytest.skip(f"mamba-ssm is installed but {module} cannot be imported here: {type(e).__name__}: {e}")


def assert_close_scaled(actual, expected, tol=1e-5, what=""):
    """|actual - expected| <= tol * max(1, max|expected|): float32 vs a float64 reference."""
    expected = expected.double()
    err = (actual.double() - expected).abs().max().item()
    scale = max(1.0, expected.abs().max().item())
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol:g} * {scale:.3g}"
