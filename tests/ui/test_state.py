"""DashboardState (no Panel): what the views read from it besides the polled parameters."""

from __future__ import annotations

import sys
import time

import pytest

import pavi_viz
from pavi_viz.inference.posterior import Posterior
from pavi_viz.runner import Summary
from pavi_viz.ui.state import HISTORY_COLUMNS, DashboardState

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def state():
    state = DashboardState(pavi_viz.examples.load("gre", G=20, N=10))
    state.config.param.update(family="mean-field", steps=100, threads=1, summary_every=50)
    yield state
    state.close()


def poll_until(state: DashboardState, condition, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        state.poll()
        time.sleep(0.01)


def test_state_imports_no_panel():
    import subprocess

    code = "import pavi_viz.ui.state, sys; print(sorted(m for m in ('panel', 'holoviews', 'bokeh') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_posterior_and_history_once_the_run_ended(state):
    assert not state.fitted and state.posterior() is None
    assert state.elbo_history() == {name: [] for name in HISTORY_COLUMNS}
    state.start()
    poll_until(state, lambda: state.run_state == "finished")
    assert state.fitted
    assert isinstance(state.posterior(), Posterior)
    history = state.elbo_history()
    assert list(history) == list(HISTORY_COLUMNS)
    assert history["step"] == list(range(1, 101))


def test_resume_says_running_at_once(state):
    state.start()
    poll_until(state, lambda: state.run_state == "finished")
    state.resume(150)
    assert state.run_state == "running"
    poll_until(state, lambda: state.run_state == "finished")
    assert state.step == 150 and state.fitted


def test_a_summary_waits_for_its_interval_and_the_last_one_comes_at_once(state):
    state.config.param.update(steps=1_000_000, summary_every=5)
    state.summary_interval = 1e6  # nothing after the first, while the run goes
    state.start()
    poll_until(state, lambda: state.summary is not None)  # the run's first summary: at once
    first = state.summary_step
    pending = []
    poll_until(state, lambda: pending.append(state.poll().summary_pending) or pending[-1])
    assert state.summary_step == first and state.run_state == "running"  # a newer one is held back
    state.summary_interval = 0.0  # its interval has passed
    polled = state.poll()
    assert polled.new_summary and not polled.summary_pending and state.summary_step > first

    state.summary_interval = 1e6
    held = state.summary_step
    poll_until(state, lambda: state.poll().summary_pending)
    state.stop(wait=True)
    polled = state.poll()  # the run stopped: its newest summary is applied in the same poll
    assert state.run_state == "stopped"
    assert polled.new_summary and not polled.summary_pending
    assert state.summary_step > held
    assert state.summary_step == max(r.step for r in state.run.hub.since(0).records if isinstance(r, Summary))


def test_a_new_run_drops_the_pending_summary(state):
    state.config.param.update(steps=1_000_000, summary_every=5)
    state.summary_interval = 1e6
    state.start()
    poll_until(state, lambda: state.summary is not None)
    poll_until(state, lambda: state.poll().summary_pending)
    old = state.run
    state.start()  # the old run's pending summary is not shown for the new one
    old.wait(30)
    assert state.summary is None
    polled = state.poll()
    assert polled.restarted
    assert state.summary is None or state.summary_step <= state.run.progress.step < old.progress.step
