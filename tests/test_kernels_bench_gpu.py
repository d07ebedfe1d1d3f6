"""tools/benchmarks/gpu.py --dry: the whole benchmark at tiny sizes on the CPU (TRITON_INTERPRET=1),
parity only, so the script the GPU run depends on is exercised on every CI run."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("triton", reason="triton is not installed: the benchmark's kernels cannot run")


def test_dry_run_writes_parity(tmp_path):
    from latentscape.tools.benchmarks.gpu import main

    out = tmp_path / "bench.json"
    assert main(["--dry", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["failed_sections"] == []
    sec = data["sections"]
    assert sec["hashgrid L16F2"]["float32"]["fwd_max_abs"] < 1e-5
    assert sec["hashgrid L8F4"]["float16"]["grad_params_max_rel"] < 1e-3
    assert sec["mlp"]["density 32-64-16"]["ieee"]["max_rel"] < 1e-4
    assert sec["sh"]["degree 4"]["max_rel"] < 1e-5
    assert sec["raymarch"]["march"]["valid_mismatches"] == 0
    assert sec["raymarch"]["composite"]["grad_max_rel"] < 1e-3
    frames = sec["frames"]["frames"]
    assert frames["24x16 triton"]["rgb_max_abs_vs_torch"] < 1e-4
    assert "skipped" in frames["24x16 tcnn"]
