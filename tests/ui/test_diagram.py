"""The plate diagram rendered to a Bokeh document, without a browser or a server."""

from __future__ import annotations

import math

import pytest
from bokeh.document import Document
from bokeh.events import Tap
from bokeh.models import Arrow

from pavi_viz import examples
from pavi_viz.model import Variable
from pavi_viz.ui.layout import NODE_RADIUS
from pavi_viz.ui.state import DashboardState
from pavi_viz.ui.views.diagram import FIGURE_NAME, NODES_NAME, SELECTED_NAME, PlateDiagram


def click(diagram: PlateDiagram, x: float, y: float) -> None:
    """A click on the diagram at ``(x, y)`` (data coordinates), as Bokeh's server delivers it."""
    diagram.figure._trigger_event(Tap(diagram.figure, x=x, y=y))


def click_node(diagram: PlateDiagram, name: str, offset: float = 0.0) -> None:
    node = diagram.layout.node(name)
    click(diagram, node.x + offset, node.y - offset)


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
    click_node(diagram, "beta", offset=0.15)  # within the node's rim, off its centre
    assert state.variable == "beta"
    beta = diagram.layout.node("beta")
    assert source(SELECTED_NAME) == {"x": pytest.approx([beta.x]), "y": pytest.approx([beta.y])}
    click_node(diagram, "beta", offset=0.3)  # a click beside a node keeps the selection
    assert state.variable == "beta"
    state.variable = "sigma_y"  # another view selects
    assert list(source(SELECTED_NAME)["x"]) == pytest.approx([diagram.layout.node("sigma_y").x])


def test_a_new_model_redraws(rendered) -> None:
    state, diagram, root, _ = rendered
    state.model = examples.load("gre")
    nodes = dict(root.select_one({"name": NODES_NAME}).data_source.data)
    assert list(nodes["name"]) == ["mu", "mu_g", "x"]
    assert list(nodes["observed"]) == [False, False, True]
    click_node(diagram, "mu_g")  # the new figure's clicks
    assert state.variable == "mu_g"


def test_an_edit_redraws(rendered) -> None:
    state, _, root, _ = rendered
    model = state.model
    model.variables = [*model.variables, Variable("extra", "Normal", loc="alpha[county]", scale=1, plates=["county"])]
    names = list(root.select_one({"name": NODES_NAME}).data_source.data["name"])
    assert names[-1] == "extra"
    model.variables[-1].observed = True  # an edit of a variable already in the model
    assert list(root.select_one({"name": NODES_NAME}).data_source.data["observed"])[-1]


def test_arrowheads_sit_on_the_childs_rim(rendered) -> None:
    # Bokeh draws an Arrow's head at its end: the end must be the child's, on its rim.
    _, diagram, root, _ = rendered
    (arrow,) = root.select({"type": Arrow})
    edges = dict(arrow.source.data)
    assert arrow.end is not None and arrow.start is None
    layout = diagram.layout
    assert len(edges["x1"]) == len(layout.edges) > 0
    for edge, x0, y0, x1, y1 in zip(layout.edges, edges["x0"], edges["y0"], edges["x1"], edges["y1"], strict=True):
        parent, child = layout.node(edge.parent), layout.node(edge.child)
        assert math.hypot(x1 - child.x, y1 - child.y) < math.hypot(x0 - child.x, y0 - child.y)
        if child.kind != "covariate":
            assert math.hypot(x1 - child.x, y1 - child.y) == pytest.approx(NODE_RADIUS, abs=0.02)
        assert math.hypot(x0 - parent.x, y0 - parent.y) < math.hypot(x0 - child.x, y0 - child.y)
