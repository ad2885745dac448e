"""Runs of the run store side by side: ELBO curves, a table, the global marginals.

:class:`CompareView` shows a :class:`~pavi_viz.ui.compare.RunComparison`::

    comparison = RunComparison(store=RunStore(path), run_ids=[3, 5])
    view = CompareView(comparison)       # a Panel Viewer: put it in a layout
    pn.state.add_periodic_callback(view.refresh, period=2000)   # runs still training

It redraws whenever the comparison refreshes (a new selection, a new store, a call of
:meth:`CompareView.refresh`) or its ``align`` changes. Each run has one colour (by its
place in ``run_ids``, from :data:`PALETTE`) in every part of the view:

- the ELBO overlay: the smoothed ELBO of each run (and its raw ELBO, faint) against the
  step or the training seconds, with a legend of the runs' labels;
- the table: a plain Bokeh ``DataTable`` (Bokeh's own JavaScript: works offline, no CDN
  as Panel's Tabulator loads); its ``StringFormatter`` cells are set as text, never as
  HTML, so run and model names from shared files show as typed;
- the global marginals: for each element of each global latent variable that the runs
  share, a small plot with one row per run: its interval as a segment, its mean as a dot.

Messages (dropped runs, an unreadable store) go to Markdown panes without raw HTML
(:mod:`pavi_viz.ui.views.text`); legends and axis labels are drawn on the canvas, as text.

Inspecting the page (tests): the data sources are named :data:`ELBO_SOURCE_NAME`
(smoothed; columns ``xs``, ``ys``, ``steps``, ``label``, ``color``, ``run``: one row per
run), :data:`RAW_SOURCE_NAME` (raw, same columns), :data:`TABLE_SOURCE_NAME` (one row per
run) and :data:`GLOBAL_SOURCE_PREFIX` plus the element's title (``"mu"``, ``"mu[0]"``;
columns ``row`` (``"run 3"``: the plot's row), ``label``, ``mean``, ``sd``, ``low``,
``high``, ``interval``, ``color``: one row per run with a summary).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import panel as pn
import param
from bokeh.models import (
    ColumnDataSource,
    DataRange1d,
    DataTable,
    FactorRange,
    HoverTool,
    StringFormatter,
    TableColumn,
)
from bokeh.palettes import Category10_10
from bokeh.plotting import figure
from panel.io import unlocked
from panel.viewable import Viewer

from pavi_viz.ui.compare import GlobalMarginal, RunComparison, RunRow
from pavi_viz.ui.views.elbo import default_range
from pavi_viz.ui.views.figures import new_figure, new_source, replace_data
from pavi_viz.ui.views.text import alert, markdown

#: One colour per run, by its place in the selection (cycled beyond ten runs).
PALETTE = Category10_10
#: What the view says while fewer than two runs are selected.
EMPTY_HINT = "Select two or more runs in the list to compare them."
#: The x-axis label of each ``align``.
X_LABELS = {"step": "step", "time": "training seconds"}

#: Names of the Bokeh models, for tests (see the module's docstring).
ELBO_SOURCE_NAME = "pavi-compare-elbo"
RAW_SOURCE_NAME = "pavi-compare-elbo-raw"
GUIDE_NAME = "pavi-compare-range-guide"
TABLE_SOURCE_NAME = "pavi-compare-table"
GLOBAL_SOURCE_PREFIX = "pavi-compare-global-"

_CURVE_COLUMNS = ("xs", "ys", "steps", "label", "color", "run")
_GLOBAL_COLUMNS = ("row", "label", "mean", "sd", "low", "high", "interval", "color")
#: The table's columns: (source column, title, width).
_TABLE_COLUMNS = (("run", "run", 40), ("name", "name", 120), ("model", "model", 110), ("family", "family", 80),
                  ("state", "state", 80), ("steps", "steps", 90), ("lr", "lr", 60), ("particles", "particles", 70),
                  ("seed", "seed", 50), ("other", "other settings that differ", 180),
                  ("final_elbo", "final ELBO", 90), ("pareto_k", "Pareto k", 70), ("note", "ELBO ranking", 420))
#: Pixels of a global marginal plot: its frame and axes, and each run's row.
_GLOBAL_BASE_HEIGHT, _GLOBAL_ROW_HEIGHT = 60, 26


class CompareView(Viewer):
    """The comparison of the runs of ``comparison`` (see the module's notes).

    Args:
        comparison: what to compare (its store and its selected runs); the view changes
            only its ``align`` (through its widget).
    """

    comparison = param.ClassSelector(class_=RunComparison, constant=True, doc="The runs compared.")

    def __init__(self, comparison: RunComparison, **params: Any) -> None:
        super().__init__(comparison=comparison, **params)
        #: The global marginals' plots by element title: (figure, source).
        self.global_plots: dict[str, tuple[figure, ColumnDataSource]] = {}
        self._message = alert("", alert_type="warning", visible=False)
        self._empty = markdown(EMPTY_HINT, styles={"color": "#666666"}, margin=(0, 10))
        self._missing = markdown("", margin=(0, 10), styles={"font-size": "0.85em"})
        self._elbo_figure()
        self._table()
        self._globals_grid = pn.GridBox(ncols=3, sizing_mode="stretch_width")
        align = pn.widgets.RadioButtonGroup.from_param(comparison.param.align, color="light", width=260)
        self._content = pn.Column(
            pn.Row(markdown("### ELBO", margin=(0, 10)), pn.HSpacer(), align),
            pn.pane.Bokeh(self.elbo_figure, sizing_mode="stretch_width", min_height=320),
            markdown("### Runs", margin=(0, 10)),
            pn.pane.Bokeh(self.table, sizing_mode="stretch_width"),
            markdown("### Global variables: mean (dot) and interval (segment) of each run", margin=(0, 10)),
            self._missing,
            self._globals_grid,
            sizing_mode="stretch_width",
        )
        self._layout = pn.Column(markdown("## Compare runs", margin=(0, 10)), self._message, self._empty,
                                 self._content, sizing_mode="stretch_width")
        comparison.param.watch(self._draw, ["refreshed", "align"])
        self._draw()

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    def refresh(self) -> None:
        """Read the runs again and redraw (what a periodic callback calls while runs train)."""
        self.comparison.refresh()  # its ``refreshed`` event redraws

    # -- building -----------------------------------------------------------------------
    def _elbo_figure(self) -> None:
        """The overlay (``elbo_figure``), its sources (``elbo_source``, ``raw_source``)
        and its range guide (``guide_source``: see :func:`~pavi_viz.ui.views.elbo.default_range`)."""
        self.elbo_source = new_source(_CURVE_COLUMNS, ELBO_SOURCE_NAME)
        self.raw_source = new_source(_CURVE_COLUMNS, RAW_SOURCE_NAME)
        self.guide_source = ColumnDataSource({"x": [], "y": []}, name=GUIDE_NAME)
        fig = new_figure(x_axis_label=X_LABELS[self.comparison.align], y_axis_label="ELBO", height=320,
                         min_height=320)
        # Like the dashboard's ELBO plot, the default range leaves out the first climb:
        # it follows an invisible guide; zooming out shows the rest.
        guide = fig.line("x", "y", source=self.guide_source, line_alpha=0)
        fig.y_range = DataRange1d(renderers=[guide])
        fig.multi_line("xs", "ys", source=self.raw_source, line_color="color", line_alpha=0.2, line_width=1)
        smoothed = fig.multi_line("xs", "ys", source=self.elbo_source, line_color="color", line_width=2.5,
                                  legend_field="label")
        fig.add_tools(HoverTool(renderers=[smoothed], tooltips=[("run", "@label"), ("x", "$x{0.00}"),
                                                               ("smoothed ELBO", "$y{0.000}")]))
        fig.legend.location = "bottom_right"
        self.elbo_figure = fig

    def _table(self) -> None:
        """The runs' table (``table``) over ``table_source``: text cells only (see the
        module's notes), the run's id in its colour, the best ELBO of a model in bold."""
        self.table_source = new_source([c for c, _, _ in _TABLE_COLUMNS] + ["color", "weight"], TABLE_SOURCE_NAME)
        columns = [TableColumn(field=field, title=title, width=width, sortable=False,
                               formatter=StringFormatter(text_color="color" if field == "run" else "#000000",
                                                         font_style="weight" if field == "final_elbo" else "normal"))
                   for field, title, width in _TABLE_COLUMNS]
        self.table = DataTable(source=self.table_source, columns=columns, index_position=None,
                               sizing_mode="stretch_width", autosize_mode="none", height=60)

    def _global_plot(self, marginal: GlobalMarginal) -> tuple[figure, ColumnDataSource]:
        """A small plot of one element: one row per run, its interval and its mean."""
        source = new_source(_GLOBAL_COLUMNS, GLOBAL_SOURCE_PREFIX + marginal.title)
        fig = new_figure(y_range=FactorRange(), x_axis_label=marginal.title, height=_GLOBAL_BASE_HEIGHT,
                         min_height=_GLOBAL_BASE_HEIGHT)
        # Rows named by the run's id only (its colour and the legend say the rest): a long
        # label would squeeze a small plot.
        fig.segment("low", "row", "high", "row", source=source, line_color="color", line_width=3)
        means = fig.scatter("mean", "row", source=source, color="color", size=9, line_color="black")
        fig.add_tools(HoverTool(renderers=[means], tooltips=[("run", "@label"), ("mean", "@mean{0.000}"),
                                                             ("sd", "@sd{0.000}"),
                                                             ("@interval", "@low{0.000} to @high{0.000}")]))
        return fig, source

    # -- drawing ------------------------------------------------------------------------
    def _draw(self, *_: Any) -> None:
        """Redraw everything from the comparison's records."""
        runs = self.comparison.runs
        colors = {run.id: PALETTE[i % len(PALETTE)] for i, run in enumerate(runs)}
        shown = len(runs) >= 2
        # Batch the changes into one message to the browser (and lift the document's
        # lock, which a widget's callback runs without: see figures.replace_data).
        with unlocked():
            self._show_message()
            self._empty.visible = not shown
            self._content.visible = shown
            if not shown:
                return
            self._draw_curves(colors)
            self._draw_table(self.comparison.table(), colors)
            self._draw_globals(self.comparison.globals(), colors)

    def _show_message(self) -> None:
        text = self.comparison.message
        if self._message.object != text:
            self._message.object = text
        self._message.visible = bool(text)

    def _draw_curves(self, colors: dict[int, str]) -> None:
        curves = self.comparison.curves()
        columns: dict[str, list] = {c: [] for c in _CURVE_COLUMNS}
        raw: dict[str, list] = {c: [] for c in _CURVE_COLUMNS}
        for curve in curves:
            for out, ys in ((columns, curve.smoothed_elbo), (raw, curve.elbo)):
                for column, value in zip(_CURVE_COLUMNS, (curve.x, ys, curve.steps, curve.label,
                                                          colors[curve.run_id], curve.run_id), strict=True):
                    out[column].append(value)
        replace_data(self.elbo_source, columns)
        replace_data(self.raw_source, raw)
        ranges = [r for r in (default_range(c.x, c.elbo, c.smoothed_elbo) for c in curves) if r is not None]
        ends = [float(x) for c in curves if len(c.x) for x in (c.x[0], c.x[-1])]
        guide = ({"x": [np.nanmin(ends), np.nanmax(ends)], "y": [min(r[0] for r in ranges), max(r[1] for r in ranges)]}
                 if ranges else {"x": [], "y": []})
        if guide != self.guide_source.data:
            self.guide_source.data = guide
        x_label = X_LABELS[self.comparison.align]
        if self.elbo_figure.xaxis[0].axis_label != x_label:
            self.elbo_figure.xaxis[0].axis_label = x_label

    def _draw_table(self, rows: list[RunRow], colors: dict[int, str]) -> None:
        columns: dict[str, list] = {c: [] for c in self.table_source.data}
        for row in rows:
            values = {"run": str(row.id), "name": row.name, "model": row.model, "family": row.family,
                      "state": row.state, "steps": f"{row.step:,} / {row.total_steps:,}", "lr": _text(row.lr),
                      "particles": "auto" if row.particles is None else _text(row.particles), "seed": _text(row.seed),
                      "other": ", ".join(f"{key}={_text(value)}" for key, value in row.other_settings),
                      "final_elbo": ("★ " if row.best else "") + _number(row.final_elbo),
                      "pareto_k": _number(row.pareto_k), "note": row.note, "color": colors[row.id],
                      "weight": "bold" if row.best else "normal"}
            for column in columns:
                columns[column].append(values[column])
        replace_data(self.table_source, columns)
        height = 30 + 28 * len(rows)  # its header and its rows: the table never scrolls
        if self.table.height != height:
            self.table.height = height

    def _draw_globals(self, marginals: list[GlobalMarginal], colors: dict[int, str]) -> None:
        """One plot per element, rebuilt only when the elements change (else new data)."""
        runs = self.comparison.runs
        notes = [] if marginals else ["The runs' posterior summaries share no global variable (or none has a "
                                      "summary yet)."]
        first = marginals[0].estimates if marginals else ()  # any element: a run has a summary or not
        missing = [run for run, e in zip(runs, first, strict=False) if e.mean is None]
        if missing:
            notes.append("No posterior summary (still training, or failed): "
                         + ", ".join(f"run {run.id} ({run.name})" for run in missing) + ".")
        text = " ".join(notes)
        if self._missing.object != text:
            self._missing.object = text
        titles = [m.title for m in marginals]
        if titles != list(self.global_plots):
            self.global_plots = {m.title: self._global_plot(m) for m in marginals}
            self._globals_grid.objects = [pn.pane.Bokeh(fig, sizing_mode="stretch_width")
                                          for fig, _ in self.global_plots.values()]
        # The first run at the top: a factor range lists its factors bottom up.
        factors = [_row(run.id) for run in reversed(runs)]
        for marginal in marginals:
            fig, source = self.global_plots[marginal.title]
            rows = [e for e in marginal.estimates if e.mean is not None]
            replace_data(source, {
                "row": [_row(e.run_id) for e in rows], "label": [e.label for e in rows],
                "mean": [e.mean for e in rows], "sd": [_nan(e.sd) for e in rows],
                "low": [_nan(e.low) for e in rows], "high": [_nan(e.high) for e in rows],
                "interval": [e.interval or "interval" for e in rows], "color": [colors[e.run_id] for e in rows]})
            if list(fig.y_range.factors) != factors:
                fig.y_range.factors = factors
            height = _GLOBAL_BASE_HEIGHT + _GLOBAL_ROW_HEIGHT * len(factors)
            if fig.height != height:
                fig.height = fig.min_height = height


def _row(run_id: int) -> str:
    return f"run {run_id}"


def _text(value: Any) -> str:
    """A setting's value as the table shows it: numbers short, the rest as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str | int):
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _number(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _nan(value: float | None) -> float:
    return math.nan if value is None else value
