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

These are pure functions of the log weights (numpy, float64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

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
        reweighted: whether the posterior's draws were resampled by the weights
            (``pareto_k`` at most :func:`pareto_k_bound` of ``draws``) or are q's own.
    """

    pareto_k: float
    ess: float
    draws: int
    reweighted: bool


def psis(log_weights: np.ndarray) -> tuple[np.ndarray, float]:
    """Pareto smoothed, self-normalised log importance weights, and the Pareto k.

    The ``M = min(S / 5, 3 sqrt(S))`` largest of ``S`` weights are replaced by the
    expected order statistics of the generalized Pareto distribution fitted to them
    (Vehtari et al., 2024, algorithm 1), truncated at the largest raw weight.

    Args:
        log_weights: ``log p(theta_s, x) - log q(theta_s)``, shape ``(S,)``; non-finite
            entries (a draw the model gives no density) weigh nothing.

    Returns:
        the smoothed log weights, shape ``(S,)``, with ``logsumexp == 0``, and k.
    """
    x = np.asarray(log_weights, dtype=np.float64).copy()
    x[~np.isfinite(x)] = -np.inf
    if not np.isfinite(x).any():
        raise ValueError("no draw of q has a finite importance weight")
    x -= x.max()
    size = x.size
    tail = int(np.ceil(min(0.2 * size, 3 * np.sqrt(size))))
    order = np.argsort(x)
    # The cutoff is the largest weight below the tail; not below the smallest normal
    # float, so that the tail's excesses over it are numbers.
    cutoff = max(x[order[-tail - 1]] if tail < size else -np.inf, np.log(np.finfo(float).tiny))
    floor = np.exp(cutoff)
    top = order[-tail:][np.exp(x[order[-tail:]]) > floor]
    k = np.inf  # too few distinct weights above the cutoff to fit a tail
    if top.size > 4:
        excess = np.exp(x[top]) - floor  # positive, ascending as ``order`` is
        k, sigma = _fit_generalized_pareto(excess)
        if np.isfinite(k) and sigma > 0:
            probabilities = (np.arange(top.size) + 0.5) / top.size
            x[top] = np.minimum(np.log(floor + _generalized_pareto_quantiles(probabilities, k, sigma)), 0.0)
    finite = np.isfinite(x)
    x[finite] -= np.log(np.exp(x[finite]).sum())
    return x, float(k)


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


def _fit_generalized_pareto(excess: np.ndarray) -> tuple[float, float]:
    """Shape k and scale of a generalized Pareto distribution fitted to ``excess``
    (positive, ascending): the empirical Bayes estimate of Zhang & Stephens (2009,
    "A new and efficient estimation method for the generalized Pareto distribution",
    Technometrics 51), with the weakly informative prior on k that Vehtari et al.
    (2024) add (k pulled towards 0.5 as by 10 observations)."""
    n = excess.size
    candidates = 30 + int(np.sqrt(n))
    theta = 1.0 - np.sqrt(candidates / (np.arange(1, candidates + 1) - 0.5))
    theta = theta / (3.0 * excess[int(n / 4 + 0.5) - 1]) + 1.0 / excess[-1]
    k = np.log1p(-theta[:, None] * excess).mean(axis=1)
    profile = n * (np.log(-theta / k) - k - 1.0)
    weights = np.exp(profile - np.logaddexp.reduce(profile))  # each candidate's posterior weight
    kept = weights >= 10 * np.finfo(float).eps
    weights, theta = weights[kept] / weights[kept].sum(), theta[kept]
    theta_hat = float(np.sum(theta * weights))
    k_hat = float(np.log1p(-theta_hat * excess).mean())
    sigma = -k_hat / theta_hat
    return (n * k_hat + 10 * 0.5) / (n + 10), sigma


def _generalized_pareto_quantiles(probabilities: np.ndarray, k: float, sigma: float) -> np.ndarray:
    if abs(k) < np.finfo(float).eps:
        return -sigma * np.log1p(-probabilities)
    return sigma * np.expm1(-k * np.log1p(-probabilities)) / k
