"""The *Runs* tab: the runs of the server's run store, to watch one or compare several.

:class:`RunsView` shows a :class:`~pavi_viz.ui.runs.RunsList` as a table (a plain Bokeh
``DataTable``, whose cells show their text as text, never as markup: run and model
names come from files people share), newest first, with a tick box per run. Ticking
runs selects them; *Watch* shows the one selected in the *Fit* tab (live while its
process trains it: :meth:`~pavi_viz.ui.state.DashboardState.attach`), and two or more
selected are compared below the table (:class:`~pavi_viz.ui.views.compare.CompareView`).

Its DOM and Bokeh names, for tests and page scripts: :data:`SOURCE_NAME` (the table's
``ColumnDataSource``: one row per run, column ``id`` the run's id).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import panel as pn
from bokeh.models import DataTable, TableColumn
from panel.io import unlocked
from panel.viewable import Viewer

from pavi_viz.runner import StoreError
from pavi_viz.ui.compare import RunComparison
from pavi_viz.ui.runs import COLUMNS, RunsList, run_rows
from pavi_viz.ui.views.compare import CompareView
from pavi_viz.ui.views.figures import new_source, replace_data
from pavi_viz.ui.views.text import alert, markdown

#: The name of the table's ColumnDataSource.
SOURCE_NAME = "pavi-runs-source"
#: Pixels of the table's height (it scrolls beyond).
TABLE_HEIGHT = 280
#: What the tab says above the table.
INTRO = ("Runs recorded in this server's run store: those of `pavi-viz fit` (in a terminal, on this machine) "
         "and of this dashboard. Tick one and press **Watch** to follow it in the *Fit* tab, live while it "
         "trains; tick two or more to compare them below.")


class RunsView(Viewer):
    """The table of a store's runs, *Watch* and *Refresh*, and the comparison of the
    selected runs.

    Args:
        runs: the list's state (its store read by :meth:`refresh`).
        on_watch: what *Watch* does with the selected run's id (the app shows it in
            the *Fit* tab); an exception it raises is shown under the buttons.
    """

    def __init__(self, runs: RunsList, on_watch: Callable[[int], None], **params: Any) -> None:
        super().__init__(**params)
        self.runs = runs
        self._on_watch = on_watch
        self.source = new_source([name for name, _ in COLUMNS], name=SOURCE_NAME)
        self.table = DataTable(source=self.source, columns=[TableColumn(field=name, title=title)
                                                            for name, title in COLUMNS],
                               selectable="checkbox", index_position=None, height=TABLE_HEIGHT,
                               sizing_mode="stretch_width")
        self.source.selected.on_change("indices", self._ticked)
        self.watch_button = pn.widgets.Button(label="Watch", color="primary", disabled=True, width=120)
        self.watch_button.on_click(self._watch)
        self.refresh_button = pn.widgets.Button(label="Refresh", width=120)
        self.refresh_button.on_click(lambda _: self.refresh())
        self.message = markdown("", margin=(0, 10))
        self.notice = alert("", alert_type="warning", visible=False)
        self.comparison = RunComparison(store=runs.store)
        self.compare = CompareView(self.comparison)
        runs.param.watch(self._selection_changed, "selected")
        self._layout = pn.Column(
            markdown(INTRO, margin=(0, 10)),
            pn.pane.Bokeh(self.table, sizing_mode="stretch_width"),
            pn.Row(self.watch_button, self.refresh_button),
            self.message,
            self.notice,
            self.compare,
            sizing_mode="stretch_width",
        )

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    def refresh(self) -> None:
        """Read the store again: the table, the ticks (kept on runs still there) and,
        when one of the compared runs wrote since, the comparison (a live run's curve
        grows; finished ones are not sent to the browser again)."""
        self.runs.refresh()
        replace_data(self.source, run_rows(self.runs.runs))
        self._show_selection()
        self.message.object = self.runs.message
        written = {run.id: run.updated for run in self.runs.chosen()}
        if written != {run.id: run.updated for run in self.comparison.runs}:  # as the comparison read them
            self.compare.refresh()

    def _ticked(self, attr: str, old: list[int], new: list[int]) -> None:
        """The browser's ticks, as the list's selection (by run id)."""
        ids = list(self.source.data["id"])
        self.runs.select([ids[i] for i in new if i < len(ids)])

    def _show_selection(self) -> None:
        """Tick the selected runs' rows (their places move as new runs come first)."""
        ids = list(self.source.data["id"])
        indices = [ids.index(i) for i in self.runs.selected if i in ids]
        if indices != list(self.source.selected.indices):
            with unlocked():
                self.source.selected.indices = indices

    def _selection_changed(self, *_: Any) -> None:
        self.watch_button.disabled = len(self.runs.selected) != 1
        self.comparison.run_ids = list(self.runs.selected)  # it reads them and redraws

    def _watch(self, *_: Any) -> None:
        if len(self.runs.selected) != 1:
            return
        try:
            self._on_watch(self.runs.selected[0])
        except (StoreError, ValueError) as err:  # either names its culprit (a ModelError is a ValueError)
            self.notice.param.update(object=f"{type(err).__name__}: {err}", visible=True)
        else:
            self.notice.visible = False


__all__ = ["INTRO", "SOURCE_NAME", "TABLE_HEIGHT", "RunsView"]
