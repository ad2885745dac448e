"""Posterior predictive checks: over the whole data, and for the selected plate element.

:class:`PredictiveCheck` draws, for each observed variable and event component, from
the posterior predictive draws in ``state.draws`` (dims ``("sample", *plates, *event
dims)``):

- **over the whole data set**: the distribution of the observed values (a thick
  black curve) against that of :data:`REPLICATES` replicated data sets, each one
  joint predictive draw of every observation (thin blue curves), as ArviZ's
  ``plot_ppc`` does; densities for continuous data (reflected at the support's
  bounds), frequencies per value for counts;
- **for the selected element** of a plate (a GRE group, a radon county, a school):
  the observed values under it, one column per observation with its predictive 90%
  interval (5% to 95%) and median, and the observed value as a dot, red when
  outside the interval.

Counts get whole-number ticks.

The observations under element ``e`` of plate ``P`` are those of an observed variable
that lists ``P`` (regular nesting: ``x[g, :, :]`` for group ``g``) or that lies in a
plate ragged-nested in ``P`` (the houses whose ``membership`` is county ``e``).

Inspecting the page: the Bokeh data source of the observed dots is named
:data:`OBSERVED_NAME` (columns ``position``, ``observed``, ``median``, ``low``,
``high``, ``label``, ``outside``); those of the whole data's curves
:data:`REPLICATED_NAME` and :data:`OBSERVED_CURVE_NAME` (columns ``xs``, ``ys``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import BasicTicker, ColumnDataSource, HoverTool
from bokeh.plotting import figure
from panel.viewable import Viewer

from pavi_viz.model import distributions
from pavi_viz.model.spec import PlateModel
from pavi_viz.ui.state import DashboardState
from pavi_viz.ui.views.figures import new_figure, new_source, replace_data
from pavi_viz.ui.views.marginals import (
    ancestor_index,
    as_table,
    component_labels,
    element_label,
    element_labels,
    kde,
    plate_shape,
    plates_of,
)
from pavi_viz.ui.views.text import markdown

#: Observations one plot shows at most (the first ones; a note says how many more).
MAX_OBSERVATIONS = 500
#: Names of the Bokeh data sources (see the module's docstring).
OBSERVED_NAME = "pavi-ppc-observed"
REPLICATED_NAME = "pavi-ppc-replicated"
OBSERVED_CURVE_NAME = "pavi-ppc-observed-curve"
#: Replicated data sets drawn over the whole data (the first predictive draws).
REPLICATES = 20
#: Counts spanning more values than this are drawn as densities, not per value.
MAX_COUNT_VALUES = 200

_COLUMNS = ["position", "observed", "median", "low", "high", "label", "outside", "color"]


def observations_under(model: PlateModel, name: str, plate: str, index: int) -> np.ndarray | None:
    """The flat elements (over its plates, C order) of observed variable ``name`` that
    lie under element ``index`` of ``plate``; None when ``name`` is not under ``plate``."""
    plates = plates_of(model, name)
    if plate in plates:
        axis = plates.index(plate)
        shape = plate_shape(model, plates)
        owner = np.broadcast_to(
            np.arange(shape[axis]).reshape([-1 if k == axis else 1 for k in range(len(plates))]), shape
        )
    else:
        owner = ancestor_index(model, plates, plate)
        if owner is None:
            return None
    return np.flatnonzero(owner.ravel() == index)


def plates_with_observations(model: PlateModel) -> list[str]:
    """The plates some observed variable lies under, in model order."""
    observed = [v.name for v in model.variables if v.observed]
    return [p.name for p in model.plates if any(observations_under(model, o, p.name, 0) is not None for o in observed)]


@dataclass(frozen=True)
class Replicated:
    """The distribution of a variable's observed values and of replicated data sets.

    Attributes:
        xs, ys: one curve per replicated data set (density, or frequency per value).
        observed_x, observed_y: the observed values' curve.
        counts: whether the curves are frequencies per whole value.
    """

    xs: list[np.ndarray]
    ys: list[np.ndarray]
    observed_x: np.ndarray
    observed_y: np.ndarray
    counts: bool


def replicated(predicted: np.ndarray, observed: np.ndarray, discrete: bool,
               bounds: tuple[float, float]) -> Replicated:
    """Curves of the observed values ``(n,)`` and of the first :data:`REPLICATES`
    replicated data sets among ``predicted`` ``(sample, n)`` (missing values left out).

    Counts (``discrete``) get the share of each whole value, from the least to the
    greatest seen, when they span at most :data:`MAX_COUNT_VALUES` values; otherwise,
    and for continuous data, a kernel density cut and reflected at ``bounds``.
    """
    sets = [row[np.isfinite(row)] for row in predicted[:REPLICATES]]
    observed = observed[np.isfinite(observed)]
    seen = np.concatenate([observed, *sets])
    counts = discrete and seen.size > 0 and seen.max() - seen.min() < MAX_COUNT_VALUES
    if counts:
        values = np.arange(seen.min(), seen.max() + 1)

        def curve(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            shares = np.bincount((data - values[0]).astype(int), minlength=len(values)) / max(data.size, 1)
            return values.astype(float), shares
    else:
        def curve(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return kde(data, bounds=bounds)
    curves = [curve(data) for data in sets]
    observed_x, observed_y = curve(observed)
    return Replicated([x for x, _ in curves], [y for _, y in curves], observed_x, observed_y, counts)


class PredictiveCheck(Viewer):
    """Observed data against posterior predictive draws, for the selected element of
    ``plate`` (``state.selection[plate]``).

    Args:
        state: the dashboard's state.
        plate: the plate whose selected element is checked; left out, the view
            follows the plates of ``state.variable`` (its outermost plate with
            observations under it), else takes the first such plate.
    """

    state = param.ClassSelector(class_=DashboardState, constant=True, doc="The dashboard's state.")
    plate = param.Selector(default=None, objects=[], doc="The plate whose selected element is checked.")

    def __init__(self, state: DashboardState, plate: str | None = None, **params: Any) -> None:
        super().__init__(state=state, **params)
        #: Whether the plate follows ``state.variable`` (no plate given).
        self.follow = plate is None
        #: The data source of each plot, by (observed variable, component label).
        self.sources: dict[tuple[str, str], ColumnDataSource] = {}
        self._notes: list[pn.pane.Markdown] = []
        self._counts: dict[str, int] = {}  # observations under the element, by variable (before the cap)
        self._message = markdown("", margin=(0, 10))
        self._plots = pn.Column(sizing_mode="stretch_width")
        self._select = pn.widgets.Select.from_param(self.param.plate, name="plate", width=160)
        self._layout = pn.Column(
            pn.Row(markdown("### Posterior predictive check", margin=(0, 10)), pn.HSpacer(), self._select),
            self._message, self._plots, sizing_mode="stretch_width",
        )
        self._build(plate)

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    @param.depends("state.model", watch=True)
    def _model_changed(self) -> None:
        self._build(None if self.follow else self.plate)

    def _build(self, plate: str | None) -> None:
        """Two plots per observed variable and component of the current model: over
        the whole data, and under the selected element."""
        model = self.state.model
        self.param.plate.objects = plates_with_observations(model)
        self.sources, self.whole_sources = {}, {}
        panes, self._notes, self._whole_notes, self._element_parts = [], [], [], []
        for variable in (v for v in model.variables if v.observed):
            integer = distributions.get(variable.distribution).discrete
            for label in component_labels(model, variable.name):
                key = (variable.name, label)
                title = f"{variable.name}[{label}]" if label else variable.name
                self.sources[key] = new_source(_COLUMNS, OBSERVED_NAME)
                self.whole_sources[key] = (new_source(["xs", "ys"], REPLICATED_NAME),
                                           new_source(["xs", "ys"], OBSERVED_CURVE_NAME))
                whole_note, element_note = markdown("", margin=(0, 10)), markdown("", margin=(0, 10))
                element = pn.Column(element_note, pn.pane.Bokeh(_figure(self.sources[key], title, integer),
                                                                sizing_mode="stretch_width"),
                                    sizing_mode="stretch_width")
                panes.append(pn.Column(
                    markdown(f"**{title}**", margin=(0, 10)), whole_note,
                    pn.pane.Bokeh(_whole_figure(*self.whole_sources[key], title, integer), sizing_mode="stretch_width"),
                    element, sizing_mode="stretch_width"))
                self._notes.append(element_note)
                self._whole_notes.append(whole_note)
                self._element_parts.append(element)
        self._plots.objects = panes
        with param.parameterized.batch_call_watchers(self):
            self.plate = plate if plate in self.param.plate.objects else self._default_plate()
        self._update()

    def _default_plate(self) -> str | None:
        choices = self.param.plate.objects
        if self.state.variable and self.state.variable in {v.name for v in self.state.model.variables}:
            for p in plates_of(self.state.model, self.state.variable):
                if p in choices:
                    return p
        return choices[0] if choices else None

    @param.depends("state.variable", watch=True)
    def _follow(self) -> None:
        if self.follow:
            plate = self._default_plate()
            if plate != self.plate and (plate in plates_of(self.state.model, self.state.variable)):
                self.plate = plate

    @property
    def element(self) -> int | None:
        """The selected element of ``plate``, if any."""
        if self.plate is None or self.plate not in self.state.selection:
            return None
        return int(self.state.selection[self.plate])

    @param.depends("plate", "state.selection", "state.draws", "state.observed", "state.watched", watch=True)
    def _update(self) -> None:
        model = self.state.model
        if self.plate not in [None, *(p.name for p in model.plates)] or any(
            name not in model.observed_names for name, _ in self.sources
        ):
            return  # a new model came in: _build follows
        draws, element = self.state.draws, self.element
        if draws is None:
            message = ("No posterior predictive draws: start a fit. Models too big for draws to be sent with "
                       "every summary (see `RunConfig.detail_draws`) have no predictive check here."
                       if self.state.summary is None else
                       "No posterior predictive draws: the run store keeps a stored run's summaries, not its draws."
                       if self.state.watched is not None else
                       "No posterior predictive draws: this model is too big for them to be sent with every summary.")
        elif self.plate is None:
            message = "This model has no plate with observed data under it: the check is over the whole data only."
        elif element is None:
            message = (f"Select an element of {self.plate} (click one in a forest plot) to compare its observed "
                       "data with posterior predictive draws too.")
        else:
            message = (f"Below each check of the whole data: the observed data under "
                       f"**{element_label(draws, [self.plate], [element])}**.")
        self._message.object = message
        keys = list(self.sources)
        for key, whole_note in zip(keys, self._whole_notes, strict=True):
            curves = self._replicated(*key) if draws is not None else None
            replicated_source, observed_source = self.whole_sources[key]
            replace_data(replicated_source, {"xs": curves.xs, "ys": curves.ys} if curves else {})
            replace_data(observed_source, {"xs": [curves.observed_x], "ys": [curves.observed_y]} if curves else {})
            whole_note.object = _whole_note(curves) if curves else ""
        per_element = draws is not None and element is not None
        for key, note, part in zip(keys, self._notes, self._element_parts, strict=True):
            frame = self._frame(*key) if per_element else None
            replace_data(self.sources[key], {} if frame is None else frame)
            note.object = self._note(*key, frame) if per_element else ""
            part.visible = per_element
        self._plots.visible = draws is not None

    def _replicated(self, name: str, label: str) -> Replicated | None:
        """The whole data's curves of ``name``'s component ``label`` (None: not observed)."""
        model, draws, observed = self.state.model, self.state.draws, self.state.observed
        if name not in draws or observed is None or name not in observed:
            return None
        c = component_labels(model, name).index(label)
        spec = distributions.get(model.variable(name).distribution)
        return replicated(as_table(draws[name], model, name, ["sample"])[:, :, c],
                          as_table(observed[name], model, name)[:, c], spec.discrete, spec.bounds)

    def _frame(self, name: str, label: str) -> pd.DataFrame | None:
        """The observations of ``name``'s component ``label`` under the selected element."""
        model, draws, observed = self.state.model, self.state.draws, self.state.observed
        if name not in draws or observed is None or name not in observed:
            return None
        elements = observations_under(model, name, self.plate, self.element)
        if elements is None:
            return None
        self._counts[name] = len(elements)
        elements = elements[:MAX_OBSERVATIONS]
        c = component_labels(model, name).index(label)
        predicted = as_table(draws[name], model, name, ["sample"])[:, elements, c]
        values = as_table(observed[name], model, name)[elements, c]
        low, median, high = np.quantile(predicted, [0.05, 0.5, 0.95], axis=0)
        plates = plates_of(model, name)
        labels = element_labels(draws, plates, np.unravel_index(elements, plate_shape(model, plates)))
        outside = (values < low) | (values > high)
        return pd.DataFrame({
            "position": np.arange(len(elements), dtype=float), "observed": values, "median": median,
            "low": low, "high": high, "label": labels, "outside": outside,
            "color": np.where(outside, "#d62728", "black"),
        })

    def _note(self, name: str, label: str, frame: pd.DataFrame | None) -> str:
        title = f"**{name}[{label}]**" if label else f"**{name}**"
        if frame is None or not len(frame):
            return f"{title}: not under this {self.plate}."
        total = self._counts.get(name, len(frame))
        inside = int((~frame["outside"].astype(bool)).sum())
        text = f"{title}: {inside} of {len(frame)} observed values inside their 90% predictive interval"
        if total > len(frame):
            text += f" (the first {len(frame)} of {total} observations shown)"
        return text


def _whole_note(curves: Replicated) -> str:
    shape = "share of each value" if curves.counts else "density"
    return (f"The whole data: {shape} of the observed values (black) and of {len(curves.xs)} replicated data sets "
            "(blue), each one draw of every observation from the posterior predictive. Observed data far off the "
            "blue band are what the model does not reproduce.")


def _whole_figure(replicated_source: ColumnDataSource, observed_source: ColumnDataSource, xlabel: str,
                  integer: bool) -> figure:
    """The replicated data sets' curves, thin, under the observed data's, thick."""
    fig = new_figure(height=220, min_height=220, x_axis_label=xlabel,
                     y_axis_label="share" if integer else "density")
    fig.multi_line("xs", "ys", source=replicated_source, line_color="#6baed6", line_alpha=0.5, line_width=1)
    fig.multi_line("xs", "ys", source=observed_source, line_color="black", line_width=2.5)
    if integer:
        fig.xaxis.ticker = BasicTicker(min_interval=1)
    return fig


def _figure(source: ColumnDataSource, ylabel: str, integer: bool) -> figure:
    """Predictive intervals and medians, and the observed dots, of one source's rows."""
    fig = new_figure(height=260, min_height=260, x_axis_label="observation", y_axis_label=ylabel)
    fig.xaxis.ticker = BasicTicker(min_interval=1)  # observations are numbered
    if integer:
        fig.yaxis.ticker = BasicTicker(min_interval=1)
    fig.segment("position", "low", "position", "high", source=source, line_color="#9ecae1", line_width=6)
    fig.scatter("position", "median", source=source, marker="dash", color="#3182bd", size=12)
    observed = fig.scatter("position", "observed", source=source, color="color", size=7)
    fig.add_tools(HoverTool(renderers=[observed], tooltips=[
        ("element", "@label"), ("observed", "@observed{0.000}"), ("median", "@median{0.000}"),
        ("90%", "@low{0.000} to @high{0.000}"),
    ]))
    return fig
