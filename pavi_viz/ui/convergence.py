"""Has the fit settled, and can it be trusted? What changed between two posterior
summaries of a run, and what the importance check of one found.

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

Settled is not the same as right: a fit can settle on a q that is far from the
posterior. :func:`trust` reads what the summary's importance check found (Yao,
Vehtari, Simpson & Gelman, 2018, "Yes, but did it work?"): the Pareto k of the
importance ratios ``log p - log q`` of whole draws (:mod:`pavi_viz.inference.importance`).
Up to 0.7 q is close to the posterior, and the summary's draws were corrected by
Pareto smoothed importance resampling when there were enough of them; above 0.7 q may
be far off.

Pure: no Panel, no Bokeh; the dashboard's :class:`~pavi_viz.ui.state.DashboardState`
keeps the stamps and a view words them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import xarray as xr

from pavi_viz.inference.importance import PARETO_K_LIMIT, pareto_k_bound

#: What the importance check says of a summary (see :attr:`Trust.verdict`).
Verdict = Literal["corrected", "close", "far", "unchecked"]

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


@dataclass(frozen=True)
class Trust:
    """What the importance check of a summary found (see the module's docstring).

    Attributes:
        pareto_k: the Pareto k of the importance weights (``inf`` when a handful of
            draws hold all the weight); None when no check was made (the model too
            large to weigh whole draws of it, or the correction turned off).
        draws: the number of draws weighed (None without a check).
        resampled: whether the summary's draws were resampled by the Pareto smoothed
            weights, which corrects q's bias (reliably when k is under :attr:`bound`).
    """

    pareto_k: float | None
    draws: int | None = None
    resampled: bool = False

    @property
    def bound(self) -> float:
        """The largest k at which the draws weighed give a reliable correction
        (:func:`~pavi_viz.inference.importance.pareto_k_bound`; 0.7 when their number
        is unknown)."""
        return pareto_k_bound(self.draws) if self.draws else PARETO_K_LIMIT

    @property
    def verdict(self) -> Verdict:
        """``"corrected"``: the draws were resampled and k is under :attr:`bound`
        (at most 0.7): trustworthy; ``"close"``: k at most 0.7 otherwise, so q is
        close to the posterior but its draws are uncorrected, or corrected unreliably
        (too few draws for this k); ``"far"``: k above 0.7 (or no number), q may be
        far off the posterior, resampled or not; ``"unchecked"``: no check was made."""
        if self.pareto_k is None:
            return "unchecked"
        if self.resampled and self.pareto_k <= self.bound:
            return "corrected"
        # Written so that a NaN k counts as far off, never as close.
        return "close" if self.pareto_k <= PARETO_K_LIMIT else "far"


def trust(summary: xr.Dataset) -> Trust:
    """The importance check that ``summary`` carries in its attrs (``pareto_k``,
    ``pareto_k_draws``, ``psis_resampled``; absent when none was made).

    Read with ``.get``: a summary saved before these attrs existed, or of a model too
    large to check, is "unchecked" rather than an error.
    """
    attrs = summary.attrs
    k = attrs.get("pareto_k")
    if k is None:
        return Trust(None)
    draws = attrs.get("pareto_k_draws")
    return Trust(float(k), None if draws is None else int(draws), bool(attrs.get("psis_resampled", 0)))


__all__ = ["SETTLED_ELBO_CHANGE", "SETTLED_SHIFT", "Settling", "Stamp", "Trust", "Verdict", "settling", "trust"]
