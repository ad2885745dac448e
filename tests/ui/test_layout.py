"""The plate diagram's layout (headless: no Panel, HoloViews or Bokeh)."""

from __future__ import annotations

import itertools

import pytest

from pavi_viz import examples
from pavi_viz.model import Covariate, Plate, PlateModel, Variable
from pavi_viz.ui.layout import COVARIATE, NODE_RADIUS, OBSERVED, DiagramLayout, PlateBox, plate_layout

EXAMPLES = examples.list()


def _inside(x: float, y: float, box: PlateBox) -> bool:
    return box.x0 < x < box.x1 and box.y0 < y < box.y1


def _check_geometry(layout: DiagramLayout) -> None:
    """Nodes inside exactly their plates' boxes, nested boxes inside their outer one,
    sibling boxes apart, no two nodes overlapping."""
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


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_lays_out(name: str) -> None:
    model = examples.load(name)
    layout = plate_layout(model)
    _check_geometry(layout)
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


def test_empty_model_lays_out() -> None:
    layout = plate_layout(PlateModel())
    assert layout.nodes == () and layout.edges == () and layout.plates == ()
