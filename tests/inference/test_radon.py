"""Radon (real data, no exact posterior): the fits run and their results are sensible.

What "sensible" means here, each a fact of the data that any good posterior shows:
the first-floor effect is negative, the house-level noise is about 0.7 log units,
county intercepts are shrunk towards the population mean (partial pooling), and
county uranium explains part of the counties' spread.
"""

from __future__ import annotations

import numpy as np
import pytest

import pavi_viz
from pavi_viz.inference import Posterior


@pytest.fixture(scope="module")
def fits():
    out = {}
    for name in ["radon", "radon_uranium"]:
        model = pavi_viz.examples.load(name)
        result = pavi_viz.fit(model, "pavi-e", steps=800, lr=1e-2, particles=4, seed=0,
                              schedule="cosine", batch={"county": 20})
        # q's own draws: these facts of the data show in any good posterior, and the
        # importance pool that corrects q to the reference is tested against it elsewhere.
        posterior = Posterior(result.state.model, result.family, correct="none")
        out[name] = (model, result, posterior.summary(n=1000))
    return out


def _mean(summary, name):
    return summary[name].sel(stat="mean").values


@pytest.mark.parametrize("name", ["radon", "radon_uranium"])
def test_fit_runs_and_improves(fits, name) -> None:
    _, result, _ = fits[name]
    elbo = np.asarray(result.history.elbo)
    assert np.isfinite(elbo).all()
    assert elbo[-100:].mean() > elbo[:100].mean()


def test_radon_effects_are_sensible(fits) -> None:
    model, _, summary = fits["radon"]
    assert 1.2 < _mean(summary, "mu_alpha") < 1.7  # log radon in basements
    assert summary["mu_beta"].sel(stat="95%").values < 0  # first floors have less radon
    assert 0.6 < _mean(summary, "sigma_y") < 0.85


def test_radon_county_intercepts_are_partially_pooled(fits) -> None:
    model, _, summary = fits["radon"]
    county = np.asarray(model.plate("house").membership)
    log_radon = model.data["log_radon"].numpy()
    basement = model.data["floor"].numpy() == 0
    counts = np.bincount(county[basement], minlength=85)
    raw = np.bincount(county[basement], weights=log_radon[basement], minlength=85) / np.maximum(counts, 1)
    alpha = _mean(summary, "alpha")
    seen = counts >= 1
    centre = _mean(summary, "mu_alpha")
    # Estimates follow the data (positive slope) but are pulled towards the centre (slope < 1),
    # the more so for counties with few houses.
    slope = np.polyfit(raw[seen] - centre, alpha[seen] - centre, 1)[0]
    assert 0.1 < slope < 0.95
    few, many = seen & (counts <= 3), counts >= 15
    pull = np.abs(alpha - raw) / np.maximum(np.abs(raw - centre), 1e-3)
    assert np.median(pull[few]) > np.median(pull[many])


def test_uranium_explains_county_variation(fits) -> None:
    _, _, plain = fits["radon"]
    _, _, uranium = fits["radon_uranium"]
    beta_low = uranium["beta"].sel(stat="5%").values
    assert beta_low[0] > 0  # more uranium, more radon
    assert uranium["beta"].sel(stat="95%").values[1] < 0  # floor effect again
    assert _mean(uranium, "sigma_alpha") < _mean(plain, "sigma_alpha")
