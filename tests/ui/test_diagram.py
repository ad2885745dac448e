"""The plate diagram rendered to a Bokeh document, without a browser or a server."""

from __future__ import annotations

import pytest
from bokeh.document import Document

from pavi_viz import examples
from pavi_viz.model import Variable
from pavi_viz.ui.state import DashboardState
from pavi_viz.ui.views.diagram import FIGURE_NAME, NODES_NAME, SELECTED_NAME, PlateDiagram


@pytest.fixture
def rendered():
    """A diagram of radon and its Bokeh root; ``source(name)`` reads a named renderer's data."""
    state = DashboardState(examples.load("radon"))
    diagram = PlateDiagram(state)
    root = diagram.__panel__().get_root(Document())

    def source(name: str) -> dict:
        return dict(root.select_one({"name": name}).data_source.data)

    yield state, diagram, root, source
    state.close()


def test_one_row_per_variable_filled_when_observed(rendered) -> None:
    state, _, root, source = rendered
    nodes = source(NODES_NAME)
    assert list(nodes["name"]) == [v.name for v in state.model.variables]
    assert list(nodes["observed"]) == [v.observed for v in state.model.variables]
    fill = dict(zip(nodes["name"], nodes["fill_color"]))
    assert fill["log_radon"] != "white" and fill["alpha"] == "white"
    figure = root.select_one({"name": FIGURE_NAME})
    assert figure.width > 0 and figure.height > 0
    # Equal aspect: as many pixels per unit in x as in y.
    x_scale = figure.width / (figure.x_range.end - figure.x_range.start)
    y_scale = figure.height / (figure.y_range.end - figure.y_range.start)
    assert x_scale == pytest.approx(y_scale, rel=0.02)


def test_a_click_selects_and_the_ring_follows(rendered) -> None:
    state, diagram, _, source = rendered
    names = list(source(NODES_NAME)["name"])
    diagram.selection.event(index=[names.index("beta")])  # what a tap sends
    assert state.variable == "beta"
    beta = diagram.layout.node("beta")
    assert source(SELECTED_NAME) == {"x": pytest.approx([beta.x]), "y": pytest.approx([beta.y])}
    diagram.selection.event(index=[])  # a click on empty space keeps the selection
    assert state.variable == "beta"
    state.variable = "sigma_y"  # another view selects
    assert list(source(SELECTED_NAME)["x"]) == pytest.approx([diagram.layout.node("sigma_y").x])


def test_a_new_model_redraws(rendered) -> None:
    state, diagram, root, _ = rendered
    state.model = examples.load("gre")
    nodes = dict(root.select_one({"name": NODES_NAME}).data_source.data)
    assert list(nodes["name"]) == ["mu", "mu_g", "x"]
    assert list(nodes["observed"]) == [False, False, True]
    diagram.selection.event(index=[1])  # the new figure's stream
    assert state.variable == "mu_g"


def test_an_edit_redraws(rendered) -> None:
    state, _, root, _ = rendered
    model = state.model
    model.variables = [*model.variables, Variable("extra", "Normal", loc="alpha[county]", scale=1, plates=["county"])]
    names = list(root.select_one({"name": NODES_NAME}).data_source.data["name"])
    assert names[-1] == "extra"
    model.variables[-1].observed = True  # an edit of a variable already in the model
    assert list(root.select_one({"name": NODES_NAME}).data_source.data["observed"])[-1]
