"""Dashboards that record their runs in a store, and attach to stored runs (no browser:
tests/ui/test_runs_browser.py serves them); the served app's *Runs* tab."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

import pavi_viz
from pavi_viz.runner import RunStore, StoreError, Summary
from pavi_viz.ui.app import FIT_TAB, RUNS_TAB, App
from pavi_viz.ui.dashboard import Dashboard
from pavi_viz.ui.runs import RunsList, run_rows
from pavi_viz.ui.state import DashboardState
from pavi_viz.ui.views.controls import TrainingControls

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore(tmp_path / "runs.db")


def recording_state(store: RunStore, **settings) -> DashboardState:
    state = DashboardState(pavi_viz.examples.load("gre", G=20, N=10), store=store)
    state.config.param.update(**{"family": "mean-field", "steps": 200, "threads": 1, "summary_every": 50,
                                 **settings})
    return state


def poll_until(state: DashboardState, condition: Callable[[], bool], timeout: float = 90) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        state.poll()
        time.sleep(0.02)


def test_a_dashboard_run_is_recorded_and_another_dashboard_watches_it_live(store):
    trainer = recording_state(store, steps=100_000, schedule=None)  # trains until stopped
    watcher = DashboardState(store=store)
    try:
        run = trainer.start()
        poll_until(trainer, lambda: run.stored_id is not None and trainer.step > 0)
        follower = watcher.attach(run.stored_id)
        assert watcher.watched is follower and watcher.run is None
        assert watcher.model.to_json() == trainer.model.to_json()
        assert watcher.run_name == f"{run.name} (stored run {run.stored_id})"
        poll_until(watcher, lambda: watcher.step > 0)
        first = watcher.step
        poll_until(watcher, lambda: watcher.step > first)  # it grows while the other trains
        assert watcher.run_state == "running" and watcher.total_steps == 100_000
        trainer.stop()
        poll_until(watcher, lambda: watcher.run_state == "stopped" and watcher.summary is not None)
        assert watcher.step == run.progress.step == watcher.summary_step
        assert watcher.draws is None and not watcher.fitted
        assert watcher.elbo_history()["step"][-1] == watcher.step
        assert set(watcher.summary.data_vars) == set(run.hub.latest(Summary).summary.data_vars)
    finally:
        trainer.close()
        watcher.close()


def test_a_watched_run_offers_only_start_which_trains_its_model_here(store):
    recorded = recording_state(store, steps=60)
    recorded.start()
    poll_until(recorded, lambda: recorded.run_state == "finished")
    state = DashboardState(store=store)
    controls = TrainingControls(state)
    try:
        state.attach(recorded.run.stored_id)
        poll_until(state, lambda: state.run_state == "finished")
        assert {name for name, button in controls.buttons.items() if not button.disabled} == {"start"}
        state.config.param.update(family="mean-field", steps=40, threads=1)
        run = state.start()
        assert state.watched is None and state.run is run
        poll_until(state, lambda: state.run_state == "finished")
        assert state.run_name == run.name and run.stored_id == 2 and len(store.runs()) == 2
    finally:
        recorded.close()
        state.close()


def test_attach_names_what_it_cannot_show(store, tmp_path):
    with pytest.raises(StoreError, match="no run store"):
        DashboardState().attach(1)
    state = DashboardState(store=store)
    with pytest.raises(StoreError, match="no run 7"):
        state.attach(7)
    compiled = pavi_viz.examples.load("eight_schools").compile()
    pavi_viz.fit(compiled, steps=5, store=store, progress=False)
    (stored,) = store.runs()
    with pytest.raises(StoreError, match="compiled model"):
        state.attach(stored.id)
    assert state.watched is None and state.model.name == "gre"  # nothing changed


def test_the_runs_list_keeps_ticks_on_runs_still_there(store):
    for lr in (0.01, 0.02):
        pavi_viz.fit(pavi_viz.examples.load("eight_schools"), steps=5, lr=lr, store=store, progress=False)
    runs = RunsList(store=store)
    runs.refresh()
    assert [r.id for r in runs.runs] == [2, 1]
    runs.select([1, 2, 40])
    assert runs.selected == [2, 1] and [r.id for r in runs.chosen()] == [2, 1]
    store.delete([2])
    runs.refresh()
    assert runs.selected == [1] and runs.message == ""
    rows = run_rows(runs.runs, now=runs.runs[0].updated + 90)
    assert rows["id"] == [1] and rows["steps"] == ["5 / 5"] and rows["updated"] == ["1 min ago"]
    empty = RunsList(store=None)
    empty.refresh()
    assert empty.runs == [] and "No run store" in empty.message


def test_the_app_has_a_runs_tab_only_with_a_store_and_watch_opens_the_fit_tab(store):
    assert App(Dashboard(DashboardState())).runs is None
    for lr in (0.01, 0.03):
        pavi_viz.fit(pavi_viz.examples.load("eight_schools"), steps=30, lr=lr, store=store, progress=False)
    app = App(Dashboard(DashboardState(store=store)))
    try:
        assert list(app.tabs._names) == ["Fit", "Build", "Runs"]
        app.tabs.active = RUNS_TAB
        assert list(app.runs.source.data["id"]) == [2, 1]
        app.runs.source.selected.indices = [0, 1]  # as the browser's ticks arrive
        assert app.runs.runs.selected == [2, 1] and app.runs.comparison.run_ids == [2, 1]
        assert app.runs.watch_button.disabled  # two runs: compared, not watched
        app.runs.source.selected.indices = [1]
        assert not app.runs.watch_button.disabled
        app.runs.watch_button.clicks += 1
        assert app.tabs.active == FIT_TAB and app.dashboard.state.watched.run_id == 1
        poll_until(app.dashboard.state, lambda: app.dashboard.state.summary is not None)
        assert app.dashboard.state.model.name == "eight_schools" and app.dashboard.state.step == 30
    finally:
        app.dashboard.close()


def test_watch_shows_why_a_run_cannot_be_shown(store):
    pavi_viz.fit(pavi_viz.examples.load("eight_schools").compile(), steps=5, store=store, progress=False)
    app = App(Dashboard(DashboardState(store=store)))
    app.tabs.active = RUNS_TAB
    app.runs.source.selected.indices = [0]
    app.runs.watch_button.clicks += 1
    assert app.tabs.active == RUNS_TAB and app.runs.notice.visible
    assert "compiled model" in app.runs.notice.object
