"""examples.reference: reference posterior draws shipped as package data."""

from __future__ import annotations

import importlib
import importlib.util

import numpy as np
import pytest

import pavi_viz
from pavi_viz import examples


def test_eight_schools_reference_is_named_like_the_posterior() -> None:
    reference = examples.reference("eight_schools")
    assert set(reference.data_vars) == {"mu", "tau", "theta"}
    assert reference["mu"].dims == reference["tau"].dims == ("sample",)
    assert reference["theta"].dims == ("sample", "school")
    assert reference.sizes == {"sample": 10_000, "school": 8}
    np.testing.assert_array_equal(reference["school"].values, np.arange(8))
    assert "posteriordb" in reference.attrs["source"]
    assert (reference["tau"] > 0).all()
    # The known posterior: the mean effect near 4.4, the spread's median near 3.
    assert 3.5 < float(reference["mu"].mean()) < 5.5
    assert 2 < float(reference["tau"].median()) < 4


def test_reference_dims_match_a_fitted_posterior() -> None:
    model = examples.load("eight_schools")
    result = pavi_viz.fit(model, "mean-field", steps=5, seed=0)
    draws = result.posterior.sample(3)
    reference = examples.reference("eight_schools")
    for name in reference.data_vars:
        assert reference[name].dims == draws[name].dims
    np.testing.assert_array_equal(reference["school"].values, draws["school"].values)


def test_examples_without_reference_and_unknown_names() -> None:
    assert examples.reference("gre") is None
    assert examples.reference("radon") is None
    with pytest.raises(KeyError, match="unknown example"):
        examples.reference("nope")


# -- NUTS reference summaries (benchmarks/references.py) -----------------------------------


@pytest.mark.parametrize("name", ["eight_schools", "radon", "radon_uranium", "spikes"])
def test_reference_summaries_are_laid_out_as_a_posterior_summary(name: str) -> None:
    model = examples.load(name)
    ours = pavi_viz.fit(model, "mean-field", steps=2, seed=0, progress=False).posterior.summary(n=20)
    reference = examples.reference_summary(name)
    assert set(reference.data_vars) == set(ours.data_vars)
    for variable in ours.data_vars:
        assert reference[variable].dims == ours[variable].dims, variable
        assert reference[variable].shape == ours[variable].shape, variable
    assert list(reference["stat"].values) == list(ours["stat"].values)
    for variable in reference.data_vars:
        stats = reference[variable]
        assert (stats.sel(stat="sd") > 0).all()
        assert (stats.sel(stat="5%") <= stats.sel(stat="50%")).all()
        assert (stats.sel(stat="50%") <= stats.sel(stat="95%")).all()


@pytest.mark.parametrize("name", ["radon", "radon_uranium", "spikes"])
def test_nuts_references_converged(name: str) -> None:
    reference = examples.reference_summary(name)
    assert "NumPyro" in reference.attrs["source"] and "NUTS" in reference.attrs["source"]
    assert reference.attrs["max_rhat"] <= 1.01 and reference.attrs["divergences"] == 0
    assert reference.attrs["min_ess"] >= 1000


def test_radon_reference_shows_the_known_effects() -> None:
    radon = examples.reference_summary("radon")
    assert radon["mu_beta"].sel(stat="95%") < 0  # first floors have less radon
    assert 0.65 < float(radon["sigma_y"].sel(stat="mean")) < 0.8
    uranium = examples.reference_summary("radon_uranium")
    assert uranium["beta"].sel(stat="5%").values[0] > 0  # more uranium, more radon
    assert float(uranium["sigma_alpha"].sel(stat="mean")) < float(radon["sigma_alpha"].sel(stat="mean"))
    assert examples.reference_summary("gre") is None


@pytest.mark.skipif(importlib.util.find_spec("numpyro") is None, reason="needs NumPyro (the bench extra)")
@pytest.mark.parametrize("name", ["radon", "radon_uranium", "spikes", "glmm", "poisson_exposure", "nested", "funnel"])
def test_the_numpyro_models_have_our_log_joint(name: str) -> None:
    """The references' models, written again by hand in NumPyro, give our log joint
    density at draws from our prior: they are the same models (the bundled examples and
    the user models of benchmarks/models.py)."""
    references = importlib.import_module("benchmarks.references")  # the repository root is on pytest's path
    import numpyro

    numpyro.enable_x64()
    reference = references.REFERENCES[name]
    model = reference.build(name)
    # It raises an AssertionError naming both values where they differ beyond float32's sums.
    references.check_log_density(name, model, reference.make(references._data(model)))
