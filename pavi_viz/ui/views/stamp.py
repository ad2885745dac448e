"""One line over the posterior views: which step of which run they show, and whether
the fit looks settled (:mod:`pavi_viz.ui.convergence`).

The views refresh with each posterior summary, and a summary taken while the fit
still moves can look very different from the next (eight schools' thetas at step 773
and at step 815). The line says what is shown, e.g.::

    Posterior at step 2,600 of run-3 · since step 2,100: means moved 0.04 sd at most
    (mu_g), smoothed ELBO +0.01% · looks settled
"""

from __future__ import annotations

import math
from typing import Any

import panel as pn
import param
from panel.viewable import Viewer

from pavi_viz.ui.convergence import SETTLED_SHIFT
from pavi_viz.ui.state import DashboardState
from pavi_viz.ui.views.text import markdown

#: What the line says before a run's first summary.
WAITING = "No posterior yet: press **Start**. The views below fill in with the run's first summary."


def stamp_text(state: DashboardState) -> str:
    """The line for what ``state`` shows now (Markdown; names in code spans)."""
    stamp = state.stamp
    if stamp is None or state.run is None:
        return WAITING
    text = f"Posterior at step **{stamp.step:,}** of {state.run.name}"
    if state.run_state != "running":
        text += f" ({state.run_state})"
    change = state.settling
    if change is None:
        return text
    elbo = f", smoothed ELBO {change.elbo_change:+.2%}" if math.isfinite(change.elbo_change) else ""
    verdict = ("**looks settled**" if change.settled
               else f"still moving (settled: under {SETTLED_SHIFT} sd and 0.1% of the ELBO)")
    return (f"{text} · since step {change.since_step:,}: means moved {change.shift:.2f} sd at most "
            f"(`{change.moved_most}`){elbo} · {verdict}")


class PosteriorStamp(Viewer):
    """The line of :func:`stamp_text`, kept up to date.

    Args:
        state: the dashboard's state.
    """

    state = param.ClassSelector(class_=DashboardState, constant=True, doc="The dashboard's state.")

    def __init__(self, state: DashboardState, **params: Any) -> None:
        super().__init__(state=state, **params)
        self._line = markdown(stamp_text(state), margin=(0, 10), styles={"font-size": "0.9em"})

    def __panel__(self) -> pn.viewable.Viewable:
        return self._line

    @param.depends("state.summary", "state.run_state", "state.run", watch=True)
    def _update(self) -> None:
        text = stamp_text(self.state)
        if self._line.object != text:
            self._line.object = text
