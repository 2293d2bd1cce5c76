"""The benchmark commands run end to end at toy shapes (their timings are never asserted: benchmarks are not
tests), every row they promise is present, and the crossover logic picks the right length."""
import json

import pytest
import torch
from typer.testing import CliRunner

from mlma_cli.bench.model import ModelBenchRow, crossover, run_model_bench
from mlma_cli.bench.scan import MLMA_KERNEL, MLMA_KERNEL_ZIG, MLMA_TORCH, PLAIN, run_scan_bench
from mlma_cli.model import scan_cpu_kernel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_scan_bench_rows_side_by_side(tmp_path):
    out = tmp_path / "scan.json"
    res = run_scan_bench(batch=1, d_inner=8, d_state=4, length=24, lengths=(12, 24), repeats=1, threads=1,
                         memory=False, mamba_ssm_backward=False, ssd=True, ssd_heads=2, ssd_headdim=4, ssd_state=4,
                         ssd_chunk=8, json_path=str(out))
    assert json.loads(out.read_text())["shape"] == {"batch": 1, "d_inner": 8, "d_state": 4, "length": 24}
    rows = {r["name"]: r for r in res["rows"]}
    for name in (MLMA_KERNEL, MLMA_TORCH, PLAIN):
        assert rows[name]["available"] and rows[name]["fwd_ms"] > 0 and rows[name]["fwd_bwd_ms"] > 0, name
    assert rows[PLAIN]["fwd_speedup_vs_plain"] == 1.0
    assert res["machine"]["scan_kernel_compiler"] == scan_cpu_kernel.built_with()
    # the dev extra brings zig cc: with a system compiler too, its build gets a row of its own
    assert rows[MLMA_KERNEL_ZIG]["available"] == (not scan_cpu_kernel.built_with().startswith("zig"))
    assert [r["length"] for r in res["length_sweep"]] == [12, 24]
    assert {r["name"] for r in res["ssd"]["rows"]} and all(r["fwd_ms"] > 0 for r in res["ssd"]["rows"])


def test_zig_row_backward_runs_in_the_zig_library(monkeypatch):
    """The kernel library that ran a forward also runs its backward, whatever load() returns by then."""
    from mlma_cli.model.scan import selective_scan

    lib = scan_cpu_kernel.load()
    calls = []
    real_bwd = scan_cpu_kernel.scan_bwd
    monkeypatch.setattr(scan_cpu_kernel, "scan_bwd", lambda lib_, *a: calls.append(lib_) or real_bwd(lib_, *a))
    u = torch.randn(1, 4, 9, requires_grad=True)
    y = selective_scan(u, torch.rand(1, 4, 9), -torch.rand(4, 3), torch.randn(1, 3, 9), torch.randn(1, 3, 9))
    monkeypatch.setattr(scan_cpu_kernel, "_lib", None)  # a different library (none) is current now
    y.sum().backward()
    assert calls == [lib] and u.grad is not None


def test_model_bench_tiny_and_cli(tmp_path):
    res = run_model_bench("tiny", seconds=(0.5,), device="cpu", variants=("conmamba", "conformer", "conmamba-mamba2"),
                          repeats=1, budget_s=0.5)
    assert {r["variant"] for r in res["rows"]} == {"conmamba", "conformer", "conmamba-mamba2"}
    assert all(r["fwd_ms"] > 0 and r["fwdbwd_ms"] > 0 for r in res["rows"])
    from mlma_cli.cli.main import app

    out = tmp_path / "m.json"
    r = CliRunner().invoke(app, ["bench", "model", "--size", "tiny", "--seconds", "0.5", "--device", "cpu",
                                 "--repeats", "1", "--budget", "0.5", "--output", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["rows"]


def test_model_bench_forward_only_skips_training_runs(tmp_path):
    """--forward-only: no forward+backward run at all (so none can shift the forward timings), forward rows kept."""
    res = run_model_bench("tiny", seconds=(0.5,), device="cpu", repeats=1, budget_s=0.5, backward=False)
    assert {r["variant"] for r in res["rows"]} == {"conmamba", "conformer"} and res["env"]["backward"] is False
    assert all(r["fwd_ms"] > 0 and r["fwdbwd_ms"] is None and r["fwdbwd_peak_mb"] is None for r in res["rows"])
    assert all(q["fwd"] > 0 and q["fwdbwd"] is None for q in res["ratios"])
    from mlma_cli.cli.main import app

    out = tmp_path / "f.json"
    r = CliRunner().invoke(app, ["bench", "model", "--size", "tiny", "--seconds", "0.5", "--device", "cpu",
                                 "--repeats", "1", "--budget", "0.5", "--forward-only", "--output", str(out)])
    assert r.exit_code == 0, r.output
    assert all(row["fwdbwd_ms"] is None for row in json.loads(out.read_text())["rows"])


def test_model_bench_onnx_rows():
    """--onnx adds forward-only rows of the exported models, with their own ConMamba / Conformer ratio."""
    pytest.importorskip("onnxruntime")
    from mlma_cli.bench.model import ORT_DEVICE

    res = run_model_bench("tiny", seconds=(0.5,), device="cpu", repeats=1, budget_s=0.5, onnx=True)
    ort_rows = [r for r in res["rows"] if r["device"] == ORT_DEVICE]
    assert {r["variant"] for r in ort_rows} == {"conmamba", "conformer"}
    assert all(r["fwd_ms"] > 0 and r["fwdbwd_ms"] is None for r in ort_rows)
    ratio = next(q for q in res["ratios"] if q["device"] == ORT_DEVICE)
    assert ratio["fwd"] > 0 and ratio["fwdbwd"] is None and ratio["macs"] > 0
    assert set(res["crossover"][ORT_DEVICE]) == {"fwd_ms"} and res["env"]["onnxruntime"]


def test_crossover_is_the_length_from_which_conmamba_always_wins():
    def row(v, s, ms):
        return ModelBenchRow(variant=v, size="tiny", device="cpu", seconds=s, frames=int(100 * s), params_m=1.0,
                             fwd_ms=ms, fwdbwd_ms=ms, fwd_peak_mb=ms, fwdbwd_peak_mb=ms)
    rows = [row("conmamba", 5, 2), row("conformer", 5, 1), row("conmamba", 20, 1), row("conformer", 20, 3),
            row("conmamba", 60, 1), row("conformer", 60, 9)]
    assert crossover(rows)["fwd_ms"] == 20
    rows.append(row("conmamba", 180, 5))  # the Conformer skipped (too much memory): ConMamba wins
    assert crossover(rows)["fwd_ms"] == 20
    rows[0] = row("conmamba", 5, 0.5)
    assert crossover(rows)["fwd_ms"] == 5


def test_mac_counts_match_torch_flop_counter():
    """bench/macs.py by arithmetic against torch's FlopCounterMode (2 flops per MAC) over a real forward pass. The
    counter sees matmuls and convolutions, not the C kernels: ConMamba's scan and its mixer's depthwise conv (both
    run in scan_cpu_kernel on CPU) are taken out of the arithmetic."""
    from torch.utils.flop_counter import FlopCounterMode

    from mlma_cli.bench.macs import model_macs
    from mlma_cli.model import build_model, named_config

    for enc in ("conformer", "conmamba"):
        cfg = named_config(f"{enc}-tiny", vocab_size=50)
        model = build_model(cfg).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.randn(1, 333, 80), torch.tensor([333]))
        t = (((333 + 1) // 2) + 1) // 2
        kernels = 2 * (3 * cfg.d_state + cfg.d_conv) * cfg.d_inner * t * cfg.num_layers if enc == "conmamba" else 0
        counted, expected = counter.get_total_flops() // 2, model_macs(cfg, 333)["total"] - kernels
        assert counted == expected, (enc, counted, expected)
