"""The plate diagram's layout (headless: no Panel, HoloViews or Bokeh)."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pavi_viz import examples
from pavi_viz.model import Covariate, Plate, PlateModel, Variable
from pavi_viz.ui.layout import (
    COVARIATE,
    COVARIATE_HALF_SIDE,
    MAX_ROUTED_NODES,
    NODE_RADIUS,
    OBSERVED,
    Box,
    DiagramLayout,
    Node,
    PlateBox,
    distribution_label,
    plate_layout,
)

EXAMPLES = examples.list()
#: How far off a point may be and still count as on a rim (the layout bisects to 1e-12).
ON_RIM = 1e-6


def _inside(x: float, y: float, box: PlateBox) -> bool:
    return box.x0 < x < box.x1 and box.y0 < y < box.y1


def _check_geometry(layout: DiagramLayout) -> None:
    """Nodes inside exactly their plates' boxes, nested boxes inside their outer one,
    sibling boxes apart, no two nodes overlapping; names and labels inside their
    node's boxes, clear of each other, of every disc and of the plates' labels."""
    boxes = {b.name: b for b in layout.plates}
    for node in layout.nodes:
        for box in boxes.values():
            # The whole circle, not only its centre, is in (or out of) the box.
            corners = [(node.x + dx, node.y + dy) for dx in (-NODE_RADIUS, NODE_RADIUS)
                       for dy in (-NODE_RADIUS, NODE_RADIUS)]
            if box.name in node.plates:
                assert all(_inside(x, y, box) for x, y in corners), (node, box)
            else:
                assert not _inside(node.x, node.y, box), (node, box)
    for box in boxes.values():
        if box.nested_in is not None:
            outer = boxes[box.nested_in]
            assert outer.x0 < box.x0 and box.x1 < outer.x1 and outer.y0 < box.y0 and box.y1 < outer.y1
    for a, b in itertools.combinations(boxes.values(), 2):
        if a.nested_in == b.nested_in:
            assert a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0, (a, b)
    for a, b in itertools.combinations(layout.nodes, 2):
        assert (a.x - b.x) ** 2 + (a.y - b.y) ** 2 > (2 * NODE_RADIUS) ** 2, (a, b)
    texts = [n.text for n in layout.nodes] + [b.label_box for b in boxes.values()]
    for node in layout.nodes:
        assert all(_box_inside(node.text, boxes[name]) for name in node.plates), node
        assert all(_disc_apart(node, text) for text in texts), node
    for a, b in itertools.combinations(texts, 2):
        assert a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0, (a, b)


def _box_inside(inner: Box, outer: PlateBox) -> bool:
    return outer.x0 < inner.x0 and inner.x1 < outer.x1 and outer.y0 < inner.y0 and inner.y1 < outer.y1


def _disc_apart(node: Node, box: Box) -> bool:
    """Whether ``node``'s disc and ``box`` do not overlap."""
    nearest_x, nearest_y = min(max(node.x, box.x0), box.x1), min(max(node.y, box.y0), box.y1)
    return math.hypot(node.x - nearest_x, node.y - nearest_y) >= NODE_RADIUS


# -- edges: geometry written afresh here, not borrowed from the layout --------------------------
def _distance_to_segment(x: float, y: float, a: tuple[float, float], b: tuple[float, float]) -> float:
    (ax, ay), (bx, by) = a, b
    length2 = (bx - ax) ** 2 + (by - ay) ** 2
    t = 0.0 if length2 == 0 else min(1.0, max(0.0, ((x - ax) * (bx - ax) + (y - ay) * (by - ay)) / length2))
    return math.hypot(x - (ax + t * (bx - ax)), y - (ay + t * (by - ay)))


def _segment_crosses_box(a: tuple[float, float], b: tuple[float, float], box: Box) -> bool:
    """Whether the segment a-b passes through the inside of ``box`` (Liang-Barsky)."""
    enter, leave = 0.0, 1.0
    for start, change, low, high in [(a[0], b[0] - a[0], box.x0, box.x1), (a[1], b[1] - a[1], box.y0, box.y1)]:
        if change == 0:
            if not low < start < high:
                return False
            continue
        t0, t1 = sorted(((low - start) / change, (high - start) / change))
        enter, leave = max(enter, t0), min(leave, t1)
    return enter < leave


def _on_rim(node: Node, point: tuple[float, float]) -> bool:
    dx, dy = point[0] - node.x, point[1] - node.y
    if node.kind == COVARIATE:
        return abs(max(abs(dx), abs(dy)) - COVARIATE_HALF_SIDE) < ON_RIM
    return abs(math.hypot(dx, dy) - NODE_RADIUS) < ON_RIM


def _check_edges(layout: DiagramLayout) -> None:
    """Each edge runs from its parent's rim to its child's, its last segment heading for
    the child's centre (where the arrowhead points); no segment passes through a disc
    (other than where it starts and ends) nor through a name, distribution or plate label."""
    texts = [n.text for n in layout.nodes] + [b.label_box for b in layout.plates]
    for edge in layout.edges:
        parent, child, points = layout.node(edge.parent), layout.node(edge.child), edge.points
        segments = list(itertools.pairwise(points))
        assert len(points) >= 2 and _on_rim(parent, points[0]) and _on_rim(child, points[-1]), edge
        (x0, y0), (x1, y1) = segments[-1]
        heading, to_centre = (x1 - x0, y1 - y0), (child.x - x1, child.y - y1)
        assert heading[0] * to_centre[1] - heading[1] * to_centre[0] == pytest.approx(0, abs=1e-9), edge
        assert heading[0] * to_centre[0] + heading[1] * to_centre[1] > 0, edge
        for node in layout.nodes:
            # An edge touches the rims of its own two ends, where it starts and ends (and
            # keeps out of them: out of a covariate's square is out of the circle inside it);
            # it keeps off every other disc.
            inner = COVARIATE_HALF_SIDE if node.kind == COVARIATE else NODE_RADIUS
            least = inner - ON_RIM if node in (parent, child) else NODE_RADIUS
            assert all(_distance_to_segment(node.x, node.y, a, b) > least for a, b in segments), (edge, node)
        assert not any(_segment_crosses_box(a, b, box) for a, b in segments for box in texts), edge


@pytest.mark.parametrize("distributions", [False, True])
@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_lays_out(name: str, distributions: bool) -> None:
    model = examples.load(name)
    layout = plate_layout(model, distributions)
    _check_geometry(layout)
    _check_edges(layout)
    assert [n.name for n in layout.nodes] == [v.name for v in model.variables] + [c.name for c in model.covariates]
    kinds = {n.name: n.kind for n in layout.nodes}
    assert all(kinds[v.name] == (OBSERVED if v.observed else "latent") for v in model.variables)
    assert all(kinds[c.name] == COVARIATE for c in model.covariates)
    assert {b.name for b in layout.plates} == {p.name for p in model.plates}
    x0, y0, x1, y1 = layout.bounds
    assert all(x0 <= n.x <= x1 and y0 <= n.y <= y1 for n in layout.nodes)


@pytest.mark.parametrize("name", EXAMPLES)
def test_edges_are_the_parent_relation(name: str) -> None:
    model = examples.load(name)
    compiled = model.compile()
    layout = plate_layout(model)
    edges = {(e.parent, e.child) for e in layout.edges}
    covariates = {c.name for c in model.covariates}
    expected = {(p, name) for name, var in compiled.variables.items() for p in var.parents}
    assert {e for e in edges if e[0] not in covariates} == expected
    assert {e[0] for e in edges} - set(compiled.variables) <= covariates
    # Parents above children: depth is the longest path from a root.
    for e in layout.edges:
        assert layout.node(e.parent).layer < layout.node(e.child).layer


def test_layers_are_longest_paths() -> None:
    layout = plate_layout(examples.load("radon"))
    assert {n.name: n.layer for n in layout.nodes} == {
        "mu_alpha": 0, "mu_beta": 0, "sigma_alpha": 0, "sigma_beta": 0, "sigma_y": 0,
        "alpha": 1, "beta": 1, "log_radon": 2,
        "floor": 1,  # a covariate sits just above its child
    }
    assert layout.node("log_radon").plates == ("county", "house")  # through house's nesting
    assert {b.name: b.label for b in layout.plates} == {"county": "county (85)", "house": "house (919, ragged)"}
    assert layout.node("mu_alpha").y > layout.node("alpha").y > layout.node("log_radon").y  # roots on top


def test_half_built_model_lays_out() -> None:
    """An unknown parent and plate, a cycle, a broken expression, a duplicate name,
    crossed plates, an empty plate and plates nested in a cycle: drawn, never raised."""
    model = PlateModel(
        plates=[Plate("a", 3), Plate("b", 2, nested_in="a"), Plate("c", 4), Plate("empty", 2),
                Plate("p", 2, nested_in="q"), Plate("q", 2, nested_in="p"), Plate("lost", 2, nested_in="nowhere")],
        covariates=[Covariate("w", plates=["b"])],
        variables=[
            Variable("u", "Normal", loc="v + missing", scale=1, plates=["a"]),
            Variable("v", "Normal", loc="u", scale="exp(", plates=["b"]),
            Variable("s", "Normal", loc="s", scale=1),  # refers to itself
            Variable("t", "Normal", loc="w * (", scale=1, plates=["b", "c", "nowhere"]),
            Variable("t", "Normal", loc=0, scale=1),
            Variable("z", "Poisson", rate="u", plates=["p", "lost"], observed=True),
        ],
    )
    layout = plate_layout(model)
    assert [n.name for n in layout.nodes] == ["u", "v", "s", "t", "z", "w"]
    assert {(e.parent, e.child) for e in layout.edges} == {("v", "u"), ("u", "v"), ("w", "t"), ("u", "z")}
    assert layout.node("t").plates == ("a", "b")  # crossed plates: drawn in its deepest chain
    _check_geometry(layout)
    _check_edges(layout)
    # The edge closing the cycle points up: checked above like the others, rim to rim.
    assert any(layout.node(e.child).y > layout.node(e.parent).y for e in layout.edges)


def test_empty_model_lays_out() -> None:
    layout = plate_layout(PlateModel())
    assert layout.nodes == () and layout.edges == () and layout.plates == ()


#: Models drawn by hand to corner the layout: each its own trouble.
HAND_MADE = {
    # A parent two layers up, right above the node between: its edge must bend around it.
    "skip": PlateModel(variables=[
        Variable("a", "Normal", loc=0, scale=1),
        Variable("b", "Normal", loc="a", scale=1),
        Variable("c", "Normal", loc="a + b", scale=1, observed=True),
    ]),
    # The same inside nested plates, with a covariate beside the node skipped.
    "skip_in_plates": PlateModel(
        plates=[Plate("g", 5), Plate("n", 7, nested_in="g")],
        covariates=[Covariate("dose", plates=["g", "n"])],
        variables=[
            Variable("top", "Normal", loc=0, scale=1, plates=["g"]),
            Variable("mid", "Normal", loc="top", scale=1, plates=["g"]),
            Variable("y", "Normal", loc="top + mid * dose", scale=1, plates=["g", "n"], observed=True),
        ],
    ),
    # Crossed plates: rows and columns, a cell in both.
    "crossed": PlateModel(
        plates=[Plate("row", 3), Plate("col", 4)],
        variables=[
            Variable("sigma", "HalfNormal", scale=1),
            Variable("row_effect", "Normal", loc=0, scale="sigma", plates=["row"]),
            Variable("col_effect", "Normal", loc=0, scale="sigma", plates=["col"]),
            Variable("cell", "Normal", loc="row_effect + col_effect", scale="sigma", plates=["row", "col"],
                     observed=True),
        ],
    ),
    # Plates whose labels are wider than what they hold; many parents for one child.
    "wide_plates": PlateModel(
        plates=[Plate("a_plate_with_a_rather_long_name", 123456),
                Plate("another_long_plate_name", nested_in="a_plate_with_a_rather_long_name",
                      membership=[i % 123456 for i in range(200_000)])],
        covariates=[Covariate("x", plates=["a_plate_with_a_rather_long_name", "another_long_plate_name"])],
        variables=[
            *(Variable(f"w{i}", "Normal", loc=0, scale=1) for i in range(6)),
            Variable("u", "Normal", loc="w0 + w1 + w2", scale=1, plates=["a_plate_with_a_rather_long_name"]),
            Variable("obs", "Normal", loc="u + w3 * x + w4 + w5 + w0", scale="exp(w1)",
                     plates=["a_plate_with_a_rather_long_name", "another_long_plate_name"], observed=True),
        ],
    ),
}


@pytest.mark.parametrize("distributions", [False, True])
@pytest.mark.parametrize("name", HAND_MADE)
def test_hand_made_models_lay_out(name: str, distributions: bool) -> None:
    layout = plate_layout(HAND_MADE[name], distributions)
    _check_geometry(layout)
    _check_edges(layout)


def test_an_edge_bends_around_the_node_it_skips() -> None:
    """The teacher's report: a straight ``a -> c`` would run through ``b``'s disc and read
    as ``a -> b -> c``."""
    layout = plate_layout(HAND_MADE["skip"])
    a, b, c = (layout.node(n) for n in "abc")
    assert a.x == pytest.approx(b.x) == pytest.approx(c.x)  # one column: straight would cross b
    (skip,) = [e for e in layout.edges if (e.parent, e.child) == ("a", "c")]
    assert len(skip.points) > 2
    _check_edges(layout)


def test_a_large_model_has_straight_edges() -> None:
    """Past MAX_ROUTED_NODES, routing would hold the server too long: edges go straight,
    still from rim to rim."""
    names = [f"v{i}" for i in range(MAX_ROUTED_NODES + 1)]
    chain = [Variable(name, "Normal", loc=" + ".join(names[max(i - 2, 0):i]) or 0.0, scale=1.0)
             for i, name in enumerate(names)]
    layout = plate_layout(PlateModel(variables=chain))
    assert len(layout.edges) == 2 * MAX_ROUTED_NODES - 1
    assert all(len(e.points) == 2 for e in layout.edges)
    for edge in layout.edges:
        assert _on_rim(layout.node(edge.parent), edge.points[0]) and _on_rim(layout.node(edge.child), edge.points[-1])


def test_distribution_labels() -> None:
    assert distribution_label("Normal", {"loc": 0.0, "scale": 5.0}) == "~ Normal(0, 5)"
    assert distribution_label("Normal", {"loc": "mu", "scale": 0.5}) == "~ Normal(mu, 0.5)"
    assert distribution_label("Dirichlet", {"concentration": [1.0, 1.0, 1.0]}) == "~ Dirichlet([1, 1, 1])"
    assert distribution_label("Poisson", {"rate": 3}) == "~ Poisson(3)"
    long = distribution_label("Normal", {"loc": "alpha[county] + beta[county] * floor", "scale": "sigma_y"})
    assert long == "~ Normal(alpha[county] + bet…, sigma_y)"  # each argument cut short, the structure kept
    layout = plate_layout(examples.load("eight_schools"), distributions=True)
    assert {n.name: n.label for n in layout.nodes} == {
        "mu": "~ Normal(0, 5)", "tau": "~ HalfCauchy(5)", "theta": "~ Normal(mu, tau)", "y": "~ Normal(theta, sigma)",
        "sigma": "",  # a covariate has no distribution
    }
    assert all(n.label == "" for n in plate_layout(examples.load("eight_schools")).nodes)


def test_labels_take_room_beside_their_node() -> None:
    """Labels widen their nodes' slots (never overlapping: see _check_geometry), and
    the name and label are written right of the node, on its height."""
    model = examples.load("eight_schools")
    plain, labelled = plate_layout(model), plate_layout(model, distributions=True)
    assert labelled.bounds[2] > plain.bounds[2]
    for node in labelled.nodes:
        assert node.text.x0 > node.x + NODE_RADIUS
        assert node.text.y0 < node.y < node.text.y1
        assert node.text.y1 - node.text.y0 <= 2 * NODE_RADIUS  # no taller than the node


def test_what_a_click_points_at() -> None:
    layout = plate_layout(examples.load("radon"), distributions=True)
    alpha = layout.node("alpha")
    assert layout.node_at(alpha.x + 0.2, alpha.y - 0.1) is alpha  # on its disc
    text = alpha.text
    assert layout.node_at((text.x0 + text.x1) / 2, (text.y0 + text.y1) / 2) is alpha  # on its name or label
    assert layout.node_at(alpha.x, alpha.y + 0.5) is None


# -- any model at all --------------------------------------------------------------------------
@st.composite
def plate_models(draw: st.DrawFn) -> PlateModel:
    """Models of up to 7 variables and 2 covariates, in up to 3 plates nested or
    crossed at random, each variable's parameters referring to earlier names."""
    plates = []
    for i in range(draw(st.integers(0, 3))):
        outer = draw(st.sampled_from([None, *(p.name for p in plates)]))
        plates.append(Plate(f"p{i}", draw(st.integers(1, 9999)), nested_in=outer))
    plate_names = [p.name for p in plates]
    names = draw(st.lists(st.sampled_from(["a", "mu", "sigma_long_name", "x", "theta_g", "w", "z9", "m"]),
                          min_size=1, max_size=9, unique=True))
    covariates = [Covariate(n, plates=draw(st.lists(st.sampled_from(plate_names), unique=True)) if plates else [])
                  for n in names[:draw(st.integers(0, min(2, len(names) - 1)))]]
    variables = []
    for i, name in enumerate(names[len(covariates):]):
        earlier = names[: len(covariates) + i]
        refs = draw(st.lists(st.sampled_from(earlier), unique=True, max_size=3)) if earlier else []
        variables.append(Variable(
            name, "Normal", loc=" + ".join(refs) or 0.0, scale=1.0, observed=draw(st.booleans()),
            plates=draw(st.lists(st.sampled_from(plate_names), unique=True, max_size=2)) if plates else [],
        ))
    return PlateModel(plates=plates, covariates=covariates, variables=variables)


@settings(max_examples=80, deadline=None)
@given(model=plate_models(), distributions=st.booleans())
def test_any_model_lays_out_with_edges_around_its_nodes(model: PlateModel, distributions: bool) -> None:
    layout = plate_layout(model, distributions)
    _check_geometry(layout)
    _check_edges(layout)
