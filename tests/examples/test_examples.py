"""Tests for the example models: each log joint against a hand-written sum of
``torch.distributions`` log densities, batching, loading, and the GRE closed form.

The reference sums index with the membership arrays and broadcast explicitly, with
no use of the model layer's alignment code: they are the independent check of it.
"""

from __future__ import annotations

import json
import math
from importlib import resources

import numpy as np
import pytest
import torch
from torch.distributions import Dirichlet, HalfCauchy, HalfNormal, Normal, Poisson

from pavi_viz import examples
from pavi_viz.examples import gre
from pavi_viz.model import PlateModel

DATASETS = resources.files("pavi_viz") / "datasets"
SIMULATED = ["gre", "spikes", "mixture"]
S = 4  # sample (particle) dims of the prior draws


@pytest.fixture
def float64():
    """Run the test in float64, restoring the default dtype afterwards."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def latents_of(model: PlateModel, seed: int = 1) -> dict[str, torch.Tensor]:
    """Prior draws of every latent variable, full size, with S sample dims."""
    c = model.compile()
    draws = c.sample_prior((S,), seed=seed)
    return {n: draws[n] for n in c.latent_names}


def radon_county() -> np.ndarray:
    """The 0-based county of each house, read straight from the shipped file."""
    raw = json.loads((resources.files("pavi_viz") / "datasets" / "radon_mn.json").read_text())
    return np.asarray(raw["county_idx"]) - 1


# --------------------------------------------------------------- hand-written log joints


def ref_gre(model: PlateModel, z: dict, groups=None, obs=None) -> torch.Tensor:
    """GRE log joint; with ``groups``/``obs`` index batches, the size/batch-scaled estimate.

    ``z["mu_g"]`` is full size (S, G, D); the batch is selected here.
    """
    x = model.data["x"]  # (G, N, D)
    G, N, _ = x.shape
    s_mu, s_g, s_x = (model.variable(v).params["scale"] for v in ("mu", "mu_g", "x"))
    groups = torch.arange(G) if groups is None else groups
    obs = torch.arange(N) if obs is None else obs
    mu, mu_g = z["mu"], z["mu_g"][:, groups]  # (S, D), (S, g, D)
    xb = x[groups][:, obs]  # (g, n, D)
    w_group, w_obs = G / len(groups), N / len(obs)
    lp = Normal(0.0, s_mu).log_prob(mu).sum(-1)
    lp = lp + w_group * Normal(mu[:, None, :], s_g).log_prob(mu_g).sum((1, 2))
    lp = lp + w_group * w_obs * Normal(mu_g[:, :, None, :], s_x).log_prob(xb[None]).sum((1, 2, 3))
    return lp


def ref_eight_schools(model: PlateModel, z: dict) -> torch.Tensor:
    y, sigma = model.data["y"], model.data["sigma"]  # (8,)
    mu, tau, theta = z["mu"], z["tau"], z["theta"]  # (S,), (S,), (S, 8)
    return (
        Normal(0.0, 5.0).log_prob(mu)
        + HalfCauchy(5.0).log_prob(tau)
        + Normal(mu[:, None], tau[:, None]).log_prob(theta).sum(-1)
        + Normal(theta, sigma[None]).log_prob(y[None]).sum(-1)
    )


def ref_radon(model: PlateModel, z: dict, counties=None) -> torch.Tensor:
    """Radon log joint; with a ``counties`` batch, all houses of those counties, scaled by 85/c.

    ``z["alpha"]`` and ``z["beta"]`` are full size (S, 85).
    """
    county = torch.as_tensor(radon_county())  # (919,)
    y, floor = model.data["log_radon"], model.data["floor"]
    counties = torch.arange(85) if counties is None else counties
    houses = torch.isin(county, counties)  # every house of the batch's counties
    w = 85 / len(counties)
    lp = (Normal(0.0, 10.0).log_prob(z["mu_alpha"]) + Normal(0.0, 10.0).log_prob(z["mu_beta"])
          + HalfNormal(1.0).log_prob(z["sigma_alpha"]) + HalfNormal(1.0).log_prob(z["sigma_beta"])
          + HalfNormal(1.0).log_prob(z["sigma_y"]))
    alpha, beta = z["alpha"], z["beta"]  # (S, 85)
    lp = lp + w * Normal(z["mu_alpha"][:, None], z["sigma_alpha"][:, None]).log_prob(alpha[:, counties]).sum(-1)
    lp = lp + w * Normal(z["mu_beta"][:, None], z["sigma_beta"][:, None]).log_prob(beta[:, counties]).sum(-1)
    c = county[houses]
    loc = alpha[:, c] + beta[:, c] * floor[houses]  # (S, houses)
    return lp + w * Normal(loc, z["sigma_y"][:, None]).log_prob(y[houses]).sum(-1)


def ref_radon_uranium(model: PlateModel, z: dict) -> torch.Tensor:
    county = torch.as_tensor(radon_county())
    y, floor, uppm = model.data["log_radon"], model.data["floor"], model.data["log_uppm"]
    beta = z["beta"]  # (S, 2)
    lp = (Normal(0.0, 10.0).log_prob(z["mu_alpha"]) + HalfNormal(1.0).log_prob(z["sigma_alpha"])
          + HalfNormal(1.0).log_prob(z["sigma_y"]) + Normal(0.0, 10.0).log_prob(beta).sum(-1))
    lp = lp + Normal(z["mu_alpha"][:, None], z["sigma_alpha"][:, None]).log_prob(z["alpha"]).sum(-1)
    loc = z["alpha"][:, county] + beta[:, 0:1] * uppm[None] + beta[:, 1:2] * floor[None]  # (S, 919)
    return lp + Normal(loc, z["sigma_y"][:, None]).log_prob(y[None]).sum(-1)


def ref_spikes(model: PlateModel, z: dict, animals=None, trials=None) -> torch.Tensor:
    """Spikes log joint; with ``animals``/``trials`` batches (all neurons of those animals)."""
    animal = torch.as_tensor(model.plate("neuron").membership)  # (M,)
    spikes, stim = model.data["spikes"], model.data["stimulus"]  # (M, T)
    A, T = model.plate("animal").size, model.plate("trial").size
    animals = torch.arange(A) if animals is None else animals
    trials = torch.arange(T) if trials is None else trials
    neurons = torch.isin(animal, animals)
    w_a, w_t = A / len(animals), T / len(trials)
    lp = (Normal(1.5, 1.0).log_prob(z["mu_pop"]) + HalfNormal(0.5).log_prob(z["sigma_animal"])
          + HalfNormal(0.5).log_prob(z["sigma_neuron"]) + Normal(0.0, 1.0).log_prob(z["gain"]))
    a_rate, n_rate = z["animal_rate"], z["neuron_rate"]  # (S, A), (S, M)
    lp = lp + w_a * Normal(z["mu_pop"][:, None], z["sigma_animal"][:, None]).log_prob(a_rate[:, animals]).sum(-1)
    lp = lp + w_a * Normal(a_rate[:, animal[neurons]], z["sigma_neuron"][:, None]).log_prob(
        n_rate[:, neurons]).sum(-1)
    log_rate = n_rate[:, neurons, None] + z["gain"][:, None, None] * stim[neurons][:, trials][None]
    counts = spikes[neurons][:, trials]
    return lp + w_a * w_t * Poisson(log_rate.exp()).log_prob(counts[None]).sum((1, 2))


def ref_mixture(model: PlateModel, z: dict) -> torch.Tensor:
    x = model.data["x"]  # (G, N, D)
    mu, mu_g, pi_g = z["mu"], z["mu_g"], z["pi_g"]  # (S, L, D), (S, G, L, D), (S, G, L)
    L = mu.shape[1]
    lp = Normal(0.0, 2.0).log_prob(mu).sum((1, 2))
    lp = lp + Normal(mu[:, None], 0.5).log_prob(mu_g).sum((1, 2, 3))
    lp = lp + Dirichlet(torch.ones(L)).log_prob(pi_g).sum(-1)
    # log sum_l pi_l N(x | mu_g[l], 0.1² I), written out: (S, G, N, L) before the logsumexp
    per_component = Normal(mu_g[:, :, None, :, :], 0.1).log_prob(x[None, :, :, None, :]).sum(-1)
    mixed = torch.logsumexp(pi_g[:, :, None, :].log() + per_component, dim=-1)
    return lp + mixed.sum((1, 2))


REFERENCES = {
    "gre": ref_gre,
    "eight_schools": ref_eight_schools,
    "radon": ref_radon,
    "radon_uranium": ref_radon_uranium,
    "spikes": ref_spikes,
    "mixture": ref_mixture,
}


def test_every_example_has_a_reference():
    assert set(REFERENCES) == set(examples.list())


@pytest.mark.parametrize("name", list(REFERENCES))
def test_log_joint_matches_hand_written_sum(name, float64):
    model = examples.load(name)
    z = latents_of(model)
    got = model.compile().log_joint(z)
    want = REFERENCES[name](model, z)
    assert got.shape == (S,)
    assert bool(torch.isfinite(want).all())
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)


@pytest.mark.parametrize("name", list(REFERENCES))
def test_log_joint_with_two_sample_dims(name, float64):
    """Two sample dims (3, 2) give the same values as the flattened six draws."""
    model = examples.load(name)
    c = model.compile()
    draws = c.sample_prior((3, 2), seed=2)
    z = {n: draws[n] for n in c.latent_names}
    flat = {n: v.reshape(6, *v.shape[2:]) for n, v in z.items()}
    torch.testing.assert_close(c.log_joint(z).reshape(6), REFERENCES[name](model, flat), rtol=1e-5, atol=0)


@pytest.mark.parametrize("name", SIMULATED)
def test_log_joint_at_the_truth(name, float64):
    """No sample dims: the simulated truth itself, as a fit would evaluate it."""
    model = examples.load(name)
    got = model.compile().log_joint(model.truth)
    assert got.shape == ()
    want = REFERENCES[name](model, {k: v[None] for k, v in model.truth.items()})
    torch.testing.assert_close(got, want[0], rtol=1e-5, atol=0)


# ---------------------------------------------------------------------------- batching


def test_gre_batched_log_joint(float64):
    model = examples.load("gre", G=7, N=6, D=2, mu_scale=2.0, group_scale=0.7, obs_scale=0.4)
    c = model.compile()
    z = latents_of(model)
    groups, obs = torch.tensor([0, 3, 4]), torch.tensor([1, 5])
    batch = {"group": groups, "obs": obs}
    batched = {"mu": z["mu"], "mu_g": z["mu_g"][:, groups]}
    got = c.log_joint(batched, batch=batch)
    torch.testing.assert_close(got, ref_gre(model, z, groups, obs), rtol=1e-5, atol=0)


def test_radon_batched_log_joint_over_counties(float64):
    model = examples.load("radon")
    c = model.compile()
    z = latents_of(model)
    counties = torch.tensor([0, 7, 8, 40, 84])  # includes the one-house and the large counties
    batched = {**z, "alpha": z["alpha"][:, counties], "beta": z["beta"][:, counties]}
    got = c.log_joint(batched, batch={"county": counties})
    torch.testing.assert_close(got, ref_radon(model, z, counties), rtol=1e-5, atol=0)


def test_spikes_batched_log_joint_over_animals_and_trials(float64):
    model = examples.load("spikes")
    c = model.compile()
    z = latents_of(model)
    animal = torch.as_tensor(model.plate("neuron").membership)
    animals, trials = torch.tensor([1, 3]), torch.tensor([0, 2, 3, 11, 19])
    neurons = torch.isin(animal, animals).nonzero().squeeze(-1)  # sorted, as the batch keeps them
    batched = {**z, "animal_rate": z["animal_rate"][:, animals], "neuron_rate": z["neuron_rate"][:, neurons]}
    got = c.log_joint(batched, batch={"animal": animals, "trial": trials})
    torch.testing.assert_close(got, ref_spikes(model, z, animals, trials), rtol=1e-5, atol=0)


# ----------------------------------------------------------------------- list and load


def test_list_and_describe():
    names = examples.list()
    assert names == ["gre", "eight_schools", "radon", "radon_uranium", "spikes", "mixture"]
    described = examples.describe()
    assert list(described) == names
    for name, text in described.items():
        assert isinstance(text, str) and text and "\n" not in text


@pytest.mark.parametrize("name", ["gre", "eight_schools", "radon", "radon_uranium", "spikes", "mixture"])
def test_load_gives_a_valid_model_with_data(name):
    model = examples.load(name)
    assert isinstance(model, PlateModel)
    assert model.problems() == []
    assert model.name == name
    assert model.description == examples.describe()[name]
    for obs in model.observed_names:
        assert obs in model.data
    for cov in model.covariates:
        assert cov.name in model.data
    if name in SIMULATED:
        assert set(model.truth) == set(model.latent_names)
        assert model.compile().truth is not None


def test_unknown_example_lists_the_known_ones():
    with pytest.raises(KeyError, match="unknown example 'nope'.*gre.*radon_uranium"):
        examples.load("nope")


@pytest.mark.parametrize(("name", "option"), [("gre", "groups"), ("radon", "seed"), ("spikes", "n_trials")])
def test_unknown_option_is_named(name, option):
    with pytest.raises(TypeError, match=f"'{option}'"):
        examples.load(name, **{option: 3})


def test_options_lists_defaults():
    assert examples.options("gre") == {"G": 20, "N": 10, "D": 2, "mu_scale": 1.0, "group_scale": 1.0,
                                       "obs_scale": 1.0, "seed": 0}
    assert examples.options("radon") == {}


def test_options_change_the_model_and_seeds_reproduce():
    model = examples.load("gre", G=5, N=3, D=4, seed=7)
    assert model.data["x"].shape == (5, 3, 4)
    assert model.truth["mu_g"].shape == (5, 4)
    assert torch.equal(model.data["x"], examples.load("gre", G=5, N=3, D=4, seed=7).data["x"])
    assert not torch.equal(model.data["x"], examples.load("gre", G=5, N=3, D=4, seed=8).data["x"])
    mix = examples.load("mixture", G=3, N=4, L=2, D=3)
    assert mix.data["x"].shape == (3, 4, 3) and mix.truth["pi_g"].shape == (3, 2)


def test_spikes_design_follows_the_seed():
    a, b = examples.load("spikes", seed=3), examples.load("spikes", seed=3)
    assert np.array_equal(a.plate("neuron").membership, b.plate("neuron").membership)
    assert torch.equal(a.data["spikes"], b.data["spikes"])
    assert torch.equal(a.data["stimulus"], b.data["stimulus"])
    stim = a.data["stimulus"]
    assert set(stim.unique().tolist()) == {0.0, 1.0}
    with pytest.raises(ValueError, match="min_neurons"):
        examples.load("spikes", min_neurons=6, max_neurons=5)


# ------------------------------------------------------------------------- ragged plates


def test_radon_plates():
    for name in ("radon", "radon_uranium"):
        model = examples.load(name)
        county, house = model.plate("county"), model.plate("house")
        assert (county.size, house.size) == (85, 919)
        assert house.nested_in == "county"
        counts = np.bincount(house.membership, minlength=85)
        assert counts.min() == 1 and counts.max() == 116 and counts.sum() == 919
        assert np.array_equal(house.membership, radon_county())
        assert model.data["log_radon"].shape == (919,)


def test_spikes_plates():
    model = examples.load("spikes", A=6, min_neurons=2, max_neurons=9, T=7, seed=5)
    membership = model.plate("neuron").membership
    counts = np.bincount(membership, minlength=6)
    assert model.plate("animal").size == 6
    assert model.plate("neuron").size == len(membership) == counts.sum()
    assert counts.min() >= 2 and counts.max() <= 9
    assert model.plate("trial").nested_in == "neuron" and model.plate("trial").size == 7
    assert model.data["spikes"].shape == (len(membership), 7)
    assert model.truth["neuron_rate"].shape == (len(membership),)


# --------------------------------------------------------------------------------- GRE


def test_gre_prior_moments():
    scales = {"mu_scale": 2.0, "group_scale": 0.5, "obs_scale": 0.3}
    model = examples.load("gre", G=3, N=4, D=2, **scales)
    n = 20_000
    draws = model.compile().sample_prior((n,), seed=3)
    mu = draws["mu"].double()  # (n, 2)
    x = draws["x"][:, 1, 2].double()  # (n, 2): one element, independent across draws
    for values, sd in [(mu, scales["mu_scale"]), (x, math.sqrt(sum(s**2 for s in scales.values())))]:
        se_mean, se_sd = sd / math.sqrt(n), sd / math.sqrt(2 * n)
        assert (values.mean(0).abs() < 4 * se_mean).all(), values.mean(0)
        assert ((values.std(0) - sd).abs() < 4 * se_sd).all(), values.std(0)


def dense_gre_posterior(x: np.ndarray, m0: float, s_mu: float, s_g: float, s_x: float):
    """Posterior means and sds of (mu, mu_1..mu_G) for one dimension, by Gaussian conditioning.

    The joint of z = (mu, mu_g, x) is z = A e with e ~ N(0, I) (plus the prior mean m0):
    rows of A say which standard-normal noises each entry adds up.
    """
    G, N = x.shape
    k = 1 + G + G * N
    A = np.zeros((k, k))
    A[:, 0] = s_mu  # everything contains mu's noise
    for g in range(G):
        A[1 + g, 1 + g] = s_g
        for j in range(N):
            row = 1 + G + g * N + j
            A[row, 1 + g] = s_g
            A[row, row] = s_x
    cov = A @ A.T
    lat, obs = slice(0, 1 + G), slice(1 + G, k)
    gain = cov[lat, obs] @ np.linalg.inv(cov[obs, obs])
    mean = m0 + gain @ (x.reshape(-1) - m0)
    post_cov = cov[lat, lat] - gain @ cov[obs, lat]
    return mean, np.sqrt(np.diag(post_cov))


@pytest.mark.parametrize("D", [1, 2])
def test_gre_analytic_posterior_matches_gaussian_conditioning(D, float64):
    scales = {"mu_scale": 1.5, "group_scale": 0.8, "obs_scale": 0.6}
    model = examples.load("gre", G=3, N=2, D=D, seed=4, **scales)
    post = gre.analytic_posterior(model)
    assert post["mu"].batch_shape == (D,) and post["mu_g"].batch_shape == (3, D)
    x = model.data["x"].numpy()  # (3, 2, D)
    for d in range(D):
        mean, sd = dense_gre_posterior(x[..., d], 0.0, *scales.values())
        np.testing.assert_allclose(post["mu"].mean[d].item(), mean[0], rtol=0, atol=1e-6)
        np.testing.assert_allclose(post["mu"].stddev[d].item(), sd[0], rtol=0, atol=1e-6)
        np.testing.assert_allclose(post["mu_g"].mean[:, d].numpy(), mean[1:], rtol=0, atol=1e-6)
        np.testing.assert_allclose(post["mu_g"].stddev[:, d].numpy(), sd[1:], rtol=0, atol=1e-6)


def test_gre_truth_within_posterior():
    model = examples.load("gre")
    post = gre.analytic_posterior(model)
    for name in ("mu", "mu_g"):
        z = (model.truth[name] - post[name].mean) / post[name].stddev
        assert z.shape == model.truth[name].shape
        assert (z.abs() < 4).float().mean() >= 0.95, z
        assert (z.abs() < 5).all(), z


# ------------------------------------------------------------------------ test data


def test_eight_schools_reference_draws_fit_the_example():
    ref = json.loads((DATASETS / "eight_schools_reference_draws.json").read_text())
    mu, tau, theta = (np.asarray(ref["draws"][k]) for k in ("mu", "tau", "theta"))
    assert mu.shape == tau.shape == (10_000,) and theta.shape == (10_000, 8)
    assert (tau > 0).all()
    model = examples.load("eight_schools")
    z = {"mu": torch.as_tensor(mu[:50]), "tau": torch.as_tensor(tau[:50]), "theta": torch.as_tensor(theta[:50])}
    z = {k: v.to(torch.get_default_dtype()) for k, v in z.items()}
    assert bool(torch.isfinite(model.compile().log_joint(z)).all())
