"""Data-parallel PAVI (``pavi_viz.inference.distributed``): shards, and real runs of two
processes over ``gloo`` on the CPU, launched as torchrun launches them."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
import xarray as xr

import pavi_viz
from benchmarks.accuracy import compare, passes
from pavi_viz.inference import load_checkpoint
from pavi_viz.inference.distributed import sharded_plate
from pavi_viz.model.plates import shard_of

HERE = Path(__file__).resolve().parent
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# -- shards -----------------------------------------------------------------------------
def test_shards_cover_the_plate_once_and_differ_by_one_element_at_most():
    for size, replicas in [(10, 2), (11, 3), (7, 7), (1000, 4)]:
        shards = [shard_of("group", size, rank, replicas) for rank in range(replicas)]
        assert [s.start for s in shards] == [0] + [s.stop for s in shards[:-1]]
        assert shards[-1].stop == size
        lengths = {s.stop - s.start for s in shards}
        assert max(lengths) - min(lengths) <= 1
    with pytest.raises(ValueError, match="fewer than the 3 processes"):
        shard_of("group", 2, 0, 3)
    with pytest.raises(ValueError, match="rank 2 is not one of 0..1"):
        shard_of("group", 10, 2, 2)


def test_a_batch_drawn_from_a_shard_stays_in_it_and_is_weighted_for_the_whole_plate():
    model = pavi_viz.examples.load("gre", G=30, N=4, D=2).compile()
    shard = shard_of("group", 30, 1, 2)  # elements 15..29
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        batch = model.sample_batch({"group": 4}, generator, shard)["group"]
        assert len(set(batch.tolist())) == 4 and all(15 <= i < 30 for i in batch.tolist())
        assert torch.equal(batch, batch.sort().values)
        # 2 shards of 15, 4 drawn: each element of the batch stands for 30 / 4 of the plate.
        assert model.frame({"group": batch}, shard).weight(["group"]) == pytest.approx(30 / 4)
    whole = model.sample_batch({}, generator, shard)["group"]
    assert whole.tolist() == list(range(15, 30))
    assert model.frame({"group": whole}, shard).weight(["group", "obs"]) == pytest.approx(2.0)


def test_a_ragged_plate_is_drawn_with_the_members_of_its_shard():
    model = pavi_viz.examples.load("radon").compile()
    counties = model.plates["county"].size
    shards = [shard_of("county", counties, rank, 2) for rank in range(2)]
    houses = []
    for shard in shards:
        batch = model.sample_batch({"county": 10}, torch.Generator().manual_seed(0), shard)
        county = batch["county"]
        assert len(county) == 10 and all(shard.start <= c < shard.stop for c in county.tolist())
        members = model.plates.frame(batch, shard).batch["house"]
        assert len(members) > 0
        whole = model.sample_batch({}, torch.Generator().manual_seed(0), shard)
        houses.append(set(whole["house"].tolist()))
    # Together the shards' houses are every house, once.
    assert houses[0].isdisjoint(houses[1]) and len(houses[0] | houses[1]) == model.plates["house"].size


def test_the_shared_plate_is_the_batched_one_else_the_largest():
    gre = pavi_viz.examples.load("gre", G=30, N=40, D=2).compile()
    assert sharded_plate(gre, {}) == "group"
    radon = pavi_viz.examples.load("radon").compile()
    assert sharded_plate(radon, {"county": 10}) == "county"


# -- real processes ---------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(command: list[str], replicas: int) -> list[subprocess.Popen]:
    """``command`` on ``replicas`` processes, with the environment torchrun gives them."""
    port = str(free_port())
    return [
        subprocess.Popen(command, env={**os.environ, **ONE_THREAD, "RANK": str(rank), "LOCAL_RANK": str(rank),
                                       "WORLD_SIZE": str(replicas), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port},
                         stderr=subprocess.PIPE, text=True)
        for rank in range(replicas)
    ]


@pytest.mark.timeout(300)
def test_two_processes_estimate_the_elbo_and_its_gradient_as_one_does(tmp_path):
    """Averaged over many draws (the family held fixed), the two processes' agreed ELBO
    estimate and gradient equal one process's, within Monte Carlo error."""
    draws = 600
    script = [sys.executable, str(HERE / "distributed_estimates.py")]
    processes = launch([*script, str(tmp_path / "two.pt"), str(draws)], 2)
    single = subprocess.run([*script, str(tmp_path / "one.pt"), str(draws)], env={**os.environ, **ONE_THREAD},
                            capture_output=True, text=True, timeout=240)
    assert single.returncode == 0, single.stderr
    for p in processes:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    one, two = torch.load(tmp_path / "one.pt", weights_only=True), torch.load(tmp_path / "two.pt", weights_only=True)
    for key in ("values", "grads"):
        a, b = one[key], two[key]
        assert a.shape == b.shape and a.shape[0] == draws
        error = (a.mean(0) - b.mean(0)).abs()
        standard = (a.var(0) / draws + b.var(0) / draws).sqrt()
        moving = standard > 0  # parameters that the estimates move
        z = error[moving] / standard[moving]
        # Four standard errors, but for a few of the thousands of gradient coordinates.
        assert z.numel() > 0 and float((z > 4).float().mean()) < 0.01, (key, float(z.max()))
        assert float(z.mean()) < 1.2, (key, float(z.mean()))  # |N(0, 1)| averages 0.8
        if key == "grads":
            assert torch.equal(error[~moving], torch.zeros_like(error[~moving]))


#: A process that joins a run, builds a trainer (its optimizer loads torch._dynamo), leaves,
#: and writes the names of its threads left, on the last line of its stderr.
LEAVER = """
import os, sys
import pavi_viz
from pavi_viz.inference.config import FitConfig
from pavi_viz.inference.distributed import Replicas
from pavi_viz.inference.trainer import Trainer

replicas = Replicas.join("cpu")
trainer = Trainer.create(pavi_viz.examples.load("gre", G=8, N=2), FitConfig(steps=2, threads=1), replicas=replicas)
trainer.step()
replicas.leave()
threads = sorted(open(f"/proc/self/task/{task}/comm").read().strip() for task in os.listdir("/proc/self/task"))
print(" ".join(threads), file=sys.stderr)
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the threads in /proc")
@pytest.mark.timeout(300)
def test_leaving_a_run_stops_the_process_groups_threads():
    """Left running, gloo's threads met the interpreter's exit and aborted the process
    (SIGABRT, "terminate called without an active exception") about one run in ten."""
    for p in launch([sys.executable, "-c", LEAVER], 2):
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        threads = err.strip().splitlines()[-1].split()
        assert not [name for name in threads if "gloo" in name], threads


@pytest.mark.timeout(300)
def test_two_processes_pool_the_whole_data_summaries_of_their_shards_as_one_pools_the_whole_data(tmp_path):
    """PAVI-E's whole-data summaries, pooled by each process over its shard (a regular
    batched plate; radon's counties with their ragged houses; schools with ragged classes
    of ragged students) and the averages added up across the processes, are the whole
    data's wherever the process's draws read them, also in the process that holds its
    shard of the data alone."""
    processes = launch([sys.executable, str(HERE / "distributed_summaries.py"), str(tmp_path / "pooled")], 2)
    for p in processes:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    for rank in range(2):
        pooled = torch.load(tmp_path / f"pooled.{rank}.pt", weights_only=True)
        held_parts = {key: bool(pooled.pop(key)) for key in [key for key in pooled if key.endswith("/part")]}
        assert held_parts == {f"{label}/part": rank == 1 for label in ("gre", "radon", "nested")}, held_parts
        names = sorted({key.rsplit("/", 1)[0] for key in pooled})
        assert names == ["gre/x@", "nested/score@", "nested/score@school", "radon/log_radon@"], names
        for name in names:
            shared, whole = pooled[f"{name}/shared"], pooled[f"{name}/whole"]
            assert shared.shape == whole.shape and whole.abs().sum() > 0, name
            torch.testing.assert_close(shared, whole, rtol=1e-5, atol=1e-6, msg=f"rank {rank}: {name}")


@contextlib.contextmanager
def launched(command: list[str], cwd: Path, **popen: Any) -> Iterator[subprocess.Popen]:
    """``pavi-viz fit --nproc`` started as from a terminal (SIGINT as by default, even
    where the suite runs with it ignored, as a background job does); on leaving, every
    process it started and left behind is killed (torchrun starts each worker in a
    session of its own)."""
    process = subprocess.Popen(command, cwd=cwd, env={**os.environ, **ONE_THREAD},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **popen)
    try:
        yield process
    finally:
        if process.poll() is None:
            family = [process, *psutil.Process(process.pid).children(recursive=True)]
            for member in family:
                with contextlib.suppress(psutil.NoSuchProcess):
                    member.kill()
            psutil.wait_procs(family, timeout=30)


def fit_command(*options: str) -> list[str]:
    return [sys.executable, "-m", "pavi_viz", "fit", "example:gre", "--no-store", "--threads", "1", *options]


def run(command: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    with launched(command, cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.mark.timeout(400)
def test_nproc_trains_on_two_processes_and_its_checkpoint_resumes_on_one(tmp_path):
    # Batched: SAGA's tables, one per process's shard (rank 1 holds its shard of the data
    # alone), go into the checkpoint as one.
    small = ["--option", "G=40", "--option", "N=5", "--batch", "group=10", "--quiet"]
    two = run(fit_command(*small, "--nproc", "2", "--steps", "120", "--schedule", "cosine",
                          "--checkpoint", "two.pt", "--out", "two.nc"), tmp_path)
    assert two.returncode == 0, two.stderr
    assert "rank 0 of 2" in two.stderr and "rank 1 of 2" in two.stderr
    assert "elements 0 to 19 of plate 'group'" in two.stderr and "elements 20 to 39" in two.stderr
    model = pavi_viz.examples.load("gre", G=40, N=5)
    state = load_checkpoint(tmp_path / "two.pt", model)
    assert state.step == 120 and len(state.history.elbo) == 120
    assert state.gradient_tables
    for key, table in state.gradient_tables.items():  # every group was drawn, by its own process
        assert table.shape[0] == 40 and bool((table.flatten(1).abs().sum(1) > 0).all()), key
    posterior = xr.open_datatree(tmp_path / "two.nc")["posterior"]
    assert posterior["mu_g"].sizes["group"] == 40
    # On one process, from the two processes' checkpoint; and back on two from one's.
    one = run(fit_command(*small, "--resume", "two.pt", "--steps", "150", "--schedule", "cosine",
                          "--checkpoint", "one.pt", "--out", "one.nc"), tmp_path)
    assert one.returncode == 0, one.stderr
    assert load_checkpoint(tmp_path / "one.pt", model).step == 150
    again = run(fit_command(*small, "--nproc", "2", "--resume", "one.pt", "--steps", "170", "--schedule", "cosine",
                            "--checkpoint", "again.pt", "--out", "again.nc"), tmp_path)
    assert again.returncode == 0, again.stderr
    resumed = load_checkpoint(tmp_path / "again.pt", model)
    assert resumed.step == 170 and resumed.history.elbo[:150] == load_checkpoint(tmp_path / "one.pt", model).history.elbo


@pytest.mark.timeout(300)
def test_nproc_with_a_netcdf_data_file_reads_each_shard_on_its_process(tmp_path):
    from pavi_viz.model.tables import model_to_dataset

    study = pavi_viz.examples.load("gre", G=40, N=5)
    study.to_json(tmp_path / "structure.json", include_data=False)
    model_to_dataset(study).to_netcdf(tmp_path / "study.nc", engine="h5netcdf")
    command = [sys.executable, "-m", "pavi_viz", "fit", "structure.json", "--data", "study.nc", "--no-store",
               "--threads", "1", "--quiet", "--nproc", "2", "--steps", "30", "--draws", "10", "--out", "two.nc"]
    two = run(command, tmp_path)
    assert two.returncode == 0, two.stderr
    # Rank 0 reads the whole file (it writes the posterior); rank 1, its shard alone.
    assert "elements 20 to 39 of plate 'group', read alone from study.nc" in two.stderr, two.stderr
    assert re.search(r"elements 0 to 19 of plate 'group'(?!, read alone)", two.stderr), two.stderr
    posterior = xr.open_datatree(tmp_path / "two.nc")
    assert posterior["posterior"]["mu_g"].sizes["group"] == 40
    assert posterior["observed_data"]["x"].shape == (40, 5, 2)


@pytest.mark.timeout(400)
# Rank 1 holds its part (pavi-e), or the whole model (mean-field: in the long tier, for time).
@pytest.mark.parametrize("family", ["pavi-e", pytest.param("mean-field", marks=pytest.mark.long)])
def test_two_processes_draw_the_posterior_together_as_one_process_draws_it(tmp_path, family):
    import numpy as np

    # 10^4 groups: too many to weigh whole draws (the draws are q's own, chunk by chunk),
    # so both processes draw their shard's groups and rank 0 writes.
    size = ["--option", "G=10000", "--option", "N=5", "--quiet", "--draws", "200", "--family", family]
    one = run(fit_command(*size, "--steps", "20", "--checkpoint", "run.pt", "--out", "one.nc"), tmp_path)
    assert one.returncode == 0, one.stderr
    # The same family (nothing left to train), its posterior drawn by two processes.
    two = run(fit_command(*size, "--nproc", "2", "--resume", "run.pt", "--steps", "20", "--out", "two.nc"), tmp_path)
    assert two.returncode == 0, two.stderr
    held = "elements 5000 to 9999 of plate 'group', held alone" in two.stderr
    assert held == (family == "pavi-e"), two.stderr
    with xr.open_datatree(tmp_path / "one.nc") as first, xr.open_datatree(tmp_path / "two.nc") as second:
        trees = [first.load(), second.load()]
    for group, name in (("posterior", "mu_g"), ("posterior", "mu"), ("log_likelihood", "x")):
        a, b = (tree[group][name].values[0] for tree in trees)  # (draw, ...)
        assert a.shape == b.shape == ((200, 10000, 2) if name == "mu_g" else (200, 2) if name == "mu" else (200, 10000, 5))
        # Each element's mean in the two files agrees within Monte Carlo error (200 draws each):
        # a group drawn in the wrong place would be off by its posterior's spread.
        z = (a.mean(0) - b.mean(0)) / np.sqrt((a.var(0) + b.var(0)) / 200)
        assert np.mean(np.abs(z)) < 1.0 and np.mean(np.abs(z) > 4) < 0.002, (name, np.mean(np.abs(z)))
        ratio = b.std(0) / a.std(0)
        assert 0.9 < np.median(ratio) < 1.1, (name, np.median(ratio))
    replicated = trees[1]["posterior_predictive"]["x"]
    assert replicated.sizes["draw"] == 100 and bool(np.isfinite(replicated.values).all())
    # Each draw's log p and log q, summed over both shards' groups and the global latents
    # counted once, are those of the whole draw (GRE's latents are unconstrained).
    state = load_checkpoint(tmp_path / "run.pt", pavi_viz.examples.load("gre", G=10000, N=5))
    model, family = state.model, state.family
    draws = {name: torch.as_tensor(trees[1]["posterior"][name].values[0][:10]) for name in ("mu", "mu_g")}
    frame = model.frame()
    values = {**model.batch_data(frame), **draws}
    with torch.no_grad():
        log_q = (family.log_q_unconstrained(("mu",), frame, 10, {}, values, draws["mu"])
                 + family.log_q_unconstrained(("mu_g",), frame, 10, {"mu": draws["mu"]}, values, draws["mu_g"]).sum(-1))
    stats = trees[1]["sample_stats"]
    np.testing.assert_allclose(stats["lp"].values[0][:10], model.log_joint(draws).numpy(), rtol=1e-5)
    np.testing.assert_allclose(stats["log_q"].values[0][:10], log_q.numpy(), rtol=1e-5)


@pytest.mark.timeout(300)
def test_a_process_that_diverges_ends_the_run_on_every_process_naming_its_rank(tmp_path):
    done = run(fit_command("--option", "G=40", "--option", "N=5", "--quiet", "--nproc", "2", "--steps", "300",
                           "--lr", "1e5", "--clip", "none"), tmp_path)
    assert done.returncode == 1, done.stderr
    # Each process says so, with the step and the rank; none writes a posterior.
    errors = [line for line in done.stderr.splitlines() if line.startswith("pavi-viz fit: error: training diverged")]
    assert len(errors) == 2 and all(" on rank " in line for line in errors), done.stderr
    assert len({line.split(" on rank ")[0] for line in errors}) == 1  # the same step
    assert not (tmp_path / "posterior.nc").exists()


@pytest.mark.long
@pytest.mark.timeout(300)
def test_a_two_process_fit_of_gre_is_as_accurate_as_a_one_process_fit(tmp_path):
    """The same short fit (tests/test_cli.py's, on 40 groups) on one and on two processes:
    both meet the accuracy bar against GRE's exact posterior, and their errors are alike."""
    from tests.inference.test_accuracy_gre import _exact_summary

    model = pavi_viz.examples.load("gre", G=40, N=10, D=2)
    errors = {}
    for nproc in (1, 2):
        done = run(fit_command("--option", "G=40", "--option", "N=10", "--quiet", "--nproc", str(nproc), "--steps",
                               "400", "--particles", "8", "--schedule", "cosine", "--out", f"{nproc}.nc"), tmp_path)
        assert done.returncode == 0, done.stderr
        posterior = xr.open_datatree(tmp_path / f"{nproc}.nc")["posterior"].to_dataset()
        stats = xr.concat([posterior.mean(("chain", "draw")), posterior.std(("chain", "draw"), ddof=1)],
                          dim=xr.DataArray(["mean", "sd"], dims="stat", name="stat"))
        latents = compare(stats, _exact_summary(model, stats))
        assert set(latents) == {"mu", "mu_g"} and passes(latents), (nproc, latents)
        errors[nproc] = max(v["mean_error"] for v in latents.values())
    assert errors[2] < 2 * errors[1] + 0.02, errors


@pytest.mark.timeout(300)
def test_a_killed_process_ends_the_run_naming_its_rank_and_the_checkpoint_stays_loadable(tmp_path):
    log = tmp_path / "stderr.txt"
    command = fit_command("--option", "G=40", "--option", "N=5", "--quiet", "--nproc", "2", "--steps", "1000000",
                          "--schedule", "cosine", "--checkpoint", "run.pt", "--checkpoint-every", "20")
    with log.open("w") as stderr, launched(command, tmp_path, stderr=stderr, stdout=subprocess.DEVNULL) as launcher:
        deadline = time.monotonic() + 200
        victim = None
        while time.monotonic() < deadline and (victim is None or not (tmp_path / "run.pt").is_file()):
            # The whole line only: one read while it is being written holds part of the pid.
            found = re.search(r"^rank 1 of 2 \(process (\d+)\): ", log.read_text(), flags=re.M)
            if found:
                victim = int(found.group(1))
            assert launcher.poll() is None, log.read_text()
            time.sleep(0.2)
        assert victim is not None and (tmp_path / "run.pt").is_file(), log.read_text()
        os.kill(victim, signal.SIGKILL)
        status = launcher.wait(timeout=120)
    text = log.read_text()
    assert status != 0, text
    assert "rank      : 1" in text and "Signal 9 (SIGKILL)" in text, text  # torchrun's report
    assert "the run on 2 processes failed" in text, text
    state = load_checkpoint(tmp_path / "run.pt", pavi_viz.examples.load("gre", G=40, N=5))
    assert state.step > 0 and state.step % 20 == 0


@pytest.mark.timeout(300)
def test_ctrl_c_stops_every_process_after_the_same_step_and_saves_the_checkpoint(tmp_path):
    command = fit_command("--option", "G=40", "--option", "N=5", "--quiet", "--nproc", "2", "--steps", "1000000",
                          "--schedule", "cosine", "--checkpoint", "run.pt", "--checkpoint-every", "10", "--out", "never.nc")
    with launched(command, tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as launcher:
        deadline = time.monotonic() + 200
        while not (tmp_path / "run.pt").is_file() and launcher.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (tmp_path / "run.pt").is_file(), launcher.communicate(timeout=60)
        launcher.send_signal(signal.SIGINT)
        _, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode == 130, stderr
    stopped = [line for line in stderr.splitlines() if line.startswith("pavi-viz fit: stopping after step")]
    assert len(stopped) == 2, stderr  # each process heard it; rank 0 then says how to resume
    assert "--resume run.pt" in stderr and "the run on 2 processes failed" not in stderr, stderr
    state = load_checkpoint(tmp_path / "run.pt", pavi_viz.examples.load("gre", G=40, N=5))
    assert f"interrupted at step {state.step} of 1000000" in stderr
    assert not (tmp_path / "never.nc").exists()
