"""DashboardState (no Panel): what the views read from it besides the polled parameters."""

from __future__ import annotations

import sys
import time

import pytest

import pavi_viz
from pavi_viz.inference.posterior import Posterior
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
