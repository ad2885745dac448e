"""The run store: round trips, a reader beside a writer, bounded size, liveness, files
that are not stores, and ``fit(..., store=...)``.

The command line's store (a real ``pavi-viz fit`` killed with SIGKILL, then resumed) is
tested in tests/test_cli.py.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pavi_viz.runner.hub import Info, Point, StateChange, Summary
from pavi_viz.runner.store import INTERRUPTED, LIVE, STALE_SECONDS, RunStore, StoreError
from pavi_viz.runner.store_schema import DEFAULT_PATH, PATH_VARIABLE, SCHEMA_VERSION, default_path
from pavi_viz.runner.store_writer import Outputs, Rewind


def point(step: int) -> Point:
    return Point(step=step, elbo=-float(step), smoothed_elbo=-step + 0.5, spike=step % 7 == 0, steps_per_second=50.0,
                 elapsed=0.02 * step, lr=0.01, time=1000.0 + step)


def info(total: int = 100) -> Info:
    return Info(run="first", model="gre", family="pavi-e", parameter_count=10, total_steps=total, device="cpu",
                torch_threads=1, settings={"lr": 0.01, "batch": {"group": 8}, "seed": 3}, truth=None, observed=None)


def summary_dataset():
    import xarray as xr

    stats = ["mean", "sd", "5%", "50%", "95%"]
    rng = np.random.default_rng(0)
    return xr.Dataset(
        {"mu": (("stat", "mu_dim_0"), rng.normal(size=(5, 2))),
         "mu_g": (("stat", "group", "mu_g_dim_0"), rng.normal(size=(5, 3, 2)))},
        coords={"stat": stats, "quantile": ("stat", [math.nan, math.nan, 0.05, 0.5, 0.95]),
                "group": ["a", "b", "c"]},
        attrs={"model": "gre", "draws": 1000, "pareto_k": 0.31},
    )


def sql(path: Path, statement: str, *parameters: object) -> None:
    """Change the store's file behind its back (as another program, or an attacker, would)."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute(statement, parameters)


def ended_pid() -> int:
    """The pid of a process that has ended (and been waited for)."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    return ended.pid


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore(tmp_path / "runs.db")


def test_default_path_is_in_the_working_folder_unless_the_variable_names_one(monkeypatch, tmp_path):
    monkeypatch.delenv(PATH_VARIABLE, raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_path() == DEFAULT_PATH == Path(".pavi_viz") / "runs.db"
    assert RunStore().path == DEFAULT_PATH and (tmp_path / ".pavi_viz" / "runs.db").is_file()
    monkeypatch.setenv(PATH_VARIABLE, str(tmp_path / "elsewhere.db"))
    assert RunStore().path == tmp_path / "elsewhere.db"
    assert RunStore(tmp_path / "explicit.db").path == tmp_path / "explicit.db"


def test_a_run_reads_back_as_it_was_written(store, tmp_path):
    writer = store.open_run(info(), model_json='{"name": "gre"}', checkpoint=tmp_path / "run.pt")
    for step in range(1, 31):
        writer.put(point(step))
    writer.put(Summary(step=30, summary=summary_dataset(), draws=None))
    writer.put(Outputs(posterior=str(tmp_path / "posterior.nc"), pareto_k=0.42))
    writer.put(StateChange(run="first", state="finished", time=time.time(), message="all steps done"))
    writer.close()

    [run] = store.runs()
    assert run == store.run(run.id)
    assert (run.name, run.model, run.family, run.state, run.step, run.total_steps) == (
        "first", "gre", "pavi-e", "finished", 30, 100)
    assert run.settings == {"lr": 0.01, "batch": {"group": 8}, "seed": 3}
    assert run.smoothed_elbo == -29.5 and run.pareto_k == 0.42
    assert run.checkpoint == str((tmp_path / "run.pt").resolve())
    assert run.posterior == str(tmp_path / "posterior.nc")
    assert (run.pid, run.hostname) == (os.getpid(), socket.gethostname())
    assert run.created <= run.updated and not run.live
    assert store.points(run.id) == [point(step) for step in range(1, 31)]
    assert [p.step for p in store.points(run.id, after_step=25)] == [26, 27, 28, 29, 30]
    assert [(t.state, t.message) for t in store.transitions(run.id)] == [
        ("running", "started at step 0"), ("finished", "all steps done")]
    assert store.model_json(run.id) == '{"name": "gre"}'
    stored = store.summary(run.id)
    assert stored.step == 30 and stored.draws is None
    import xarray as xr

    xr.testing.assert_identical(stored.summary, summary_dataset())


def test_a_run_without_a_model_or_summary_and_unknown_runs(store):
    writer = store.open_run(info())
    writer.close()
    [run] = store.runs()
    assert store.model_json(run.id) is None and store.summary(run.id) is None
    assert math.isnan(run.smoothed_elbo) and run.state == "running"  # this process: alive
    assert store.points(99) == []
    for read in (store.run, store.transitions, store.model_json):
        with pytest.raises(StoreError, match="no run 99"):
            read(99)


def test_a_reader_sees_a_growing_history_while_a_writer_writes(store):
    writer = store.open_run(info(total=3000))
    done = threading.Event()

    def train() -> None:
        for step in range(1, 3001):
            writer.put(point(step))
            if step % 100 == 0:
                time.sleep(0.05)  # 1.5 s in all: several half-second batches
        writer.close()
        done.set()

    threading.Thread(target=train).start()
    seen = []
    while not done.is_set() or not seen or seen[-1] < 3000:
        steps = [p.step for p in store.points(1)]
        assert steps == list(range(1, len(steps) + 1))  # whole batches, in order, never half a commit
        assert store.run(1).step >= (steps[-1] if steps else 0)
        seen.append(len(steps))
        time.sleep(0.05)
    assert seen == sorted(seen) and len(set(seen)) > 2  # read in several batches as they came


def test_training_hands_records_over_while_another_process_holds_the_file(store):
    writer = store.open_run(info())
    with contextlib.closing(sqlite3.connect(store.path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")  # the write lock, held as a long VACUUM would hold it
        for step in range(1, 101):
            writer.put(point(step))  # only queued: a step never waits for the file
        time.sleep(1.0)  # the writer's thread waits for the lock meanwhile
        assert store.points(1) == [] and store.run(1).state == "running"  # readers are not held up (WAL)
        other.execute("COMMIT")
    writer.close()
    assert [p.step for p in store.points(1)] == list(range(1, 101))


def test_points_stay_bounded_with_the_newest_dense_and_the_older_evenly_spaced(tmp_path):
    store = RunStore(tmp_path / "runs.db", max_points=40)
    writer = store.open_run(info(total=1000))
    for step in range(1, 1001):
        writer.put(point(step))
    writer.close()
    steps = [p.step for p in store.points(1)]
    assert len(steps) <= 40 and steps[-1] == 1000
    assert steps[-10:] == list(range(991, 1001))  # the newest quarter, every step
    older = steps[:-10]
    gaps = {b - a for a, b in zip(older, older[1:])}
    assert len(gaps) == 1 and older[0] == next(iter(gaps))  # multiples of one stride


def test_a_rewind_drops_the_later_points(store):
    writer = store.open_run(info())
    for step in range(1, 21):
        writer.put(point(step))
    writer.put(Rewind(12))
    writer.close()
    assert [p.step for p in store.points(1)] == list(range(1, 13))
    assert store.run(1).step == 12 and store.run(1).smoothed_elbo == -11.5


def test_a_run_whose_process_is_gone_or_silent_reads_as_interrupted(store):
    writer = store.open_run(info())
    for step in range(1, 6):
        writer.put(point(step))
    writer.close()
    assert store.run(1).state == "running"
    sql(store.path, "UPDATE runs SET pid = ?", ended_pid())
    run = store.run(1)
    assert run.state == INTERRUPTED and not run.live and run.step == 5
    assert [p.step for p in store.points(1)] == [1, 2, 3, 4, 5]
    # Alive, but on another host and silent.
    sql(store.path, "UPDATE runs SET pid = ?, hostname = 'elsewhere', updated = ?", os.getpid(),
        time.time() - STALE_SECONDS - 1)
    assert store.run(1).state == INTERRUPTED
    sql(store.path, "UPDATE runs SET updated = ?", time.time())
    assert store.run(1).state == "running"


def test_taking_up_a_run_records_its_interruption_and_drops_points_after_the_step(store):
    writer = store.open_run(info())
    for step in range(1, 21):
        writer.put(point(step))
    writer.close()
    sql(store.path, "UPDATE runs SET pid = ?", ended_pid())
    writer = store.open_run(info(total=200), continues=1, step=15)
    writer.put(point(16))
    writer.close()
    [run] = store.runs()
    assert run.total_steps == 200 and run.step == 16 and run.name == "first"
    assert [p.step for p in store.points(1)] == list(range(1, 17))
    assert [t.state for t in store.transitions(1)] == ["running", INTERRUPTED, "running"]
    with pytest.raises(StoreError, match="running in process"):  # one writer per run
        store.open_run(info(), continues=1)


def test_the_store_reads_without_torch_or_numpy():
    # `pavi-viz runs` answers at once: the store, its writer and the hub import neither.
    code = "import sys, pavi_viz.runner.store; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    for heavy in ("torch", "numpy", "xarray", "panel"):
        assert f"'{heavy}'" not in loaded, f"`import pavi_viz.runner.store` imported {heavy}"


def test_store_states_that_mean_training_are_a_training_runs_active_ones():
    from pavi_viz.runner.run import ACTIVE

    assert LIVE == {state.value for state in ACTIVE}


def test_deleting_runs_refuses_live_ones_and_unknown_ids(store):
    for final in ("finished", "stopped", "finished"):
        writer = store.open_run(info(), model_json='{"shared": 1}')
        writer.put(point(1))
        writer.put(StateChange(run="first", state=final, time=time.time(), message=""))
        writer.close()
    store.open_run(info()).close()  # run 4: running, in this live process
    with pytest.raises(StoreError, match="4 .*is training"):
        store.delete([2, 4])
    with pytest.raises(StoreError, match="no run 9"):
        store.delete([9])
    assert store.delete_finished() == [1, 3]
    assert [r.id for r in store.runs()] == [4, 2]
    assert store.model_json(2) == '{"shared": 1}'  # kept once, while a run uses it
    assert store.delete([2]) == [2]
    with contextlib.closing(sqlite3.connect(store.path)) as db:
        assert db.execute("SELECT count(*) FROM models").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM points").fetchone()[0] == 0


# -- files that are not stores ----------------------------------------------------------------
def test_a_missing_or_empty_file_is_no_store_for_readers(tmp_path):
    with pytest.raises(StoreError, match=f"no run store at {tmp_path / 'missing.db'}"):
        RunStore(tmp_path / "missing.db", create=False)
    (tmp_path / "empty.db").touch()
    with pytest.raises(StoreError, match="empty file"):
        RunStore(tmp_path / "empty.db", create=False)
    assert RunStore(tmp_path / "empty.db").runs() == []  # a writer makes it a store
    with pytest.raises(StoreError, match="is a folder"):
        RunStore(tmp_path)


def test_a_file_that_is_not_sqlite_is_refused(tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"not a database at all, " * 100)
    with pytest.raises(StoreError, match=f"{path} is not a pavi_viz run store"):
        RunStore(path)
    assert path.read_bytes() == b"not a database at all, " * 100


def test_an_sqlite_file_of_another_application_is_refused(tmp_path):
    path = tmp_path / "other.db"
    sql(path, "CREATE TABLE runs (id INTEGER, name TEXT)")
    with pytest.raises(StoreError, match="another application"):
        RunStore(path)


def test_a_store_of_a_newer_schema_is_refused(store):
    sql(store.path, f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match=f"schema {SCHEMA_VERSION + 1}, written by a newer pavi_viz"):
        store.runs()


def test_a_store_whose_schema_was_tampered_with_is_refused(store):
    # A trigger would run on the store's own writes.
    sql(store.path, "CREATE TRIGGER sneaky AFTER INSERT ON points BEGIN DELETE FROM runs; END")
    with pytest.raises(StoreError, match="its tables are not the store's"):
        store.runs()


@pytest.mark.parametrize(("column", "value", "words"), [
    ("data", b"\x00" * 7, "bytes do not hold shape"),
    ("shape", "[1e300]", "is not 2 sizes"),
    ("dims", "{}", "not a list of names"),
])
def test_a_malformed_summary_is_an_error_naming_the_run(store, column, value, words):
    writer = store.open_run(info())
    writer.put(Summary(step=1, summary=summary_dataset(), draws=None))
    writer.close()
    sql(store.path, f"UPDATE summary_variables SET {column} = ? WHERE name = 'mu'", value)
    with pytest.raises(StoreError, match=f"summary of run 1 in .* is malformed: variable 'mu'.*{words}"):
        store.summary(1)


# -- fit(..., store=...) -----------------------------------------------------------------------
def test_fit_records_a_finished_run_with_its_summary(tmp_path):
    import pavi_viz
    from pavi_viz.examples import gre

    store = RunStore(tmp_path / "runs.db")
    model = gre.build(G=10, N=5, seed=1)
    result = pavi_viz.fit(model, "mean-field", steps=60, schedule="cosine", threads=1, progress=False, store=store,
                          checkpoint=tmp_path / "run.pt")
    [run] = store.runs()  # committed before fit returned
    assert (run.name, run.model, run.family, run.state, run.step, run.total_steps) == (
        "gre", "gre", "mean-field", "finished", 60, 60)
    assert run.smoothed_elbo == pytest.approx(result.history.smoothed_elbo[-1])
    assert run.settings["seed"] == result.config.seed and run.checkpoint == str((tmp_path / "run.pt").resolve())
    assert [p.step for p in store.points(run.id)] == list(range(1, 61))
    assert [p.elbo for p in store.points(run.id)] == pytest.approx(result.history.elbo)
    assert [t.state for t in store.transitions(run.id)] == ["running", "finished"]
    summary = store.summary(run.id)
    assert summary.step == 60 and set(summary.summary.data_vars) == {"mu", "mu_g"}
    assert summary.summary["mu_g"].sizes == {"stat": 5, "group": 10, "mu_g_dim_0": 2}
    assert store.model_json(run.id) == model.to_json(indent=None)
    assert pavi_viz.PlateModel.from_json(store.model_json(run.id)).name == "gre"

    # Resuming its checkpoint takes the same stored run up again.
    pavi_viz.fit(model, steps=80, schedule="cosine", threads=1, progress=False, store=store, resume=tmp_path / "run.pt")
    [run] = store.runs()
    assert (run.state, run.step, run.total_steps) == ("finished", 80, 80)
    assert [p.step for p in store.points(run.id)] == list(range(1, 81))


def test_fit_records_how_a_run_ended_early(tmp_path):
    import pavi_viz
    from pavi_viz.examples import gre
    from pavi_viz.inference import StopTraining

    def stop_at_20(state) -> None:
        if state.step >= 20:
            raise StopTraining

    def fail_at_30(state) -> None:
        if state.step >= 30:
            raise RuntimeError("a broken callback")

    store = RunStore(tmp_path / "runs.db")
    model = gre.build(G=10, N=5, seed=1)
    pavi_viz.fit(model, "mean-field", steps=100, threads=1, progress=False, store=store, callbacks=[stop_at_20])
    with pytest.raises(RuntimeError, match="a broken callback"):
        pavi_viz.fit(model, "mean-field", steps=100, threads=1, progress=False, store=store, callbacks=[fail_at_30])
    failed, stopped = store.runs()
    assert (stopped.state, stopped.step) == ("stopped", 20) and store.summary(stopped.id) is not None
    assert (failed.state, failed.step) == ("failed", 30) and store.summary(failed.id) is None
    assert store.transitions(failed.id)[-1].message == "RuntimeError: a broken callback"


def test_fit_store_must_be_a_run_store():
    import pavi_viz
    from pavi_viz.examples import gre

    with pytest.raises(TypeError, match=r"store must be a run store, pavi_viz.runner.RunStore\(\).*not True"):
        pavi_viz.fit(gre.build(G=5, N=2), steps=1, store=True)
