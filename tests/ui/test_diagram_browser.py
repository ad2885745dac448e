"""The plate diagram in a real headless browser, against the served app: its drawing as
the page holds it (edges around the nodes, arrowheads into the children) and its clicks.

Everything is read from the page: the Bokeh models the browser shows (their names are
listed in :mod:`pavi_viz.ui.views.diagram`), never the server's Python objects.
Screenshots go to ``tests/artifacts/ui/``.
"""

from __future__ import annotations

import math
import re

import pytest
from playwright.sync_api import expect

from pavi_viz.ui.layout import NODE_RADIUS
from pavi_viz.ui.views.diagram import EDGES_NAME, HEADS_NAME, LABELS_NAME, NODES_NAME, SELECTED_NAME, TOGGLE_CLASS
from tests.ui.conftest import FIND_VIEWS

pytestmark = [pytest.mark.ui, pytest.mark.timeout(240)]

TOGGLE = f".{TOGGLE_CLASS} input"
MIXTURE = ["mu", "mu_g", "pi_g", "x"]
#: Milliseconds to wait for the server's answer to an action.
ANSWER_MS = 20_000

#: The shown diagram's edges: each one's polyline, parent and child, and the segment its
#: arrowhead is drawn on (the head at its end). Typed arrays made plain, for JSON.
EDGE_GEOMETRY = "() => {" + FIND_VIEWS + f"""
  const lines = findViews("{EDGES_NAME}").find(v => v.model.data_source).model.data_source.data;
  const heads = findViews("{HEADS_NAME}")[0].model.source.data;
  const plain = (column) => Array.from(column, (v) => (typeof v === "object" ? Array.from(v) : v));
  return {{xs: plain(lines.xs), ys: plain(lines.ys), parent: plain(lines.parent), child: plain(lines.child),
           x0: plain(heads.x0), y0: plain(heads.y0), x1: plain(heads.x1), y1: plain(heads.y1)}};
}}"""


def distance_to_segment(x: float, y: float, a: tuple[float, float], b: tuple[float, float]) -> float:
    (ax, ay), (bx, by) = a, b
    length2 = (bx - ax) ** 2 + (by - ay) ** 2
    t = 0.0 if length2 == 0 else min(1.0, max(0.0, ((x - ax) * (bx - ax) + (y - ay) * (by - ay)) / length2))
    return math.hypot(x - (ax + t * (bx - ax)), y - (ay + t * (by - ay)))


def check_drawing(page) -> None:
    """The shown edges keep off every disc but their own two ends', end on the child's
    rim, and their arrowheads point into the child (at its centre)."""
    names, xs, ys = (page.shown_column(NODES_NAME, c) for c in ("name", "x", "y"))
    centres = dict(zip(names, zip(xs, ys, strict=True), strict=True))
    edges = page.page.evaluate(EDGE_GEOMETRY)
    assert len(edges["parent"]) > 0
    rows = zip(edges["parent"], edges["child"], edges["xs"], edges["ys"], edges["x0"], edges["y0"], edges["x1"],
               edges["y1"], strict=True)
    for parent, child, line_xs, line_ys, x0, y0, x1, y1 in rows:
        points = list(zip(line_xs, line_ys, strict=True))
        for name, (cx, cy) in centres.items():
            if name not in (parent, child):
                assert all(distance_to_segment(cx, cy, a, b) > NODE_RADIUS for a, b in zip(points, points[1:])), \
                    f"{parent} -> {child} crosses {name}'s disc: {points}"
        cx, cy = centres[child]
        assert (x0, y0, x1, y1) == pytest.approx((*points[-2], *points[-1]))  # the head on the line's end
        assert math.hypot(x1 - cx, y1 - cy) == pytest.approx(NODE_RADIUS, abs=1e-6)
        heading, to_centre = (x1 - x0, y1 - y0), (cx - x1, cy - y1)
        cosine = (heading[0] * to_centre[0] + heading[1] * to_centre[1]) / math.hypot(*heading) / math.hypot(*to_centre)
        assert cosine == pytest.approx(1, abs=1e-6), f"{parent} -> {child}: the head points off {child}'s centre"
        assert math.hypot(points[0][0] - centres[parent][0], points[0][1] - centres[parent][1]) <= NODE_RADIUS + 1e-6


def test_the_mixture_diagram_routes_its_edges_and_selects_on_click(dashboard_server, open_page):
    page = open_page(dashboard_server.url)
    page.page.get_by_role("combobox", name="Model").select_option("mixture")
    page.wait_shown_column(NODES_NAME, "name", MIXTURE)
    check_drawing(page)
    page.shot("mixture")
    # Each node in turn: the ring follows the click, and the variable selector with it.
    for i, name in enumerate(MIXTURE):
        x, y = page.point_at(NODES_NAME, i)
        page.page.mouse.click(x, y)
        page.wait_shown_column(SELECTED_NAME, "x", page.shown_column(NODES_NAME, "x")[i : i + 1], timeout=10)
        title = page.page.locator(".pavi-detail-title h3").first
        expect(title).to_have_text(re.compile(rf"^{name}\b"), timeout=ANSWER_MS)  # "mu_g: select an element of group"
    assert page.errors == []


def test_distributions_toggle_on_and_stay_clear_of_the_edges(dashboard_server, open_page):
    page = open_page(dashboard_server.url)
    page.page.get_by_role("combobox", name="Model").select_option("mixture")
    page.wait_shown_column(NODES_NAME, "name", MIXTURE)
    page.wait_shown_column(LABELS_NAME, "text", [])  # off by default
    page.page.locator(TOGGLE).first.click()
    page.wait_shown_column(LABELS_NAME, "text", ["~ Normal(0, 2)", "~ Normal(mu, 0.5)", "~ Dirichlet([1, 1, 1])",
                                            "~ GaussianMixture(pi_g, mu_g, 0.1)"])
    check_drawing(page)  # the redrawn diagram's edges
    page.shot("mixture-distributions")
    x, y = page.point_at(NODES_NAME, 2)  # the new figure's clicks select too
    page.page.mouse.click(x, y)
    page.wait_shown_column(SELECTED_NAME, "x", page.shown_column(NODES_NAME, "x")[2:3], timeout=10)
    assert page.errors == []
