"""Smoke test of benchmarks/distributed.py: its quick mode runs end to end.

No timing is asserted: only that the 2-process launches (torchrun) trained and reported
every rank, and that the JSON and PNG were written. One process takes the same path
with one rank (``tests/inference/test_distributed.py`` covers the rest).
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

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "distributed.py"


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.timeout(400)
@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib (the bench extra)")
def test_quick_distributed_benchmark_runs_two_ranks(tmp_path):
    # G = 2000 for 5 s on 2 processes, memory at G = 20000 for 3 steps from each source of
    # the data, and the posterior's file at G = 20000: four torchrun launches. This
    # checkout's pavi_viz comes first on the path.
    root = str(SCRIPT.parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, str(SCRIPT), "--quick", "--ranks", "2", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=380, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "distributed.json").read_text())
    assert all(not run.get("failed") for run in report["runs"]), [run.get("failed") for run in report["runs"]]

    throughput = {run["ranks"]: run for run in report["runs"] if run["kind"] == "throughput"}
    assert set(throughput) == {2}
    for ranks, run in throughput.items():
        assert run["G"] == 2000 and run["steps"] > 0
        assert math.isfinite(run["elements_per_second"]) and run["elements_per_second"] > 0
        assert run["steps_per_second"] > 0 and run["train_seconds"] > 0
        assert set(run["levels"]) == {"0.5", "0.2", "0.1"} and run["curve"]
        # Every process took rank 0's steps: they stop together.
        assert [r["rank"] for r in run["per_rank"]] == list(range(ranks))
        assert all(r["steps"] == run["steps"] for r in run["per_rank"])
        assert len(run["peak_rss_mb_per_rank"]) == ranks and all(mb > 0 for mb in run["peak_rss_mb_per_rank"])
    assert throughput[2]["sharded_plate"] == "group"

    # Two sources of the data: the example built in every process, and a NetCDF file.
    memory = {run["source"]: run for run in report["runs"] if run["kind"] == "memory"}
    assert set(memory) == {"example", "file"}
    for source, run in memory.items():
        assert run["G"] == 20000 and run["ranks"] == 2
        assert [r["rank"] for r in run["per_rank"]] == [0, 1]
        for r in run["per_rank"]:
            assert r["steps"] == 3 and r["peak_rss_mb"] > 0 and r["data_mb"] > 0
        # Rank 0 trains on the whole model; rank 1 on its shard of the data alone.
        assert [r["trained_on_its_shard_alone"] for r in run["per_rank"]] == [False, True], source
    assert all("shard" in run["note"] for run in memory.values())

    # The posterior's file, written by both processes: rank 1 drew its shard on its part.
    (posterior,) = [run for run in report["runs"] if run["kind"] == "posterior"]
    assert posterior["G"] == 20000 and posterior["draws"] == 50 and posterior["file_mb"] > 0
    assert [r["held_a_part"] for r in posterior["per_rank"]] == [False, True]
    assert all(r["write_seconds"] > 0 for r in posterior["per_rank"])

    assert report["machine"]["cpu_count"] and report["args"]["quick"] is True
    assert report["table"] in proc.stdout and "| 2,000 | 2 |" in report["table"]
    png = tmp_path / "distributed.png"
    assert png.exists() and png.stat().st_size > 1000
