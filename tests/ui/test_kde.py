"""Kernel densities of the posterior views: reflected at the support's bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

from pavi_viz import examples
from pavi_viz.model import distributions
from pavi_viz.ui.state import DashboardState
from pavi_viz.ui.views.marginals import element_series, kde


def density_at(x: np.ndarray, y: np.ndarray, where: float) -> float:
    return float(np.interp(where, x, y))


def mass(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)))


def test_scale_draws_have_no_density_below_zero_and_the_right_density_at_zero():
    draws = np.abs(np.random.default_rng(0).normal(size=4000))  # half-normal: density sqrt(2/pi) at 0
    x, y = kde(draws, bounds=(0.0, math.inf))
    assert x.min() == 0.0
    assert mass(x, y) == pytest.approx(1.0, abs=0.01)
    assert density_at(x, y, 0.0) == pytest.approx(math.sqrt(2 / math.pi), rel=0.2)  # 2,000 draws kept: ±6% noise
    # Without the bound: density below 0, and about half the density at 0.
    x, y = kde(draws)
    assert mass(x[x < 0], y[x < 0]) > 0.02
    assert density_at(x, y, 0.0) < 0.65 * math.sqrt(2 / math.pi)


def test_both_bounds_reflect():
    draws = np.random.default_rng(1).uniform(size=4000)  # density 1 on [0, 1], up to its edges
    x, y = kde(draws, bounds=(0.0, 1.0))
    assert (x.min(), x.max()) == (0.0, 1.0)
    assert mass(x, y) == pytest.approx(1.0, abs=0.01)
    assert density_at(x, y, 0.0) == pytest.approx(1.0, rel=0.15)
    assert density_at(x, y, 1.0) == pytest.approx(1.0, rel=0.15)


def test_the_support_bounds_of_the_distributions():
    assert distributions.get("HalfCauchy").bounds == (0.0, math.inf)
    assert distributions.get("Beta").bounds == (0.0, 1.0)
    assert distributions.get("Normal").bounds == (-math.inf, math.inf)


def test_the_views_cut_a_scale_at_zero():
    # Eight schools' tau is half-Cauchy: its density plot starts at 0, as the lesson needs.
    state = DashboardState(examples.load("eight_schools"))
    tau = np.abs(np.random.default_rng(2).standard_cauchy(size=2000))
    state.draws = xr.Dataset({"tau": ("sample", tau)})
    (series,) = element_series(state, "tau", 0)
    assert series.x.min() == 0.0 and not series.approximate
    assert series.y[0] > series.y[len(series.y) // 2]
