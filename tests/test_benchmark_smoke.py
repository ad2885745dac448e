"""Smoke tests of the benchmarks (benchmarks/scaling.py, benchmarks/threads.py): they run end to end.

No timing is asserted: only that every method (every thread setting and condition) ran
and the JSON and PNG were written.
"""

from __future__ import annotations

import importlib.util
import json
import os
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


THREADS_SCRIPT = SCRIPT.parent / "threads.py"


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib (the bench extra)")
def test_quick_threads_benchmark_writes_every_setting_and_condition(tmp_path):
    # The two smallest workloads, a step or two each: 2 workloads x 3 settings x 2
    # conditions = 12 subprocesses. This checkout's pavi_viz comes first on the path.
    cmd = [
        sys.executable, str(THREADS_SCRIPT), "--quick", "--workloads", "eight_schools", "radon",
        "--settings", "1,2,auto", "--warmup", "1", "--steps", "2", "--seconds", "0.1", "--out", str(tmp_path),
    ]
    root = str(SCRIPT.parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=280, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "threads.json").read_text())
    assert set(report["workloads"]) == {"eight_schools", "radon"}
    assert report["workloads"]["eight_schools"]["work"] == 18  # 8 theta + 8 y + mu + tau
    cells = {(r["workload"], r["setting"], r["condition"]) for r in report["runs"] if not r.get("failed")}
    assert cells == {(w, s, c) for w in ("eight_schools", "radon") for s in (1, 2, "auto")
                     for c in ("alone", "busy")}, [r.get("failed") for r in report["runs"]]
    for run in report["runs"]:
        # "auto" gives these small models one thread.
        assert run["steps_per_second"] > 0 and run["torch_threads"] == (1 if run["setting"] == "auto" else run["setting"])
        assert (run["busy_processes"] == 1) == (run["condition"] == "busy")
    for workload in ("eight_schools", "radon"):
        for condition in ("alone", "busy"):
            assert set(report["medians"][workload][condition]) == {"1", "2", "auto"}
            assert report["ratios"][workload][condition]["2/1"] > 0
    assert "alone_work" in report["crossover"]
    assert report["machine"]["torch"] and report["machine"]["cpu_count"] and report["machine"]["affinity"]
    png = tmp_path / "threads.png"
    assert png.exists() and png.stat().st_size > 1000
    assert "Crossover alone" in proc.stdout


ACCURACY_SCRIPT = SCRIPT.parent / "accuracy.py"


@pytest.mark.timeout(120)
def test_accuracy_benchmark_compares_every_latent_with_the_reference(tmp_path):
    from pavi_viz import examples

    cmd = [sys.executable, str(ACCURACY_SCRIPT), "--examples", "eight_schools", "radon", "--models", "funnel",
           "--families", "mean-field", "--setting", "steps=20", "--draws", "200", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "accuracy.json").read_text())
    assert [(r["example"], r["family"]) for r in report["runs"]] == [("eight_schools", "mean-field"),
                                                                     ("radon", "mean-field"), ("funnel", "mean-field")]
    references = {"eight_schools": examples.reference_summary("eight_schools"), "radon": examples.reference_summary("radon"),
                  "funnel": examples.read_reference(SCRIPT.parent / "references" / "funnel_reference.json")}
    for run in report["runs"]:
        assert run["steps"] == 20 and run["settings"] == {"steps": 20}
        assert set(run["latents"]) == set(references[run["example"]].data_vars)
        # Twenty steps of mean-field are far from the posterior: the bar is missed, and said so.
        assert run["passes"] is False and "misses the bar" in proc.stdout
