"""The ELBO against the training step, streamed to the browser as it grows.

:class:`ElboView` keeps the points of the dashboard's current run in an
``hv.streams.Buffer`` drawn by an ``hv.DynamicMap``: :meth:`ElboView.push` sends only
the new points, which HoloViews turns into ``ColumnDataSource.stream`` calls, so the
browser receives a few rows per poll however long the run.

Inspecting the page (browser tests): the Bokeh models carry names, found with
``Bokeh.documents[0].get_model_by_name(NAME)`` in the page or
``doc.select_one({"name": NAME})`` on the server:

- :data:`SOURCE_NAME` (``"pavi-elbo-source"``): the ``ColumnDataSource`` of the raw
  ELBO (columns ``step``, ``elbo``, ``smoothed_elbo``, ``loss``, ``smoothed_loss``);
  :data:`SMOOTHED_SOURCE_NAME` (``"pavi-elbo-smoothed-source"``) that of the smoothed
  curve (same columns);
- :data:`RAW_RENDERER_NAME`, :data:`SMOOTHED_RENDERER_NAME`: their glyph renderers;
- :data:`FIGURE_NAME` (``"pavi-elbo-figure"``): the figure.

Zooming or panning the plot holds it where the user put it (HoloViews stops
following the stream; the points keep arriving in the buffer); the toolbar's reset
button follows the stream again.
"""

from __future__ import annotations

from typing import Any

import holoviews as hv
import holoviews.plotting.bokeh  # registers the Bokeh backend's options, whatever pn.extension() loaded
import numpy as np
import pandas as pd
import panel as pn
import param
from panel.viewable import Viewer

from pavi_viz.ui.state import DashboardState, Polled

#: Names of the Bokeh models, for browser tests (see the module's docstring).
SOURCE_NAME = "pavi-elbo-source"
SMOOTHED_SOURCE_NAME = "pavi-elbo-smoothed-source"
RAW_RENDERER_NAME = "pavi-elbo-raw"
SMOOTHED_RENDERER_NAME = "pavi-elbo-smoothed"
FIGURE_NAME = "pavi-elbo-figure"

#: The buffer's columns, in order.
COLUMNS = ("step", "elbo", "smoothed_elbo", "loss", "smoothed_loss")
#: Points the buffer keeps (the oldest are dropped beyond; the hub itself thins long runs
#: to 20,000 points, so a whole run fits).
BUFFER_LENGTH = 50_000


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: np.array([], dtype=float if c != "step" else np.int64) for c in COLUMNS})


def _name_models(source: str, renderer: str):
    """A HoloViews hook naming a curve's data source, glyph renderer and figure."""

    def hook(plot: Any, element: Any) -> None:
        plot.handles["source"].name = source
        plot.handles["glyph_renderer"].name = renderer
        plot.state.name = FIGURE_NAME

    return hook


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
        #: The points of the current run (columns :data:`COLUMNS`); send with :meth:`push`.
        self.buffer = hv.streams.Buffer(_empty(), length=BUFFER_LENGTH, index=False)
        self._hidden = 0  # points with a non-positive loss (not shown on the log scale)
        self._scale = pn.widgets.RadioButtonGroup.from_param(self.param.scale, color="light", width=140)
        self._note = pn.pane.Markdown("", visible=False, styles={"color": "#8a6d3b"}, margin=(0, 10))
        self._pane = pn.pane.HoloViews(self._plot(), sizing_mode="stretch_width", min_height=320)
        self._layout = pn.Column(
            pn.Row(pn.pane.Markdown("### ELBO", margin=(0, 10)), pn.HSpacer(), self._scale),
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
        frame = pd.DataFrame({
            "step": np.asarray(polled.step, dtype=np.int64),
            "elbo": elbo,
            "smoothed_elbo": smoothed,
            "loss": _positive(-elbo),
            "smoothed_loss": _positive(-smoothed),
        })
        self._hidden += int(np.count_nonzero(~(elbo < 0)))
        self.buffer.send(frame)
        self._update_note()

    def clear(self) -> None:
        """Drop every point (a new run, or a new model)."""
        self.buffer.clear()
        self._hidden = 0
        self._update_note()

    @property
    def data(self) -> pd.DataFrame:
        """The points shown now (a copy)."""
        return self.buffer.data.copy()

    # -- drawing ----------------------------------------------------------------------
    @param.depends("scale", watch=True)
    def _rescale(self) -> None:
        """A log axis needs a new figure: replace the plot (the buffer is kept)."""
        self._pane.object = self._plot()
        self._update_note()

    def _plot(self) -> hv.DynamicMap:
        log = self.scale == "log"
        raw, smooth = ("loss", "smoothed_loss") if log else ("elbo", "smoothed_elbo")
        label = "loss = -ELBO (log)" if log else "ELBO"

        def curves(data: pd.DataFrame) -> hv.Overlay:
            # Both curves hold the buffer's own DataFrame: HoloViews then streams new rows.
            axes = {"logy": log, "tools": ["hover"], "xlabel": "step", "ylabel": label}
            raw_curve = hv.Curve(data, "step", (raw, label), label="ELBO").opts(
                color="#1f77b4", alpha=0.35, line_width=1, hooks=[_name_models(SOURCE_NAME, RAW_RENDERER_NAME)],
                **axes,
            )
            smooth_curve = hv.Curve(data, "step", (smooth, label), label="smoothed").opts(
                color="#d62728", line_width=2.5, hooks=[_name_models(SMOOTHED_SOURCE_NAME, SMOOTHED_RENDERER_NAME)],
                **axes,
            )
            return (raw_curve * smooth_curve).opts(
                legend_position="bottom_right", responsive=True, min_height=300, show_grid=True,
            )

        return hv.DynamicMap(curves, streams=[self.buffer])

    def _update_note(self) -> None:
        hidden = self._hidden if self.scale == "log" else 0
        self._note.object = (
            f"{hidden} point(s) with ELBO ≥ 0 (loss ≤ 0) cannot be drawn on the log scale and are "
            "left out; the linear scale shows every point."
            if hidden else ""
        )
        self._note.visible = bool(hidden)


def _positive(values: np.ndarray) -> np.ndarray:
    """The values, with the non-positive ones (no place on a log axis) as NaN."""
    return np.where(values > 0, values, np.nan)
