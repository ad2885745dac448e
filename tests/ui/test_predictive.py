"""The posterior predictive check rendered to a Bokeh document, no browser."""

from __future__ import annotations

import math

import numpy as np
import pytest
from bokeh.document import Document
from bokeh.models import BasicTicker

from pavi_viz import examples
from pavi_viz.ui.state import DashboardState
from pavi_viz.ui.views.figures import as_frame
from pavi_viz.ui.views.predictive import (
    OBSERVED_CURVE_NAME,
    OBSERVED_NAME,
    REPLICATED_NAME,
    REPLICATES,
    PredictiveCheck,
    observations_under,
    replicated,
)


def render(view) -> object:
    doc = Document()
    root = view.__panel__().get_root(doc)
    doc.add_root(root)
    return root


def test_the_selected_group_shows_its_observations(gre: DashboardState) -> None:
    gre.selection = {}
    gre.variable = "mu_g"
    view = PredictiveCheck(gre)
    root = render(view)
    assert view.plate == "group"
    assert "Select an element of group" in view._message.object
    assert view._plots.visible and not any(part.visible for part in view._element_parts)  # the whole data only
    gre.selection = {"group": 4}
    assert all(part.visible for part in view._element_parts) and "group 4" in view._message.object
    sources = list(root.select({"name": OBSERVED_NAME}))
    assert len(sources) == 2  # x has two components
    for c, label in enumerate(["0", "1"]):
        frame = as_frame(view.sources["x", label])
        np.testing.assert_allclose(frame["observed"], gre.observed["x"].values[4, :, c], rtol=1e-6)
        predictive = gre.draws["x"].values[:, 4, :, c]
        np.testing.assert_allclose(frame["median"], np.median(predictive, axis=0), rtol=1e-5)
        np.testing.assert_allclose(frame["low"], np.quantile(predictive, 0.05, axis=0), rtol=1e-5)
    expected = gre.observed["x"].values[4, :, 0]
    assert any(np.allclose(s.data["observed"], expected, rtol=1e-6) for s in sources)
    gre.selection = {"group": 9}
    np.testing.assert_allclose(as_frame(view.sources["x", "0"])["observed"], gre.observed["x"].values[9, :, 0], rtol=1e-6)


def test_a_county_shows_its_houses(radon: DashboardState) -> None:
    radon.selection = {"county": 20}
    view = PredictiveCheck(radon)
    render(view)
    houses = np.flatnonzero(radon.model.plate("house").membership == 20)
    frame = as_frame(view.sources["log_radon", ""])
    np.testing.assert_allclose(frame["observed"], radon.observed["log_radon"].values[houses], rtol=1e-6)
    assert list(frame["label"]) == [f"house {h}" for h in houses]
    inside = int((~frame["outside"].astype(bool)).sum())
    assert f"{inside} of {len(houses)} observed values" in view._notes[0].object


def test_messages_without_draws(fitted) -> None:
    state = DashboardState(examples.load("gre", G=5, N=3))
    view = PredictiveCheck(state)
    render(view)
    assert "start a fit" in view._message.object and not view._plots.visible
    big = fitted("gre", steps=50, G=5000, N=10, D=2)
    assert big.draws is None
    view = PredictiveCheck(big)
    big.selection = {"group": 1}
    render(view)
    assert "too big" in view._message.object and not view._plots.visible


def test_observations_under() -> None:
    gre = examples.load("gre", G=3, N=2)
    assert list(observations_under(gre, "x", "group", 1)) == [2, 3]
    radon = examples.load("radon")
    membership = np.asarray(radon.plate("house").membership)
    assert list(observations_under(radon, "log_radon", "county", 0)) == list(np.flatnonzero(membership == 0))
    schools = examples.load("eight_schools")
    assert list(observations_under(schools, "y", "school", 5)) == [5]


def test_the_whole_data_against_replicated_data_sets(gre: DashboardState) -> None:
    gre.selection = {}
    view = PredictiveCheck(gre)
    root = render(view)
    replicated_sources = list(root.select({"name": REPLICATED_NAME}))
    observed_sources = list(root.select({"name": OBSERVED_CURVE_NAME}))
    assert len(replicated_sources) == len(observed_sources) == 2  # one per component of x
    curves = view.whole_sources["x", "1"]
    assert len(curves[0].data["xs"]) == REPLICATES
    observed = gre.observed["x"].values[..., 1].ravel()  # every group's observations
    xs, ys = curves[1].data["xs"][0], curves[1].data["ys"][0]
    assert xs[0] < observed.min() and xs[-1] > observed.max()
    assert float(np.sum((ys[1:] + ys[:-1]) / 2 * np.diff(xs))) == pytest.approx(1.0, abs=0.02)
    assert "20 replicated data sets" in view._whole_notes[1].object


def test_counts_are_shares_per_whole_value_with_whole_ticks() -> None:
    rng = np.random.default_rng(0)
    observed = rng.poisson(3.0, size=400).astype(float)
    predicted = rng.poisson(3.0, size=(50, 400)).astype(float)
    curves = replicated(predicted, observed, discrete=True, bounds=(0.0, math.inf))
    assert curves.counts and len(curves.xs) == REPLICATES
    assert np.array_equal(curves.observed_x, np.arange(curves.observed_x[0], curves.observed_x[-1] + 1))
    assert curves.observed_y.sum() == pytest.approx(1.0)
    assert curves.observed_y[list(curves.observed_x).index(3.0)] == pytest.approx(np.mean(observed == 3))
    # Spike counts: both plots of the check count in whole numbers.
    spikes = DashboardState(examples.load("spikes"))
    view = PredictiveCheck(spikes)
    figures = [pane for pane in render(view).select({"type": BasicTicker}) if pane.min_interval == 1]
    assert len(figures) >= 3  # observation numbers, counts of the per-element plot, values of the whole one


def test_missing_values_are_left_out() -> None:
    observed = np.array([1.0, np.nan, 2.0, 3.0])
    predicted = np.array([[1.0, 2.0, np.nan, 3.0]] * 3)
    curves = replicated(predicted, observed, discrete=False, bounds=(-math.inf, math.inf))
    assert not curves.counts and np.isfinite(curves.observed_y).all() and len(curves.xs) == 3
