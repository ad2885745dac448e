"""The runs of a run store, as the served app's *Runs* tab lists them: :class:`RunsList`.

A ``param.Parameterized`` state that never imports Panel: :meth:`RunsList.refresh`
reads the store's runs (newest first; live ones and those whose process ended alike,
see :class:`~pavi_viz.runner.StoredRun`), :attr:`RunsList.selected` holds the ids the
user ticked (kept across refreshes while the runs exist), and :func:`run_rows` gives
the table's columns. The view (:mod:`pavi_viz.ui.views.runs`) watches it; attaching to
a run is the dashboard's (:meth:`pavi_viz.ui.state.DashboardState.attach`), comparing
runs the comparison's (:mod:`pavi_viz.ui.compare`).

Reading the store is a query of a few milliseconds that never waits for a run's writer
(WAL mode: readers see the last commit), so the tab's refresh runs on the session's
event loop.
"""

from __future__ import annotations

import math
import time
from typing import Any

import param

from pavi_viz.runner import RunStore, StoredRun, StoreError
from pavi_viz.runner.store import duration_text

#: The table's columns, in order: (column, heading).
COLUMNS = (("id", "id"), ("name", "name"), ("model", "model"), ("family", "family"), ("state", "state"),
           ("steps", "steps"), ("elbo", "smoothed ELBO"), ("pareto_k", "Pareto k"), ("updated", "last written"))


class RunsList(param.Parameterized):
    """The runs of one store and the ones selected.

    Args:
        store: the run store (None: no store; the list stays empty and says so).
    """

    store = param.ClassSelector(class_=RunStore, allow_None=True, constant=True, doc="The run store listed.")
    runs = param.List(default=[], item_type=StoredRun, doc="The store's runs, newest first, as last read.")
    selected = param.List(default=[], item_type=int, doc="The ids of the selected runs, in the list's order.")
    message = param.String(default="", doc="What the last refresh has to say (an unreadable store, no runs).")

    def refresh(self) -> None:
        """Read the store's runs again; drop the selected ids that are gone."""
        if self.store is None:
            self.param.update(runs=[], selected=[], message="No run store: runs are not recorded on this server.")
            return
        try:
            runs = self.store.runs()
        except StoreError as err:
            self.message = str(err)
            return
        ids = {run.id for run in runs}
        self.param.update(runs=runs, selected=[i for i in self.selected if i in ids],
                          message="" if runs else f"No runs in {self.store.path} yet.")

    def select(self, ids: list[int]) -> None:
        """Select these runs (ids not listed are ignored), in the list's order."""
        wanted = set(ids)
        self.selected = [run.id for run in self.runs if run.id in wanted]

    def chosen(self) -> list[StoredRun]:
        """The selected runs, in the list's order."""
        wanted = set(self.selected)
        return [run for run in self.runs if run.id in wanted]


def run_rows(runs: list[StoredRun], now: float | None = None) -> dict[str, list[Any]]:
    """The table's columns (:data:`COLUMNS`), one row per run, as text and numbers."""
    now = time.time() if now is None else now
    return {
        "id": [run.id for run in runs],
        "name": [run.name for run in runs],
        "model": [run.model for run in runs],
        "family": [run.family for run in runs],
        "state": [run.state for run in runs],
        "steps": [f"{run.step:,} / {run.total_steps:,}" for run in runs],
        "elbo": [f"{run.smoothed_elbo:.6g}" if math.isfinite(run.smoothed_elbo) else "–" for run in runs],
        "pareto_k": ["–" if run.pareto_k is None else f"{run.pareto_k:.2f}" for run in runs],
        "updated": [f"{duration_text(now - run.updated)} ago" for run in runs],
    }


__all__ = ["COLUMNS", "RunsList", "run_rows"]
