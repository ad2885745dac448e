"""Accuracy of ``fit(model)`` with its defaults, against exact and NUTS posteriors.

The bar (issue 13): every latent's mean error below 0.1 reference sd on average, and
every element's sd within [0.8, 1.25] of the reference's. Eight schools and the four
user models of benchmarks/models.py meet it (GRE, against its exact
posterior, is in test_accuracy_gre.py, a file of its own so that it runs beside this
one); radon is held to the levels the defaults reach today (benchmarks/accuracy.py,
README "Accuracy against reference posteriors"), so that a change that loses accuracy
fails here: its guard is looser than the bar, and says by how much.
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


@pytest.mark.timeout(300)
def test_radon_defaults_stay_near_the_nuts_reference() -> None:
    result, latents = _fit_and_compare("radon")
    assert result.stop_reason == "converged"
    # The bar is met but for the scale of the county slopes, sigma_beta: its posterior
    # reaches down to 0 (5% quantile 0.04, a funnel's neck) where q's stops short (5%
    # quantile 0.1 to 0.16), so q's sd is too small (0.61 to 0.75 of NUTS's in our
    # runs), and the importance weights' Pareto k (0.52 to 0.80 over five pools) is
    # above the 0.5 up to which resampling corrects it.
    for name, stats in latents.items():
        if name == "sigma_beta":
            assert stats["mean_error"] < 0.35 and stats["sd_ratio_min"] >= 0.55, stats
        else:
            assert stats["mean_error"] < MEAN_ERROR_BAR, (name, stats)
            assert 0.8 <= stats["sd_ratio_min"] and stats["sd_ratio_max"] <= 1.25, (name, stats)
