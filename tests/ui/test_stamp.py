"""The posterior views' stamp: the step and run shown, and whether the fit looks settled."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import xarray as xr

import pavi_viz
from pavi_viz.ui.convergence import SETTLED_SHIFT, Stamp, settling
from pavi_viz.ui.state import DashboardState
from pavi_viz.ui.views.stamp import WAITING, PosteriorStamp, stamp_text


def summary(means: list[float], sds: list[float], scalar_mean: float = 0.0) -> xr.Dataset:
    stats = ["mean", "sd"]
    return xr.Dataset({
        "theta": (("stat", "school"), np.array([means, sds])),
        "mu": (("stat",), np.array([scalar_mean, 1.0])),
    }, coords={"stat": stats})


def test_the_shift_is_in_posterior_sds_and_the_largest_variable_counts():
    before = Stamp(100, -40.0, summary([0.0, 0.0], [1.0, 2.0]))
    now = Stamp(150, -39.99, summary([0.3, 0.2], [1.0, 2.0], scalar_mean=0.05))
    change = settling(before, now)
    assert change.since_step == 100 and change.moved_most == "theta"
    assert change.shift == pytest.approx((0.3 / 1.0 + 0.2 / 2.0) / 2)  # mean over the elements
    assert change.elbo_change == pytest.approx(0.01 / 39.99)
    assert not change.settled  # 0.2 sd is over the bar


def test_settled_needs_both_the_means_and_the_elbo():
    before = Stamp(100, -40.0, summary([0.0, 0.0], [1.0, 1.0]))
    assert settling(before, Stamp(150, -40.0, summary([0.05, 0.0], [1.0, 1.0]))).settled
    assert not settling(before, Stamp(150, -30.0, summary([0.05, 0.0], [1.0, 1.0]))).settled
    assert not settling(before, Stamp(150, math.nan, summary([0.05, 0.0], [1.0, 1.0]))).settled
    assert 0.05 / 2 < SETTLED_SHIFT
    assert settling(before, Stamp(150, -40.0, xr.Dataset(coords={"stat": ["mean", "sd"]}))) is None


def test_a_run_stamps_its_summaries():
    state = DashboardState(pavi_viz.examples.load("gre", G=20, N=10))
    state.config.param.update(family="mean-field", steps=400, threads=1, summary_every=50)
    view = PosteriorStamp(state)
    assert stamp_text(state) == WAITING and view._line.object == WAITING
    state.start()
    deadline = time.monotonic() + 120
    while state.run_state != "finished" or state.previous is None:
        assert time.monotonic() < deadline, f"the run is {state.run_state}, previous stamp {state.previous}"
        state.poll()
        time.sleep(0.05)
    state.poll()
    assert state.previous.step < state.summary_step <= 400
    assert math.isfinite(state.summary_elbo) and math.isfinite(state.previous.smoothed_elbo)
    text = view._line.object
    assert text.startswith(f"Posterior at step **{state.summary_step:,}** of {state.run.name} (finished)")
    assert f"since step {state.previous.step:,}: means moved" in text
    assert ("looks settled" in text) == state.settling.settled
    state.start()  # a new run starts without stamps
    assert state.previous is None and view._line.object == WAITING
    state.stop(wait=True)
