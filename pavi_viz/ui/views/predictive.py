"""Posterior predictive checks for the selected plate element.

:class:`PredictiveCheck` draws, for the selected element of a plate (a GRE group, a
radon county, a school), the observed values under it against the posterior
predictive draws of them (from ``state.draws``, dims ``("sample", *plates, *event
dims)``): one plot per observed variable and event component, one column per
observation with its predictive 90% interval (5% to 95%) and median, and the
observed value as a dot, red when outside the interval.

The observations under element ``e`` of plate ``P`` are those of an observed variable
that lists ``P`` (regular nesting: ``x[g, :, :]`` for group ``g``) or that lies in a
plate ragged-nested in ``P`` (the houses whose ``membership`` is county ``e``).

Inspecting the page: the Bokeh data source of the observed dots is named
:data:`OBSERVED_NAME` (columns ``position``, ``observed``, ``median``, ``low``,
``high``, ``label``, ``outside``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import ColumnDataSource, HoverTool
from bokeh.plotting import figure
from panel.viewable import Viewer

from pavi_viz.model.spec import PlateModel
from pavi_viz.ui.state import DashboardState
from pavi_viz.ui.views.figures import new_figure, new_source, replace_data
from pavi_viz.ui.views.marginals import (
    ancestor_index,
    as_table,
    component_labels,
    element_label,
    element_labels,
    plate_shape,
    plates_of,
)
from pavi_viz.ui.views.text import markdown

#: Observations one plot shows at most (the first ones; a note says how many more).
MAX_OBSERVATIONS = 500
#: Name of the observed dots' Bokeh data source (see the module's docstring).
OBSERVED_NAME = "pavi-ppc-observed"

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
        """One plot per observed variable and component of the current model."""
        model = self.state.model
        self.param.plate.objects = plates_with_observations(model)
        self.sources = {}
        panes = []
        for variable in (v for v in model.variables if v.observed):
            for label in component_labels(model, variable.name):
                source = new_source(_COLUMNS, OBSERVED_NAME)
                self.sources[variable.name, label] = source
                title = f"{variable.name}[{label}]" if label else variable.name
                panes.append(pn.Column(markdown(f"**{title}**", margin=(0, 10)),
                                       pn.pane.Bokeh(_figure(source, title), sizing_mode="stretch_width"),
                                       sizing_mode="stretch_width"))
        self._plots.objects = panes
        self._notes = [pane.objects[0] for pane in panes]
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

    @param.depends("plate", "state.selection", "state.draws", "state.observed", watch=True)
    def _update(self) -> None:
        model = self.state.model
        if self.plate not in [None, *(p.name for p in model.plates)] or any(
            name not in model.observed_names for name, _ in self.sources
        ):
            return  # a new model came in: _build follows
        draws, element = self.state.draws, self.element
        message = ""
        if self.plate is None:
            message = "This model has no plate with observed data under it."
        elif draws is None:
            message = ("No posterior predictive draws: start a fit. Models too big for draws to be sent with "
                       "every summary (see `RunConfig.detail_draws`) have no predictive check here."
                       if self.state.summary is None else
                       "No posterior predictive draws: this model is too big for them to be sent with every summary.")
        elif element is None:
            message = (f"Select a {self.plate} (click one in a forest plot) to compare its observed data with "
                       "posterior predictive draws.")
        self._message.object = message
        shown = not message
        for note, ((name, label), source) in zip(self._notes, self.sources.items(), strict=True):
            frame = self._frame(name, label) if shown else None
            replace_data(source, {} if frame is None else frame)
            note.object = self._note(name, label, frame) if shown else f"**{name}{f'[{label}]' if label else ''}**"
        if shown:
            self._message.object = f"Observed data under **{element_label(draws, [self.plate], [element])}**."
        self._plots.visible = shown

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


def _figure(source: ColumnDataSource, ylabel: str) -> figure:
    """Predictive intervals and medians, and the observed dots, of one source's rows."""
    fig = new_figure(height=260, min_height=260, x_axis_label="observation", y_axis_label=ylabel)
    fig.segment("position", "low", "position", "high", source=source, line_color="#9ecae1", line_width=6)
    fig.scatter("position", "median", source=source, marker="dash", color="#3182bd", size=12)
    observed = fig.scatter("position", "observed", source=source, color="color", size=7)
    fig.add_tools(HoverTool(renderers=[observed], tooltips=[
        ("element", "@label"), ("observed", "@observed{0.000}"), ("median", "@median{0.000}"),
        ("90%", "@low{0.000} to @high{0.000}"),
    ]))
    return fig
