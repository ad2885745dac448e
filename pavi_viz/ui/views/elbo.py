"""The ELBO against the training step, streamed to the browser as it grows.

:class:`ElboView` draws the points of the dashboard's current run with a plain Bokeh
figure (made per view, never shared) whose ``ColumnDataSource`` gets only the new
points of each poll through ``ColumnDataSource.stream``: the browser receives a few
rows per poll however long the run, and the server does no more than append them.
(A HoloViews ``Buffer`` + ``DynamicMap`` did the same with a re-evaluated DynamicMap, a
rebuilt DataFrame and a recomputed model graph of the whole page per poll: tens of
milliseconds, five times a second, in the training process.)

Inspecting the page (browser tests): the Bokeh models carry names, found with
``Bokeh.documents[0].get_model_by_name(NAME)`` in the page or
``doc.select_one({"name": NAME})`` on the server:

- :data:`SOURCE_NAME` (``"pavi-elbo-source"``): the ``ColumnDataSource`` of the raw
  ELBO (columns ``step``, ``elbo``, ``smoothed_elbo``, ``loss``, ``smoothed_loss``);
  :data:`SMOOTHED_SOURCE_NAME` (``"pavi-elbo-smoothed-source"``) that of the smoothed
  curve (same columns);
- :data:`RAW_RENDERER_NAME`, :data:`SMOOTHED_RENDERER_NAME`: their glyph renderers;
- :data:`FIGURE_NAME` (``"pavi-elbo-figure"``): the figure.

Zooming or panning the plot holds it where the user put it (Bokeh's ``DataRange1d``
stops following the data once changed by hand; the points keep arriving); the
toolbar's reset button follows the stream again.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import ColumnDataSource, HoverTool
from panel.viewable import Viewer

from pavi_viz.ui.state import DashboardState, Polled
from pavi_viz.ui.views.figures import new_figure
from pavi_viz.ui.views.text import markdown

#: Names of the Bokeh models, for browser tests (see the module's docstring).
SOURCE_NAME = "pavi-elbo-source"
SMOOTHED_SOURCE_NAME = "pavi-elbo-smoothed-source"
RAW_RENDERER_NAME = "pavi-elbo-raw"
SMOOTHED_RENDERER_NAME = "pavi-elbo-smoothed"
FIGURE_NAME = "pavi-elbo-figure"

#: The buffer's columns, in order.
COLUMNS = ("step", "elbo", "smoothed_elbo", "loss", "smoothed_loss")
#: Points the sources keep (the oldest are dropped beyond: ``stream``'s rollover; the hub
#: itself thins long runs to 20,000 points, so a whole run fits).
BUFFER_LENGTH = 50_000


def _empty() -> dict[str, np.ndarray]:
    return {c: np.array([], dtype=float if c != "step" else np.int64) for c in COLUMNS}


class ElboView(Viewer):
    """The ELBO (raw, thin and light) and its moving average against the step.

    Args:
        state: the dashboard's state (the view reads nothing else from it: the
            dashboard's poll loop calls :meth:`push` with what ``state.poll()`` brought).

    Scales: ``linear`` plots the ELBO itself. ``log`` plots the loss, ``-ELBO``, on a
    logarithmic axis, which shows the late, slow improvements. The ELBO of a model
    with continuous data can be positive (densities exceed 1), and a non-positive
    loss has no place on a log axis: such points are left out (the curve has a gap
    there), never shifted or clipped, and a note under the plot says how many are
    hidden and that the linear scale shows them all.
    """

    scale = param.Selector(default="linear", objects=["linear", "log"], doc="linear: the ELBO; log: -ELBO on a log axis.")

    def __init__(self, state: DashboardState, **params: Any) -> None:
        super().__init__(**params)
        self.state = state
        self._hidden = 0  # points with a non-positive loss (not shown on the log scale)
        self._scale = pn.widgets.RadioButtonGroup.from_param(self.param.scale, color="light", width=140)
        self._note = markdown("", visible=False, styles={"color": "#8a6d3b"}, margin=(0, 10))
        self._figure()
        self._pane = pn.pane.Bokeh(self.figure, sizing_mode="stretch_width", min_height=320)
        self._layout = pn.Column(
            pn.Row(markdown("### ELBO", margin=(0, 10)), pn.HSpacer(), self._scale),
            self._pane,
            self._note,
            sizing_mode="stretch_width",
        )

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    # -- data -------------------------------------------------------------------------
    def push(self, polled: Polled) -> None:
        """Append the new points of one poll (clearing the plot first when a new run began).

        Call it on the session's event loop (the dashboard's periodic callback), never
        from the training thread.
        """
        if polled.restarted:
            self.clear()
        if not len(polled):
            return
        elbo = np.asarray(polled.elbo, dtype=float)
        smoothed = np.asarray(polled.smoothed_elbo, dtype=float)
        new = {
            "step": np.asarray(polled.step, dtype=np.int64),
            "elbo": elbo,
            "smoothed_elbo": smoothed,
            "loss": _positive(-elbo),
            "smoothed_loss": _positive(-smoothed),
        }
        hidden = int(np.count_nonzero(~(elbo < 0)))
        self.source.stream(new, rollover=BUFFER_LENGTH)
        self.smoothed_source.stream(new, rollover=BUFFER_LENGTH)
        if hidden:
            self._hidden += hidden
            self._update_note()

    def clear(self) -> None:
        """Drop every point (a new run, or a new model)."""
        if len(self.source.data["step"]):
            self.source.data = _empty()
            self.smoothed_source.data = _empty()
        self._hidden = 0
        self._update_note()

    @property
    def data(self) -> pd.DataFrame:
        """The points shown now (a copy)."""
        return pd.DataFrame({c: np.array(self.source.data[c]) for c in COLUMNS})

    # -- drawing ----------------------------------------------------------------------
    @param.depends("scale", watch=True)
    def _rescale(self) -> None:
        """A log axis needs a new figure: replace the plot (the points are kept)."""
        self._figure(data={c: np.array(self.source.data[c]) for c in COLUMNS})
        self._pane.object = self.figure
        self._update_note()

    def _figure(self, data: dict[str, np.ndarray] | None = None) -> None:
        """A new figure for the current scale, its two sources holding ``data``
        (``figure``, ``source``, ``smoothed_source``)."""
        log = self.scale == "log"
        raw, smooth = ("loss", "smoothed_loss") if log else ("elbo", "smoothed_elbo")
        label = "loss = -ELBO (log)" if log else "ELBO"
        data = data if data is not None else _empty()
        self.source = ColumnDataSource({c: data[c].copy() for c in COLUMNS}, name=SOURCE_NAME)
        self.smoothed_source = ColumnDataSource({c: data[c].copy() for c in COLUMNS}, name=SMOOTHED_SOURCE_NAME)
        fig = new_figure(name=FIGURE_NAME, y_axis_type="log" if log else "linear", x_axis_label="step",
                         y_axis_label=label, height=300, min_height=300)
        raw_renderer = fig.line("step", raw, source=self.source, color="#1f77b4", alpha=0.35, line_width=1,
                                legend_label="ELBO", name=RAW_RENDERER_NAME)
        smooth_renderer = fig.line("step", smooth, source=self.smoothed_source, color="#d62728", line_width=2.5,
                                   legend_label="smoothed", name=SMOOTHED_RENDERER_NAME)
        fig.add_tools(HoverTool(renderers=[raw_renderer, smooth_renderer], mode="vline",
                                tooltips=[("step", "@step"), ("ELBO", "@elbo{0.000}"), ("smoothed", "@smoothed_elbo{0.000}")]))
        fig.legend.location = "bottom_right"
        self.figure = fig

    def _update_note(self) -> None:
        hidden = self._hidden if self.scale == "log" else 0
        text = (
            f"{hidden} point(s) with ELBO ≥ 0 (loss ≤ 0) cannot be drawn on the log scale and are "
            "left out; the linear scale shows every point."
            if hidden else ""
        )
        if self._note.object != text:
            self._note.object = text
        if self._note.visible != bool(hidden):
            self._note.visible = bool(hidden)


def _positive(values: np.ndarray) -> np.ndarray:
    """The values, with the non-positive ones (no place on a log axis) as NaN."""
    return np.where(values > 0, values, np.nan)
