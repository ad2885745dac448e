"""The posterior as ArviZ groups: Posterior.to_datatree, to_netcdf and load_netcdf."""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import pytest
import torch
import xarray as xr
from torch.distributions import Normal

import pavi_viz
from pavi_viz import Plate, PlateModel, Variable
from pavi_viz.inference import Posterior, load_netcdf, make_family
from pavi_viz.inference import posterior as posterior_module

pytest.importorskip("arviz_base", reason="arviz-base is in the optional extra pavi-viz[export]")


def chained_model(n: int = 6):
    """mu ~ Normal(0, 10), x_i ~ Normal(mu, 1), z_i ~ Normal(x_i, 0.5): z's parent x is observed."""
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 1.0, size=n)
    z = rng.normal(x, 0.5)
    return PlateModel(
        [Plate("obs", n)],
        [Variable("mu", "Normal", loc=0.0, scale=10.0),
         Variable("x", "Normal", loc="mu", scale=1.0, plates=["obs"], observed=True),
         Variable("z", "Normal", loc="x", scale=0.5, plates=["obs"], observed=True)],
        data={"x": x, "z": z},
    ).compile()


def mean_field(model, **latents: tuple):
    """A mean-field family with each named latent at ``(loc, scale)`` (unconstrained space)."""
    family = make_family("mean-field", model)
    with torch.no_grad():
        for name, (loc, scale) in latents.items():
            family.loc[name].copy_(torch.as_tensor(loc, dtype=torch.float32).reshape(family.loc[name].shape))
            family.log_scale[name].fill_(math.log(scale))
    return family


def test_groups_and_dims():
    model = pavi_viz.examples.load("radon").compile()
    torch.manual_seed(0)
    post = Posterior(model, make_family("mean-field", model), coords={"county": [f"c{i}" for i in range(85)]},
                     correct="none")
    tree = post.to_datatree(n=30, predictive=30, seed=0)
    assert isinstance(tree, xr.DataTree)
    assert set(tree.children) == {"posterior", "log_likelihood", "sample_stats", "posterior_predictive",
                                  "observed_data", "constant_data"}
    posterior = tree["posterior"]
    assert posterior["alpha"].dims == ("chain", "draw", "county")
    assert posterior.sizes["chain"] == 1 and posterior.sizes["draw"] == 30
    assert posterior["county"].values[3] == "c3"
    assert tree["log_likelihood"]["log_radon"].dims == ("chain", "draw", "house")
    assert tree["sample_stats"]["lp"].dims == tree["sample_stats"]["log_q"].dims == ("chain", "draw")
    assert tree["posterior_predictive"]["log_radon"].dims == ("chain", "draw", "house")
    assert tree["observed_data"]["log_radon"].dims == ("house",)
    assert tree["constant_data"]["floor"].dims == ("house",)
    assert tree.attrs["model"] == "radon"
    assert "pareto_k" not in tree["sample_stats"].attrs  # no check with correct="none"
    # Without predictive draws; fewer replicated than drawn: the first draws'.
    assert "posterior_predictive" not in post.to_datatree(n=10, predictive=None).children
    assert post.to_datatree(n=10, predictive=4)["posterior_predictive"].sizes["draw"] == 4
    assert post.to_datatree(n=10, predictive=50)["posterior_predictive"].sizes["draw"] == 10
    assert "log_likelihood" not in post.to_datatree(n=10, log_likelihood=False).children


def test_the_log_likelihood_reduces_event_dims():
    model = pavi_viz.examples.load("gre", G=3, N=4, D=2).compile()
    tree = Posterior(model, make_family("mean-field", model), correct="none").to_datatree(n=5, predictive=5, seed=0)
    assert tree["posterior"]["mu_g"].dims == ("chain", "draw", "group", "mu_g_dim_0")
    assert tree["posterior_predictive"]["x"].dims == ("chain", "draw", "group", "obs", "x_dim_0")
    assert tree["log_likelihood"]["x"].dims == ("chain", "draw", "group", "obs")  # a Normal per element, summed


def test_log_likelihood_and_stats_are_the_densities_of_the_draws():
    """By hand: log p(x_i | mu_s), log p(z_i | x_i) at the data (z's parent is observed),
    lp as model.log_joint_terms, and log_q of q's own draws, N(mu; 2, 0.5)."""
    model = chained_model()
    post = Posterior(model, mean_field(model, mu=(2.0, 0.5)), correct="none")
    tree = post.to_datatree(n=40, seed=1)
    mu = torch.as_tensor(tree["posterior"]["mu"].values[0])
    x, z = model.data["x"], model.data["z"]
    log_likelihood = tree["log_likelihood"]
    np.testing.assert_allclose(log_likelihood["x"].values[0], Normal(mu[:, None], 1.0).log_prob(x), rtol=1e-5)
    np.testing.assert_allclose(log_likelihood["z"].values[0], Normal(x, 0.5).log_prob(z).expand(40, -1), rtol=1e-5)
    stats = tree["sample_stats"]
    terms = model.log_joint_terms({"mu": mu})
    np.testing.assert_allclose(stats["lp"].values[0], sum(terms.values()), rtol=1e-5)
    np.testing.assert_allclose(stats["log_q"].values[0], Normal(2.0, 0.5).log_prob(mu), rtol=1e-5)


def test_resampled_draws_carry_the_density_of_the_mixture_that_drew_them():
    """PSIS-resampled draws come from the pool's defensive mixture, half q = N(2, 0.5)
    and half q spread twice: log_q is that mixture's, so lp - log_q are the weights."""
    model = chained_model()
    post = Posterior(model, mean_field(model, mu=(1.2, 0.5)))
    tree = post.to_datatree(n=200, seed=0, correct="psis")
    assert tree["sample_stats"].attrs["psis_resampled"] == 1
    mu = torch.as_tensor(tree["posterior"]["mu"].values[0], dtype=torch.float64)
    mixture = torch.logaddexp(Normal(1.2, 0.5).log_prob(mu), Normal(1.2, 1.0).log_prob(mu)) - math.log(2)
    np.testing.assert_allclose(tree["sample_stats"]["log_q"].values[0], mixture, rtol=1e-5)


def big_model(units: int = 200):
    """One global mean and one effect per unit, each unit observed once."""
    return PlateModel(
        [Plate("unit", units)],
        [Variable("mu", "Normal", loc=0.0, scale=1.0),
         Variable("theta", "Normal", loc="mu", scale=1.0, plates=["unit"]),
         Variable("y", "Normal", loc="theta", scale=1.0, plates=["unit"], observed=True)],
        data={"y": np.linspace(-2, 2, units)},
    ).compile()


def test_chunked_draws_sum_their_stats_over_the_chunks():
    """Drawn in element chunks (mu with the first, given to the others), each draw's
    lp and log_q are still those of the whole draw, each term counted once."""
    model = big_model()
    loc = np.linspace(-1, 1, 200)
    post = Posterior(model, mean_field(model, mu=(0.5, 0.2), theta=(loc, 0.3)), correct="none")
    n, bound = 10, 10 * 60
    assert len({c.part for c in post.chunks(n, bound, predictive=True)}) > 1
    tree = post.to_datatree(n=n, predictive=n, chunk_elements=bound, seed=0)
    mu = torch.as_tensor(tree["posterior"]["mu"].values[0])
    theta = torch.as_tensor(tree["posterior"]["theta"].values[0])
    lp = sum(model.log_joint_terms({"mu": mu, "theta": theta}).values())
    np.testing.assert_allclose(tree["sample_stats"]["lp"].values[0], lp, rtol=1e-5)
    log_q = Normal(0.5, 0.2).log_prob(mu) + Normal(torch.as_tensor(loc, dtype=torch.float32), 0.3).log_prob(theta).sum(1)
    np.testing.assert_allclose(tree["sample_stats"]["log_q"].values[0], log_q, rtol=1e-5)
    np.testing.assert_allclose(tree["log_likelihood"]["y"].values[0], Normal(theta, 1.0).log_prob(model.data["y"]),
                               rtol=1e-5)


def test_a_log_likelihood_too_large_is_left_out_and_said(monkeypatch):
    monkeypatch.setattr(posterior_module, "LOG_LIKELIHOOD_NUMBERS", 100)
    model = chained_model()  # 2 x 6 observed elements a draw
    post = Posterior(model, mean_field(model, mu=(2.0, 0.5)), correct="none")
    with pytest.warns(UserWarning, match="leaves the log_likelihood group out"):
        tree = post.to_datatree(n=10, seed=0)
    assert "log_likelihood" not in tree.children and "sample_stats" in tree.children
    assert "LOG_LIKELIHOOD_NUMBERS = 100" in tree.attrs["log_likelihood_left_out"]


def test_to_datatree_names_the_extra_when_arviz_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "arviz_base", None)  # makes the import fail
    model = chained_model()
    with pytest.raises(ImportError, match=r"pavi-viz\[export\]"):
        Posterior(model, make_family("mean-field", model)).to_datatree(n=5)


def test_loo_of_a_fitted_eight_schools():
    arviz_stats = pytest.importorskip("arviz_stats")
    torch.manual_seed(0)
    result = pavi_viz.fit(pavi_viz.examples.load("eight_schools"), "mean-field", steps=300, progress=False)
    tree = result.posterior.to_datatree(n=500, predictive=None, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # loo's own k may be large at one school
        loo = arviz_stats.loo(tree)
    assert math.isfinite(loo.elpd) and -40 < loo.elpd < -25  # lppd of 8 schools about -31
    assert tree["log_likelihood"]["y"].sizes["school"] == 8


# -- NetCDF -------------------------------------------------------------------------------
def test_netcdf_round_trip(tmp_path):
    pytest.importorskip("h5netcdf", reason="h5netcdf is in the optional extra pavi-viz[export]")
    model = pavi_viz.examples.load("spikes").compile()
    torch.manual_seed(0)
    post = Posterior(model, make_family("mean-field", model), coords={"animal": ["a", "b", "c", "d"]})
    path = tmp_path / "posterior.nc"
    post.to_netcdf(path, n=25, seed=4)
    loaded = load_netcdf(path)
    expected = post.to_datatree(n=25, seed=4)
    xr.testing.assert_equal(loaded, expected)  # the values (the attrs hold creation times)
    assert loaded.attrs == expected.attrs and loaded["posterior"].attrs["family"] == "mean-field"
    assert {k: loaded["sample_stats"].attrs[k] for k in ("pareto_k", "pareto_k_draws", "psis_resampled")} == {
        k: expected["sample_stats"].attrs[k] for k in ("pareto_k", "pareto_k_draws", "psis_resampled")}
    assert list(loaded["posterior"]["animal"].values) == ["a", "b", "c", "d"]


def test_old_files_of_flat_draws_are_read_as_a_posterior_group(tmp_path):
    pytest.importorskip("h5netcdf", reason="h5netcdf is in the optional extra pavi-viz[export]")
    model = chained_model()
    draws = Posterior(model, mean_field(model, mu=(2.0, 0.5)), correct="none").sample(7, seed=0)
    path = tmp_path / "old.nc"
    draws.to_netcdf(path, engine="h5netcdf")  # the layout of pavi_viz 0.1's to_netcdf
    tree = load_netcdf(path)
    assert list(tree.children) == ["posterior"] and tree.attrs["model"] == draws.attrs["model"]
    posterior = tree["posterior"]
    assert posterior["mu"].dims == ("chain", "draw") and posterior.sizes["chain"] == 1
    np.testing.assert_array_equal(posterior["mu"].values[0], draws["mu"].values)
    np.testing.assert_array_equal(posterior["draw"].values, np.arange(7))
