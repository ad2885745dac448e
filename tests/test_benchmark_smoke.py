"""Smoke tests of the benchmarks (benchmarks/peers.py, benchmarks/threads.py, benchmarks/accuracy.py,
benchmarks/step_cost.py, benchmarks/dashboard.py): they run end to end.

No timing is asserted: only that every method (every thread setting and condition) ran
and the JSON and PNG were written.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "peers.py"


def _load_peers():
    spec = importlib.util.spec_from_file_location("peers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_exact_posterior_has_no_error_against_itself():
    from pavi_viz.examples import gre

    peers = _load_peers()
    model = gre.build(G=30, N=10, D=2, seed=1)
    groups = peers.evaluation_groups(30, 20)
    assert len(groups) == 20 and list(groups) == sorted(set(groups))
    truth = peers.exact_posterior(model, groups)
    assert truth["mu"][0].shape == (2,) and truth["mu_g"][0].shape == (20, 2)
    perfect = peers.errors(truth, truth)
    assert perfect["error"] == 0.0
    for latent in perfect["latents"].values():
        assert latent["mean_error"] == 0.0 and latent["sd_ratio_min"] == latent["sd_ratio_max"] == 1.0
    # One sd off on every element of mu_g: an error of 1, the worst latent's.
    mean_g, sd_g = truth["mu_g"]
    shifted = peers.errors({**truth, "mu_g": (mean_g + sd_g, 2 * sd_g)}, truth)
    assert shifted["error"] == pytest.approx(1.0) and shifted["latents"]["mu"]["mean_error"] == 0.0
    assert shifted["latents"]["mu_g"]["sd_ratio_min"] == pytest.approx(2.0)


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.timeout(120)
@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("pyro", "numpyro", "matplotlib")),
    reason="needs the bench extra (pyro-ppl, numpyro, matplotlib)",
)
def test_peers_benchmark_writes_its_json_table_and_plot(tmp_path):
    # pavi_viz's defaults and subsampled Pyro, one lr, G = 100, 3 s budgets: two runs.
    methods = ["pavi_viz", "pyro-svi-sub"]
    cmd = [sys.executable, str(SCRIPT), "--sizes", "100", "--budget", "3", "--methods", *methods,
           "--svi-lrs", "0.05", "--eval-draws", "200", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "peers.json").read_text())
    assert [r["method"] for r in report["runs"]] == methods
    for run in report["runs"]:
        assert not run.get("failed"), run["failed"]
        assert run["steps"] > 0 and run["curve"] and run["peak_mb"] is not None
        assert set(run["levels"]) == {"0.5", "0.2", "0.1"}
        for point in run["curve"]:
            assert math.isfinite(point["error"]) and point["time"] >= 0
            assert point["error"] == max(v["mean_error"] for v in point["latents"].values())
            for latent in point["latents"].values():
                assert all(math.isfinite(v) for v in latent.values())
    assert set(report["best"]["100"]) == set(methods)
    assert report["best"]["100"]["pyro-svi-sub"]["lr"] == 0.05
    assert report["machine"]["versions"]["torch"] and report["machine"]["cpu_count"]
    assert "G = 100" in report["table"] and "pavi_viz (fit defaults)" in report["table"]
    assert report["table"] in proc.stdout
    png = tmp_path / "peers.png"
    assert png.exists() and png.stat().st_size > 1000


THREADS_SCRIPT = SCRIPT.parent / "threads.py"


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.timeout(300)
@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib (the bench extra)")
def test_quick_threads_benchmark_writes_every_setting_and_condition(tmp_path):
    # The smallest workload, a step or two: 3 settings x 2 conditions = 6 subprocesses.
    # This checkout's pavi_viz comes first on the path.
    cmd = [
        sys.executable, str(THREADS_SCRIPT), "--quick", "--workloads", "eight_schools",
        "--settings", "1,2,auto", "--warmup", "1", "--steps", "2", "--seconds", "0.1", "--out", str(tmp_path),
    ]
    root = str(SCRIPT.parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=280, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "threads.json").read_text())
    assert set(report["workloads"]) == {"eight_schools"}
    assert report["workloads"]["eight_schools"]["work"] == 18  # 8 theta + 8 y + mu + tau
    cells = {(r["workload"], r["setting"], r["condition"]) for r in report["runs"] if not r.get("failed")}
    assert cells == {("eight_schools", s, c) for s in (1, 2, "auto")
                     for c in ("alone", "busy")}, [r.get("failed") for r in report["runs"]]
    for run in report["runs"]:
        # "auto" gives these small models one thread.
        assert run["steps_per_second"] > 0 and run["torch_threads"] == (1 if run["setting"] == "auto" else run["setting"])
        assert (run["busy_processes"] == 1) == (run["condition"] == "busy")
    for condition in ("alone", "busy"):
        assert set(report["medians"]["eight_schools"][condition]) == {"1", "2", "auto"}
        assert report["ratios"]["eight_schools"][condition]["2/1"] > 0
    assert "alone_work" in report["crossover"]
    assert report["machine"]["torch"] and report["machine"]["cpu_count"] and report["machine"]["affinity"]
    png = tmp_path / "threads.png"
    assert png.exists() and png.stat().st_size > 1000
    assert "Crossover alone" in proc.stdout


ACCURACY_SCRIPT = SCRIPT.parent / "accuracy.py"


@pytest.mark.long
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


PARETO_K_SCRIPT = SCRIPT.parent / "pareto_k.py"


@pytest.mark.long
@pytest.mark.timeout(120)
def test_pareto_k_benchmark_checks_an_example_and_the_glmm_before_and_after(tmp_path):
    cmd = [sys.executable, str(PARETO_K_SCRIPT), "--examples", "eight_schools", "--setting", "steps=20",
           "--draws", "200", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "pareto_k.json").read_text())
    assert [(r["example"], r["family_asked"], r["family"]) for r in report["runs"]] == [
        ("eight_schools", None, "pavi-e"), ("glmm", "mean-field", "mean-field"), ("glmm", None, "pavi-e")]
    for run in report["runs"]:
        assert run["steps"] == 20 and run["fit_seconds"] > 0 and run["settings"] == {"steps": 20}
        # Small models: every one is weighed whole, at least 1,000 draws (the pool's least).
        assert run["draws"] >= 1000 and 0 < run["ess"] <= run["draws"] and run["pareto_k"] == run["pareto_k"]
        # Twenty steps leave q far from the posterior: nothing resampled, and said so.
        assert run["reweighted"] is False and (run["verdict"] == "far") == (run["pareto_k"] > 0.7)
    assert report["table"].startswith("| example | family | Pareto k | verdict |") and report["table"] in proc.stdout
    assert report["machine"]["cpu_count"]


@pytest.mark.long
@pytest.mark.timeout(120)
@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None or importlib.util.find_spec("numpyro") is None,
                    reason="needs the bench extra (matplotlib, numpyro)")
def test_step_cost_benchmark_times_every_step_beside_numpyros_and_writes_its_json_and_plot(tmp_path):
    script = SCRIPT.parent / "step_cost.py"
    cmd = [sys.executable, str(script), "--groups", "50", "--warm-up", "1", "--repeats", "3", "--rounds", "2",
           "--out", str(tmp_path)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "step_cost.json").read_text())
    rows = report["rows"]
    assert [row["family"] for row in rows] == ["pavi-e"] * 4 + ["mean-field", None, None]
    assert rows[-1]["label"].startswith("NumPyro")
    for row in rows:
        assert len(row["ms_per_step_rounds"]) == 2 and row["ms_per_step"] == min(row["ms_per_step_rounds"]) > 0
    assert report["peer_ms"] == rows[-1]["ms_per_step"] and report["target_ms"] == pytest.approx(3 * report["peer_ms"])
    # The products read off a step shrink with the flows, and mean-field has none.
    work = [row["product_multiply_adds"] for row in rows[:4]]
    assert work == sorted(work, reverse=True) and work[-1] > 0 and all(row["products_ms"] > 0 for row in rows[:4])
    assert "products_ms" not in rows[4]
    assert report["table"] in proc.stdout
    assert (tmp_path / "step_cost.png").stat().st_size > 1000


@pytest.mark.long
@pytest.mark.timeout(600)
def test_dashboard_benchmark_measures_the_browsers_load_for_each_poll_period(tmp_path):
    script = SCRIPT.parent / "dashboard.py"
    cmd = [sys.executable, str(script), "--seconds", "3", "--rounds", "1", "--groups", "60", "--poll-ms", "200", "500",
           "--out", str(tmp_path)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "dashboard.json").read_text())
    assert list(report["watched"]) == ["200", "500"]
    for watched in report["watched"].values():
        assert watched["throughput_ratio"] > 0 and watched["browser_cpu_share"] > 0  # the page drew the fit
        assert 0 <= watched["blocked_share"] <= 1 and watched["longest_freeze_s"] >= 0
        assert watched["point_latency_s"]["n"] > 0
    assert report["large_plate"]["click_to_detail_s"]["n"] > 0
