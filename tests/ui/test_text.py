"""No user string becomes markup: every Markdown and alert pane of the app renders
without raw HTML, and MultiChoice labels are escaped (the browser test checks the page)."""

from __future__ import annotations

import html

import panel as pn
import pytest

import pavi_viz
from pavi_viz.ui.builder import Builder
from pavi_viz.ui.builder_state import BuilderState
from pavi_viz.ui.dashboard import Dashboard
from pavi_viz.ui.state import DashboardState
from pavi_viz.ui.views.text import labelled

PAYLOAD = "<img src=x onerror=alert(1)>"

pytestmark = pytest.mark.timeout(120)


def rendered_panes(component) -> list[str]:
    """The HTML each Markdown (and alert) pane of ``component`` sends to the page."""
    panes = list(pn.panel(component).select(pn.pane.Markdown))
    assert panes and all(pane.renderer_options.get("html") is False for pane in panes)
    return [html.unescape(pane._transform_object(pane.object)["object"]) for pane in panes]


def hostile_gre() -> pavi_viz.PlateModel:
    model = pavi_viz.examples.load("gre", G=4, N=2, D=1)
    model.name, model.description = f"gre {PAYLOAD}", PAYLOAD
    return model


def test_the_fit_tab_shows_a_hostile_model_name_as_text() -> None:
    dashboard = Dashboard(DashboardState(hostile_gre()))
    try:
        shown = rendered_panes(dashboard)
        assert any("gre &lt;img src=x onerror=alert(1)&gt;" in text for text in shown)
        assert not any("<img" in text for text in shown)
    finally:
        dashboard.close()


def test_the_builder_shows_hostile_names_and_their_problems_as_text() -> None:
    model = hostile_gre()
    plate = model.plate("group")
    plate.name = f"group{PAYLOAD}"
    for variable in model.variables:
        variable.plates = [plate.name if p == "group" else p for p in variable.plates]
    builder = Builder(BuilderState(model))
    shown = rendered_panes(builder)
    assert any("&lt;img src=x onerror=alert(1)&gt;" in text for text in shown)  # the problems name it
    assert not any("<img" in text for text in shown)
    choices = [w for w in pn.panel(builder).select(pn.widgets.MultiChoice) if w.options]
    assert choices and all(PAYLOAD not in label for w in choices for label in w.options)


def test_labels_are_escaped_and_keep_their_values() -> None:
    assert labelled(["a", PAYLOAD]) == {"a": "a", "&lt;img src=x onerror=alert(1)&gt;": PAYLOAD}
