"""The plate diagram: plates as nested boxes, variables as nodes, arrows from parents.

:class:`PlateDiagram` draws :func:`pavi_viz.ui.layout.plate_layout` as one Bokeh
figure (offline: nothing from a CDN, no graphviz), in the conventions of PyMC's
``model_to_graphviz`` and Pyro's ``render_model``: latent variables are open circles,
observed ones grey discs, covariates (constant data) grey squares; arrows run from
each parent to the rim of its child, bending around the nodes in between; each plate
box says its name and size in its lower right corner ("ragged" for ragged nesting).
Each node's name is written right of it, and under the name, while
:attr:`PlateDiagram.distributions` is on (its checkbox sits above the drawing), the
variable's distribution (``~ Normal(0, 5)``). A legend of the symbols the drawing uses
sits in a strip under it. Clicking a variable (its disc or its text) selects it
(``state.variable``); the selected one wears an orange ring.

Every text comes from the user's model and is drawn by Bokeh text glyphs and legend
labels, as plain text: none of it is ever markup.

Plain Bokeh rather than HoloViews: the HoloViews overlay took 0.9 s of the 1.4 s that
building a served page holds the server's event loop, and a click reaches
:meth:`PlateDiagram._tapped` as a Bokeh event, inside the document's lock, so the
views it updates change their sources safely.

The figure is rebuilt when the model changes (``state.model``, or an edit of its
plates, variables or covariates: a new list, or a changed parameter of one of them;
in-place list mutations go unseen, assign a new list) and when the distributions are
shown or hidden; a new selection only moves the ring.

Inspecting the page (browser tests): the Bokeh models carry names, found with
``Bokeh.documents[0].get_model_by_name(NAME)`` in the page or
``doc.select_one({"name": NAME})`` on the server:

- :data:`NODES_NAME` (``"pavi-diagram-nodes"``): the glyph renderer of the variables,
  whose data source has one row per variable (columns ``x``, ``y``, ``name``,
  ``observed``, ``fill_color``, ``distribution``); a click on one of them selects it;
- :data:`COVARIATES_NAME` (``"pavi-diagram-covariates"``): the covariates' squares
  (columns ``x``, ``y``, ``name``);
- :data:`EDGES_NAME` (``"pavi-diagram-edges"``): the edges' lines, one row per edge
  (columns ``xs`` and ``ys``, the polyline from the parent's rim to the child's;
  ``parent``, ``child``);
- :data:`HEADS_NAME` (``"pavi-diagram-heads"``): the arrowheads, an ``Arrow`` whose
  ``source`` has a row per edge: its last segment (``x0``, ``y0``, ``x1``, ``y1``),
  the head drawn at ``(x1, y1)``;
- :data:`NAMES_NAME`, :data:`LABELS_NAME` (``"pavi-diagram-names"``,
  ``"pavi-diagram-labels"``): the text glyphs of the names and of the distributions;
- :data:`SELECTED_NAME` (``"pavi-diagram-selected"``): the ring's glyph renderer (one
  row, or none when the selected variable is not in the model);
- :data:`LEGEND_NAME` (``"pavi-diagram-legend"``): the legend;
- :data:`FIGURE_NAME` (``"pavi-diagram-figure"``): the figure.

The checkbox that shows the distributions carries the CSS class :data:`TOGGLE_CLASS`
(``"pavi-diagram-distributions"``).
"""

from __future__ import annotations

from typing import Any

import panel as pn
import param
from bokeh.core.properties import value
from bokeh.events import DoubleTap, Tap
from bokeh.models import Arrow, ColumnDataSource, GlyphRenderer, HoverTool, Legend, LegendItem, NormalHead, Range1d
from bokeh.plotting import figure
from panel.viewable import Viewer

from pavi_viz.ui.layout import (
    COVARIATE,
    COVARIATE_HALF_SIDE,
    LABEL_FONT_PT,
    LATENT,
    NAME_FONT_PT,
    NODE_RADIUS,
    OBSERVED,
    PIXELS_PER_UNIT,
    DiagramLayout,
    line_height,
    plate_layout,
)
from pavi_viz.ui.views.figures import one_recompute, replace_data

#: Names of the Bokeh models, for browser tests (see the module's docstring).
NODES_NAME = "pavi-diagram-nodes"
COVARIATES_NAME = "pavi-diagram-covariates"
EDGES_NAME = "pavi-diagram-edges"
HEADS_NAME = "pavi-diagram-heads"
NAMES_NAME = "pavi-diagram-names"
LABELS_NAME = "pavi-diagram-labels"
SELECTED_NAME = "pavi-diagram-selected"
LEGEND_NAME = "pavi-diagram-legend"
FIGURE_NAME = "pavi-diagram-figure"
#: The CSS class of the checkbox that shows the distributions, and its width (pixels).
TOGGLE_CLASS = "pavi-diagram-distributions"
TOGGLE_WIDTH = 180

#: Largest drawing (pixels): a larger model is drawn at a smaller scale than
#: the layout's PIXELS_PER_UNIT, its fonts with it.
MAX_WIDTH, MAX_HEIGHT = 900, 700
#: Room around the layout's bounds (layout units).
MARGIN = 0.1
#: The legend's strip under the drawing: its height, and the width a legend entry
#: takes besides its text (symbol and spacing), in pixels; its text's size (points).
LEGEND_HEIGHT = 34
LEGEND_ENTRY_WIDTH = 48
LEGEND_FONT_PT = 8
#: Estimated pixels per character of the legend's text, for the width it needs.
LEGEND_CHAR_WIDTH = 6
#: The box of a legend's symbol (Bokeh draws a marker 0.4 times its smaller side), the
#: room between entries and around them (pixels).
LEGEND_GLYPH_WIDTH, LEGEND_GLYPH_HEIGHT, LEGEND_SPACING, LEGEND_PADDING = 30, 26, 12, 4

INK = "#444444"
#: Observed variables and covariates: graphviz's "gray", as PyMC draws them.
DATA_FILL = "#bebebe"
LATENT_FILL = "white"
LABEL_INK = "#666666"
PLATE_FILL, PLATE_LINE = "#dde7f0", "#7f93a8"
HIGHLIGHT = "#ff7f0e"
#: The legend's entry for the plates' boxes (the nodes' entries are their kinds), and
#: what the legend calls each symbol, in its order.
PLATE = "plate"
LEGEND_LABELS = {LATENT: "latent", OBSERVED: "observed", COVARIATE: "covariate", PLATE: "plate (size)"}


#: Where the legend finds a kind of symbol: its renderer, and the row to draw (None: any).
Symbol = tuple[GlyphRenderer, int | None]


def _describe(model: Any, name: str) -> str:
    """``Normal(loc=mu, scale=1.0)``: a variable's distribution, for the hover text."""
    var = next(v for v in model.variables if v.name == name)
    return f"{var.distribution}({', '.join(f'{k}={v}' for k, v in var.params.items())})"


def _font(points: float, scale: float) -> str:
    """A font size of ``points`` at the layout's scale, shrunk with a drawing at ``scale``
    pixels per unit: texts keep the room the layout gave them."""
    return f"{points * scale / PIXELS_PER_UNIT:.2f}pt"


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

    # Off by default: on a 1600 x 1000 screen the builder's middle column is about 820
    # pixels wide; radon's drawing takes 654 pixels without them and 885 with them.
    distributions = param.Boolean(default=False, label="Show distributions",
                                  doc="Whether each variable's distribution is written under its name.")

    def __init__(self, state: param.Parameterized, **params: Any) -> None:
        super().__init__(**params)
        self.state = state
        self._watchers: list[tuple[param.Parameterized, Any]] = []
        self.layout: DiagramLayout = plate_layout(state.model, self.distributions)
        self.figure = self._figure()
        self._pane = pn.pane.Bokeh(self.figure)
        toggle = pn.widgets.Checkbox.from_param(self.param.distributions, sizing_mode="fixed", width=TOGGLE_WIDTH,
                                                css_classes=[TOGGLE_CLASS])
        # Sized by its content, not stretched: the diagram's row gives the rest to its neighbour.
        self._view = pn.Column(toggle, self._pane, sizing_mode="fixed")
        state.param.watch(self._model_replaced, "model")
        state.param.watch(self._move_ring, "variable")
        self.param.watch(lambda _: self.redraw(), "distributions")
        self._watch_model()

    def __panel__(self) -> pn.viewable.Viewable:
        return self._view

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
        watched += [(v, ["name", "distribution", "params", "plates", "observed"]) for v in model.variables]
        watched += [(c, ["name", "plates"]) for c in model.covariates]
        self._watchers = [(obj, obj.param.watch(self._edited, names)) for obj, names in watched]

    def _edited(self, *events: param.parameterized.Event) -> None:
        self._watch_model()  # a new list brings new items to watch
        self.redraw()

    def redraw(self) -> None:
        """Lay the model out again and replace the figure."""
        self.layout = plate_layout(self.state.model, self.distributions)
        self.figure = self._figure()
        self._pane.object = self.figure

    # -- selecting --------------------------------------------------------------------
    def _tapped(self, event: Tap | DoubleTap) -> None:
        """A click: select the variable whose disc or text it falls on (elsewhere: keep the selection)."""
        if event.x is None or event.y is None:
            return
        hit = self.layout.node_at(event.x, event.y)
        if hit is not None and hit.kind != COVARIATE:
            with one_recompute(self.figure.document):  # the linked views redraw
                self.state.variable = hit.name

    def _move_ring(self, event: param.parameterized.Event | None = None) -> None:
        """Put the orange ring around the selected variable (nowhere when it is not drawn)."""
        rows = [(n.x, n.y) for n in self.layout.nodes if n.name == self.state.variable and n.kind != COVARIATE]
        replace_data(self._ring, {"x": [x for x, _ in rows], "y": [y for _, y in rows]})

    # -- drawing ----------------------------------------------------------------------
    def _figure(self) -> figure:
        """A new figure of the layout (plates, edges, nodes and legend) whose clicks select."""
        layout, model = self.layout, self.state.model
        x0, y0, x1, y1 = layout.bounds
        x0, x1, y0, y1 = x0 - MARGIN, x1 + MARGIN, y0 - MARGIN, y1 + MARGIN
        scale = min(PIXELS_PER_UNIT, MAX_WIDTH / (x1 - x0), MAX_HEIGHT / (y1 - y0))
        kinds = _legend_kinds(layout)
        if kinds:  # the legend's strip, under the drawing and at least as wide as the legend
            y0 -= LEGEND_HEIGHT / scale
            x1 = max(x1, x0 + _legend_width(kinds) / scale)
        # No axes, no border, no toolbar: the plot is the frame, so the scale is equal in x and y.
        fig = figure(
            name=FIGURE_NAME, width=round((x1 - x0) * scale), height=round((y1 - y0) * scale),
            x_range=Range1d(x0, x1), y_range=Range1d(y0, y1), tools="", toolbar_location=None,
            min_border=0, outline_line_color=None, output_backend="canvas",
        )
        fig.axis.visible = False
        fig.grid.visible = False
        symbols = {PLATE: (self._draw_plates(fig, scale), None)}
        self._draw_edges(fig)
        symbols |= self._draw_nodes(fig, model, scale)
        if kinds:
            fig.add_layout(_legend(symbols, kinds))
        # Two quick clicks are a double tap to Bokeh, not two taps: both select.
        fig.on_event(Tap, self._tapped)
        fig.on_event(DoubleTap, self._tapped)
        return fig

    def _draw_plates(self, fig: figure, scale: float) -> GlyphRenderer:
        """The plates' boxes and their labels; the boxes' renderer."""
        boxes = self.layout.plates
        quads = fig.quad(left=[b.x0 for b in boxes], right=[b.x1 for b in boxes], bottom=[b.y0 for b in boxes],
                         top=[b.y1 for b in boxes], fill_color=PLATE_FILL, fill_alpha=0.45, line_color=PLATE_LINE,
                         line_width=1.5)
        labels = [b.label_box for b in boxes]
        fig.text(x=[b.x1 for b in labels], y=[b.y0 for b in labels], text=[b.label for b in boxes],
                 text_align="right", text_baseline="bottom", text_font_size=_font(LABEL_FONT_PT, scale),
                 text_color=PLATE_LINE)
        return quads

    def _draw_edges(self, fig: figure) -> None:
        """The edges' polylines, and an arrowhead on each one's last segment, at the child's rim."""
        edges = self.layout.edges
        fig.multi_line(
            xs="xs", ys="ys", name=EDGES_NAME, line_color=INK, line_width=1.3, line_join="round",
            source=ColumnDataSource({
                "xs": [[x for x, _ in e.points] for e in edges], "ys": [[y for _, y in e.points] for e in edges],
                "parent": [e.parent for e in edges], "child": [e.child for e in edges],
            }),
        )
        heads = ColumnDataSource({
            "x0": [e.points[-2][0] for e in edges], "y0": [e.points[-2][1] for e in edges],
            "x1": [e.points[-1][0] for e in edges], "y1": [e.points[-1][1] for e in edges],
        })
        fig.add_layout(Arrow(source=heads, name=HEADS_NAME, x_start="x0", y_start="y0", x_end="x1", y_end="y1",
                             line_color=None, end=NormalHead(size=9, fill_color=INK, line_color=INK)))

    def _draw_nodes(self, fig: figure, model: Any, scale: float) -> dict[str, Symbol]:
        """The covariates' squares, the variables' discs, the ring, the names and the
        distributions; where each kind of node is drawn, for the legend."""
        layout = self.layout
        diameter = 2 * NODE_RADIUS * scale
        covariates = [n for n in layout.nodes if n.kind == COVARIATE]
        squares = fig.scatter(
            "x", "y", name=COVARIATES_NAME, marker="square", size=2 * COVARIATE_HALF_SIDE * scale,
            fill_color=DATA_FILL, line_color=INK, line_width=1.5,
            source=ColumnDataSource({"x": [n.x for n in covariates], "y": [n.y for n in covariates],
                                     "name": [n.name for n in covariates]}),
        )
        variables = [n for n in layout.nodes if n.kind != COVARIATE]
        observed = [n.kind == OBSERVED for n in variables]
        discs = fig.scatter(
            "x", "y", name=NODES_NAME, size=diameter, line_color=INK, line_width=1.5, fill_color="fill_color",
            source=ColumnDataSource({
                "x": [n.x for n in variables], "y": [n.y for n in variables], "name": [n.name for n in variables],
                "observed": observed, "fill_color": [DATA_FILL if o else LATENT_FILL for o in observed],
                "distribution": [_describe(model, n.name) for n in variables],
            }),
        )
        fig.add_tools(HoverTool(renderers=[discs], tooltips=[("variable", "@name"), ("", "@distribution")]))
        self._ring = ColumnDataSource({"x": [], "y": []})
        self._move_ring()
        fig.scatter("x", "y", source=self._ring, name=SELECTED_NAME, size=diameter + 10, fill_alpha=0,
                    line_color=HIGHLIGHT, line_width=3)
        # The name on the text's first line, the distribution on the second.
        fig.text(x=[n.text.x0 for n in layout.nodes], y=[n.text.y1 for n in layout.nodes],
                 text=[n.name for n in layout.nodes], name=NAMES_NAME, text_align="left", text_baseline="top",
                 text_font_size=_font(NAME_FONT_PT, scale), text_color=INK)
        labelled = [n for n in layout.nodes if n.label]
        fig.text(x=[n.text.x0 for n in labelled], y=[n.text.y1 - line_height(NAME_FONT_PT) for n in labelled],
                 text=[n.label for n in labelled], name=LABELS_NAME, text_align="left", text_baseline="top",
                 text_font_size=_font(LABEL_FONT_PT, scale), text_color=LABEL_INK)
        kinds = [n.kind for n in variables]
        return {kind: (discs, kinds.index(kind)) for kind in (LATENT, OBSERVED) if kind in kinds} | {
            COVARIATE: (squares, None)}


def _legend_kinds(layout: DiagramLayout) -> list[str]:
    """What the legend lists: the kinds of symbol the drawing has, in :data:`LEGEND_LABELS`'s order."""
    drawn = {n.kind for n in layout.nodes} | ({PLATE} if layout.plates else set())
    return [kind for kind in LEGEND_LABELS if kind in drawn]


def _legend_width(kinds: list[str]) -> float:
    """The pixels a one-line legend of ``kinds`` takes (estimated)."""
    return sum(LEGEND_ENTRY_WIDTH + LEGEND_CHAR_WIDTH * len(LEGEND_LABELS[kind]) for kind in kinds)


def _legend(symbols: dict[str, Symbol], kinds: list[str]) -> Legend:
    """A one-line legend of the symbols of ``kinds``, in the strip under the drawing."""
    items = [LegendItem(label=value(LEGEND_LABELS[kind]), renderers=[symbols[kind][0]], index=symbols[kind][1])
             for kind in kinds]
    return Legend(items=items, name=LEGEND_NAME, location="bottom_left", orientation="horizontal",
                  label_text_font_size=f"{LEGEND_FONT_PT}pt", label_text_color=INK, glyph_width=LEGEND_GLYPH_WIDTH,
                  glyph_height=LEGEND_GLYPH_HEIGHT, spacing=LEGEND_SPACING, padding=LEGEND_PADDING, margin=0,
                  border_line_color=None, background_fill_alpha=0)
