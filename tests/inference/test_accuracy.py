"""Accuracy of ``fit(model)`` with its defaults, against exact and NUTS posteriors.

The bar (issue 13): every latent's mean error below 0.1 reference sd on average, and
every element's sd within [0.8, 1.25] of the reference's. Eight schools and three of
the user models of benchmarks/models.py meet it; the others are held to the levels the defaults reach today (benchmarks/accuracy.py,
README "Accuracy against reference posteriors"), so that a change that loses accuracy
fails here: those guards are looser than the bar, and say by how much.
"""

from __future__ import annotations

import pytest
import torch

import pavi_viz
from benchmarks.accuracy import MEAN_ERROR_BAR, SD_RATIO_RANGE, compare, load
from pavi_viz.examples.gre import analytic_posterior

pytestmark = pytest.mark.slow


def _fit_and_compare(name: str, seed: int = 0) -> tuple[pavi_viz.inference.FitResult, dict]:
    model, reference = load(name)
    result = pavi_viz.fit(model, seed=seed, progress=False)
    return result, compare(result.posterior.summary(n=4000, seed=1), reference)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["eight_schools", "glmm", "nested", "funnel"])
def test_defaults_meet_the_bar(name: str) -> None:
    # glmm: a logistic GLMM whose fixed effects are correlated a posteriori (-0.76);
    # nested: three levels of ragged plates; funnel: 30 groups, centred (benchmarks/models.py).
    result, latents = _fit_and_compare(name)
    assert result.stop_reason == "converged"
    low, high = SD_RATIO_RANGE
    for name, stats in latents.items():
        assert stats["mean_error"] < MEAN_ERROR_BAR, (name, stats)
        assert low <= stats["sd_ratio_min"] and stats["sd_ratio_max"] <= high, (name, stats)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_eight_schools_funnel_never_diverges_with_defaults(seed: int) -> None:
    result = pavi_viz.fit(pavi_viz.examples.load("eight_schools"), seed=seed, progress=False)
    assert result.stop_reason == "converged"


@pytest.mark.timeout(300)
def test_gre_thousand_groups_against_the_exact_posterior() -> None:
    model = pavi_viz.examples.load("gre", G=1000, N=10, D=2)
    result = pavi_viz.fit(model, seed=0, progress=False)
    summary = result.posterior.summary(n=2000, seed=1)
    exact = analytic_posterior(model)
    errors, ratios = {}, {}
    for name, marginal in exact.items():
        mean = torch.as_tensor(summary[name].sel(stat="mean").values, dtype=marginal.mean.dtype)
        sd = torch.as_tensor(summary[name].sel(stat="sd").values, dtype=marginal.mean.dtype)
        errors[name] = float(((mean - marginal.mean).abs() / marginal.stddev).mean())
        ratios[name] = (float((sd / marginal.stddev).min()), float((sd / marginal.stddev).max()))
    # The groups meet the bar; the population mean (posterior sd 0.03) is within 0.3 sd.
    assert errors["mu_g"] < MEAN_ERROR_BAR and 0.8 <= ratios["mu_g"][0] and ratios["mu_g"][1] <= 1.25
    assert errors["mu"] < 0.3 and 0.6 <= ratios["mu"][0] and ratios["mu"][1] <= 1.25


@pytest.mark.timeout(300)
def test_radon_defaults_stay_near_the_nuts_reference() -> None:
    result, latents = _fit_and_compare("radon")
    assert result.stop_reason == "converged"
    # Means: within 0.2 sd of NUTS's (the bar: 0.1); sds: the scales of the county
    # effects are still too narrow (0.55 to 0.7 of NUTS's), the rest within 0.8..1.25.
    for name, stats in latents.items():
        assert stats["mean_error"] < 0.2, (name, stats)
        assert 0.45 <= stats["sd_ratio_min"] and stats["sd_ratio_max"] <= 1.35, (name, stats)
