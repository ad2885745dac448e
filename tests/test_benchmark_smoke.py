"""Smoke test of the scaling benchmark (benchmarks/scaling.py): it runs end to end.

No timing is asserted: only that every method ran and the JSON and PNG were written.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "scaling.py"
METHODS = {"pavi-e", "pavi-f", "mean-field", "pyro-autonormal"}


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.skipif(
    importlib.util.find_spec("pyro") is None or importlib.util.find_spec("matplotlib") is None,
    reason="needs the bench extra (pyro-ppl, matplotlib)",
)
def test_quick_benchmark_writes_every_method(tmp_path):
    # One learning rate, a 1 s budget. With --eval-groups 50 the flow families are
    # evaluated with Posterior.summary at G = 40 and on a subset of groups at G = 100
    # (our families only).
    cmd = [
        sys.executable, str(SCRIPT), "--quick",
        "--sizes", "40", "--ours-only-sizes", "100", "--lrs", "0.03", "--budget-seconds", "1", "--eval-draws", "50",
        "--eval-groups", "50", "--device", "cpu", "--out", str(tmp_path),
    ]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=220)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "scaling.json").read_text())
    runs = report["runs"]
    assert {r["method"] for r in runs} == METHODS
    for run in runs:
        assert not run.get("failed"), run.get("failed")
        assert run["steps"] > 0 and run["parameters"] > 0
        assert run["curve"] and run["final_error"] is not None
        assert run["peak_mb"] is not None
    assert set(report["best"]["40"]) == METHODS
    assert set(report["best"]["100"]) == METHODS - {"pyro-autonormal"}
    how = {(r["G"], r["method"]): r["eval_how"] for r in runs}
    assert how[40, "pavi-e"].startswith("Posterior.summary") and "subset" in how[100, "pavi-e"]
    assert report["machine"]["torch"] and report["machine"]["cpu_count"]
    png = tmp_path / "scaling.png"
    assert png.exists() and png.stat().st_size > 1000
    assert "pyro/pavi-e" in proc.stdout
