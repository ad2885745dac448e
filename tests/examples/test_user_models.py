"""The user models of benchmarks/models.py and their NUTS references (benchmarks/references/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import pavi_viz
from benchmarks.models import MODELS
from pavi_viz import examples
from pavi_viz.model import PlateModel

REFERENCES = Path(__file__).resolve().parents[2] / "benchmarks" / "references"


def test_the_four_user_models_are_registered() -> None:
    assert list(MODELS) == ["glmm", "poisson_exposure", "nested", "funnel"]


@pytest.mark.parametrize("name", list(MODELS))
def test_user_model_builds_the_same_compiles_and_has_a_finite_log_joint(name: str) -> None:
    model = MODELS[name]()
    again = MODELS[name]()
    assert isinstance(model, PlateModel) and model.name == name
    assert set(model.data) == set(again.data)
    for key, value in model.data.items():
        torch.testing.assert_close(value, again.data[key], rtol=0, atol=0)  # a fixed seed: the same data
    compiled = model.compile()
    assert set(model.truth) == set(compiled.latent_names)
    prior = compiled.sample_prior((4,), seed=0)
    assert torch.isfinite(compiled.log_joint({n: prior[n] for n in compiled.latent_names})).all()
    truth = {n: torch.as_tensor(model.truth[n], dtype=torch.get_default_dtype())[None] for n in compiled.latent_names}
    for latent, value in truth.items():
        assert value.shape[1:] == prior[latent].shape[1:], latent  # the truth has the latents' shapes
    at_truth = compiled.log_joint(truth)
    assert torch.isfinite(at_truth).all()
    assert float(at_truth) > float(compiled.log_joint({n: prior[n] for n in compiled.latent_names}).min())


@pytest.mark.parametrize("name", list(MODELS))
def test_user_model_reference_reads_with_every_latent_in_its_shape(name: str) -> None:
    model = MODELS[name]()
    reference = examples.read_reference(REFERENCES / f"{name}_reference.json")
    ours = pavi_viz.fit(model, "mean-field", steps=2, seed=0, progress=False).posterior.summary(n=20)
    assert set(reference.data_vars) == set(model.latent_names) == set(ours.data_vars)
    compiled = model.compile()
    for latent in model.latent_names:
        assert reference[latent].dims == ours[latent].dims, latent
        assert reference[latent].shape == ours[latent].shape, latent
        plates = tuple(compiled.plates[p].size for p in compiled.plates_of(latent))
        assert reference[latent].shape == (5, *plates, *model.variable(latent).event_shape), latent
        stats = reference[latent]
        assert (stats.sel(stat="sd") > 0).all()
        assert (stats.sel(stat="5%") <= stats.sel(stat="50%")).all()
        assert (stats.sel(stat="50%") <= stats.sel(stat="95%")).all()
    assert list(reference["stat"].values) == list(ours["stat"].values)
    assert "NumPyro" in reference.attrs["source"] and "NUTS" in reference.attrs["source"]
    assert reference.attrs["max_rhat"] <= 1.01 and reference.attrs["divergences"] == 0
    assert reference.attrs["min_ess"] >= 1000


def test_user_model_references_recover_the_truth() -> None:
    """The simulated truth's global scalars lie within the references' posteriors (a 5-sd
    band: the references are of the models that simulated the data)."""
    for name, build in MODELS.items():
        model = build()
        reference = examples.read_reference(REFERENCES / f"{name}_reference.json")
        for latent in model.latent_names:
            mean = reference[latent].sel(stat="mean").values
            sd = reference[latent].sel(stat="sd").values
            assert np.all(np.abs(np.asarray(model.truth[latent].numpy()) - mean) < 5 * sd), (name, latent)


def test_glmm_reference_shows_the_correlated_fixed_effects() -> None:
    reference = examples.read_reference(REFERENCES / "glmm_reference.json")
    assert reference.attrs["strongest_correlation_of"] == "beta[0] ~ beta[1]"
    assert -0.85 < reference.attrs["strongest_correlation"] < -0.55


def test_read_reference_reads_a_bundled_reference_as_reference_summary_does() -> None:
    path = Path(examples.__file__).resolve().parents[1] / "datasets" / "radon_reference.json"
    assert examples.read_reference(path).identical(examples.reference_summary("radon"))
    with pytest.raises(FileNotFoundError):
        examples.read_reference(REFERENCES / "nope_reference.json")
