"""The plate diagram rendered to a Bokeh document, without a browser or a server."""

from __future__ import annotations

import math

import pytest
from bokeh.document import Document
from bokeh.events import Tap
from bokeh.models import Arrow, Checkbox, Div, Legend

from pavi_viz import examples
from pavi_viz.model import Covariate, Variable
from pavi_viz.ui.layout import NODE_RADIUS
from pavi_viz.ui.state import DashboardState
from pavi_viz.ui.views.diagram import (
    COVARIATES_NAME,
    DATA_FILL,
    EDGES_NAME,
    FIGURE_NAME,
    HEADS_NAME,
    LABELS_NAME,
    LATENT_FILL,
    LEGEND_NAME,
    NAMES_NAME,
    NODES_NAME,
    SELECTED_NAME,
    PlateDiagram,
)


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


def test_one_row_per_variable_grey_when_observed(rendered) -> None:
    state, _, root, source = rendered
    nodes = source(NODES_NAME)
    assert list(nodes["name"]) == [v.name for v in state.model.variables]
    assert list(nodes["observed"]) == [v.observed for v in state.model.variables]
    # PyMC's and Pyro's convention: observed grey, latent open; covariates grey squares.
    fill = dict(zip(nodes["name"], nodes["fill_color"]))
    assert fill["log_radon"] == DATA_FILL == "#bebebe" and fill["alpha"] == LATENT_FILL == "white"
    covariates = root.select_one({"name": COVARIATES_NAME})
    assert list(covariates.data_source.data["name"]) == ["floor"]
    assert covariates.glyph.marker == "square" and covariates.glyph.fill_color == DATA_FILL
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
    # Bokeh draws an Arrow's head at its end: the end must be the child's, on its rim, and
    # the head's segment the edge's last one, heading for the child's centre.
    _, diagram, root, source = rendered
    (arrow,) = root.select({"type": Arrow})
    assert arrow.name == HEADS_NAME and arrow.end is not None and arrow.start is None
    heads, lines = dict(arrow.source.data), source(EDGES_NAME)
    layout = diagram.layout
    assert len(heads["x1"]) == len(lines["xs"]) == len(layout.edges) > 0
    rows = zip(layout.edges, heads["x0"], heads["y0"], heads["x1"], heads["y1"], lines["xs"], lines["ys"], strict=True)
    for edge, x0, y0, x1, y1, xs, ys in rows:
        parent, child = layout.node(edge.parent), layout.node(edge.child)
        assert [(x, y) for x, y in zip(xs, ys)] == list(edge.points)  # the line is the layout's polyline
        assert (x0, y0, x1, y1) == (xs[-2], ys[-2], xs[-1], ys[-1])
        assert math.hypot(x1 - child.x, y1 - child.y) == pytest.approx(NODE_RADIUS, abs=1e-6)
        heading, to_centre = (x1 - x0, y1 - y0), (child.x - x1, child.y - y1)
        assert heading[0] * to_centre[1] - heading[1] * to_centre[0] == pytest.approx(0, abs=1e-9)
        assert heading[0] * to_centre[0] + heading[1] * to_centre[1] > 0
        assert math.hypot(xs[0] - parent.x, ys[0] - parent.y) <= NODE_RADIUS + 1e-6  # starts at the parent


def test_distributions_are_shown_on_request(rendered) -> None:
    state, diagram, root, source = rendered
    assert not diagram.distributions and source(LABELS_NAME)["text"] == []  # off by default
    (toggle,) = root.select({"type": Checkbox})
    toggle.active = True  # as a click on the checkbox does
    assert diagram.distributions
    labels, names = source(LABELS_NAME), source(NAMES_NAME)
    assert set(labels["text"]) == {
        "~ Normal(0, 10)", "~ HalfNormal(1)", "~ Normal(mu_alpha, sigma_alpha)", "~ Normal(mu_beta, sigma_beta)",
        "~ Normal(alpha[county] + bet…, sigma_y)",
    }
    # Each label is written under its variable's name, left-aligned with it, right of its disc.
    written = {x: (text, y) for text, x, y in zip(names["text"], names["x"], names["y"], strict=True)}
    for label, x, y in zip(labels["text"], labels["x"], labels["y"], strict=True):
        name, name_y = written[x]
        node = diagram.layout.node(name)
        assert label == node.label and x == node.text.x0 > node.x + NODE_RADIUS and y < name_y
    assert "~ Normal(mu_alpha, sigma_alpha)" == diagram.layout.node("alpha").label
    state.model.variables[0].params = {"loc": 1.5, "scale": 2.0}  # an edit shows at once
    assert "~ Normal(1.5, 2)" in source(LABELS_NAME)["text"]
    diagram.distributions = False
    assert source(LABELS_NAME)["text"] == []


def test_names_are_plain_text_never_markup() -> None:
    """A model file names its variables: drawn as text by Bokeh's canvas, never as HTML."""
    model = examples.load("gre")
    hostile = "<img src=x onerror=alert(1)>"
    model.covariates = [Covariate(hostile, plates=["group"])]
    state = DashboardState(model)
    diagram = PlateDiagram(state, distributions=True)
    root = diagram.__panel__().get_root(Document())
    assert hostile in list(root.select_one({"name": NAMES_NAME}).data_source.data["text"])
    assert not any(hostile in str(div.text) for div in root.select({"type": Div}))
    state.close()


def test_a_legend_of_the_symbols_under_the_drawing(rendered) -> None:
    _, diagram, root, _ = rendered
    legend = root.select_one({"name": LEGEND_NAME})
    assert isinstance(legend, Legend)
    assert [item.label.value for item in legend.items] == ["latent", "observed", "covariate", "plate (size)"]
    figure = root.select_one({"name": FIGURE_NAME})
    assert legend in figure.center  # inside the frame, in a strip of its own under the drawing
    assert figure.y_range.start < diagram.layout.bounds[1] - 0.3
    # A model without covariates lists no covariate.
    state = DashboardState(examples.load("mixture"))
    legend = PlateDiagram(state).figure.select_one({"name": LEGEND_NAME})
    assert [item.label.value for item in legend.items] == ["latent", "observed", "plate (size)"]
    state.close()


def test_a_click_on_a_name_selects_its_variable(rendered) -> None:
    state, diagram, _, _ = rendered
    text = diagram.layout.node("sigma_beta").text
    click(diagram, (text.x0 + text.x1) / 2, (text.y0 + text.y1) / 2)
    assert state.variable == "sigma_beta"
    floor = diagram.layout.node("floor")
    click(diagram, floor.x, floor.y)  # a covariate is no variable: the selection stays
    assert state.variable == "sigma_beta"
