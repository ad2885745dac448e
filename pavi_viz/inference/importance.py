"""Pareto smoothed importance sampling (PSIS): how far to trust q, and a correction.

Draws ``theta_s ~ q`` weighed by ``w_s = p(theta_s, x) / q(theta_s)`` estimate
posterior expectations without q's bias. How well depends on the tail of the weights'
distribution: PSIS fits a generalized Pareto distribution to the largest weights, and
its shape ``k`` is the diagnostic (Yao, Vehtari, Simpson & Gelman, 2018, "Yes, but did
it work?: Evaluating variational inference"; Vehtari, Simpson, Gelman, Yao & Gabry,
2024, "Pareto smoothed importance sampling", JMLR 25): up to a bound that grows with
the number of draws S, ``min(1 - 1 / log10 S, 0.7)``, the smoothed weights' estimates
are reliable and correct q's bias; above 0.7 q may be far off, and the weights say
nothing more.

These are pure functions of the log weights (numpy, float64); the smoothing itself is
arviz-stats' (:func:`psis`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Imported with the module, although it takes about 0.9 s (scipy.stats and all of
# arviz-stats): imported on first use, it held up the first summary of a run, the one
# a Stop waits for, by as much.
from arviz_stats.base import array_stats

#: Above this Pareto k, PSIS estimates are not trusted at any number of draws
#: (Vehtari et al., 2024): the draws of q are then used as they are.
PARETO_K_LIMIT = 0.7


def pareto_k_bound(draws: int) -> float:
    """The largest Pareto k at which ``draws`` smoothed weights give reliable
    estimates: ``min(1 - 1 / log10(draws), 0.7)`` (Vehtari et al., 2024; 0.7 from
    about 2,200 draws on)."""
    return min(1.0 - 1.0 / math.log10(draws), PARETO_K_LIMIT)


@dataclass(frozen=True)
class ImportanceCheck:
    """How close q is to the posterior, from one pool of draws of q.

    Attributes:
        pareto_k: the shape of the largest weights' generalized Pareto fit (``inf``
            when too few weights stand above the rest to fit one: a draw or a handful
            with all the weight).
        ess: the effective sample size of the smoothed weights (at most ``draws``).
        draws: the number of draws weighed (from q, or from a defensive mixture of q:
            :mod:`pavi_viz.inference.posterior`).
        reweighted: whether the posterior's draws were resampled by the weights or
            are q's own: with ``correct="auto"``, resampled when ``pareto_k`` is at
            most :func:`pareto_k_bound` of ``draws``; with ``"psis"``, always.
    """

    pareto_k: float
    ess: float
    draws: int
    reweighted: bool


def psis(log_weights: np.ndarray) -> tuple[np.ndarray, float]:
    """Pareto smoothed, self-normalised log importance weights, and the Pareto k.

    The ``M`` largest of ``S`` weights (``M = 3 sqrt(S)``, or ``S / 5`` for
    ``S <= 225``) are replaced by the expected order statistics of the generalized
    Pareto distribution fitted to them, truncated at the largest raw weight (Vehtari
    et al., 2024, algorithm 1; the fit of Zhang & Stephens, 2009, with a weakly
    informative prior on k). The smoothing is ArviZ's
    (``arviz_stats.base.array_stats.psislw``, the same in arviz-stats 0.8 and 1.x).

    Args:
        log_weights: ``log p(theta_s, x) - log q(theta_s)``, shape ``(S,)``; non-finite
            entries (a draw the model gives no density) weigh nothing.

    Returns:
        the smoothed log weights, shape ``(S,)``, with ``logsumexp == 0``, and k.
        k is ``inf`` when no tail can be fitted: too few draws (under 25), or too
        few distinct weights above the rest (a draw or a handful with all the
        weight; weights all equal). The weights are then self-normalised but not
        smoothed.
    """
    x = np.asarray(log_weights, dtype=np.float64).copy()
    x[~np.isfinite(x)] = -np.inf
    if not np.isfinite(x).any():
        raise ValueError("no draw of q has a finite importance weight")
    x -= x.max()
    # ArviZ's input is a log likelihood: the weights are exp(-input). The draws are
    # independent: r_eff = 1. A degenerate tail's fit divides by 0: errstate.
    with np.errstate(all="ignore"):
        try:
            smoothed, k = array_stats.psislw(-x, r_eff=1)
            smoothed, k = np.asarray(smoothed, dtype=np.float64), float(k)
        except ValueError:  # fewer than 5 draws in the tail, or the tail's weights all equal
            smoothed, k = x, math.nan
        # A tail whose weights underflow to 0 beside the largest gives k = nan or NaN
        # weights: the raw weights then stand, and k = inf says that no tail was fitted.
        fitted = math.isfinite(k) and bool(np.isclose(np.logaddexp.reduce(smoothed), 0.0))
    if not fitted:
        smoothed, k = x - np.logaddexp.reduce(x), math.inf
    return smoothed, k


def effective_sample_size(log_weights: np.ndarray) -> float:
    """``1 / sum(w^2)`` of self-normalised weights given as logs."""
    weights = np.exp(log_weights - np.logaddexp.reduce(log_weights))
    return float(1.0 / np.sum(weights**2))


def systematic_resample(weights: np.ndarray, n: int, uniform: float) -> np.ndarray:
    """``n`` indices drawn by systematic resampling: draw ``i`` takes the weight whose
    cumulative interval holds ``(i + uniform) / n``. Each index is taken about
    ``n w_s`` times, with less noise than ``n`` independent draws would add (Douc,
    Cappe & Moulines, 2005, "Comparison of resampling schemes for particle filtering").

    Args:
        weights: non-negative, shape ``(S,)``, summing to 1 (up to rounding).
        n: the number of indices.
        uniform: a number in [0, 1), the one random input.

    Returns:
        the indices, shape ``(n,)``, ascending.
    """
    cumulative = np.cumsum(weights)
    cumulative /= cumulative[-1]
    return np.minimum(np.searchsorted(cumulative, (np.arange(n) + uniform) / n, side="right"), weights.size - 1)
