"""Tests for the editable model description: Plate, Variable, Covariate, PlateModel."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import param
import pytest
import torch

from pavi_viz.model import Covariate, ModelError, Plate, PlateModel, Variable


# -- param.Parameterized, editable ------------------------------------------------------------
def test_parts_are_parameterized(build) -> None:
    model = build("radon")
    for part in (model, model.plates[0], model.variables[0], model.covariates[0]):
        assert isinstance(part, param.Parameterized)
    assert set(Plate.param) >= {"name", "size", "nested_in", "membership"}
    assert set(Variable.param) >= {"name", "distribution", "params", "plates", "event_shape", "observed"}
    assert set(Covariate.param) >= {"name", "plates", "event_shape"}
    assert set(PlateModel.param) >= {"name", "description", "plates", "variables", "covariates", "data", "truth"}


def test_constructor_values() -> None:
    plate = Plate("house", nested_in="county", membership=[0, 0, 1])
    assert plate.name == "house" and plate.size == 3 and plate.ragged
    assert isinstance(plate.membership, np.ndarray)
    assert not Plate("g", 4).ragged and Plate("g", 4).size == 4
    var = Variable("y", "Normal", plates=("g",), observed=True, loc="mu", scale=1.0)
    assert var.params == {"loc": "mu", "scale": 1.0}
    assert var.plates == ["g"] and var.observed and not var.latent
    assert Variable("z", params={"loc": 0.0}, scale=2.0).params == {"loc": 0.0, "scale": 2.0}
    assert Covariate("floor", plates=["house"]).event_shape == []


def test_rename_a_plate(build) -> None:
    model = build("simple")
    plate = model.plate("school")
    plate.name = "college"
    assert model.plate("college") is plate
    assert model.to_dict()["plates"][0]["name"] == "college"
    # the variables still name the old plate: validation says which ones
    culprits = {p.culprit for p in model.problems()}
    assert {"theta", "y", "sigma"} <= culprits
    for item in (model.variable("theta"), model.variable("y"), model.covariates[0]):
        item.plates = ["college"]
    model.variable("y").params = {"loc": "theta[college]", "scale": "sigma"}
    assert model.problems() == []


def test_rename_a_variable(build) -> None:
    model = build("simple")
    model.variable("tau").name = "spread"
    assert [p.culprit for p in model.problems()] == ["theta"]  # its scale still says tau
    model.variable("theta").params = {**model.variable("theta").params, "scale": "spread"}
    assert model.problems() == []


def test_change_a_plate_size(build) -> None:
    model = build("simple")
    model.plate("school").size = 6
    assert {p.culprit for p in model.problems()} == {"sigma", "y"}  # the data no longer fits
    model.data = {"sigma": torch.ones(6), "y": torch.zeros(6)}
    assert model.problems() == []
    assert model.compile().sample_prior()["theta"].shape == (6,)


def test_param_checks_types_on_edit(build) -> None:
    model = build("simple")
    with pytest.raises(ValueError):
        model.plate("school").size = "many"
    with pytest.raises(ValueError):
        model.variable("mu").observed = "yes"
    with pytest.raises(ValueError):
        model.variable("mu").distribution = 3


def test_edits_are_watchable(build) -> None:
    model = build("simple")
    seen = []
    model.plate("school").param.watch(lambda event: seen.append((event.name, event.new)), ["size"])
    model.plate("school").size = 7
    assert seen == [("size", 7)]


def test_unknown_distribution_is_held_and_reported() -> None:
    # the builder may hold an invalid state, reported by validation with its culprit
    var = Variable("v", "Gaussian", loc=0.0, scale=1.0)
    assert var.distribution == "Gaussian"
    error = PlateModel([], [var]).problems()[0]
    assert error.culprit == "v" and "unknown distribution" in error.message
    var.distribution = "Normal"  # and the variable can be fixed
    assert PlateModel([], [var]).problems() == []


def test_data_become_tensors() -> None:
    model = PlateModel([Plate("g", 2)], [Variable("y", plates=["g"], observed=True, loc=0.0, scale=1.0)],
                       data={"y": [1, 2]}, truth={})
    assert isinstance(model.data["y"], torch.Tensor)
    assert model.data["y"].dtype == torch.get_default_dtype()
    model.with_data({"y": np.array([3.0, 4.0])})
    assert torch.equal(model.data["y"], torch.tensor([3.0, 4.0]))
    # Float32 data (a reversed view too) keep their values, in the default dtype.
    model.with_data({"y": np.array([5.5, 6.25], dtype=np.float32)[::-1]})
    assert torch.equal(model.data["y"], torch.tensor([6.25, 5.5])) and model.data["y"].dtype == torch.get_default_dtype()
    model.with_data({"y": np.array([1.0, 2.0])}, truth={"mu": np.float64(0.5) * np.ones(())})
    assert model.truth["mu"].shape == ()  # a 0-d array stays 0-d
    with pytest.raises(ModelError) as info:
        model.with_data({"y": ["a", "b"]})
    assert info.value.culprit == "y"


# -- simulate and copy -------------------------------------------------------------------------
def test_simulate_keeps_truth_and_leaves_the_original(build) -> None:
    model = build("radon")
    before = model.to_dict()
    data = dict(model.data)
    simulated = model.simulate(seed=0)
    assert simulated is not model
    # the original is untouched
    assert model.to_dict() == before
    assert model.truth is None
    assert all(model.data[k] is data[k] for k in data)
    # the copy holds draws for observed variables and ground truth for the latents
    assert set(simulated.truth) == set(model.latent_names)
    assert set(simulated.data) == {"floor", "y"}
    assert torch.equal(simulated.data["floor"], model.data["floor"])  # covariates kept
    assert not torch.equal(simulated.data["y"], model.data["y"])
    assert simulated.truth["a"].shape == (4,) and simulated.data["y"].shape == (10,)
    assert simulated.problems() == []
    # the data were drawn given the truth: their log density under it is that of a fit
    compiled = simulated.compile()
    assert torch.isfinite(compiled.log_joint(compiled.truth))


def test_simulate_is_reproducible(build) -> None:
    model = build("full")
    first, second = model.simulate(seed=5), model.simulate(seed=5)
    assert all(torch.equal(first.data[k], second.data[k]) for k in first.data)
    assert all(torch.equal(first.truth[k], second.truth[k]) for k in first.truth)
    assert not torch.equal(model.simulate(seed=6).data["y"], first.data["y"])


def test_simulate_refuses_draws_beyond_the_bound_naming_the_largest_plate(build) -> None:
    for name in ("nested", "radon", "full"):  # regular and ragged nesting: what a prior draw holds
        model = build(name)
        assert model.numbers() == sum(draw.numel() for draw in model.sample_prior(seed=0).values()), name
    model = build("nested")
    model.plate(model.plates[0].name).size = 10**9
    with pytest.raises(ModelError, match="over the 50,000,000 allowed") as info:
        model.simulate(seed=0)
    assert info.value.culprit == model.plates[0].name


def test_simulate_without_observed_data(build) -> None:
    model = build("nested")
    model.data = {}
    simulated = model.simulate(seed=1)
    assert simulated.data["x"].shape == (3, 4) and simulated.problems() == []


def test_copy_is_independent(build) -> None:
    model = build("full").simulate(seed=0)
    model.variables.append(Variable("beta", "DiagNormal", event_shape=[2], loc=[0.0, 0.0], scale=[1.0, 1.0]))
    clone = model.copy()
    assert clone.to_dict() == model.to_dict()
    assert all(torch.equal(clone.data[k], model.data[k]) for k in model.data)
    assert all(torch.equal(clone.truth[k], model.truth[k]) for k in model.truth)
    before = model.to_dict()
    clone.plate("county").size = 2
    clone.plate("house").name = "home"
    clone.variable("mu").params["loc"] = 5.0
    clone.variable("beta").params["loc"][0] = 9.0  # list-valued parameters are not shared
    clone.variable("a").plates.append("group")
    clone.variables.pop()
    clone.covariates[0].plates = []
    clone.data = {}
    clone.name = "other"
    assert model.to_dict() == before
    assert model.problems() == []


def test_to_dict_shares_nothing(build) -> None:
    model = build("simple")
    model.variables.append(Variable("beta", "DiagNormal", event_shape=[2], loc=[0.0, 0.0], scale=[1.0, 1.0]))
    spec = model.to_dict()
    spec["variables"][-1]["params"]["loc"][0] = 3.0
    spec["variables"][0]["plates"].append("school")
    spec["plates"][0]["size"] = 99
    assert model.variable("beta").params["loc"] == [0.0, 0.0]
    assert model.variable("mu").plates == [] and model.plate("school").size == 5


# -- reading it ----------------------------------------------------------------------------------
def test_lookups(build) -> None:
    model = build("radon")
    assert model.plate("house").nested_in == "county"
    assert model.variable("a").plates == ["county"]
    assert model.latent_names == ["mu", "sigma_a", "a", "b", "sigma_y"]
    assert model.observed_names == ["y"]


def test_lookup_errors_list_the_names(build) -> None:
    model = build("radon")
    with pytest.raises(KeyError) as info:
        model.plate("school")
    assert "'school'" in str(info.value) and "county" in str(info.value) and "house" in str(info.value)
    with pytest.raises(KeyError) as info:
        model.variable("alpha")
    assert "'alpha'" in str(info.value) and "sigma_y" in str(info.value)
    with pytest.raises(KeyError):
        model.variable("floor")  # a covariate, not a variable


def test_summary_and_repr(build) -> None:
    model = build("radon")
    model.description = "radon in houses"
    summary = model.summary()
    lines = summary.splitlines()
    assert lines[0] == "radon: radon in houses"
    assert "Plate('county', 4)" in summary
    assert "Plate('house', 10, nested_in='county', ragged)" in summary
    assert "Covariate('floor', plates=['house'])" in summary
    assert "Variable('y', Normal(loc='a[county] + b * floor', scale='sigma_y'), plates=['house'], observed)" \
        in summary
    assert "Variable('mu', Normal(loc=0.0, scale=2.0), plates=[], latent)" in summary
    assert len(lines) == 1 + 2 + 1 + 6
    assert repr(model) == "PlateModel('radon': 2 plates, 5 latent, 1 observed variables)"
    assert repr(build("nested").plate("obs")) == "Plate('obs', 4, nested_in='group')"
    model.description = ""
    assert model.summary().splitlines()[0] == "radon"


def test_conveniences_match_the_compiled_model(build) -> None:
    model = build("radon")
    draws = model.sample_prior((3,), seed=0)
    assert draws["a"].shape == (3, 4)
    compiled = model.compile()
    assert all(torch.equal(draws[k], compiled.sample_prior((3,), seed=0)[k]) for k in draws)
    latents = {n: draws[n] for n in model.latent_names}
    torch.testing.assert_close(model.log_joint(latents), compiled.log_joint(latents))
    batch = {"county": torch.tensor([1, 3])}
    assert model.sample_prior(batch=batch)["y"].shape == (compiled.frame(batch).sizes["house"],)


# -- imports -------------------------------------------------------------------------------------
def test_import_does_not_pull_in_the_dashboards(repo_root) -> None:
    code = (
        "import sys, pavi_viz.model\n"
        "from pavi_viz.model import PlateModel\n"
        "PlateModel.from_json('{\"plates\": [], \"variables\": []}').validate()\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'panel', 'holoviews', 'bokeh', 'hvplot'})\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_nesting_depth_counts_outer_plates_and_survives_a_cycle() -> None:
    model = PlateModel([Plate("county", 3), Plate("house", 6, nested_in="county"), Plate("visit", 2, nested_in="house")])
    assert [model.nesting_depth(p) for p in ("county", "house", "visit", "unknown")] == [0, 1, 2, 0]
    looped = PlateModel([Plate("a", 2, nested_in="b"), Plate("b", 2, nested_in="a")])  # invalid, still edited
    assert looped.nesting_depth("a") == 1
