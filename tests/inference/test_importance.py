"""Pareto smoothed importance sampling, and the posterior draws it corrects."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import xarray as xr

import pavi_viz
from pavi_viz import Plate, PlateModel, Variable
from pavi_viz.inference import Posterior, make_family
from pavi_viz.inference.importance import effective_sample_size, pareto_k_bound, psis, systematic_resample


@pytest.mark.parametrize("shape", [0.2, 0.5, 1.2])
def test_psis_recovers_the_shape_of_a_pareto_tail(shape: float) -> None:
    # Weights U^-shape have a generalized Pareto tail of that shape.
    uniform = np.random.default_rng(0).uniform(size=8000)
    _, k = psis(shape * -np.log(uniform))
    assert k == pytest.approx(shape, abs=0.12)


@pytest.mark.parametrize("shape", [0.3, 0.6, 0.9])
def test_psis_estimates_a_known_tail_at_4000_draws(shape: float) -> None:
    """Weights U^-k are Pareto, with a generalized Pareto tail of shape k: k's estimate
    from 4,000 draws has an sd of about (1 + k) / sqrt(189 tail draws), 0.1 to 0.14
    (and a prior that pulls it a little towards 0.5), so the mean of 20 independent
    estimates is within 0.1 (3 sds)."""
    estimates = [psis(shape * -np.log(np.random.default_rng(seed).uniform(size=4000)))[1] for seed in range(20)]
    assert np.mean(estimates) == pytest.approx(shape, abs=0.1)


def test_psis_is_arviz_stats_smoothing() -> None:
    from arviz_stats.base import array_stats

    log_weights = np.random.default_rng(4).normal(0.0, 1.0, size=3000)
    smoothed, k = psis(log_weights)
    expected, expected_k = array_stats.psislw(-log_weights, r_eff=1)  # ArviZ's input: -log w
    np.testing.assert_allclose(smoothed, expected, rtol=0, atol=1e-12)
    assert k == pytest.approx(float(expected_k), abs=1e-12) and 0.0 < k < 0.7
    assert isinstance(k, float)


def test_too_few_draws_fit_no_tail() -> None:
    log_weights = np.random.default_rng(5).normal(size=20)  # a tail of 4 draws
    smoothed, k = psis(log_weights)
    assert k == math.inf
    np.testing.assert_allclose(smoothed, log_weights - np.logaddexp.reduce(log_weights))


def test_smoothed_weights_are_normalised_ordered_and_capped() -> None:
    log_weights = np.random.default_rng(1).standard_t(3, size=2000)
    smoothed, _ = psis(log_weights)
    assert np.logaddexp.reduce(smoothed) == pytest.approx(0.0, abs=1e-12)
    order = np.argsort(log_weights)
    assert np.all(np.diff(smoothed[order]) >= -1e-12)  # the tail is smoothed, not reordered
    assert smoothed.max() <= log_weights.max() - np.logaddexp.reduce(log_weights) + 1e-12


def test_weights_that_cannot_be_trusted_say_so() -> None:
    log_weights = np.zeros(1000)
    log_weights[3] = 800.0  # one draw with all the weight
    assert psis(log_weights)[1] == math.inf
    log_weights[5] = np.nan  # a draw the model gives no density weighs nothing
    assert np.exp(psis(log_weights)[0])[5] == 0.0
    with pytest.raises(ValueError, match="no draw of q has a finite importance weight"):
        psis(np.full(10, -np.inf))


def test_systematic_resampling_takes_each_draw_about_n_w_times() -> None:
    weights = np.random.default_rng(2).dirichlet(np.ones(50))
    counts = np.bincount(systematic_resample(weights, 1000, 0.37), minlength=50)
    assert np.all(np.abs(counts - 1000 * weights) < 1.0 + 1e-9)
    assert effective_sample_size(np.log(np.full(40, 0.025))) == pytest.approx(40.0)


def _normal_mean_model(n: int = 20) -> tuple[pavi_viz.model.CompiledModel, float, float]:
    """mu ~ Normal(0, 10), x_i ~ Normal(mu, 1): the model and mu's exact posterior mean and sd."""
    x = np.random.default_rng(3).normal(1.5, 1.0, size=n)
    model = PlateModel(
        [Plate("obs", n)],
        [Variable("mu", "Normal", loc=0.0, scale=10.0),
         Variable("x", "Normal", loc="mu", scale=1.0, plates=["obs"], observed=True)],
        data={"x": x},
    ).compile()
    precision = 1 / 100 + n
    return model, float(x.sum() / precision), float(precision**-0.5)


def _mean_field_at(model, loc: float, scale: float):
    family = make_family("mean-field", model)
    with torch.no_grad():
        family.loc["mu"].fill_(loc)
        family.log_scale["mu"].fill_(math.log(scale))
    return family


def test_resampling_corrects_a_q_that_is_off() -> None:
    model, mean, sd = _normal_mean_model()
    family = _mean_field_at(model, mean + 0.5 * sd, 1.4 * sd)  # biased and too wide
    corrected = Posterior(model, family).summary(n=4000, seed=0)["mu"]
    raw = Posterior(model, family, correct="none").summary(n=4000, seed=0)["mu"]
    assert abs(float(raw.sel(stat="mean")) - mean) / sd > 0.4
    assert abs(float(corrected.sel(stat="mean")) - mean) / sd < 0.05
    assert float(corrected.sel(stat="sd")) / sd == pytest.approx(1.0, abs=0.05)
    check = Posterior(model, family).importance_check(n=4000, seed=0)
    assert check.reweighted and check.pareto_k <= pareto_k_bound(check.draws) and check.draws == 16000


def test_the_pareto_k_bound_grows_with_the_draws_up_to_0_7() -> None:
    assert pareto_k_bound(100) == pytest.approx(0.5)
    assert pareto_k_bound(1000) == pytest.approx(2 / 3)
    assert pareto_k_bound(16_000) == 0.7


def test_a_q_too_narrow_is_corrected_through_the_wider_half_of_the_pool() -> None:
    """q has the posterior's mean and half its sd: its own weights have an infinite
    variance (p / q grows as exp(3 x^2 / 8 sd^2)), but the pool's wider half (spread
    2: the posterior's sd) makes them usable, and the resampled sd is the posterior's."""
    model, mean, sd = _normal_mean_model()
    family = _mean_field_at(model, mean, 0.5 * sd)
    with torch.no_grad():
        own = family.sample(model.frame(), 16_000, generator=torch.Generator().manual_seed(0))
    log_weights = model.log_joint_terms(own.values, frame=model.frame())
    _, own_k = psis((sum(log_weights.values()) - sum(own.log_q.values())).double().numpy())
    assert own_k > 0.7
    post = Posterior(model, family)
    check = post.importance_check(n=4000, seed=0)
    assert check.reweighted and check.pareto_k < 0.5
    corrected = post.summary(n=4000, seed=0)["mu"]
    assert float(corrected.sel(stat="sd")) / sd == pytest.approx(1.0, abs=0.06)
    assert abs(float(corrected.sel(stat="mean")) - mean) / sd < 0.05


def test_the_pool_grows_while_its_effective_sample_size_is_small_and_is_shared() -> None:
    """q 4.5 posterior sds off: the first 16,000 draws weigh as fewer than n / 4, so
    the pool grows (to 64,000 here) and the resampled draws are right; a summary and
    the check with the same seed share the pool."""
    model, mean, sd = _normal_mean_model()
    post = Posterior(model, _mean_field_at(model, mean + 4.5 * sd, sd))
    corrected = post.summary(n=4000, seed=0)["mu"]
    check = post.importance_check(n=4000, seed=0)
    assert check is post.importance_check(n=4000, seed=0)
    assert check.reweighted and check.draws > 16_000 and check.ess >= 1000
    assert abs(float(corrected.sel(stat="mean")) - mean) / sd < 0.1
    assert float(corrected.sel(stat="sd")) / sd == pytest.approx(1.0, abs=0.06)
    again = Posterior(model, post.family).summary(n=4000, seed=0)["mu"]  # a fresh pool, the same seed
    xr.testing.assert_identical(corrected, again)


def test_a_q_that_stops_short_of_a_funnels_neck_is_corrected_through_the_prior_half() -> None:
    """sigma ~ HalfNormal(1), theta_j ~ Normal(0, sigma), y_j ~ Normal(theta_j, 1), four
    groups: sigma's posterior reaches down to 0 (5% quantile 0.035), where the thetas
    are held near 0. q, as a reverse-KL fit leaves it, puts log sigma at N(log 0.6,
    0.5) and the thetas apart: its mean of sigma is 0.5 exact sd too high, and spreading
    q alone does not reach the neck (k 0.65 to 0.84). Drawing the thetas of half the
    pool from their prior given sigma does."""
    y = np.array([0.6, -0.4, 0.9, 0.1])
    model = PlateModel(
        [Plate("group", 4)],
        [Variable("sigma", "HalfNormal", scale=1.0),
         Variable("theta", "Normal", loc=0.0, scale="sigma", plates=["group"]),
         Variable("y", "Normal", loc="theta", scale=1.0, plates=["group"], observed=True)],
        data={"y": y},
    ).compile()
    # The exact posterior of sigma: theta integrated out, y_j ~ Normal(0, sqrt(sigma^2 + 1)).
    grid = np.linspace(1e-6, 6.0, 200_001)
    log_density = -0.5 * grid**2 + sum(-0.5 * v**2 / (grid**2 + 1) - 0.5 * np.log(grid**2 + 1) for v in y)
    weights = np.exp(log_density - log_density.max())
    weights /= weights.sum()
    mean = float((weights * grid).sum())
    sd = float(np.sqrt((weights * grid**2).sum() - mean**2))
    family = make_family("mean-field", model)
    with torch.no_grad():
        family.loc["sigma"].fill_(math.log(0.6))
        family.log_scale["sigma"].fill_(math.log(0.5))
        family.loc["theta"].copy_(torch.tensor(0.3 * y, dtype=torch.float32).reshape(4, 1))
        family.log_scale["theta"].fill_(math.log(0.5))
    raw = Posterior(model, family, correct="none").summary(n=4000, seed=0)["sigma"]
    assert (float(raw.sel(stat="mean")) - mean) / sd > 0.4
    for seed in (0, 1):
        post = Posterior(model, family)
        check = post.importance_check(n=4000, seed=seed)
        assert check.reweighted and check.pareto_k < 0.6
        corrected = post.summary(n=4000, seed=seed)["sigma"]
        assert abs(float(corrected.sel(stat="mean")) - mean) / sd < 0.08
        assert float(corrected.sel(stat="sd")) / sd == pytest.approx(1.0, abs=0.06)


def test_a_q_far_from_the_posterior_is_left_as_it_is_and_flagged() -> None:
    model, mean, sd = _normal_mean_model()
    family = _mean_field_at(model, mean + 6 * sd, 0.5 * sd)
    post = Posterior(model, family)
    check = post.importance_check(n=1000, seed=0)
    assert not check.reweighted and check.pareto_k > pareto_k_bound(check.draws)
    drawn = post.sample(1000, seed=0)["mu"].values
    # q's own draws, none of the pool's wider component's (sd 1 rather than 0.5).
    assert abs(drawn.mean() - (mean + 6 * sd)) < 0.2 * sd and drawn.std() == pytest.approx(0.5 * sd, rel=0.1)


def test_importance_resampled_summaries_are_seeded_also_in_threads(in_threads) -> None:
    model = pavi_viz.examples.load("eight_schools").compile()
    torch.manual_seed(0)
    post = Posterior(model, make_family("pavi-e", model))
    alone = post.summary(200, seed=4)
    for summary in in_threads(*[lambda: post.summary(200, seed=4)] * 3):
        xr.testing.assert_identical(summary, alone)


def test_a_model_too_large_to_weigh_whole_is_drawn_from_q() -> None:
    model = pavi_viz.examples.load("gre", G=2000, N=2, D=1).compile()
    post = Posterior(model, make_family("mean-field", model))
    assert post.importance_check(n=4000) is None  # 16,000 draws of 2,001 latents each
    assert post.importance_check(n=100) is not None


# -- correct= ----------------------------------------------------------------------------
def test_correct_chooses_between_q_and_its_psis_resampled_draws() -> None:
    """q far off (k above the bound): "auto" keeps q's own draws, "psis" resamples
    them all the same with a warning, "none" makes no check; summaries say which."""
    model, mean, sd = _normal_mean_model()
    post = Posterior(model, _mean_field_at(model, mean + 6 * sd, 0.5 * sd))
    auto = post.summary(1000, seed=0)
    assert type(auto.attrs["pareto_k"]) is float and type(auto.attrs["pareto_k_draws"]) is int
    assert auto.attrs["psis_resampled"] == 0 and auto.attrs["pareto_k"] > pareto_k_bound(auto.attrs["pareto_k_draws"])
    with pytest.warns(UserWarning, match=r"PSIS-resampled draws are unreliable: the Pareto k of their importance"):
        forced = post.summary(1000, seed=0, correct="psis")
    assert forced.attrs["psis_resampled"] == 1 and forced.attrs["pareto_k"] == auto.attrs["pareto_k"]
    # Resampled from the pool, whose wider half reaches towards the posterior.
    assert float(forced["mu"].sel(stat="mean")) < float(auto["mu"].sel(stat="mean"))
    none = post.summary(1000, seed=0, correct="none")
    assert not {"pareto_k", "pareto_k_draws", "psis_resampled"} & set(none.attrs)
    assert post.importance_check(1000, seed=0, correct="none") is None
    assert abs(float(none["mu"].sel(stat="mean")) - (mean + 6 * sd)) < 0.2 * sd


def test_the_posterior_default_correction_and_a_call_s_own() -> None:
    model, mean, sd = _normal_mean_model()
    family = _mean_field_at(model, mean + 0.5 * sd, 1.4 * sd)
    post = Posterior(model, family, correct="none")
    assert "pareto_k" not in post.sample(100, seed=0).attrs
    drawn = post.sample(100, seed=0, correct="auto")
    assert drawn.attrs["psis_resampled"] == 1 and drawn.attrs["pareto_k_draws"] == 1000
    assert post.predictive(10, seed=0, correct="auto").attrs["psis_resampled"] == 1
    with pytest.raises(ValueError, match="correct must be one of 'auto', 'psis', 'none', not 'smc'"):
        post.sample(10, correct="smc")
    with pytest.raises(ValueError, match="correct must be one of"):
        Posterior(model, family, correct="always")


def test_psis_is_refused_where_whole_draws_cannot_be_weighed() -> None:
    model = pavi_viz.examples.load("gre", G=2000, N=2, D=1).compile()
    post = Posterior(model, make_family("mean-field", model))
    with pytest.raises(ValueError, match=r"correct='psis' weighs whole draws .* more than IMPORTANCE_NUMBERS"):
        post.summary(4000, correct="psis")
