"""One line over the posterior views: which step of which run they show, whether the
fit looks settled, and whether it can be trusted (:mod:`pavi_viz.ui.convergence`).

The views refresh with each posterior summary, and a summary taken while the fit
still moves can look very different from the next (eight schools' thetas at step 773
and at step 815). A fit can also settle on a q far from the posterior, which the Pareto
k of the summary's importance check tells. The line says what is shown, e.g.::

    Posterior at step 2,600 of run-3 · since step 2,100: means moved 0.04 sd at most
    (mu_g), smoothed ELBO +0.01% · looks settled · Pareto k 0.42 (PSIS-corrected
    draws: trustworthy)

and a bar at its left is coloured by the Pareto k's verdict (:data:`VERDICT_COLOURS`);
the words say it too, for those who cannot tell the colours apart.
"""

from __future__ import annotations

import math
from typing import Any

import panel as pn
import param
from panel.viewable import Viewer

from pavi_viz.inference.importance import PARETO_K_LIMIT
from pavi_viz.ui.convergence import SETTLED_SHIFT, Trust, Verdict, trust
from pavi_viz.ui.state import DashboardState
from pavi_viz.ui.views.text import markdown

#: What the line says before a run's first summary.
WAITING = "No posterior yet: press **Start**. The views below fill in with the run's first summary."
#: The colour of the bar at the line's left, per Pareto k verdict: green, amber, red, grey.
VERDICT_COLOURS: dict[Verdict, str] = {
    "corrected": "#2e7d32", "close": "#f9a825", "far": "#c62828", "unchecked": "#9e9e9e",
}


def trust_text(check: Trust) -> str:
    """The Pareto k and its verdict, in words (Markdown)."""
    verdict = check.verdict
    if verdict == "unchecked":
        return "Pareto k not computed (model too large to weigh whole draws)"
    k = "∞" if check.pareto_k == math.inf else f"{check.pareto_k:.2f}"
    if verdict == "corrected":
        return f"Pareto k {k} (PSIS-corrected draws: **trustworthy**)"
    if verdict == "close":
        return f"Pareto k {k} (under {PARETO_K_LIMIT}: q is **close** to the posterior; {_why_uncorrected(check)})"
    return f"Pareto k {k} > {PARETO_K_LIMIT}: **q may be far off the posterior**; compare with NUTS (MCMC)"


def _why_uncorrected(check: Trust) -> str:
    """Why the draws of a "close" fit are not (reliably) corrected. (k is over its
    bound only where the number of draws weighed is known: see :attr:`Trust.bound`.)"""
    if check.resampled:  # resampled though k is over its bound (``correct="psis"``)
        return f"PSIS-resampled draws, but {check.draws:,} weighed draws are too few for a reliable correction at this k"
    if check.pareto_k > check.bound:
        return f"its draws are shown uncorrected: {check.draws:,} weighed draws are too few to correct them at this k"
    return "its draws are shown uncorrected"


def stamp_text(state: DashboardState) -> str:
    """The line for what ``state`` shows now (Markdown; names in code spans)."""
    stamp = state.stamp
    if stamp is None or not state.run_name:
        return WAITING
    parts = [f"Posterior at step **{stamp.step:,}** of {state.run_name}"
             + ("" if state.run_state == "running" else f" ({state.run_state})")]
    change = state.settling
    if change is not None:
        elbo = f", smoothed ELBO {change.elbo_change:+.2%}" if math.isfinite(change.elbo_change) else ""
        parts.append(f"since step {change.since_step:,}: means moved {change.shift:.2f} sd at most "
                     f"(`{change.moved_most}`){elbo}")
        parts.append("**looks settled**" if change.settled
                     else f"still moving (settled: under {SETTLED_SHIFT} sd and 0.1% of the ELBO)")
    parts.append(trust_text(trust(stamp.summary)))
    return " · ".join(parts)


def bar_styles(state: DashboardState) -> dict[str, str]:
    """The line's styles: its left bar in the colour of the Pareto k verdict of the
    summary shown (transparent before one), so that the text never shifts."""
    colour = "transparent" if state.summary is None else VERDICT_COLOURS[trust(state.summary).verdict]
    return {"font-size": "0.9em", "border-left": f"4px solid {colour}", "padding-left": "6px"}


class PosteriorStamp(Viewer):
    """The line of :func:`stamp_text`, kept up to date.

    Args:
        state: the dashboard's state.
    """

    state = param.ClassSelector(class_=DashboardState, constant=True, doc="The dashboard's state.")

    def __init__(self, state: DashboardState, **params: Any) -> None:
        super().__init__(state=state, **params)
        self._line = markdown(stamp_text(state), margin=(0, 10), styles=bar_styles(state))

    def __panel__(self) -> pn.viewable.Viewable:
        return self._line

    @param.depends("state.summary", "state.run_state", "state.run_name", watch=True)
    def _update(self) -> None:
        text, styles = stamp_text(self.state), bar_styles(self.state)
        if self._line.object != text:
            self._line.object = text
        if self._line.styles != styles:
            self._line.styles = styles
