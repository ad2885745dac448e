"""The posterior views' stamp: the step and run shown, whether the fit looks settled,
and whether it can be trusted (the Pareto k of the summary's importance check)."""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr

import pavi_viz
from pavi_viz.ui.convergence import SETTLED_SHIFT, Stamp, Trust, settling, trust
from pavi_viz.ui.state import DashboardState
from pavi_viz.ui.views.stamp import VERDICT_COLOURS, WAITING, PosteriorStamp, bar_styles, stamp_text, trust_text


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


def checked(k: float, draws: int = 1000, resampled: bool = True) -> xr.Dataset:
    """A summary with the importance check's attrs, as ``Posterior.summary`` writes them."""
    return summary([0.0, 0.0], [1.0, 1.0]).assign_attrs(
        pareto_k=np.float64(k), pareto_k_draws=np.int64(draws), psis_resampled=int(resampled))


def test_the_importance_check_is_read_from_the_summary_attrs():
    assert trust(checked(0.42)) == Trust(0.42, 1000, True)
    assert trust(checked(0.42)).verdict == "corrected"
    # Over the bound for 1,000 draws (0.67) but under 0.7: not resampled, yet close.
    assert trust(checked(0.68, resampled=False)).verdict == "close"
    assert trust(checked(0.85, resampled=False)).verdict == "far"
    # Resampled all the same (correct="psis"): over the bound, the correction is not to be trusted.
    assert trust(checked(0.68, resampled=True)).verdict == "close"
    assert trust(checked(0.85, resampled=True)).verdict == "far"
    assert trust(checked(0.68, draws=4000)).verdict == "corrected"  # the bound is 0.7 from about 2,200 draws
    assert trust(checked(math.inf, resampled=False)).verdict == "far"
    assert trust(checked(math.nan, resampled=False)).verdict == "far"  # no number is no reassurance
    # No check (a model too large, or a summary from before the attrs existed).
    assert trust(summary([0.0], [1.0])) == Trust(None) and Trust(None).verdict == "unchecked"
    # Only k: the draws unknown, not resampled.
    assert trust(summary([0.0], [1.0]).assign_attrs(pareto_k=0.3)) == Trust(0.3, None, False)


def test_the_verdict_is_worded_for_every_case():
    assert trust_text(Trust(0.42, 1000, True)) == "Pareto k 0.42 (PSIS-corrected draws: **trustworthy**)"
    close = trust_text(Trust(0.68, 1000, False))
    assert close.startswith("Pareto k 0.68 (under 0.7: q is **close** to the posterior")
    assert close.endswith("its draws are shown uncorrected: 1,000 weighed draws are too few to correct them at this k)")
    assert "PSIS-resampled draws, but 1,000 weighed draws are too few" in trust_text(Trust(0.68, 1000, True))
    # Under the bound yet not resampled: the correction was turned off.
    assert trust_text(Trust(0.3, None, False)).endswith("; its draws are shown uncorrected)")
    assert trust_text(Trust(0.85, 1000, False)) == (
        "Pareto k 0.85 > 0.7: **q may be far off the posterior**; compare with NUTS (MCMC)")
    assert trust_text(Trust(math.inf, 4000, False)).startswith("Pareto k ∞ > 0.7")
    assert trust_text(Trust(None)) == "Pareto k not computed (model too large to weigh whole draws)"


def test_the_stamp_says_the_verdict_from_the_first_summary_on_and_colours_its_bar():
    def shown(data: xr.Dataset | None, previous: Stamp | None = None) -> SimpleNamespace:
        # What stamp_text and bar_styles read of a DashboardState.
        stamp = None if data is None else Stamp(200, -40.0, data)
        return SimpleNamespace(stamp=stamp, summary=data, run_name="run-1", run_state="running",
                               settling=None if previous is None or stamp is None else settling(previous, stamp))

    first = shown(checked(0.42))
    assert stamp_text(first) == ("Posterior at step **200** of run-1 · "
                                 "Pareto k 0.42 (PSIS-corrected draws: **trustworthy**)")
    assert bar_styles(first)["border-left"] == f"4px solid {VERDICT_COLOURS['corrected']}"
    later = shown(checked(0.85, resampled=False), previous=Stamp(100, -40.0, checked(0.42)))
    assert stamp_text(later).endswith("**looks settled** · " + trust_text(Trust(0.85, 1000, False)))
    assert bar_styles(later)["border-left"].endswith(VERDICT_COLOURS["far"])
    assert bar_styles(shown(summary([0.0], [1.0])))["border-left"].endswith(VERDICT_COLOURS["unchecked"])
    assert bar_styles(shown(None))["border-left"] == "4px solid transparent"
    assert len(set(VERDICT_COLOURS.values())) == 4


def test_a_fit_of_eight_schools_publishes_the_pareto_k_that_the_stamp_shows():
    # A real run through the runner: its summaries carry the check that Posterior.summary made.
    state = DashboardState(pavi_viz.examples.load("eight_schools"))
    state.config.param.update(steps=300, threads=1, summary_every=100)
    view = PosteriorStamp(state)
    state.start()
    deadline = time.monotonic() + 120
    while state.run_state != "finished" or state.summary_step != 300:
        assert time.monotonic() < deadline, f"the run is {state.run_state}, summary at step {state.summary_step}"
        state.poll()
        time.sleep(0.05)
    attrs = state.summary.attrs
    assert {"pareto_k", "pareto_k_draws", "psis_resampled"} <= set(attrs), attrs
    check = trust(state.summary)
    assert check.pareto_k == pytest.approx(float(attrs["pareto_k"])) and check.draws >= 1000
    text = view._line.object
    assert text.endswith(" · " + trust_text(check)) and f"Pareto k {check.pareto_k:.2f}" in text
    assert view._line.styles["border-left"] == f"4px solid {VERDICT_COLOURS[check.verdict]}"
    state.stop(wait=True)
