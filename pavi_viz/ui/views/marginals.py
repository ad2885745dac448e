"""Posterior marginals, per plate element, live while a fit runs.

* :class:`GlobalMarginals`: the density of each global variable (in no plate), one plot
  per variable and one curve per event component;
* :class:`ForestView`: one row per element of a plated variable, its mean and 90%
  interval (5% to 95%), paged; a click selects the element for every linked view;
* :class:`DetailView`: the density of the selected element of the selected variable.

All of them read a :class:`~pavi_viz.ui.state.DashboardState` and watch its
``summary``, ``draws``, ``truth``, ``observed``, ``reference``, ``variable`` and
``selection``. The plots are plain Bokeh figures (:mod:`pavi_viz.ui.views.figures`):
a change gives new columns to the data sources it concerns, the figures stay.

What the plots draw, by source:

- **densities** come from ``state.draws`` (joint posterior draws, dims ``("sample",
  *plates, *event dims)``) by a Gaussian kernel density estimate; without draws (big
  models) from a Normal curve with the summary's mean and sd, labelled as an
  approximation. Reference draws (``state.reference``) are drawn dashed, the truth
  (``state.truth``, simulated data) as vertical lines.
- **forest rows** come from ``state.summary`` (dims ``("stat", *plates, *event
  dims)``) for latent variables; for observed variables from the posterior predictive
  draws in ``state.draws``, with the observed data as the marker.

Nested plates: when the outer plate of a ragged (``house`` in ``county``) or regular
(``obs`` in ``group``) nesting has a selected element, a forest of a variable of the
inner plate shows only that element's members (a checkbox lifts the restriction).

Inspecting the page (browser tests): the Bokeh data sources carry the names
:data:`FOREST_MEANS_NAME` (columns ``mean``, ``row``, ``element``, ``label``, ``low``,
``high``), :data:`DENSITY_NAME` (the detail view's density; :data:`GLOBAL_DENSITY_PREFIX`
plus the variable's name for the global marginals; ``xs``, ``ys``, ``component``: one
curve per event component) and the detail view's title is an HTML pane with the CSS class
:data:`DETAIL_TITLE_CLASS`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import panel as pn
import param
import xarray as xr
from bokeh.events import DoubleTap, Tap
from bokeh.models import FixedTicker, HoverTool, LinearAxis, Range1d
from bokeh.plotting import figure
from panel.viewable import Viewer

from pavi_viz.model import distributions
from pavi_viz.model.spec import PlateModel
from pavi_viz.ui.state import DashboardState
from pavi_viz.ui.views.figures import (
    as_frame,
    new_figure,
    new_source,
    one_recompute,
    replace_data,
    row_count,
)
from pavi_viz.ui.views.text import markdown

#: Rows a forest shows at most on one page.
PAGE_SIZE = 200
#: Points of a density curve.
GRID_POINTS = 200
#: Reference draws a density estimate uses at most (evenly thinned beyond).
KDE_MAX_DRAWS = 2000
#: The interval the forests draw, as summary stats.
LOW, HIGH = "5%", "95%"

#: Names of Bokeh models and CSS classes, for tests (see the module's docstring).
FOREST_MEANS_NAME = "pavi-forest-means"
DENSITY_NAME = "pavi-density"
#: The density sources of the global marginals: this prefix, then the variable's name.
GLOBAL_DENSITY_PREFIX = "pavi-global-density-"
DETAIL_TITLE_CLASS = "pavi-detail-title"

_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
#: Their names, for captions (plain text: a caption never carries markup).
_COLOR_NAMES = ("blue", "orange", "green", "red", "purple", "brown", "pink", "cyan")


# -- reading the state (plain numpy and xarray) ---------------------------------------------
def plates_of(model: PlateModel, name: str) -> list[str]:
    """The plates variable ``name`` lists (outer first)."""
    return list(model.variable(name).plates)


def plate_shape(model: PlateModel, plates: Sequence[str]) -> tuple[int, ...]:
    """The sizes of ``plates``."""
    return tuple(model.plate(p).size for p in plates)


def event_dims(model: PlateModel, name: str) -> list[str]:
    """The event dims of variable ``name`` in the posterior's datasets (``f"{name}_dim_{i}"``)."""
    return [f"{name}_dim_{i}" for i in range(len(model.variable(name).event_shape))]


def component_labels(model: PlateModel, name: str) -> list[str]:
    """One label per event component of ``name`` (C order): ``["0", "1"]`` for shape
    (2,), ``["0,0", "0,1", ...]`` for (2, 3), ``[""]`` for a scalar."""
    shape = tuple(model.variable(name).event_shape)
    if not shape:
        return [""]
    return [",".join(map(str, i)) for i in np.ndindex(*shape)]


def as_table(array: xr.DataArray, model: PlateModel, name: str, lead: Sequence[str] = ()) -> np.ndarray:
    """``array`` (dims ``(*lead, *plates, *event dims)`` in any order) as numbers of
    shape ``(*lead sizes, elements, components)``: plate elements flattened in C order,
    event components likewise."""
    dims = [*lead, *plates_of(model, name), *event_dims(model, name)]
    values = np.asarray(array.transpose(*dims).values, dtype=float)
    lead_shape = values.shape[: len(lead)]
    elements = math.prod(plate_shape(model, plates_of(model, name)))
    return values.reshape(*lead_shape, elements, -1)


def ancestor_index(model: PlateModel, plates: Sequence[str], outer: str) -> np.ndarray | None:
    """For a variable in ``plates``: the element of plate ``outer`` each of its elements
    lies in, shape ``plate_shape(plates)``; None unless ``outer`` is a strict ancestor
    (through ``nested_in``) of one of ``plates``.

    A ragged link follows ``Plate.membership``; a regular one reads the outer plate's
    own dim, which the variable lists."""
    plates = list(plates)
    sizes = plate_shape(model, plates)
    for axis, start in enumerate(plates):
        name, index = start, np.arange(sizes[axis])
        while name != outer:
            plate = model.plate(name)
            if plate.nested_in is None:
                break
            if plate.ragged:
                index = np.asarray(plate.membership)[index]
            elif plate.nested_in in plates:
                axis = plates.index(plate.nested_in)
                index = np.arange(sizes[axis])
            else:
                break
            name = plate.nested_in
        if name == outer and start != outer:
            shape = [1] * len(plates)
            shape[axis] = sizes[axis]
            return np.broadcast_to(index.reshape(shape), sizes)
    return None


def outer_plates(model: PlateModel, plates: Sequence[str]) -> list[str]:
    """The plates whose selected element restricts the elements of a variable in
    ``plates``: the strict ancestors of its plates, outermost first."""
    out: list[str] = []
    for start in plates:
        name = model.plate(start).nested_in
        while name is not None:
            if name not in out and ancestor_index(model, plates, name) is not None:
                out.append(name)
            name = model.plate(name).nested_in
    return sorted(out, key=model.nesting_depth)


def element_label(dataset: xr.Dataset | None, plates: Sequence[str], index: Sequence[int]) -> str:
    """``"group 3"``, ``"group 3, obs 2"``; with the coordinate's value when the
    dataset's coords are not just the positions: ``"county 3 (AITKIN)"``."""
    return element_labels(dataset, plates, [[i] for i in index])[0]


def element_labels(dataset: xr.Dataset | None, plates: Sequence[str], index: Sequence[Sequence[int]]) -> list[str]:
    """The :func:`element_label` of many elements at once: ``index`` holds, for each
    plate, the positions of the elements in it (one array per plate, as
    ``np.unravel_index`` gives them)."""
    columns = []
    for plate, positions in zip(plates, index, strict=True):
        positions = np.asarray(positions, dtype=int)
        text = [f"{plate} {i}" for i in positions]
        if dataset is not None and plate in dataset.coords:
            values = dataset.coords[plate].values
            if not np.array_equal(values, np.arange(len(values))):
                text = [f"{t} ({v})" for t, v in zip(text, values[positions], strict=True)]
        columns.append(text)
    return [", ".join(parts) for parts in zip(*columns, strict=True)]


def kde(
    values: np.ndarray, points: int = GRID_POINTS, bounds: tuple[float, float] = (-math.inf, math.inf)
) -> tuple[np.ndarray, np.ndarray]:
    """A Gaussian kernel density estimate of 1-d ``values`` (Silverman's bandwidth),
    on ``points`` grid points spanning the values and 3 bandwidths either side, cut at
    ``bounds`` (the support's, finite where it has a bound); beyond
    :data:`KDE_MAX_DRAWS` values, an evenly thinned subset is used.

    At a finite bound the kernels are reflected (Schuster, 1985): the mass a kernel
    puts beyond the bound is folded back inside. Without it, draws of a scale piled
    near 0 put several percent of the density below 0 and show half the density at 0.
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.array([]), np.array([])
    if values.size > KDE_MAX_DRAWS:
        values = values[np.linspace(0, values.size - 1, KDE_MAX_DRAWS).astype(int)]
    spread = values.std()
    q75, q25 = np.percentile(values, [75, 25])
    if q75 > q25:
        spread = min(spread, (q75 - q25) / 1.34)
    bandwidth = 0.9 * spread * values.size ** -0.2
    if not bandwidth > 0:
        bandwidth = max(abs(float(values.mean())) * 1e-3, 1e-6)
    low, high = bounds
    x = np.linspace(max(values.min() - 3 * bandwidth, low), min(values.max() + 3 * bandwidth, high), points)
    centres = [values, *(2 * bound - values for bound in bounds if math.isfinite(bound))]
    z = (x[:, None] - np.concatenate(centres)[None, :]) / bandwidth
    y = np.exp(-0.5 * z * z).sum(axis=1) / (values.size * bandwidth * math.sqrt(2 * math.pi))
    return x, y


def normal_curve(mean: float, sd: float, points: int = GRID_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """The density of Normal(mean, sd) over mean ± 4 sd."""
    if not (np.isfinite(mean) and np.isfinite(sd)) or sd <= 0:
        return np.array([]), np.array([])
    x = np.linspace(mean - 4 * sd, mean + 4 * sd, points)
    return x, np.exp(-0.5 * ((x - mean) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))


@dataclass
class Marginals:
    """Per-element marginal summaries of one variable.

    Every array has shape ``(elements, components)``: the variable's plate elements
    flattened in C order (one element for a global variable), its event components
    likewise.

    Attributes:
        mean, low, high: the posterior mean and 5% and 95% quantiles (for an observed
            variable: of its posterior predictive draws).
        marker: the truth (latents of simulated data) or the observed data (observed
            variables); None when unknown.
        marker_label: ``"truth"`` or ``"observed"``.
        ref_mean, ref_low, ref_high: the same from the reference draws, or None.
    """

    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    marker: np.ndarray | None
    marker_label: str
    ref_mean: np.ndarray | None = None
    ref_low: np.ndarray | None = None
    ref_high: np.ndarray | None = None


def _draw_stats(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, 5% and 95% quantiles over the first axis of ``(sample, elements, components)``."""
    low, high = np.quantile(table, [0.05, 0.95], axis=0)
    return table.mean(axis=0), low, high


def marginals(state: DashboardState, name: str) -> Marginals | None:
    """The marginals of variable ``name`` now: None when the state has none yet (no
    summary for a latent, no predictive draws for an observed variable)."""
    model = state.model
    observed = model.variable(name).observed
    if observed:
        if state.draws is None or name not in state.draws:
            return None
        mean, low, high = _draw_stats(as_table(state.draws[name], model, name, ["sample"]))
        source = state.observed
    else:
        if state.summary is None or name not in state.summary:
            return None
        stats = as_table(state.summary[name].sel(stat=["mean", LOW, HIGH]), model, name, ["stat"])
        mean, low, high = stats
        source = state.truth
    marker = as_table(source[name], model, name) if source is not None and name in source else None
    out = Marginals(mean, low, high, marker, "observed" if observed else "truth")
    if state.reference is not None and name in state.reference:
        out.ref_mean, out.ref_low, out.ref_high = _draw_stats(as_table(state.reference[name], model, name, ["sample"]))
    return out


@dataclass
class Series:
    """What a density plot draws for one event component of one element.

    Attributes:
        component: the component's label (``""`` for a scalar).
        x, y: the posterior density (KDE of draws, or the Normal approximation).
        approximate: whether ``x, y`` is the Normal approximation.
        ref_x, ref_y: the reference draws' density (empty when none).
        marker: the truth or observed value (NaN when unknown).
    """

    component: str
    x: np.ndarray
    y: np.ndarray
    approximate: bool
    ref_x: np.ndarray
    ref_y: np.ndarray
    marker: float


def element_series(state: DashboardState, name: str, element: int) -> list[Series]:
    """The density series of element ``element`` (flat index over the variable's
    plates, 0 for a global variable) of variable ``name``, one per event component;
    empty when there is nothing to draw yet."""
    model = state.model
    labels = component_labels(model, name)
    draws = None
    if state.draws is not None and name in state.draws:
        draws = as_table(state.draws[name], model, name, ["sample"])[:, element, :]
    stats = None
    if draws is None:
        if state.summary is None or name not in state.summary:
            return []
        stats = as_table(state.summary[name].sel(stat=["mean", "sd"]), model, name, ["stat"])[:, element, :]
    reference = None
    if state.reference is not None and name in state.reference:
        reference = as_table(state.reference[name], model, name, ["sample"])[:, element, :]
    source = state.observed if model.variable(name).observed else state.truth
    marker = as_table(source[name], model, name)[element] if source is not None and name in source else None
    bounds = distributions.get(model.variable(name).distribution).bounds
    out = []
    for c, label in enumerate(labels):
        x, y = kde(draws[:, c], bounds=bounds) if draws is not None else normal_curve(stats[0, c], stats[1, c])
        ref_x, ref_y = kde(reference[:, c], bounds=bounds) if reference is not None else (np.array([]), np.array([]))
        out.append(Series(label, x, y, draws is None, ref_x, ref_y, float(marker[c]) if marker is not None else math.nan))
    return out


# -- a density plot ---------------------------------------------------------------------------
_CURVE_COLUMNS = ["xs", "ys", "component", "color"]
_MARKER_COLUMNS = ["x", "y0", "y1", "component", "color"]


def _curves(series: Sequence[Series], which: str) -> dict[str, list]:
    """The curves of ``series`` (``which``: ``"posterior"`` or ``"reference"``), one row
    each (a multi-line's ``xs`` and ``ys``), with the component's label and colour."""
    out: dict[str, list] = {c: [] for c in _CURVE_COLUMNS}
    for i, s in enumerate(series):
        x, y = (s.x, s.y) if which == "posterior" else (s.ref_x, s.ref_y)
        if len(x) > 1:
            for column, value in zip(_CURVE_COLUMNS, (x, y, s.component or "value", _COLORS[i % len(_COLORS)]),
                                     strict=True):
                out[column].append(value)
    return out


def _markers(series: Sequence[Series]) -> dict[str, list]:
    """Vertical segments at each component's marker, as tall as the highest density."""
    top = max((float(np.max(s.y)) for s in series if len(s.y)), default=1.0)
    out: dict[str, list] = {c: [] for c in _MARKER_COLUMNS}
    for i, s in enumerate(series):
        if np.isfinite(s.marker):
            for column, value in zip(_MARKER_COLUMNS, (s.marker, 0.0, top, s.component or "value",
                                                       _COLORS[i % len(_COLORS)]), strict=True):
                out[column].append(value)
    return out


class DensityPlot:
    """Densities of the event components of one element: the posterior's (solid, one
    colour per component), the reference's (dashed) and the truth's (dotted vertical
    lines).

    Call :meth:`send` with new series: it replaces the columns of the three sources
    (``sources["posterior"]``, named ``name``; ``"reference"``; ``"marker"``) of the
    figure (``figure``), built once.
    """

    def __init__(self, xlabel: str = "value", height: int = 260, name: str = DENSITY_NAME) -> None:
        self.series: list[Series] = []
        self.sources = {"posterior": new_source(_CURVE_COLUMNS, name), "reference": new_source(_CURVE_COLUMNS),
                        "marker": new_source(_MARKER_COLUMNS)}
        fig = new_figure(x_axis_label=xlabel, y_axis_label="density", height=height, min_height=height)
        # No legend: the caption names the components' colours.
        posterior = fig.multi_line("xs", "ys", source=self.sources["posterior"], line_color="color", line_width=2.5)
        fig.multi_line("xs", "ys", source=self.sources["reference"], line_color="color", line_width=1.5,
                       line_dash="dashed", line_alpha=0.8)
        fig.segment("x", "y0", "x", "y1", source=self.sources["marker"], line_color="color", line_width=2,
                    line_dash="dotted")
        fig.add_tools(HoverTool(renderers=[posterior], tooltips=[("component", "@component"), ("value", "$x{0.000}"),
                                                                 ("density", "$y{0.000}")]))
        self.figure = fig

    def send(self, series: Sequence[Series]) -> None:
        """Draw ``series`` (one per event component; empty: a blank plot)."""
        self.series = list(series)
        replace_data(self.sources["posterior"], _curves(series, "posterior"))
        replace_data(self.sources["reference"], _curves(series, "reference"))
        replace_data(self.sources["marker"], _markers(series))


def caption(series: Sequence[Series], marker_label: str) -> str:
    """A line saying what the density plot shows: the source of the posterior curve
    (draws, or the Normal approximation), the reference and the marker when present,
    and the colour of each component when there are several."""
    if not series:
        return ""
    parts = [
        "solid: **Normal approximation** from the summary's mean and sd (no draws: a model too large to send "
        "them, or a stored run)"
        if series[0].approximate else "solid: posterior (kernel density of the draws)"
    ]
    if any(len(s.ref_x) for s in series):
        parts.append("dashed: reference posterior")
    if any(np.isfinite(s.marker) for s in series):
        parts.append(f"dotted: {marker_label}")
    if len(series) > 1:
        colours = ", ".join(f"{s.component} in {_COLOR_NAMES[i % len(_COLOR_NAMES)]}" for i, s in enumerate(series))
        parts.append(f"components: {colours}")
    return " · ".join(parts)


# -- the views --------------------------------------------------------------------------------------
class GlobalMarginals(Viewer):
    """The marginal density of every global latent variable (in no plate): one plot per
    variable, one curve per event component, with truth and reference when known.

    Args:
        state: the dashboard's state.
    """

    state = param.ClassSelector(class_=DashboardState, constant=True, doc="The dashboard's state.")

    def __init__(self, state: DashboardState, **params: Any) -> None:
        super().__init__(state=state, **params)
        #: The density plot of each global variable, by name.
        self.plots: dict[str, DensityPlot] = {}
        self._captions: dict[str, pn.pane.Markdown] = {}
        self._message = markdown("", margin=(0, 10))
        self._grid = pn.GridBox(ncols=2, sizing_mode="stretch_width")
        self._layout = pn.Column(markdown("### Global variables", margin=(0, 10)), self._message, self._grid,
                                 sizing_mode="stretch_width")
        self._build()

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    @property
    def names(self) -> list[str]:
        """The global latent variables, in model order."""
        return [v.name for v in self.state.model.variables if not v.observed and not v.plates]

    @param.depends("state.model", watch=True)
    def _build(self) -> None:
        """A new model: one plot per global variable."""
        self.plots = {
            name: DensityPlot(xlabel=name, height=220, name=GLOBAL_DENSITY_PREFIX + name) for name in self.names
        }
        self._captions = {name: markdown("", margin=(0, 10), styles={"font-size": "0.85em"}) for name in self.plots}
        self._grid.objects = [
            pn.Column(markdown(f"**{name}**", margin=(0, 10)), pn.pane.Bokeh(plot.figure, sizing_mode="stretch_width"),
                      self._captions[name], sizing_mode="stretch_width")
            for name, plot in self.plots.items()
        ]
        self._update()

    @param.depends("state.summary", "state.draws", "state.truth", "state.reference", watch=True)
    def _update(self) -> None:
        if list(self.plots) != self.names:
            return  # a new model came in: _build follows
        if not self.plots:
            self._message.object = "This model has no global latent variable."
            return
        drawn = False
        for name, plot in self.plots.items():
            series = element_series(self.state, name, 0)
            plot.send(series)
            self._captions[name].object = caption(series, "truth")
            drawn = drawn or bool(series)
        self._message.object = "" if drawn else "No posterior summary yet: start a fit."


# -- the forest's geometry and its one-line reading ------------------------------------------------
#: Pixels per forest row: a 12 px label and its bar, never squeezed (the plot grows with the rows).
FOREST_ROW_HEIGHT = 20
#: Pixels per row with a reference: its grey bar sits 0.3 rows below the posterior's.
FOREST_REFERENCE_ROW_HEIGHT = 30
#: The rows a forest's frame is tall enough for at least: a blank forest stays a plot.
FOREST_MIN_ROWS = 3
#: Pixels beyond which the forest scrolls in its own box: a page of 200 rows stays usable
#: and the views below it stay in reach.
FOREST_MAX_HEIGHT = 720
#: The row labels' font size (Bokeh's default, 11 px, is small for a room's projector).
FOREST_LABEL_FONT_SIZE = "12px"
#: Put before the selected row's label: a tick label has no style of its own to bold.
SELECTED_MARK = "▶ "
#: Distributions whose ``loc`` is the centre of the variable itself (a LogNormal's is its
#: logarithm's): the forest's reading compares the rows with that centre.
_LOCATION_FAMILIES = frozenset({"Normal", "Cauchy", "StudentT", "Laplace"})


def population_centre(state: DashboardState, name: str, component: int) -> tuple[str, float] | None:
    """The centre the prior of plated variable ``name`` pulls all its elements towards,
    when that centre is a global latent variable (``alpha ~ Normal(mu_alpha, ...)``):
    its name and its posterior mean now (its component ``component``, or its only one).

    None when the prior's ``loc`` is a constant, an expression or a plated variable, when
    the distribution has no such centre, or when the summary has no mean for it yet."""
    model = state.model
    variable = model.variable(name)
    parent = variable.params.get("loc")
    global_latents = {v.name for v in model.variables if not v.plates and not v.observed}
    # The type test first: a vector constant as loc is a list, which no set can hold.
    if (variable.distribution not in _LOCATION_FAMILIES or not isinstance(parent, str)
            or parent not in global_latents):
        return None
    if state.summary is None or parent not in state.summary:
        return None
    means = as_table(state.summary[parent].sel(stat="mean"), model, parent)[0]
    if len(means) == 1:
        return parent, float(means[0])
    if len(means) == len(component_labels(model, name)):
        return parent, float(means[component])
    return None


def forest_reading(found: Marginals, elements: np.ndarray, component: int, noun: str,
                   centre: tuple[str, float] | None) -> str:
    """One line a teacher can read out about the forest's rows (``elements``, every
    page), all from the numbers the rows draw (``found``, component ``component``):

    - how many rows: ``"85 county elements"`` (``noun``: the plates);
    - how wide their 90% intervals are: the narrowest, the widest and the median;
    - with a ``centre`` (:func:`population_centre`): how many intervals exclude it;
    - with markers: how many truths (observed values) lie inside their interval.
    """
    parts = [f"{len(elements)} {noun} elements"]
    if not len(elements):
        return parts[0]
    low, high = found.low[elements, component], found.high[elements, component]
    width = high - low
    parts.append(f"90% intervals {width.min():.3g} to {width.max():.3g} wide (median {np.median(width):.3g})")
    if centre is not None:
        name, value = centre
        outside = int(np.count_nonzero((low > value) | (high < value)))
        parts.append(f"{outside} of {len(elements)} exclude {name}'s posterior mean ({value:.3g})")
    if found.marker is not None:
        marker = found.marker[elements, component]
        known = np.isfinite(marker)
        inside = int(np.count_nonzero(known & (low <= marker) & (marker <= high)))
        parts.append(f"{inside} of {int(known.sum())} {found.marker_label} values inside their interval")
    return " · ".join(parts)


class ForestView(Viewer):
    """One row per element of a plated variable: the posterior mean and its 90%
    interval, the truth (or, for an observed variable, its data) and the reference.

    Rows come in pages of at most ``page_size``, in element order or sorted by mean,
    each :data:`FOREST_ROW_HEIGHT` pixels tall and labelled (the plot grows with the
    rows, and scrolls in its own box beyond :data:`FOREST_MAX_HEIGHT`); ``reading`` says
    in one line what the rows show (:func:`forest_reading`). Clicking a row selects its
    element (``state.selection``); the selected element is highlighted (a band and a
    marked label) in every forest of its plate. When the variable's plate nests in an
    outer plate that has a selected element, only that element's members are shown
    (``restrict``).

    Args:
        state: the dashboard's state.
        variable: the variable to show; left out, the view follows ``state.variable``
            whenever that one has plates.
    """

    state = param.ClassSelector(class_=DashboardState, constant=True, doc="The dashboard's state.")
    variable = param.Selector(default=None, objects=[], doc="The variable shown.")
    component = param.Selector(default="", objects=[""], doc="The event component shown.")
    order = param.Selector(default="index", objects=["index", "mean"], doc="Rows in element order or by mean.")
    page = param.Integer(default=1, bounds=(1, None), doc="The page shown (1-based).")
    page_size = param.Integer(default=PAGE_SIZE, bounds=(1, None), doc="Rows per page at most.")
    restrict = param.Boolean(default=True, doc="Show only the members of the selected outer element.")
    reading = param.String(default="", doc="One line on the rows of every page, to read out.")

    def __init__(self, state: DashboardState, variable: str | None = None, **params: Any) -> None:
        super().__init__(state=state, **params)
        #: Whether the view follows ``state.variable`` (no variable given).
        self.follow = variable is None
        self._holding = True  # no redraws while settings change together
        self._elements = np.array([], dtype=int)  # the flat element of each row of the page
        self._all = np.array([], dtype=int)  # the flat elements the rows run over, in order
        self._marker_label = "truth"
        #: The plot's data: the page's rows (named :data:`FOREST_MEANS_NAME`), their
        #: markers (truth or observed) and reference rows, and the highlighted row.
        self.sources = {"rows": new_source(_ROW_COLUMNS, FOREST_MEANS_NAME), "marker": new_source(_ROW_COLUMNS),
                        "reference": new_source(_ROW_COLUMNS), "highlight": new_source(["y0", "y1"])}
        self._choices()
        self.variable = variable if variable is not None else self._default_variable()
        self._status = markdown("", margin=(0, 10))
        self._reading = markdown("", margin=(0, 10), styles={"font-size": "1.1em"})
        self._widgets = {
            "variable": pn.widgets.Select.from_param(self.param.variable, name="variable", width=160),
            "component": pn.widgets.Select.from_param(self.param.component, name="component", width=100),
            "order": pn.widgets.RadioButtonGroup.from_param(self.param.order, width=140),
            "page": pn.widgets.IntSlider(label="page", start=1, end=2, value=1, width=220),
            "restrict": pn.widgets.Checkbox.from_param(self.param.restrict, name="only the selected element's members"),
        }
        self._widgets["page"].param.watch(lambda event: setattr(self, "page", event.new), "value")
        self.param.watch(lambda event: setattr(self._widgets["page"], "value", event.new), "page")
        self.figure = self._build_figure()
        # A CSS max-height, not Panel's max_height: that one becomes "min(... px, 100%)",
        # which bounds nothing inside a page of content height (the box grew to 2000 px).
        self._layout = pn.Column(
            pn.Row(*self._widgets.values(), sizing_mode="stretch_width"),
            self._reading,
            self._status,
            pn.Column(pn.pane.Bokeh(self.figure, sizing_mode="stretch_width"), scroll=True,
                      styles={"max-height": f"{FOREST_MAX_HEIGHT}px"}, sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )
        self._holding = False
        self._variable_changed()

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    # -- choices ----------------------------------------------------------------------------
    def _candidates(self) -> list[str]:
        return [v.name for v in self.state.model.variables if v.plates]

    def _choices(self) -> None:
        self.param.variable.objects = self._candidates()

    def _default_variable(self) -> str | None:
        candidates = self._candidates()
        if self.state.variable in candidates:
            return self.state.variable
        latent = [v.name for v in self.state.model.variables if v.plates and not v.observed]
        return (latent or candidates or [None])[0]

    @param.depends("state.model", watch=True)
    def _model_changed(self) -> None:
        self._choices()
        keep = not self.follow and self.variable in self.param.variable.objects
        self._hold(variable=self.variable if keep else self._default_variable())
        self._variable_changed()

    @param.depends("state.variable", watch=True)
    def _follow(self) -> None:
        if self.follow and self.state.variable in self.param.variable.objects:
            self.variable = self.state.variable

    @param.depends("variable", watch=True)
    def _variable_changed(self) -> None:
        if self._holding:
            return
        if self.variable is None:
            self._update_rows()
            return
        labels = component_labels(self.state.model, self.variable)
        self.param.component.objects = labels
        self._widgets["component"].visible = len(labels) > 1
        self._hold(component=labels[0], page=1)
        if self.follow and self.state.variable != self.variable:
            self.state.variable = self.variable
        self._update_rows()

    def _hold(self, **values: Any) -> None:
        """Set parameters without redrawing (the caller redraws once)."""
        self._holding = True
        try:
            self.param.update(**values)
        finally:
            self._holding = False

    # -- rows -------------------------------------------------------------------------------------
    @property
    def shown(self) -> str | None:
        """The variable shown, None when there is none (or, while a new model comes in,
        when it is not in the model)."""
        names = {v.name for v in self.state.model.variables if v.plates}
        return self.variable if self.variable in names and self.variable in self.param.variable.objects else None

    @property
    def plates(self) -> list[str]:
        """The plates of the variable shown."""
        return plates_of(self.state.model, self.shown) if self.shown else []

    def restriction(self) -> tuple[str, int] | None:
        """The outer plate and element the rows are restricted to, if any."""
        if not self.restrict or not self.shown:
            return None
        for outer in reversed(outer_plates(self.state.model, self.plates)):  # the innermost selected
            if outer in self.state.selection:
                return outer, int(self.state.selection[outer])
        return None

    def _members(self) -> np.ndarray:
        """The flat elements the rows run over (all, or the restriction's members)."""
        shape = plate_shape(self.state.model, self.plates)
        restriction = self.restriction()
        if restriction is None:
            return np.arange(math.prod(shape))
        outer, index = restriction
        return np.flatnonzero(ancestor_index(self.state.model, self.plates, outer).ravel() == index)

    @param.depends("component", "order", "page", "page_size", "restrict", "state.summary", "state.draws",
                   "state.truth", "state.observed", "state.reference", watch=True)
    def _update_rows(self) -> None:
        """Recompute the rows of the page and send them to the plot."""
        if self._holding:
            return
        found = marginals(self.state, self.shown) if self.shown else None
        if found is None:
            self._elements = self._all = np.array([], dtype=int)
            for source in self.sources.values():
                replace_data(source, {})
            self._fit_rows(0, reference=False)
            self._send_highlight([])
            self._show_reading("")
            self._status.object = "No posterior summary yet: start a fit." if self.variable else "No plated variable."
            self._widgets["page"].visible = False
            self._widgets["restrict"].visible = False
            return
        c = self.param.component.objects.index(self.component)
        members = self._members()
        if self.order == "mean":
            members = members[np.argsort(found.mean[members, c], kind="stable")]
        self._all = members
        self._show_reading(forest_reading(found, members, c, " × ".join(self.plates),
                                          population_centre(self.state, self.shown, c)))
        pages = max(1, math.ceil(len(members) / self.page_size))
        slider = self._widgets["page"]
        slider.end = max(pages, 2)
        slider.visible = pages > 1
        if self.page > pages:
            self.page = pages  # recomputes through the watcher
            return
        start = (self.page - 1) * self.page_size
        self._elements = members[start:start + self.page_size]
        self._send_rows(found, c)
        self._update_highlight()
        self._update_status(len(members), start)

    def _labels(self, elements: np.ndarray) -> list[str]:
        shape = plate_shape(self.state.model, self.plates)
        dataset = self.state.summary if self.state.summary is not None else self.state.draws
        return element_labels(dataset, self.plates, np.unravel_index(elements, shape))

    def _send_rows(self, found: Marginals, c: int) -> None:
        e = self._elements
        row = np.arange(len(e), dtype=float)
        labels = self._labels(e)
        frame = pd.DataFrame({"mean": found.mean[e, c], "row": row, "low": found.low[e, c], "high": found.high[e, c],
                              "element": e, "label": labels})
        marker = frame.assign(mean=found.marker[e, c]) if found.marker is not None else {}
        if found.ref_mean is not None:
            ref = frame.assign(mean=found.ref_mean[e, c], low=found.ref_low[e, c], high=found.ref_high[e, c],
                               row=row + 0.3)
        else:
            ref = {}
        self._marker_label = found.marker_label
        replace_data(self.sources["rows"], frame)
        replace_data(self.sources["marker"], marker)
        replace_data(self.sources["reference"], ref)
        self._fit_rows(len(e), reference=found.ref_mean is not None)

    def _show_reading(self, text: str) -> None:
        """Show ``text`` as the line above the plot (``reading``)."""
        self.reading = text
        self._reading.object = text

    def _update_status(self, total: int, start: int) -> None:
        text = f"{self.variable}: rows {start + 1 if total else 0}–{start + len(self._elements)} of {total}"
        if self.order == "mean":
            text += ", sorted by mean"
        restriction = self.restriction()
        if restriction is not None:
            text += f", members of {element_label(self.state.summary, [restriction[0]], [restriction[1]])}"
        text += f" · dots: mean, bars: 90% interval; ✕ {self._marker_label}" if row_count(self.sources["marker"].data) else ""
        if self.state.reference is not None and self.variable in self.state.reference:
            text += "; grey: reference"
        self._status.object = text
        outer = [p for p in outer_plates(self.state.model, self.plates) if p in self.state.selection]
        self._widgets["restrict"].visible = bool(outer)

    # -- selection --------------------------------------------------------------------------------
    def selected_element(self) -> int | None:
        """The flat element of the shown variable that ``state.selection`` selects, if any."""
        plates = self.plates
        if not plates or any(p not in self.state.selection for p in plates):
            return None
        index = tuple(int(self.state.selection[p]) for p in plates)
        shape = plate_shape(self.state.model, plates)
        if any(not 0 <= i < n for i, n in zip(index, shape, strict=True)):
            return None
        return int(np.ravel_multi_index(index, shape))

    @param.depends("state.selection", watch=True)
    def _selection_changed(self) -> None:
        if not self.shown or self._holding:
            return
        members = self._members()
        if len(members) != len(self._all) or not np.array_equal(np.sort(members), np.sort(self._all)):
            self._hold(page=1)
            self._update_rows()  # a new restriction
        selected = self.selected_element()
        if selected is not None and selected not in self._elements and selected in self._all:
            self.page = int(np.flatnonzero(self._all == selected)[0]) // self.page_size + 1  # its page
        else:
            self._update_highlight()

    def _update_highlight(self) -> None:
        selected = self.selected_element()
        rows = np.flatnonzero(self._elements == selected) if selected is not None else []
        self._send_highlight(rows)

    def _send_highlight(self, rows: Sequence[int]) -> None:
        """Highlight ``rows`` (positions on the page) with a band and a marked label;
        nothing to redraw when they are the ones highlighted already (a new summary, the
        selection unchanged)."""
        y0 = [float(r) - 0.5 for r in rows]
        if list(self.sources["highlight"].data["y0"]) != y0:
            self.sources["highlight"].data = {"y0": y0, "y1": [y + 1.0 for y in y0]}
        self._label_rows(rows)

    def _tapped(self, event: Tap | DoubleTap) -> None:
        """A click on the plot selects the element of the nearest row."""
        y = event.y
        if y is None or not len(self._elements):
            return
        row = round(y)
        if 0 <= row < len(self._elements):
            self.select(int(self._elements[row]))

    def select(self, element: int) -> None:
        """Select flat element ``element`` of the shown variable (what a click on its row does)."""
        plates = self.plates
        index = np.unravel_index(element, plate_shape(self.state.model, plates))
        with one_recompute(self.figure.document):  # the linked views redraw
            self.state.selection = {**self.state.selection, **{p: int(i) for p, i in zip(plates, index, strict=True)}}

    @property
    def rows(self) -> pd.DataFrame:
        """The rows of the page shown: ``mean``, ``low``, ``high``, ``row`` (position from
        the top), ``element`` (flat index over the plates) and ``label``."""
        return as_frame(self.sources["rows"])

    # -- drawing ------------------------------------------------------------------------------------
    def _build_figure(self) -> figure:
        """Rows top to bottom (row 0 on top): the highlight, the intervals and the means,
        the reference's (grey, a little below) and the markers; a click selects a row."""
        # No height: the frame's, set from the rows (_fit_rows), makes it. The plot must not
        # shrink, or the scroll box around it squeezes it (and its rows) to its own height;
        # Bokeh's "fixed" height policy would also want a height, whose axes' share is unknown.
        fig = new_figure(height=None, x_axis_label="value", y_range=Range1d(), styles={"flex-shrink": "0"})
        fig.add_layout(LinearAxis(), "above")  # values in sight at the top of a long page too
        fig.hstrip("y0", "y1", source=self.sources["highlight"], fill_color="#ffc107", fill_alpha=0.55,
                   line_color="#ff8f00", line_width=1.5)
        drawn = [
            fig.segment("low", "row", "high", "row", source=self.sources["rows"], line_color="#1f77b4", line_width=2,
                        line_alpha=0.6),
            fig.segment("low", "row", "high", "row", source=self.sources["reference"], line_color="#7f7f7f",
                        line_width=1.5),
            fig.scatter("mean", "row", source=self.sources["reference"], color="#7f7f7f", size=4),
            fig.scatter("mean", "row", source=self.sources["marker"], marker="x", line_color="#d62728", size=9,
                        line_width=2),
        ]
        means = fig.scatter("mean", "row", source=self.sources["rows"], color="#1f77b4", size=6)
        # The highlight spans every x: it must not stretch the x range, which follows the rows.
        fig.x_range.renderers = [*drawn, means]
        fig.yaxis.ticker = FixedTicker(ticks=[])
        fig.yaxis.major_label_text_font_size = FOREST_LABEL_FONT_SIZE
        fig.add_tools(HoverTool(renderers=[means], tooltips=[("element", "@label"), ("mean", "@mean{0.000}"),
                                                             ("90%", "@low{0.000} to @high{0.000}")]))
        # Two quick clicks are a double tap to Bokeh, not two taps: both select.
        fig.on_event(Tap, self._tapped)
        fig.on_event(DoubleTap, self._tapped)
        return fig

    def _fit_rows(self, rows: int, reference: bool) -> None:
        """Make the frame as tall as ``rows`` rows (at least :data:`FOREST_MIN_ROWS`) of
        a fixed height, taller with a ``reference`` bar under each, row 0 on top."""
        shown = max(rows, FOREST_MIN_ROWS)
        self.figure.frame_height = shown * (FOREST_REFERENCE_ROW_HEIGHT if reference else FOREST_ROW_HEIGHT)
        # The larger start, at the bottom, puts row 0 on top; a reset returns to this page,
        # not to the first one drawn.
        bottom, top = shown - 0.5, -0.5
        self.figure.y_range.update(start=bottom, end=top, reset_start=bottom, reset_end=top)

    def _label_rows(self, selected: Sequence[int]) -> None:
        """Name every row of the page on the y axis with its label, the ``selected`` rows'
        marked with :data:`SELECTED_MARK`; nothing to send when the labels stay."""
        marked = {int(r) for r in selected}
        labels = {float(r): (SELECTED_MARK if r in marked else "") + str(label)
                  for r, label in enumerate(self.sources["rows"].data["label"])}
        axis = self.figure.yaxis[0]
        if labels != axis.major_label_overrides:
            axis.ticker.ticks = list(labels)
            axis.major_label_overrides = labels


_ROW_COLUMNS = ["mean", "row", "low", "high", "element", "label"]


class DetailView(Viewer):
    """The marginal density of the selected element of the selected variable
    (``state.variable`` and ``state.selection``), with its truth and reference.

    The title (an HTML heading with the CSS class :data:`DETAIL_TITLE_CLASS`) names
    the variable and the element, with its coordinate label when the data has one.
    A global variable shows its only element; a plated one waits for a selection.

    Args:
        state: the dashboard's state.
    """

    state = param.ClassSelector(class_=DashboardState, constant=True, doc="The dashboard's state.")
    title = param.String(default="", doc="What the view shows: the variable and its element.")

    def __init__(self, state: DashboardState, **params: Any) -> None:
        super().__init__(state=state, **params)
        self.density = DensityPlot()
        self._title = pn.pane.HTML("", css_classes=[DETAIL_TITLE_CLASS], margin=(0, 10))
        self._caption = markdown("", margin=(0, 10), styles={"font-size": "0.85em"})
        self._layout = pn.Column(self._title, pn.pane.Bokeh(self.density.figure, sizing_mode="stretch_width"),
                                 self._caption, sizing_mode="stretch_width")
        self._update()

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    def element(self) -> int | None:
        """The flat element shown (0 for a global variable); None when its plates lack a selection."""
        name = self.state.variable
        if not name or name not in {v.name for v in self.state.model.variables}:
            return None
        plates = plates_of(self.state.model, name)
        if any(p not in self.state.selection for p in plates):
            return None
        index = [int(self.state.selection[p]) for p in plates]
        return int(np.ravel_multi_index(index, plate_shape(self.state.model, plates))) if plates else 0

    @param.depends("state.variable", "state.selection", "state.summary", "state.draws", "state.truth",
                   "state.observed", "state.reference", watch=True)
    def _update(self) -> None:
        name = self.state.variable
        element = self.element()
        if element is None:
            missing = [p for p in plates_of(self.state.model, name) if p not in self.state.selection] if name else []
            self.title = f"{name}: select an element of {', '.join(missing)}" if name else "No variable selected"
            series: list[Series] = []
        else:
            plates = plates_of(self.state.model, name)
            self.title = name
            if plates:
                dataset = self.state.summary if self.state.summary is not None else self.state.draws
                self.title += " · " + element_label(dataset, plates, [self.state.selection[p] for p in plates])
            series = element_series(self.state, name, element)
        self._title.object = f"<h3 style='margin:0; font-size:1.15em'>{html.escape(self.title, quote=False)}</h3>"
        self.density.send(series)
        marker = "observed" if name and self.state.model.variable(name).observed else "truth"
        self._caption.object = caption(series, marker) if series else (
            "No posterior summary yet: start a fit." if element is not None else ""
        )

