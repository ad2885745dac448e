"""Accuracy of ``fit(model)`` with its defaults, against exact and NUTS posteriors.

The bar (issue 13): every latent's mean error below 0.1 reference sd on average, and
every element's sd within [0.8, 1.25] of the reference's. Eight schools and the four
user models of benchmarks/models.py meet it here; GRE (against its exact posterior)
and the radon models are in test_accuracy_gre.py and test_accuracy_radon.py, files of
their own so that they run beside this one. Spikes misses the bar (README "Accuracy
against reference posteriors") and has no test.
"""

from __future__ import annotations

import pytest

import pavi_viz
from benchmarks.accuracy import MEAN_ERROR_BAR, SD_RATIO_RANGE, compare, load

pytestmark = pytest.mark.slow


def _fit_and_compare(name: str, seed: int = 0) -> tuple[pavi_viz.inference.FitResult, dict]:
    model, reference = load(name)
    result = pavi_viz.fit(model, seed=seed, progress=False)
    return result, compare(result.posterior.summary(n=4000, seed=1), reference)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["eight_schools", "glmm", "nested", "funnel", "poisson_exposure"])
def test_defaults_meet_the_bar(name: str) -> None:
    # glmm: a logistic GLMM whose fixed effects are correlated a posteriori (-0.76);
    # nested: three levels of ragged plates; funnel: 30 groups, centred; poisson_exposure:
    # alpha + u[region], fixed and random intercepts along a ridge (benchmarks/models.py).
    result, latents = _fit_and_compare(name)
    assert result.stop_reason == "converged"
    low, high = SD_RATIO_RANGE
    for name, stats in latents.items():
        assert stats["mean_error"] < MEAN_ERROR_BAR, (name, stats)
        assert low <= stats["sd_ratio_min"] and stats["sd_ratio_max"] <= high, (name, stats)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", [1])
def test_eight_schools_funnel_never_diverges_with_defaults(seed: int) -> None:
    result = pavi_viz.fit(pavi_viz.examples.load("eight_schools"), seed=seed, progress=False)
    assert result.stop_reason == "converged"
