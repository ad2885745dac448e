"""The plate diagram: plates as nested boxes, variables as nodes, arrows from parents.

:class:`PlateDiagram` draws :func:`pavi_viz.ui.layout.plate_layout` with HoloViews'
Bokeh backend (offline: nothing from a CDN, no graphviz). Latent variables are open
circles, observed ones filled, covariates small grey squares; each plate box says
its name and size in its lower right corner ("ragged" for ragged nesting). Clicking
a variable selects it (``state.variable``); the selected one wears an orange ring.

The figure is rebuilt when the model changes (``state.model``, or an edit of its
plates, variables or covariates: a new list, or a changed parameter of one of them;
in-place list mutations go unseen, assign a new list); a new selection only moves
the ring.

Inspecting the page (browser tests): the Bokeh models carry names, found with
``Bokeh.documents[0].get_model_by_name(NAME)`` in the page or
``doc.select_one({"name": NAME})`` on the server:

- :data:`NODES_NAME` (``"pavi-diagram-nodes"``): the glyph renderer of the variables,
  whose data source has one row per variable (columns ``x``, ``y``, ``name``,
  ``observed``); clicking one of its points selects that variable;
- :data:`SELECTED_NAME` (``"pavi-diagram-selected"``): the ring's glyph renderer (one
  row, or none when the selected variable is not in the model);
- :data:`FIGURE_NAME` (``"pavi-diagram-figure"``): the figure.
"""

from __future__ import annotations

import math
from typing import Any

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (styling options need the Bokeh backend loaded)
import pandas as pd
import panel as pn
import param
from bokeh.models import TapTool
from panel.viewable import Viewer

from pavi_viz.ui.layout import COVARIATE, NODE_RADIUS, OBSERVED, DiagramLayout, plate_layout

#: Names of the Bokeh models, for browser tests (see the module's docstring).
NODES_NAME = "pavi-diagram-nodes"
SELECTED_NAME = "pavi-diagram-selected"
FIGURE_NAME = "pavi-diagram-figure"

#: Pixels per layout unit (less for a model too large for MAX_WIDTH x MAX_HEIGHT).
SCALE = 80
MAX_WIDTH, MAX_HEIGHT = 900, 700
#: Room around the layout's bounds (layout units).
MARGIN = 0.1

INK = "#444444"
PLATE_FILL, PLATE_LINE = "#dde7f0", "#7f93a8"
HIGHLIGHT = "#ff7f0e"
_FONT = "9pt"


def _name_renderer(name: str):
    """A HoloViews hook naming an element's glyph renderer."""

    def hook(plot: Any, element: Any) -> None:
        plot.handles["glyph_renderer"].name = name

    return hook


def _describe(model: Any, name: str) -> str:
    """``Normal(loc=mu, scale=1.0)``: a variable's distribution, for the hover text."""
    var = next(v for v in model.variables if v.name == name)
    return f"{var.distribution}({', '.join(f'{k}={v}' for k, v in var.params.items())})"


def _name_figure(plot: Any, element: Any) -> None:
    plot.state.name = FIGURE_NAME


def _tap_nodes_only(plot: Any, element: Any) -> None:
    """Let the tap tool select variables only: by default it also selects (and dims)
    the plate boxes and everything else under the pointer."""
    for tool in plot.state.select(type=TapTool):
        tool.renderers = [plot.handles["glyph_renderer"]]


class PlateDiagram(Viewer):
    """The dashboard's model as a plate diagram; a click on a variable selects it.

    Args:
        state: an object with a ``model`` parameter (a
            :class:`~pavi_viz.model.spec.PlateModel`) and a ``variable`` parameter
            (the selected variable's name): the dashboard's
            :class:`~pavi_viz.ui.state.DashboardState`, or a builder's state.
    """

    def __init__(self, state: param.Parameterized, **params: Any) -> None:
        super().__init__(**params)
        self.state = state
        self.layout: DiagramLayout = plate_layout(state.model)
        self._ring_stream = hv.streams.Params(state, ["variable"])
        self._watchers: list[tuple[param.Parameterized, Any]] = []
        self._pane = pn.pane.HoloViews(self._figure(), linked_axes=False)
        state.param.watch(self._model_replaced, "model")
        self._watch_model()

    def __panel__(self) -> pn.viewable.Viewable:
        return self._pane

    # -- following the model ---------------------------------------------------------
    def _model_replaced(self, event: param.parameterized.Event) -> None:
        self._watch_model()
        self.redraw()

    def _watch_model(self) -> None:
        """Watch the model's lists and every plate, variable and covariate in them."""
        for obj, watcher in self._watchers:
            obj.param.unwatch(watcher)
        model = self.state.model
        watched = [(model, ["plates", "variables", "covariates"])]
        watched += [(p, ["name", "size", "nested_in", "membership"]) for p in model.plates]
        watched += [(v, ["name", "params", "plates", "observed"]) for v in model.variables]
        watched += [(c, ["name", "plates"]) for c in model.covariates]
        self._watchers = [(obj, obj.param.watch(self._edited, names)) for obj, names in watched]

    def _edited(self, *events: param.parameterized.Event) -> None:
        self._watch_model()  # a new list brings new items to watch
        self.redraw()

    def redraw(self) -> None:
        """Lay the model out again and replace the figure."""
        self.layout = plate_layout(self.state.model)
        self._pane.object = self._figure()

    # -- drawing ----------------------------------------------------------------------
    def _on_select(self, index: list[int]) -> None:
        """A click on a node: select its variable (a click elsewhere keeps the selection)."""
        if index:
            self.state.variable = self._variables[index[0]]

    def _figure(self) -> hv.Overlay:
        layout, model = self.layout, self.state.model
        x0, y0, x1, y1 = layout.bounds
        x0, x1, y0, y1 = x0 - MARGIN, x1 + MARGIN, y0 - MARGIN, y1 + MARGIN
        scale = min(SCALE, MAX_WIDTH / (x1 - x0), MAX_HEIGHT / (y1 - y0))
        diameter = 2 * NODE_RADIUS * scale

        boxes = hv.Rectangles(
            [(b.x0, b.y0, b.x1, b.y1, b.label) for b in layout.plates], vdims=["plate"],
        ).opts(color=PLATE_FILL, fill_alpha=0.45, line_color=PLATE_LINE, line_width=1.5)
        plate_labels = hv.Labels(
            [(b.x1 - 0.06, b.y0 + 0.05, b.label) for b in layout.plates], ["x", "y"], "label",
        ).opts(text_align="right", text_baseline="bottom", text_font_size="8pt", text_color=PLATE_LINE)

        edges = hv.Segments([(e.x0, e.y0, e.x1, e.y1) for e in layout.edges]).opts(color=INK, line_width=1.3)
        # Arrowheads: triangles (their tip is up at angle 0) turned along each edge and
        # set back so that the tip touches the child's rim.
        heads = []
        for e in layout.edges:
            angle = math.atan2(e.y1 - e.y0, e.x1 - e.x0)
            back = 0.45 * 9 / scale  # about half the marker's size, in layout units
            heads.append((e.x1 - back * math.cos(angle), e.y1 - back * math.sin(angle), angle - math.pi / 2))
        arrowheads = hv.Points(heads, vdims=["angle"]).opts(
            marker="triangle", size=9, angle=hv.dim("angle"), color=INK,
        )

        covariates = [n for n in layout.nodes if n.kind == COVARIATE]
        variables = [n for n in layout.nodes if n.kind != COVARIATE]
        self._variables = [n.name for n in variables]
        cov_points = hv.Points([(n.x, n.y) for n in covariates]).opts(
            marker="square", size=0.6 * diameter, color="#cccccc", line_color=INK,
        )
        nodes = hv.Points(
            pd.DataFrame({
                "x": [n.x for n in variables], "y": [n.y for n in variables],
                "name": self._variables, "observed": [n.kind == OBSERVED for n in variables],
                "distribution": [_describe(model, n.name) for n in variables],
            }),
            ["x", "y"], ["name", "observed", "distribution"],
        ).opts(
            size=diameter, line_color=INK, line_width=1.5,
            fill_color=hv.dim("observed").categorize({True: INK, False: "white"}, default="white"),
            nonselection_alpha=1.0, selection_alpha=1.0, tools=["tap", "hover"],
            hover_tooltips=[("variable", "@name"), ("", "@distribution")],
            hooks=[_name_renderer(NODES_NAME), _tap_nodes_only],
        )
        #: Clicks on the variables (a new stream with each figure: it follows its nodes).
        self.selection = hv.streams.Selection1D(source=nodes)
        self.selection.add_subscriber(self._on_select)
        self._ring_size = diameter + 10
        ring = hv.DynamicMap(self._ring, streams=[self._ring_stream])
        names = hv.Labels(
            [(n.x, n.y - NODE_RADIUS - 0.04, n.name) for n in layout.nodes], ["x", "y"], "name",
        ).opts(text_baseline="top", text_font_size=_FONT, text_color=INK)

        return (boxes * plate_labels * edges * arrowheads * cov_points * nodes * ring * names).opts(
            # No axes and no border: the plot is the frame, so the scale is equal in x and y.
            xlim=(x0, x1), ylim=(y0, y1), width=round((x1 - x0) * scale), height=round((y1 - y0) * scale),
            border=0, xaxis=None, yaxis=None, show_grid=False,
            toolbar=None, default_tools=[], active_tools=["tap"], show_frame=False,
            hooks=[_name_figure],
        )

    def _ring(self, variable: str) -> hv.Points:
        """The orange ring around the selected variable (nothing when it is not drawn)."""
        rows = [(n.x, n.y) for n in self.layout.nodes if n.name == variable and n.kind != COVARIATE]
        return hv.Points(rows).opts(
            size=self._ring_size, fill_alpha=0, line_color=HIGHLIGHT, line_width=3,
            hooks=[_name_renderer(SELECTED_NAME)],
        )
