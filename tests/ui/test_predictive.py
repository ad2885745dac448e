"""The posterior predictive check rendered to a Bokeh document, no browser."""

from __future__ import annotations

import numpy as np
from bokeh.document import Document

from pavi_viz import examples
from pavi_viz.ui.state import DashboardState
from pavi_viz.ui.views.figures import as_frame
from pavi_viz.ui.views.predictive import (
    OBSERVED_NAME,
    PredictiveCheck,
    observations_under,
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
    assert "Select a group" in view._message.object and not view._plots.visible
    gre.selection = {"group": 4}
    assert view._plots.visible and "group 4" in view._message.object
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
