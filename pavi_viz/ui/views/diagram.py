"""The plate diagram: plates as nested boxes, variables as nodes, arrows from parents.

:class:`PlateDiagram` draws :func:`pavi_viz.ui.layout.plate_layout` as one Bokeh
figure (offline: nothing from a CDN, no graphviz). Latent variables are open
circles, observed ones filled, covariates small grey squares; arrows run from each
parent to the rim of its child; each plate box says its name and size in its lower
right corner ("ragged" for ragged nesting). Clicking a variable selects it
(``state.variable``); the selected one wears an orange ring.

Plain Bokeh rather than HoloViews: the HoloViews overlay took 0.9 s of the 1.4 s that
building a served page holds the server's event loop, and a click reaches
:meth:`PlateDiagram._tapped` as a Bokeh event, inside the document's lock, so the
views it updates change their sources safely.

The figure is rebuilt when the model changes (``state.model``, or an edit of its
plates, variables or covariates: a new list, or a changed parameter of one of them;
in-place list mutations go unseen, assign a new list); a new selection only moves
the ring.

Inspecting the page (browser tests): the Bokeh models carry names, found with
``Bokeh.documents[0].get_model_by_name(NAME)`` in the page or
``doc.select_one({"name": NAME})`` on the server:

- :data:`NODES_NAME` (``"pavi-diagram-nodes"``): the glyph renderer of the variables,
  whose data source has one row per variable (columns ``x``, ``y``, ``name``,
  ``observed``, ``fill_color``, ``distribution``); a click on one of them selects it;
- :data:`SELECTED_NAME` (``"pavi-diagram-selected"``): the ring's glyph renderer (one
  row, or none when the selected variable is not in the model);
- :data:`FIGURE_NAME` (``"pavi-diagram-figure"``): the figure.
"""

from __future__ import annotations

from typing import Any

import panel as pn
import param
from bokeh.events import DoubleTap, Tap
from bokeh.models import Arrow, ColumnDataSource, HoverTool, NormalHead, Range1d
from bokeh.plotting import figure
from panel.viewable import Viewer

from pavi_viz.ui.layout import COVARIATE, NODE_RADIUS, OBSERVED, DiagramLayout, plate_layout
from pavi_viz.ui.views.figures import one_recompute, replace_data

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


def _describe(model: Any, name: str) -> str:
    """``Normal(loc=mu, scale=1.0)``: a variable's distribution, for the hover text."""
    var = next(v for v in model.variables if v.name == name)
    return f"{var.distribution}({', '.join(f'{k}={v}' for k, v in var.params.items())})"


class PlateDiagram(Viewer):
    """The dashboard's model as a plate diagram; a click on a variable selects it.

    Args:
        state: an object with a ``model`` parameter (a
            :class:`~pavi_viz.model.spec.PlateModel`) and a ``variable`` parameter
            (the selected variable's name): the dashboard's
            :class:`~pavi_viz.ui.state.DashboardState`, or a builder's state.

    Attributes:
        layout: where everything is drawn (:func:`~pavi_viz.ui.layout.plate_layout`).
        figure: the Bokeh figure (a new one with each redraw).
    """

    def __init__(self, state: param.Parameterized, **params: Any) -> None:
        super().__init__(**params)
        self.state = state
        self._watchers: list[tuple[param.Parameterized, Any]] = []
        self.layout: DiagramLayout = plate_layout(state.model)
        self.figure = self._figure()
        self._pane = pn.pane.Bokeh(self.figure)
        state.param.watch(self._model_replaced, "model")
        state.param.watch(self._move_ring, "variable")
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
        self.figure = self._figure()
        self._pane.object = self.figure

    # -- selecting --------------------------------------------------------------------
    def _tapped(self, event: Tap | DoubleTap) -> None:
        """A click: select the variable whose node it falls on (elsewhere: keep the selection)."""
        if event.x is None or event.y is None:
            return
        hit = [
            n for n in self.layout.nodes
            if n.kind != COVARIATE and (n.x - event.x) ** 2 + (n.y - event.y) ** 2 <= NODE_RADIUS**2
        ]
        if hit:
            with one_recompute(self.figure.document):  # the linked views redraw
                self.state.variable = hit[0].name

    def _move_ring(self, event: param.parameterized.Event | None = None) -> None:
        """Put the orange ring around the selected variable (nowhere when it is not drawn)."""
        rows = [(n.x, n.y) for n in self.layout.nodes if n.name == self.state.variable and n.kind != COVARIATE]
        replace_data(self._ring, {"x": [x for x, _ in rows], "y": [y for _, y in rows]})

    # -- drawing ----------------------------------------------------------------------
    def _figure(self) -> figure:
        layout, model = self.layout, self.state.model
        x0, y0, x1, y1 = layout.bounds
        x0, x1, y0, y1 = x0 - MARGIN, x1 + MARGIN, y0 - MARGIN, y1 + MARGIN
        scale = min(SCALE, MAX_WIDTH / (x1 - x0), MAX_HEIGHT / (y1 - y0))
        diameter = 2 * NODE_RADIUS * scale
        # No axes, no border, no toolbar: the plot is the frame, so the scale is equal in x and y.
        fig = figure(
            name=FIGURE_NAME, width=round((x1 - x0) * scale), height=round((y1 - y0) * scale),
            x_range=Range1d(x0, x1), y_range=Range1d(y0, y1), tools="", toolbar_location=None,
            min_border=0, outline_line_color=None, output_backend="canvas",
        )
        fig.axis.visible = False
        fig.grid.visible = False

        boxes = layout.plates
        fig.quad(left=[b.x0 for b in boxes], right=[b.x1 for b in boxes], bottom=[b.y0 for b in boxes],
                 top=[b.y1 for b in boxes], fill_color=PLATE_FILL, fill_alpha=0.45, line_color=PLATE_LINE,
                 line_width=1.5)
        fig.text(x=[b.x1 - 0.06 for b in boxes], y=[b.y0 + 0.05 for b in boxes], text=[b.label for b in boxes],
                 text_align="right", text_baseline="bottom", text_font_size="8pt", text_color=PLATE_LINE)

        # The layout's edges end on the child's rim: the arrowhead's tip.
        edges = ColumnDataSource({key: [getattr(e, key) for e in layout.edges] for key in ("x0", "y0", "x1", "y1")})
        fig.add_layout(Arrow(source=edges, x_start="x0", y_start="y0", x_end="x1", y_end="y1", line_color=INK,
                             line_width=1.3, end=NormalHead(size=9, fill_color=INK, line_color=INK)))

        covariates = [n for n in layout.nodes if n.kind == COVARIATE]
        fig.scatter(x=[n.x for n in covariates], y=[n.y for n in covariates], marker="square",
                    size=0.6 * diameter, fill_color="#cccccc", line_color=INK)
        variables = [n for n in layout.nodes if n.kind != COVARIATE]
        observed = [n.kind == OBSERVED for n in variables]
        nodes = fig.scatter(
            "x", "y", name=NODES_NAME, size=diameter, line_color=INK, line_width=1.5, fill_color="fill_color",
            source=ColumnDataSource({
                "x": [n.x for n in variables], "y": [n.y for n in variables], "name": [n.name for n in variables],
                "observed": observed, "fill_color": [INK if o else "white" for o in observed],
                "distribution": [_describe(model, n.name) for n in variables],
            }),
        )
        fig.add_tools(HoverTool(renderers=[nodes], tooltips=[("variable", "@name"), ("", "@distribution")]))
        self._ring = ColumnDataSource({"x": [], "y": []})
        self._move_ring()
        fig.scatter("x", "y", source=self._ring, name=SELECTED_NAME, size=diameter + 10, fill_alpha=0,
                    line_color=HIGHLIGHT, line_width=3)
        fig.text(x=[n.x for n in layout.nodes], y=[n.y - NODE_RADIUS - 0.04 for n in layout.nodes],
                 text=[n.name for n in layout.nodes], text_align="center", text_baseline="top",
                 text_font_size=_FONT, text_color=INK)
        # Two quick clicks are a double tap to Bokeh, not two taps: both select.
        fig.on_event(Tap, self._tapped)
        fig.on_event(DoubleTap, self._tapped)
        return fig
