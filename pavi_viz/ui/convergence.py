"""Has the fit settled? What changed between two posterior summaries of a run.

A dashboard shows one posterior summary at a time, refreshed as training goes. A
reader needs to know which step a view shows, and whether the views would still
change much: :func:`settling` compares the summary shown with the one before it,

- the **shift**: for each latent variable, how far the posterior means moved,
  ``|mean - mean_before| / sd`` averaged over its elements and components (in
  posterior sds, the unit of the project's accuracy bar); the largest over the
  variables;
- the **ELBO change**: of the smoothed ELBO between the two summaries, relative to
  its size.

The fit *looks settled* when the shift is under :data:`SETTLED_SHIFT` and the ELBO
change under :data:`SETTLED_ELBO_CHANGE`. It is a hint, not a proof: a fit stuck in a
poor optimum looks settled too (the ELBO and the reference, when there is one, tell).

Pure: no Panel, no Bokeh; the dashboard's :class:`~pavi_viz.ui.state.DashboardState`
keeps the stamps and a view words them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import xarray as xr

#: Settled: the means moved less than this many posterior sds between two summaries...
SETTLED_SHIFT = 0.1
#: ...and the smoothed ELBO changed by less than this share of its size.
SETTLED_ELBO_CHANGE = 1e-3


@dataclass(frozen=True)
class Stamp:
    """A posterior summary and when it was taken.

    Attributes:
        step: the step it follows.
        smoothed_elbo: the smoothed ELBO then (NaN when unknown).
        summary: its statistics per latent variable (a ``stat`` dim with ``mean`` and ``sd``).
    """

    step: int
    smoothed_elbo: float
    summary: xr.Dataset


@dataclass(frozen=True)
class Settling:
    """What changed between two stamps of a run (see the module's docstring).

    Attributes:
        since_step: the earlier stamp's step.
        shift: the largest mean shift over the latent variables, in posterior sds.
        moved_most: the variable of that shift.
        elbo_change: the smoothed ELBO's change, relative to its size (NaN when unknown).
    """

    since_step: int
    shift: float
    moved_most: str
    elbo_change: float

    @property
    def settled(self) -> bool:
        return self.shift < SETTLED_SHIFT and abs(self.elbo_change) < SETTLED_ELBO_CHANGE


def settling(before: Stamp, now: Stamp) -> Settling | None:
    """What changed from ``before`` to ``now``; None when they share no latent variable."""
    shifts = {}
    for name in now.summary.data_vars:
        if name not in before.summary.data_vars:
            continue
        mean, sd = now.summary[name].sel(stat="mean"), now.summary[name].sel(stat="sd")
        moved = np.abs(mean - before.summary[name].sel(stat="mean")) / sd
        shifts[name] = float(moved.mean())
    if not shifts:
        return None
    moved_most = max(shifts, key=lambda name: shifts[name])
    size = abs(now.smoothed_elbo)
    elbo_change = (now.smoothed_elbo - before.smoothed_elbo) / size if size > 0 else math.nan
    return Settling(before.step, shifts[moved_most], moved_most, elbo_change)


__all__ = ["SETTLED_ELBO_CHANGE", "SETTLED_SHIFT", "Settling", "Stamp", "settling"]
