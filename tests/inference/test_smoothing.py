"""The smoothed ELBO: bias-corrected, spikes winsorized, and what the trainer records."""

from __future__ import annotations

import math

import numpy as np
import pytest

import pavi_viz
from pavi_viz import examples
from pavi_viz.inference.smoothing import SMOOTHING, SPIKE_SPREADS, SPREAD_MIN_STEPS, smoothed_elbo, spike_bound


def replay(values: list[float]) -> tuple[list[float], list[bool]]:
    """The smoothed values and spike flags the trainer's rule gives for these estimates."""
    smoothed: list[float] = []
    spikes: list[bool] = []
    for step, value in enumerate(values, start=1):
        bound = spike_bound(values[: step - 1], smoothed)
        spikes.append(value < bound)
        smoothed.append(smoothed_elbo(smoothed[-1] if smoothed else math.nan, max(value, bound), step))
    return smoothed, spikes


def test_the_average_is_bias_corrected():
    values = np.random.default_rng(0).normal(-50.0, 3.0, size=40).tolist()
    average = math.nan
    for step, value in enumerate(values, start=1):
        average = smoothed_elbo(average, value, step)
        weights = (1 - SMOOTHING) ** np.arange(step - 1, -1, -1)  # oldest first
        assert average == pytest.approx(np.dot(weights, values[:step]) / weights.sum(), rel=1e-12)


def test_the_first_estimate_does_not_hold_the_curve_back():
    # A run's first estimate is far below the later ones. An average started at that
    # estimate keeps (1 - SMOOTHING) ** (step - 1) of it: 5% after 150 steps. The
    # corrected one gives it only its share of the weights, from step 20 on at least 10
    # times less, and 40 times less by step 150.
    values = [-1e4] + [-100.0] * 200
    smoothed, _ = replay(values)
    for step in range(20, 201):
        old_error = (-1e4 + 100.0) * (1 - SMOOTHING) ** (step - 1)
        assert abs(smoothed[step - 1] + 100.0) < abs(old_error) / 10
    assert abs(smoothed[150] + 100.0) < abs(-9900.0 * (1 - SMOOTHING) ** 150) / 40


def test_a_spike_is_flagged_and_enters_the_average_at_the_bound():
    rng = np.random.default_rng(1)
    values = rng.normal(-3000.0, 5.0, size=60).tolist()
    values[40] = -2.5e13
    smoothed, spikes = replay(values)
    assert spikes == [i == 40 for i in range(60)]
    assert smoothed[40] > smoothed[39] - SMOOTHING * SPIKE_SPREADS * 50  # moved by at most a bounded step
    assert abs(smoothed[-1] + 3000.0) < 10.0


def test_nothing_is_a_spike_before_the_spread_is_known():
    assert spike_bound([-1.0] * (SPREAD_MIN_STEPS - 1), [-1.0] * (SPREAD_MIN_STEPS - 1)) == -math.inf
    assert spike_bound([-1.0, math.inf] * SPREAD_MIN_STEPS, [-1.0] * (2 * SPREAD_MIN_STEPS)) == -math.inf


def test_the_trainer_records_what_the_rule_gives():
    result = pavi_viz.fit(examples.load("eight_schools"), steps=300, seed=0, progress=False)
    history = result.state.history
    smoothed, spikes = replay(history.elbo)
    assert history.smoothed_elbo == pytest.approx(smoothed, rel=1e-9)
    assert history.spike == spikes
