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
  ELBO (columns :data:`COLUMNS`); :data:`SMOOTHED_SOURCE_NAME`
  (``"pavi-elbo-smoothed-source"``) that of the smoothed curve (same columns);
  :data:`SPIKE_SOURCE_NAME` that of the spikes' markers (same columns, spikes only);
- :data:`RAW_RENDERER_NAME`, :data:`SMOOTHED_RENDERER_NAME`,
  :data:`SPIKE_RENDERER_NAME`: their glyph renderers; :data:`FAILURE_NAME`: the line
  at the step where the run failed;
- :data:`FIGURE_NAME` (``"pavi-elbo-figure"``): the figure.

Spikes: an estimate far below the smoothed ELBO (``Point.spike``, see
:mod:`pavi_viz.inference.smoothing`) is left out of the raw curve and marked by an orange
triangle on the smoothed one, whose hover gives its value.

The default vertical range ignores outliers (as TensorBoard's charts do by default):
it spans the points after the run's first tenth of steps (:func:`default_range`), so
neither the steep first climb (-2.5e6 at step 1, -3e3 from step 100 on) nor a spike
(-2.5e13) flattens the curve a teacher points at. It follows an invisible guide of two
points that each poll moves (:data:`GUIDE_NAME`); zooming out, or the log scale,
shows the rest.

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
from bokeh.models import ColumnDataSource, DataRange1d, HoverTool, Label, Span
from panel.viewable import Viewer

from pavi_viz.ui.state import DashboardState, Polled
from pavi_viz.ui.views.figures import new_figure
from pavi_viz.ui.views.text import markdown

#: Names of the Bokeh models, for browser tests (see the module's docstring).
SOURCE_NAME = "pavi-elbo-source"
SMOOTHED_SOURCE_NAME = "pavi-elbo-smoothed-source"
RAW_RENDERER_NAME = "pavi-elbo-raw"
SMOOTHED_RENDERER_NAME = "pavi-elbo-smoothed"
SPIKE_SOURCE_NAME = "pavi-elbo-spike-source"
SPIKE_RENDERER_NAME = "pavi-elbo-spikes"
FAILURE_NAME = "pavi-elbo-failure"
GUIDE_NAME = "pavi-elbo-range-guide"
FIGURE_NAME = "pavi-elbo-figure"

#: The buffer's columns, in order: the ``drawn_`` ones are NaN at spikes (the raw curve).
COLUMNS = ("step", "elbo", "smoothed_elbo", "loss", "smoothed_loss", "drawn_elbo", "drawn_loss")
#: The share of a run's first steps that the default range leaves out (its steep climb).
CLIMB_SHARE = 0.1
#: The default range spans these quantiles of the raw points after the climb (and the
#: whole smoothed curve there).
RANGE_QUANTILES = (0.005, 0.995)
#: What the plot says while it has no point.
EMPTY_HINT = "No ELBO yet: press Start, and each step's ELBO is drawn here as it trains."
#: The colour of what the plot marks: spikes and a failed run's step.
ALERT_COLOR = "#ff7f0e"
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
        self._failed_at: int | None = None  # the step where the run failed, marked on the plot
        self._hidden = 0  # points with a non-positive loss (not shown on the log scale)
        self._scale = pn.widgets.RadioButtonGroup.from_param(self.param.scale, color="light", width=140)
        self._note = markdown("", visible=False, styles={"color": "#8a6d3b"}, margin=(0, 10))
        self._figure()
        state.param.watch(self._mark_failure, "run_state")
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
        spike = np.asarray(polled.spike, dtype=bool)
        drawn = np.where(spike, np.nan, elbo)
        new = {
            "step": np.asarray(polled.step, dtype=np.int64),
            "elbo": elbo,
            "smoothed_elbo": smoothed,
            "loss": _positive(-elbo),
            "smoothed_loss": _positive(-smoothed),
            "drawn_elbo": drawn,
            "drawn_loss": _positive(-drawn),
        }
        hidden = int(np.count_nonzero(~(elbo < 0)))
        self.empty_hint.visible = False
        self.source.stream(new, rollover=BUFFER_LENGTH)
        self.smoothed_source.stream(new, rollover=BUFFER_LENGTH)
        self._move_guide()
        if spike.any():
            self.spike_source.stream({c: v[spike] for c, v in new.items()}, rollover=BUFFER_LENGTH)
        if hidden or spike.any():
            self._hidden += hidden
            self._update_note()

    def clear(self) -> None:
        """Drop every point (a new run, or a new model)."""
        if len(self.source.data["step"]):
            self.source.data = _empty()
            self.smoothed_source.data = _empty()
            self.spike_source.data = _empty()
            self.guide_source.data = {"step": [], "y": []}
        self.empty_hint.visible = True
        self._hidden = 0
        self._failed_at = None
        self._show_failure()
        self._update_note()

    @property
    def data(self) -> pd.DataFrame:
        """The points shown now (a copy)."""
        return pd.DataFrame({c: np.array(self.source.data[c]) for c in COLUMNS})

    # -- drawing ----------------------------------------------------------------------
    @param.depends("scale", watch=True)
    def _rescale(self) -> None:
        """A log axis needs a new figure: replace the plot (the points are kept)."""
        self._figure(data={c: np.array(self.source.data[c]) for c in COLUMNS},
                     spikes={c: np.array(self.spike_source.data[c]) for c in COLUMNS})
        self._show_failure()
        self._pane.object = self.figure
        self._update_note()

    def _figure(self, data: dict[str, np.ndarray] | None = None, spikes: dict[str, np.ndarray] | None = None) -> None:
        """A new figure for the current scale, its sources holding ``data`` and
        ``spikes`` (``figure``, ``source``, ``smoothed_source``, ``spike_source``,
        ``failure``)."""
        log = self.scale == "log"
        raw, smooth = ("drawn_loss", "smoothed_loss") if log else ("drawn_elbo", "smoothed_elbo")
        label = "loss = -ELBO (log)" if log else "ELBO"
        data = data if data is not None else _empty()
        spikes = spikes if spikes is not None else _empty()
        self.source = ColumnDataSource({c: data[c].copy() for c in COLUMNS}, name=SOURCE_NAME)
        self.smoothed_source = ColumnDataSource({c: data[c].copy() for c in COLUMNS}, name=SMOOTHED_SOURCE_NAME)
        self.spike_source = ColumnDataSource({c: spikes[c].copy() for c in COLUMNS}, name=SPIKE_SOURCE_NAME)
        self.guide_source = ColumnDataSource({"step": [], "y": []}, name=GUIDE_NAME)
        fig = new_figure(name=FIGURE_NAME, y_axis_type="log" if log else "linear", x_axis_label="step",
                         y_axis_label=label, height=300, min_height=300)
        guide = fig.line("step", "y", source=self.guide_source, line_alpha=0)
        fig.y_range = DataRange1d(renderers=[guide])
        raw_renderer = fig.line("step", raw, source=self.source, color="#1f77b4", alpha=0.35, line_width=1,
                                legend_label="ELBO", name=RAW_RENDERER_NAME)
        smooth_renderer = fig.line("step", smooth, source=self.smoothed_source, color="#d62728", line_width=2.5,
                                   legend_label="smoothed", name=SMOOTHED_RENDERER_NAME)
        spike_renderer = fig.scatter("step", smooth, source=self.spike_source, marker="inverted_triangle", size=11,
                                     color=ALERT_COLOR, line_color="black", name=SPIKE_RENDERER_NAME)
        fig.add_tools(HoverTool(renderers=[raw_renderer, smooth_renderer], mode="vline",
                                tooltips=[("step", "@step"), ("ELBO", "@elbo{0.000}"), ("smoothed", "@smoothed_elbo{0.000}")]))
        fig.add_tools(HoverTool(renderers=[spike_renderer],
                                tooltips=[("spike at step", "@step"), ("ELBO", "@elbo{0.000e}")]))
        fig.legend.location = "bottom_right"
        self.failure = Span(location=0, dimension="height", line_color=ALERT_COLOR, line_width=2,
                            line_dash="dashed", visible=False, name=FAILURE_NAME)
        self.failure_label = Label(x=0, y=10, x_units="data", y_units="screen", text="", text_color=ALERT_COLOR,
                                   text_font_size="9pt", x_offset=4, visible=False)
        fig.add_layout(self.failure)
        fig.add_layout(self.failure_label)
        self.empty_hint = Label(x=10, y=10, x_units="screen", y_units="screen", text=EMPTY_HINT,
                                text_color="#666666", text_font_size="11pt", visible=not len(data["step"]))
        fig.add_layout(self.empty_hint)
        self.figure = fig
        self._move_guide()

    def _move_guide(self) -> None:
        """Put the range guide's two points at the default range of the points so far."""
        raw, smooth = ("drawn_loss", "smoothed_loss") if self.scale == "log" else ("drawn_elbo", "smoothed_elbo")
        steps = np.asarray(self.source.data["step"])
        found = default_range(steps, np.asarray(self.source.data[raw], dtype=float),
                              np.asarray(self.smoothed_source.data[smooth], dtype=float))
        guide = {"step": [], "y": []} if found is None else {"step": [steps[0], steps[-1]], "y": list(found)}
        if guide != self.guide_source.data:
            self.guide_source.data = guide

    def _mark_failure(self, event: param.parameterized.Event) -> None:
        """A failed run (a diverged fit) gets a dashed line at its last step."""
        if event.new == "failed":
            self._failed_at = self.state.step
            self._show_failure()

    def _show_failure(self) -> None:
        failed = self._failed_at is not None
        if failed:
            self.failure.location = self.failure_label.x = self._failed_at
            self.failure_label.text = f"run failed after step {self._failed_at:,}"
        self.failure.visible = self.failure_label.visible = failed

    def _update_note(self) -> None:
        notes = []
        spikes = np.asarray(self.spike_source.data["elbo"], dtype=float)
        if len(spikes):
            notes.append(
                f"▼ {len(spikes)} spike(s): ELBO estimates far below the smoothed ELBO (the lowest "
                f"{spikes.min():.3g}), marked on the smoothed curve so that the plot keeps its scale; "
                "the average took them in at a bound. Hover a marker for its value.")
        hidden = self._hidden if self.scale == "log" else 0
        if hidden:
            notes.append(f"{hidden} point(s) with ELBO ≥ 0 (loss ≤ 0) cannot be drawn on the log scale and are "
                         "left out; the linear scale shows them.")
        text = " ".join(notes)
        if self._note.object != text:
            self._note.object = text
        if self._note.visible != bool(text):
            self._note.visible = bool(text)


def default_range(steps: np.ndarray, raw: np.ndarray, smoothed: np.ndarray) -> tuple[float, float] | None:
    """The plot's default vertical range: from the low to the high
    :data:`RANGE_QUANTILES` of the finite ``raw`` points after the first
    :data:`CLIMB_SHARE` of the ``steps``, widened to hold the ``smoothed`` curve there
    (all three of one length); None when there is no finite point."""
    if not len(steps):
        return None
    after = steps >= steps[0] + CLIMB_SHARE * (steps[-1] - steps[0])
    raw, smoothed = raw[after & np.isfinite(raw)], smoothed[after & np.isfinite(smoothed)]
    if not raw.size and not smoothed.size:
        return None
    low, high = np.quantile(raw, RANGE_QUANTILES) if raw.size else (np.inf, -np.inf)
    if smoothed.size:
        low, high = min(low, smoothed.min()), max(high, smoothed.max())
    return float(low), float(high)


def _positive(values: np.ndarray) -> np.ndarray:
    """The values, with the non-positive ones (no place on a log axis) as NaN."""
    return np.where(values > 0, values, np.nan)
