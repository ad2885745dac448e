"""Posterior draws and summaries (pavi_viz.inference.posterior; its exports: test_arviz.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import xarray as xr

import pavi_viz
from pavi_viz import Plate, PlateModel, Variable
from pavi_viz.inference import Posterior, elbo, make_family
from pavi_viz.inference.families import MeanField, PaviF


def compiled(name: str, **options):
    return pavi_viz.examples.load(name, **options).compile()


def posterior(name: str, family: str = "pavi-f", coords=None, seed: int = 0, correct: str = "none") -> Posterior:
    # Without importance resampling by default: these tests check how q's draws are
    # chunked, placed and seeded (test_importance.py checks the resampling).
    model = compiled(name)
    torch.manual_seed(seed)
    return Posterior(model, make_family(family, model), coords=coords, correct=correct)


def train(model, family, steps: int = 300, lr: float = 1e-2, particles: int = 4) -> None:
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(family.parameters(), lr=lr)
    frame = model.frame()
    for _ in range(steps):
        optimizer.zero_grad()
        (-elbo(model, family, frame, particles=particles).value).backward()
        optimizer.step()


def set_mean_field(family: MeanField, name: str, loc, scale: float) -> None:
    """Fix a mean-field latent's Gaussian (in unconstrained space)."""
    with torch.no_grad():
        family.loc[name].copy_(torch.as_tensor(loc, dtype=family.loc[name].dtype).reshape(family.loc[name].shape))
        family.log_scale[name].fill_(math.log(scale))


class Recording(PaviF):
    """PAVI-F that records what each call of ``sample`` was given and returned."""

    def __init__(self, model, **options):
        super().__init__(model, **options)
        self.calls = []

    def sample(self, frame, particles=1, given=None, generator=None):
        draw = super().sample(frame, particles, given, generator)
        self.calls.append((dict(frame.batch), particles, given, draw))
        return draw


class Measuring(MeanField):
    """Mean-field that records the numbers each call of ``sample`` drew."""

    def __init__(self, model, **options):
        super().__init__(model, **options)
        self.sizes = []

    def sample(self, frame, particles=1, given=None, generator=None):
        draw = super().sample(frame, particles, given, generator)
        self.sizes.append(sum(v.numel() for v in draw.values.values()))
        return draw


def big_model(units: int = 100_000) -> PlateModel:
    """One global mean and one effect per unit, each unit observed once."""
    return PlateModel(
        [Plate("unit", units)],
        [
            Variable("mu", "Normal", loc=0.0, scale=1.0),
            Variable("theta", "Normal", loc="mu", scale=1.0, plates=["unit"]),
            Variable("y", "Normal", loc="theta", scale=1.0, plates=["unit"], observed=True),
        ],
        data={"y": torch.zeros(units)},
        name="big",
    )


# -- shapes, dims and coords ---------------------------------------------------------
def test_sample_dims_gre():
    post = posterior("gre")
    ds = post.sample(7, seed=0)
    assert set(ds.data_vars) == {"mu", "mu_g"}
    assert ds["mu"].dims == ("sample", "mu_dim_0") and ds["mu"].shape == (7, 2)
    assert ds["mu_g"].dims == ("sample", "group", "mu_g_dim_0") and ds["mu_g"].shape == (7, 20, 2)
    np.testing.assert_array_equal(ds["sample"], np.arange(7))
    np.testing.assert_array_equal(ds["group"], np.arange(20))
    np.testing.assert_array_equal(ds["mu_dim_0"], np.arange(2))
    assert ds.attrs["model"] == "gre" and ds.attrs["family"] == "pavi-f"
    assert ds["mu_g"].dtype == np.float32 and np.isfinite(ds["mu_g"]).all()


def test_sample_dims_radon_with_coords():
    names = [f"county {i}" for i in range(85)]
    post = posterior("radon", "mean-field", coords={"county": names})
    ds = post.sample(5, seed=0)
    assert ds["alpha"].dims == ("sample", "county") and ds["alpha"].shape == (5, 85)
    assert ds["mu_alpha"].dims == ("sample",) and ds["sigma_y"].shape == (5,)
    assert "house" not in ds.dims  # no latent lives in the houses
    assert list(ds["county"].values) == names
    assert (ds["sigma_y"] > 0).all()
    rep = post.predictive(3, seed=0)
    assert list(rep.data_vars) == ["log_radon"] and rep["log_radon"].dims == ("sample", "house")
    obs = post.observed_data()
    assert obs["log_radon"].shape == (919,)
    np.testing.assert_array_equal(obs["log_radon"].values, post.model.data["log_radon"].numpy())
    assert post.constant_data()["floor"].dims == ("house",)


def test_sample_dims_spikes_ragged():
    post = posterior("spikes", "pavi-e")
    ds = post.sample(4, seed=0)
    assert ds["animal_rate"].dims == ("sample", "animal") and ds["animal_rate"].shape == (4, 4)
    assert ds["neuron_rate"].dims == ("sample", "neuron") and ds["neuron_rate"].shape == (4, 43)
    rep = post.predictive(3, seed=0, chunk_elements=500)
    assert rep["spikes"].dims == ("sample", "neuron", "trial") and rep["spikes"].shape == (3, 43, 20)
    counts = rep["spikes"].values
    assert (counts >= 0).all() and np.array_equal(counts, np.round(counts))


def test_sample_dims_mixture_dirichlet_event():
    post = posterior("mixture")
    ds = post.sample(6, seed=0)
    assert ds["pi_g"].dims == ("sample", "group", "pi_g_dim_0") and ds["pi_g"].shape == (6, 10, 3)
    assert ds["mu"].dims == ("sample", "mu_dim_0", "mu_dim_1") and ds["mu"].shape == (6, 3, 2)
    assert ds["mu_g"].dims == ("sample", "group", "mu_g_dim_0", "mu_g_dim_1")
    np.testing.assert_allclose(ds["pi_g"].sum("pi_g_dim_0"), 1.0, rtol=1e-5)
    assert (ds["pi_g"] >= 0).all()


def test_coords_are_checked():
    model = compiled("radon")
    family = make_family("mean-field", model)
    with pytest.raises(ValueError, match="county"):
        Posterior(model, family, coords={"county": ["a", "b"]})
    with pytest.raises(ValueError, match="unknown dims"):
        Posterior(model, family, coords={"counties": list(range(85))})
    post = Posterior(model, family, coords={"county": list(range(85))})
    with pytest.raises(ValueError, match="at least 1"):
        post.sample(0)
    with pytest.raises(ValueError, match="not latent"):
        post.sample(3, variables=["log_radon"])
    assert list(post.sample(3, variables=["alpha"]).data_vars) == ["alpha"]


# -- chunks ---------------------------------------------------------------------------
def test_chunked_draw_is_joint_and_matches_unchunked_globals():
    post = posterior("gre")
    n, bound = 50, 500  # per draw: mu (2 numbers) + 2 per group; 4 groups a chunk
    chunks = list(post.chunks(n, bound))
    assert len(chunks) == 5 and all(c.particles == n and c.size <= bound for c in chunks)
    whole = post.sample(n, seed=3)
    chunked = post.sample(n, chunk_elements=bound, seed=3)
    # The globals are drawn once, with the first chunk, exactly as in the unchunked draw.
    np.testing.assert_array_equal(chunked["mu"].values, whole["mu"].values)
    assert not np.array_equal(chunked["mu_g"].values, whole["mu_g"].values)
    assert np.isfinite(chunked["mu_g"]).all()


def test_every_chunk_is_drawn_given_the_same_globals():
    model = compiled("spikes")
    torch.manual_seed(0)
    family = Recording(model)
    post = Posterior(model, family, correct="none")
    n, bound = 20, 20 * 20  # an animal holds up to 14 neurons; 4 globals
    ds = post.sample(n, chunk_elements=bound, seed=0)
    calls = family.calls
    assert len(calls) > 1
    _, _, first_given, first_draw = calls[0]
    assert first_given is None
    globals_ = ["mu_pop", "sigma_animal", "sigma_neuron", "gain"]
    for batch, particles, given, _ in calls[1:]:
        assert particles == n and set(given) == set(globals_)
        for name in globals_:
            torch.testing.assert_close(given[name], first_draw.values[name], rtol=0, atol=0)
            np.testing.assert_array_equal(ds[name].values, given[name].numpy())
    # Every animal (and so every neuron) is drawn exactly once.
    animals = torch.cat([batch["animal"] for batch, *_ in calls])
    neurons = torch.cat([batch["neuron"] for batch, *_ in calls])
    assert sorted(animals.tolist()) == list(range(4))
    assert sorted(neurons.tolist()) == list(range(43))


def test_chunked_equals_unchunked_in_distribution():
    post = posterior("gre")
    n = 4000
    whole = post.sample(n, seed=1)
    chunked = post.sample(n, chunk_elements=n * 10, seed=2)  # a few groups per chunk
    assert len(list(post.chunks(n, n * 10))) > 1
    for name in ("mu", "mu_g"):
        a, b = whole[name], chunked[name]
        se = np.sqrt(a.var("sample") / n + b.var("sample") / n)
        assert (np.abs(a.mean("sample") - b.mean("sample")) < 5 * se).all()
        np.testing.assert_allclose(a.std("sample"), b.std("sample"), rtol=0.15)
    # The joint structure too: each group's correlation with the global mean.
    def corr(ds):
        mu, mu_g = ds["mu"].values[:, None, :], ds["mu_g"].values
        centred = (mu - mu.mean(0)) * (mu_g - mu_g.mean(0))
        return centred.mean(0) / (mu.std(0) * mu_g.std(0))

    assert np.abs(corr(whole) - corr(chunked)).max() < 0.15


def test_ragged_latents_land_at_their_global_positions():
    model = compiled("spikes")
    family = make_family("mean-field", model)
    set_mean_field(family, "neuron_rate", torch.arange(43.0), 1e-3)
    set_mean_field(family, "animal_rate", 100 + torch.arange(4.0), 1e-3)
    post = Posterior(model, family, correct="none")
    chunks = list(post.chunks(10, 10 * 20))
    assert len({c.part for c in chunks}) > 1
    ds = post.sample(10, chunk_elements=10 * 20, seed=0)
    np.testing.assert_allclose(ds["neuron_rate"].mean("sample"), np.arange(43), atol=0.01)
    np.testing.assert_allclose(ds["animal_rate"].mean("sample"), 100 + np.arange(4), atol=0.01)


def test_ragged_predictive_follows_the_membership():
    model = compiled("radon")
    family = make_family("mean-field", model)
    county_value = torch.arange(85.0) / 10
    set_mean_field(family, "alpha", county_value, 1e-3)
    set_mean_field(family, "beta", torch.zeros(85), 1e-3)
    set_mean_field(family, "sigma_y", math.log(0.01), 1e-3)  # log: sigma_y's support is positive
    post = Posterior(model, family, correct="none")
    bound = 40 * 60
    assert len({c.part for c in post.chunks(40, bound, predictive=True)}) > 1
    rep = post.predictive(40, chunk_elements=bound, seed=0, latents=True)
    membership = model.plates["house"].membership.numpy()
    np.testing.assert_allclose(rep["log_radon"].mean("sample"), county_value.numpy()[membership], atol=0.02)
    floor = model.data["floor"].numpy()
    alpha, beta = rep["alpha"].values[:, membership], rep["beta"].values[:, membership]
    residual = (rep["log_radon"].values - alpha - beta * floor) / rep["sigma_y"].values[:, None]
    assert abs(residual.mean()) < 0.05 and abs(residual.std() - 1) < 0.05


# -- summaries ---------------------------------------------------------------------------
@pytest.mark.parametrize("bound", [2**20, 500, 150])  # whole; element chunks; draws split too
def test_summary_is_the_statistics_of_the_same_draws(bound):
    post = posterior("gre")
    n = 60
    chunks = list(post.chunks(n, bound))
    assert all(c.size <= bound for c in chunks)
    if bound == 150:
        assert any(c.particles < n for c in chunks)
    ds = post.sample(n, chunk_elements=bound, seed=5)
    summary = post.summary(n, quantiles=(0.05, 0.5, 0.95), chunk_elements=bound, seed=5)
    assert list(summary["stat"].values) == ["mean", "sd", "5%", "50%", "95%"]
    np.testing.assert_allclose(summary["quantile"].values[2:], [0.05, 0.5, 0.95])
    assert summary["mu_g"].dims == ("stat", "group", "mu_g_dim_0")
    for name in ("mu", "mu_g"):
        draws = ds[name].values
        expected = np.stack([draws.mean(0), draws.std(0, ddof=1), *np.quantile(draws, [0.05, 0.5, 0.95], axis=0)])
        np.testing.assert_allclose(summary[name].values, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("correct", ["none", "auto"])  # q's draws; draws resampled from a pool
def test_the_summary_of_a_tree_is_the_summary_of_its_draws(correct):
    post = posterior("gre", correct=correct)
    tree = post.to_datatree(80, seed=3, predictive=None)
    of_tree = post.summary_of(tree)
    drawn = post.summary(80, seed=3)
    assert of_tree.attrs == drawn.attrs and list(of_tree["stat"].values) == list(drawn["stat"].values)
    for name in ("mu", "mu_g"):
        np.testing.assert_allclose(of_tree[name].values, drawn[name].values, rtol=1e-5, atol=1e-6)
        assert of_tree[name].dims == drawn[name].dims


def test_summary_matches_sample_within_monte_carlo_error():
    post = posterior("mixture")
    n = 3000
    summary = post.summary(n, chunk_elements=n * 30, seed=1)
    ds = post.sample(n, seed=2)
    for name in ("mu", "mu_g", "pi_g"):
        se = ds[name].std("sample") / np.sqrt(n)
        assert (np.abs(summary[name].sel(stat="mean") - ds[name].mean("sample")) < 6 * se + 1e-6).all()
        np.testing.assert_allclose(summary[name].sel(stat="sd"), ds[name].std("sample"), rtol=0.15, atol=1e-4)
        np.testing.assert_allclose(summary[name].sel(stat="50%"), ds[name].median("sample"), atol=0.1)


def test_summary_of_a_huge_plate_stays_within_the_bound():
    model = big_model().compile()
    family = Measuring(model)
    units = model.plates["unit"].size
    loc = torch.linspace(-3, 3, units)
    set_mean_field(family, "theta", loc, 0.5)
    set_mean_field(family, "mu", 1.0, 0.1)
    post = Posterior(model, family)
    n, bound = 20, 2**14
    chunks = list(post.chunks(n, bound))
    assert len(chunks) > 100
    assert max(c.size for c in chunks) <= bound
    assert sum(c.frame.sizes["unit"] for c in chunks) == units
    summary = post.summary(n, chunk_elements=bound, seed=0)
    assert len(family.sizes) == len(chunks) and max(family.sizes) <= bound
    assert summary["theta"].shape == (5, units)
    mean = summary["theta"].sel(stat="mean").values
    assert np.abs(mean - loc.numpy()).max() < 6 * 0.5 / np.sqrt(n)
    np.testing.assert_allclose(summary["theta"].sel(stat="sd").values.mean(), 0.5, rtol=0.03)
    np.testing.assert_allclose(summary["mu"].sel(stat="mean").values, 1.0, atol=0.05)


def test_summary_arguments():
    post = posterior("eight_schools", "mean-field")
    summary = post.summary(20, quantiles=(0.25,), variables=["theta"])
    assert list(summary.data_vars) == ["theta"]
    assert list(summary["stat"].values) == ["mean", "sd", "25%"]
    with pytest.raises(ValueError, match="quantiles"):
        post.summary(20, quantiles=(1.5,))


@pytest.mark.parametrize("family", ["pavi-e", "mean-field"])
def test_seeded_summaries_in_threads_match_one_alone(family, in_threads):
    """A seed gives the same summary while other threads draw from the same posterior
    (the same family), and leaves the caller's global random state alone."""
    post = posterior("gre", family)
    assert len(list(post.chunks(100, 100))) > 50  # many draws of the family, interleaved
    alone = post.summary(100, chunk_elements=100, seed=3)
    before = torch.get_rng_state()
    together = in_threads(*[lambda: post.summary(100, chunk_elements=100, seed=3)] * 3)
    for summary in together:
        xr.testing.assert_identical(summary, alone)
    assert torch.equal(torch.get_rng_state(), before)


# -- predictive ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gre", "eight_schools", "radon", "mixture"])
def test_predictive_has_the_data_shape(name):
    post = posterior(name, "mean-field")
    rep = post.predictive(4, seed=0)
    obs = post.observed_data()
    assert set(rep.data_vars) == set(post.model.observed_names)
    for var in rep.data_vars:
        assert rep[var].shape == (4, *obs[var].shape)
        assert rep[var].dims == ("sample", *obs[var].dims)


def test_seeded_predictive_draws_in_threads_match_one_alone(in_threads):
    """The observed draws come from torch's global generator, seeded chunk by chunk
    under a lock: concurrent calls with a seed give the draws of a call alone."""
    post = posterior("radon", "mean-field")
    bound = 40 * 60  # several chunks
    alone = post.predictive(40, chunk_elements=bound, seed=2)
    assert xr.Dataset.equals(alone, post.predictive(40, chunk_elements=bound, seed=2))
    assert not alone.equals(post.predictive(40, chunk_elements=bound, seed=3))
    together = in_threads(*[lambda: post.predictive(40, chunk_elements=bound, seed=2)] * 2)
    for rep in together:
        xr.testing.assert_identical(rep, alone)


def test_trained_eight_schools_predictive_covers_the_data():
    model = compiled("eight_schools")
    torch.manual_seed(0)
    family = make_family("mean-field", model)
    train(model, family, steps=300)
    post = Posterior(model, family)
    rep = post.predictive(2000, seed=0)["y"]
    y = post.observed_data()["y"]
    low, high = rep.quantile(0.01, "sample"), rep.quantile(0.99, "sample")
    assert ((y > low) & (y < high)).all()
    # The posterior mean effect sits between the smallest and largest observed effects.
    theta = post.summary(500, seed=0)["theta"].sel(stat="mean")
    assert (theta > y.min()).all() and (theta < y.max()).all()
