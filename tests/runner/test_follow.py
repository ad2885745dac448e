"""Runs recorded by a TrainingRun, and followed from the store into a hub: real runs,
real store files; another process's runs are in tests/ui/test_runs_browser.py and
tests/test_cli.py."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

import pavi_viz
from pavi_viz import examples
from pavi_viz.runner import Info, MetricsHub, Point, RunState, RunStore, StateChange, StoreError, Summary, TrainingRun
from pavi_viz.runner.follow import THREAD_NAME, StoreFollower


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore(tmp_path / "runs.db")


def wait_for(condition, timeout: float = 60.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def read_all(hub: MetricsHub) -> list:
    return hub.since(0).records


def test_a_training_run_records_itself_and_a_resume_goes_on_in_the_same_record(store):
    run = TrainingRun(examples.load("eight_schools"), steps=300, summary_every=100, store=store).start()
    assert run.wait(120) is RunState.FINISHED
    stored = store.run(run.stored_id)
    hub_points = [r for r in read_all(run.hub) if isinstance(r, Point)]
    assert [p.step for p in store.points(run.stored_id)] == [p.step for p in hub_points]
    assert [p.smoothed_elbo for p in store.points(run.stored_id)] == [p.smoothed_elbo for p in hub_points]
    assert (stored.name, stored.family, stored.state, stored.step) == (run.name, "pavi-e", "finished", 300)
    assert stored.pareto_k is not None and stored.checkpoint == str(run.checkpoint.resolve())
    assert store.summary(run.stored_id).step == 300
    assert "eight_schools" in store.model_json(run.stored_id)

    first_id = run.stored_id
    run.resume(400)
    assert run.wait(120) is RunState.FINISHED
    assert run.stored_id == first_id and len(store.runs()) == 1
    assert store.run(first_id).step == 400 and store.summary(first_id).step == 400
    assert [t.state for t in store.transitions(first_id)] == ["running", "finished", "running", "finished"]


def test_a_store_that_cannot_be_written_is_warned_about_and_the_run_trains(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    (tmp_path / "runs.db").unlink()
    run = TrainingRun(examples.load("eight_schools"), steps=20, store=store)
    with pytest.warns(RuntimeWarning, match="is not recorded"):
        run.start()
        assert run.wait(120) is RunState.FINISHED
    assert run.stored_id is None and run.progress.step == 20


def test_a_follower_streams_a_live_run_as_its_own_hub_does(store):
    # No plateau schedule: the run ends at its last step, not once it converged.
    run = TrainingRun(examples.load("eight_schools"), steps=800, schedule=None, summary_every=200,
                      store=store).start()
    wait_for(lambda: run.stored_id is not None and store.run(run.stored_id).step > 0, what="the first points")
    follower = StoreFollower(store, run.stored_id, period=0.1).start()
    try:
        seen = follower.hub.reader()
        first = [r for r in seen.read() if isinstance(r, Point)]
        assert isinstance(follower.hub.since(0).records[0], Info)
        wait_for(lambda: not follower.following, what="the follower to see the run end")
        later = [r for r in seen.read() if isinstance(r, Point)]
    finally:
        follower.stop(wait=True)
    assert run.wait(120) is RunState.FINISHED
    steps = [p.step for p in first + later]
    assert steps == [p.step for p in store.points(run.stored_id)] and steps[-1] == 800
    assert len(later) > 0, "the follower published points written after it started"
    states = [r.state for r in read_all(follower.hub) if isinstance(r, StateChange)]
    assert states[0] == "running" and states[-1] == "finished"
    summary = follower.hub.latest(Summary)
    assert summary is not None and summary.step == 800 and summary.draws is None
    assert not any(t.name.startswith(THREAD_NAME) for t in threading.enumerate())


def test_a_run_whose_process_died_is_followed_to_its_interruption(store):
    info = Info(run="gone", model="gre", family="pavi-e", parameter_count=None, total_steps=100, device="cpu",
                torch_threads=1, settings={}, truth=None, observed=None)
    writer = store.open_run(info, step=0)
    for step in range(1, 11):
        writer.put(Point(step, -float(step), -float(step), False, 10.0, 0.1 * step, 0.01, time.time()))
    writer.close()
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    with contextlib.closing(sqlite3.connect(store.path)) as db, db:
        db.execute("UPDATE runs SET pid = ? WHERE id = ?", (ended.pid, writer.run_id))
    follower = StoreFollower(store, writer.run_id).start()
    assert not follower.following  # nothing more will come: no thread
    changes = [r for r in read_all(follower.hub) if isinstance(r, StateChange)]
    assert [c.state for c in changes] == ["running", "interrupted"]
    assert f"process {ended.pid}" in changes[-1].message and "step 10" in changes[-1].message
    assert [r.step for r in read_all(follower.hub) if isinstance(r, Point)] == list(range(1, 11))


def test_a_run_deleted_while_followed_ends_the_following_with_a_message(store):
    info = Info(run="soon deleted", model="gre", family="pavi-e", parameter_count=None, total_steps=100,
                device="cpu", torch_threads=1, settings={}, truth=None, observed=None)
    writer = store.open_run(info, step=0)  # live: this process, beating
    follower = StoreFollower(store, writer.run_id, period=0.05).start()
    assert follower.following
    with contextlib.closing(sqlite3.connect(store.path)) as db, db:
        db.execute("DELETE FROM runs WHERE id = ?", (writer.run_id,))
    wait_for(lambda: follower.error is not None, what="the follower to notice")
    writer.close()
    assert "no run" in str(follower.error)
    assert read_all(follower.hub)[-1].message.startswith("no longer followed")
    with pytest.raises(StoreError, match="no run 99"):
        StoreFollower(store, 99)


def test_fit_stores_summaries_while_it_trains_without_touching_its_random_numbers(store, monkeypatch):
    from pavi_viz.runner import store_writer

    monkeypatch.setattr(store_writer, "SUMMARY_SECONDS", 0.0)  # at every step...
    monkeypatch.setattr(store_writer, "SUMMARY_SHARE", 0.5)  # ...that their cost allows
    model = examples.load("eight_schools")
    seen: list[int | None] = []
    recorded = pavi_viz.fit(model, steps=400, threads=1, store=store, progress=False, callback_every=20,
                            callbacks=[lambda state: seen.append(store.summary_step(1))])
    plain = pavi_viz.fit(model, steps=400, threads=1, progress=False)
    assert recorded.state.history.elbo == plain.state.history.elbo
    during = [step for step in seen[:-1] if step is not None]
    assert during and 0 < during[-1] < 400, f"no summary stored while training: {seen}"
    assert store.summary_step(1) == 400
