"""Runs of the run store side by side: the state of the comparison view.

:class:`RunComparison` is a ``param.Parameterized`` object that never imports Panel or
Bokeh: :class:`~pavi_viz.ui.views.compare.CompareView` shows it, and a notebook or a test
can read it without any display. It reads a :class:`~pavi_viz.runner.store.RunStore` and
hands out typed records:

- :meth:`RunComparison.curves`: one :class:`Curve` per run, its ELBO against the step
  or the training seconds (``align``);
- :meth:`RunComparison.table`: one :class:`RunRow` per run: what it is, its settings
  (with every setting that differs between the runs), its final ELBO, Pareto k and how
  its ELBO ranks among the runs of the same model;
- :meth:`RunComparison.globals`: one :class:`GlobalMarginal` per element of each global
  latent variable that the runs' posterior summaries share, with each run's estimate.

ELBOs rank only within a model: the ELBO bounds the log evidence of the model and data a
run fitted, so the ELBOs of two models (or of one model on two datasets) say nothing
about which fit is better. Runs count as the same model when the store holds the same
model JSON (its data included) for both; runs fitted from compiled models (no JSON
stored) by the model's name.

Runs can disappear while they are compared (someone deletes them): :meth:`refresh`
reloads the store's runs, drops the missing ones from ``run_ids`` and says which in
``message``; a run that disappears between two refreshes reads as one without points
or summary.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import param
import xarray as xr

from pavi_viz.runner.store import RunStore, StoredRun, StoreError

#: Settings the table shows in columns of their own (so not among ``RunRow.other_settings``).
OWN_COLUMNS = ("family", "steps", "lr", "particles", "seed")


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays has no single truth value
class Curve:
    """The ELBO history of one run (arrays of one length, oldest point first).

    Attributes:
        run_id: the run's id. label: ``"3 · eight_schools · pavi-e"`` (see :func:`label`).
        x: the step, or the training seconds (``Point.elapsed``), per the comparison's
            ``align``. steps: the step of each point (whatever ``align``).
        smoothed_elbo, elbo: the smoothed and the raw ELBO (NaN where unknown).
    """

    run_id: int
    label: str
    x: np.ndarray
    steps: np.ndarray
    smoothed_elbo: np.ndarray
    elbo: np.ndarray


@dataclass(frozen=True)
class RunRow:
    """One run of the comparison's table.

    Attributes:
        id, label, name, model, family, state: the run's (see :class:`StoredRun`).
        step, total_steps: the steps done and the steps it aims at.
        lr, particles, seed: those settings (None when not set).
        other_settings: the other settings that differ between the compared runs, as
            ``(name, value)`` pairs (values as JSON reads them; the same names in
            every row, sorted).
        final_elbo: the smoothed ELBO at the last stored step, or None before the first.
        pareto_k: the Pareto k of the run's importance check, or None when unknown.
        best: whether this run has the best final ELBO among the compared runs of the
            same model (False when it is the only one).
        note: one line on how its ELBO compares (or why it cannot be compared).
    """

    id: int
    label: str
    name: str
    model: str
    family: str
    state: str
    step: int
    total_steps: int
    lr: float | None
    particles: int | None
    seed: int | None
    other_settings: tuple[tuple[str, Any], ...]
    final_elbo: float | None
    pareto_k: float | None
    best: bool
    note: str


@dataclass(frozen=True)
class Estimate:
    """One run's posterior summary of one element of a global variable (all None when
    the run has no summary).

    Attributes:
        run_id, label: the run. mean, sd: the posterior mean and standard deviation.
        low, high: the widest central interval the summary has (None without one).
        interval: its levels, ``"5%–95%"`` (None without one).
    """

    run_id: int
    label: str
    mean: float | None = None
    sd: float | None = None
    low: float | None = None
    high: float | None = None
    interval: str | None = None


@dataclass(frozen=True)
class GlobalMarginal:
    """One element of a global latent variable (in no plate), across the compared runs.

    Attributes:
        variable: its name. element: the element's label within the variable
            (``""`` for a scalar, ``"0"``, ``"0,1"`` by position, or the summary's
            coordinate labels). estimates: one per compared run, in ``run_ids`` order.
    """

    variable: str
    element: str
    estimates: tuple[Estimate, ...]

    @property
    def title(self) -> str:
        """``"mu"``, or ``"mu[0]"`` for an element of a vector."""
        return f"{self.variable}[{self.element}]" if self.element else self.variable


def label(run: StoredRun) -> str:
    """The run's label in legends and tables: id, name (and model, when the name is not
    the model's), family: ``"3 · eight_schools · pavi-e"``."""
    parts = [str(run.id), run.name, *([run.model] if run.model != run.name else []), run.family]
    return " · ".join(parts)


class RunComparison(param.Parameterized):
    """Two or more runs of a store, compared (see the module's notes).

    A change of ``store`` or ``run_ids`` reloads the runs (:meth:`refresh`); call
    :meth:`refresh` to read runs that are still training again.
    """

    store = param.ClassSelector(class_=RunStore, allow_None=True, doc="The run store the runs are in.")
    run_ids = param.List(default=[], item_type=int, doc="The compared runs' ids, in the order they were chosen.")
    align = param.Selector(default="step", objects={"by step": "step", "by training time": "time"},
                           doc="The ELBO curves' x: the step, or the training seconds.")
    message = param.String(default="", doc="What went wrong reading the store, or which runs were dropped.")
    refreshed = param.Event(doc="Triggered after each refresh: the records may have changed.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._runs: dict[int, StoredRun] = {}  # the selected runs, as the last refresh read them
        self._dropped = ""  # the last drop's note: it stays until the selection changes
        self.refresh()

    @property
    def runs(self) -> list[StoredRun]:
        """The compared runs, in ``run_ids`` order, as the last refresh read them."""
        return [self._runs[i] for i in self.run_ids if i in self._runs]

    @param.depends("store", "run_ids", watch=True)
    def _selection_changed(self) -> None:
        self._dropped = ""
        self.refresh()

    def refresh(self) -> None:
        """Read the selected runs again; drop those no longer in the store (``message``
        says which); then trigger ``refreshed``. A store that cannot be read leaves the
        selection as it is, with the error in ``message``."""
        error = ""
        try:
            # Without a store there is nothing to read, and nothing to drop.
            stored = {run.id: run for run in self.store.runs()} if self.store is not None else {}
            missing = [i for i in self.run_ids if i not in stored] if self.store is not None else []
            if missing:
                gone = ", ".join(label(self._runs[i]) if i in self._runs else str(i) for i in missing)
                self._dropped = (f"Run{'s' if len(missing) > 1 else ''} {gone} "
                                 f"{'are' if len(missing) > 1 else 'is'} no longer in the store {self.store.path} "
                                 "(deleted?): dropped from the comparison.")
                with param.discard_events(self):  # our own drop: no new selection to refresh for
                    self.run_ids = [i for i in self.run_ids if i in stored]
            self._runs = {i: stored[i] for i in self.run_ids if i in stored}
        except StoreError as err:
            error = f"The run store cannot be read: {err}"
        self.message = " ".join(part for part in (self._dropped, error) if part)
        self.param.trigger("refreshed")

    # -- records ---------------------------------------------------------------------------
    def curves(self) -> list[Curve]:
        """One ELBO curve per compared run, in ``run_ids`` order."""
        out = []
        for run in self.runs:
            points = self._read(lambda: self.store.points(run.id), [])
            steps = np.array([p.step for p in points], dtype=np.int64)
            x = steps.astype(float) if self.align == "step" else np.array([p.elapsed for p in points], dtype=float)
            out.append(Curve(run.id, label(run), x, steps, np.array([p.smoothed_elbo for p in points], dtype=float),
                             np.array([p.elbo for p in points], dtype=float)))
        return out

    def table(self) -> list[RunRow]:
        """One row per compared run, in ``run_ids`` order (see :class:`RunRow`)."""
        runs = self.runs
        differing = _differing_settings([run.settings for run in runs])
        groups: dict[str, list[StoredRun]] = {}
        for run in runs:
            groups.setdefault(_model_key(run), []).append(run)
        rows = []
        for run in runs:
            final = _final_elbo(run)
            best, note = _ranking(run, groups[_model_key(run)])
            rows.append(RunRow(
                id=run.id, label=label(run), name=run.name, model=run.model, family=run.family, state=run.state,
                step=run.step, total_steps=run.total_steps, lr=run.settings.get("lr"),
                particles=run.settings.get("particles"), seed=run.settings.get("seed"),
                other_settings=tuple((key, run.settings.get(key)) for key in differing),
                final_elbo=final, pareto_k=run.pareto_k, best=best, note=note))
        return rows

    def globals(self) -> list[GlobalMarginal]:
        """The elements of the global latent variables that every compared run with a
        summary has (same name, same shape), in the first such run's order; each with
        one :class:`Estimate` per compared run (empty ones for runs without a summary:
        still training before their first, failed, or malformed)."""
        runs = self.runs
        summaries = {run.id: self._read(lambda run=run: self.store.summary(run.id), None) for run in runs}
        globals_ = {i: _global_variables(s.summary) for i, s in summaries.items() if s is not None}
        if not globals_:
            return []
        first, *others = globals_.values()
        shared = [name for name, array in first.items()
                  if all(name in other and other[name].shape == array.shape for other in others)]
        out = []
        for name in shared:
            labels = _element_labels(first[name])
            per_run = [_estimates(run, globals_[run.id][name]) if run.id in globals_ else None for run in runs]
            for e, element in enumerate(labels):
                out.append(GlobalMarginal(name, element, tuple(
                    estimates[e] if estimates is not None else Estimate(run.id, label(run))
                    for run, estimates in zip(runs, per_run, strict=True))))
        return out

    # -- reading ---------------------------------------------------------------------------
    def _read(self, read: Any, default: Any) -> Any:
        """``read()``, or ``default`` when there is no store or it fails to read (a run
        deleted since the last refresh reads as empty: the next refresh drops it)."""
        if self.store is None:
            return default
        try:
            return read()
        except StoreError:
            return default


def _model_key(run: StoredRun) -> str:
    """What identifies the run's model and data: the hash of its stored JSON (the store
    keeps it with the run), else its name."""
    return "json:" + run.model_hash if run.model_hash is not None else "name:" + run.model


def _final_elbo(run: StoredRun) -> float | None:
    return run.smoothed_elbo if math.isfinite(run.smoothed_elbo) else None


def _ranking(run: StoredRun, same_model: list[StoredRun]) -> tuple[bool, str]:
    """Whether ``run`` has the best final ELBO of ``same_model`` (the compared runs of its
    model, itself among them), and a note that says so, or why it is not ranked."""
    final = _final_elbo(run)
    if final is None:
        return False, "no ELBO yet"
    ranked = [other for other in same_model if _final_elbo(other) is not None]
    if len(ranked) < 2:
        return False, "not ranked: no other run of its model and data has an ELBO (other models' are not comparable)"
    best = max(ranked, key=_final_elbo)
    if best.id == run.id:
        return True, f"best final ELBO of the {len(ranked)} runs of this model and data"
    return False, f"{best.smoothed_elbo - final:.4g} below run {best.id}, the best of {len(ranked)} runs of this model"


def _differing_settings(settings: list[dict[str, Any]]) -> list[str]:
    """The settings (not in :data:`OWN_COLUMNS`) whose values are not the same in all of
    ``settings`` (a missing one counts as None), sorted."""
    keys = sorted(set().union(*settings) - set(OWN_COLUMNS)) if settings else []
    return [key for key in keys
            if len({json.dumps(s.get(key), sort_keys=True, default=str) for s in settings}) > 1]


def _global_variables(summary: xr.Dataset) -> dict[str, xr.DataArray]:
    """The summary's variables in no plate: whose dims besides ``stat`` are all event
    dims (named ``f"{name}_dim_{i}"``, as :meth:`Posterior.summary` names them)."""
    return {str(name): array for name, array in summary.data_vars.items()
            if "stat" in array.dims
            and all(dim == "stat" or str(dim).startswith(f"{name}_dim_") for dim in array.dims)}


def _element_labels(array: xr.DataArray) -> list[str]:
    """One label per element of a global variable's array (dims ``stat`` + event dims),
    in C order: ``[""]`` for a scalar; its coordinates' values where it has them, else
    the positions, joined by commas."""
    dims = [d for d in array.dims if d != "stat"]
    if not dims:
        return [""]
    axes = [[str(v) for v in array.coords[d].values] if d in array.coords else [str(i) for i in range(array.sizes[d])]
            for d in dims]
    return [",".join(axes[k][i] for k, i in enumerate(index)) for index in np.ndindex(*(len(a) for a in axes))]


def _central_interval(array: xr.DataArray) -> tuple[str, str, str] | None:
    """The widest central interval among the summary's quantiles: the stat labels of its
    two ends and its name (``("5%", "95%", "5%–95%")``), or None without one."""
    if "quantile" not in array.coords:
        return None
    levels = {str(stat): float(q) for stat, q in zip(array.coords["stat"].values, array.coords["quantile"].values,
                                                     strict=True) if math.isfinite(float(q))}
    pairs = [(low, high) for low, q in levels.items() for high, r in levels.items()
             if q < 0.5 and math.isclose(q + r, 1.0, abs_tol=1e-9)]
    if not pairs:
        return None
    low, high = min(pairs, key=lambda pair: levels[pair[0]])
    return low, high, f"{low}–{high}"


def _estimates(run: StoredRun, array: xr.DataArray) -> list[Estimate]:
    """The run's estimates of every element of a global variable's array, in C order."""
    stats = [str(s) for s in array.coords["stat"].values]
    values = np.asarray(array.transpose("stat", ...).values, dtype=float).reshape(len(stats), -1)

    def stat(name: str, element: int) -> float | None:
        return float(values[stats.index(name), element]) if name in stats else None

    interval = _central_interval(array)
    return [Estimate(run.id, label(run), stat("mean", e), stat("sd", e),
                     stat(interval[0], e) if interval else None, stat(interval[1], e) if interval else None,
                     interval[2] if interval else None)
            for e in range(values.shape[1])]


__all__ = ["OWN_COLUMNS", "Curve", "Estimate", "GlobalMarginal", "RunComparison", "RunRow", "label"]
