"""Tests for the compiled model: log joint (full and batched), sampling, transforms."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from pavi_viz.model import CompiledModel, ModelError, Plate, PlateModel, Variable
from pavi_viz.model.plates import PlateBatch

#: The house -> county membership of the "radon" model (4 counties, 10 houses).
HOUSE_COUNTY = [2, 0, 1, 2, 0, 3, 2, 3, 0, 2]
#: Batch sizes for the unbiasedness tests on :func:`full_model` (8 counties, 40 houses,
#: 3 x 4 obs, 2 animals > 5 neurons > 3 trials): every kind of plate batched at once.
BATCH_SIZES = [
    pytest.param({"county": 3, "house": 10}, id="ragged-subsampled"),
    pytest.param({"county": 3}, id="ragged-all-members"),
    pytest.param({"house": 5}, id="ragged-alone"),
    pytest.param({"county": 1, "house": 2}, id="ragged-some-empty"),  # county 5 has no houses
    pytest.param({"county": 2, "house": 3, "group": 2, "obs": 3, "animal": 1, "neuron": 2, "trial": 2},
                 id="everything"),
]


def event_model() -> PlateModel:
    """Latents with event shapes and constrained supports (no data)."""
    return PlateModel(
        [Plate("group", 3), Plate("obs", 4, nested_in="group")],
        [
            Variable("beta", "DiagNormal", event_shape=[2], loc=[0.0, 0.0], scale=[1.0, 1.0]),
            Variable("w", "Dirichlet", plates=["group"], event_shape=[3], concentration=[1.0, 2.0, 3.0]),
            Variable("s", "HalfCauchy", plates=["group"], scale=1.0),
            Variable("z", "Normal", plates=["group", "obs"], event_shape=[3],
                     loc="w[group] * beta[0] + beta[1]", scale="s[group]"),
        ],
    )


def latents_of(compiled: CompiledModel, draws: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: draws[n] for n in compiled.latent_names}


def restrict(compiled: CompiledModel, values: dict[str, torch.Tensor], batch: PlateBatch) -> dict[str, torch.Tensor]:
    """Full-size latent values cut down to a batch."""
    frame = compiled.frame(batch)
    return {n: frame.select(v, compiled.plates_of(n)) for n, v in values.items()}


@pytest.fixture
def compiled_full(build) -> CompiledModel:
    return build("full").compile()


@pytest.fixture
def truth_full(compiled_full: CompiledModel) -> dict[str, torch.Tensor]:
    return latents_of(compiled_full, compiled_full.sample_prior(seed=0))


# -- log joint -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["simple", "nested", "radon", "full"])
def test_log_joint_is_sum_of_terms(build, name: str) -> None:
    compiled = build(name).compile()
    latents = latents_of(compiled, compiled.sample_prior(seed=1))
    terms = compiled.log_joint_terms(latents)
    assert set(terms) == set(compiled.variables)
    torch.testing.assert_close(compiled.log_joint(latents), sum(terms.values()))
    assert compiled.log_joint(latents).shape == ()


def test_log_joint_matches_hand_computation(build) -> None:
    model = build("radon")
    compiled = model.compile()
    latents = latents_of(compiled, compiled.sample_prior(seed=2))
    N, HN = torch.distributions.Normal, torch.distributions.HalfNormal
    mu, sigma_a, a, b, sigma_y = (latents[n] for n in ("mu", "sigma_a", "a", "b", "sigma_y"))
    county = torch.tensor(HOUSE_COUNTY)
    expected = (
        N(0.0, 2.0).log_prob(mu) + HN(1.0).log_prob(sigma_a) + N(mu, sigma_a).log_prob(a).sum()
        + N(0.0, 1.0).log_prob(b) + HN(1.0).log_prob(sigma_y)
        + N(a[county] + b * model.data["floor"], sigma_y).log_prob(model.data["y"]).sum()
    )
    torch.testing.assert_close(compiled.log_joint(latents), expected)
    # the PlateModel convenience gives the same value
    torch.testing.assert_close(model.log_joint(latents), expected)


def test_log_joint_particles(build) -> None:
    compiled = build("full").compile()
    draws = latents_of(compiled, compiled.sample_prior((4, 2), seed=3))
    values = compiled.log_joint(draws)
    assert values.shape == (4, 2)
    for i, j in itertools.product(range(4), range(2)):
        one = compiled.log_joint({n: v[i, j] for n, v in draws.items()})
        torch.testing.assert_close(values[i, j], one)


def test_whole_plate_batch_equals_full_value(compiled_full: CompiledModel,
                                              truth_full: dict[str, torch.Tensor]) -> None:
    full = compiled_full.log_joint(truth_full)
    whole = {p.name: torch.arange(p.size) for p in compiled_full.plates}
    assert torch.equal(compiled_full.log_joint(truth_full, batch=whole), full)
    # batch sizes at least the plates' sizes: the whole model again
    sizes = {p.name: p.size for p in compiled_full.plates}
    batch = compiled_full.sample_batch(sizes)
    assert torch.equal(compiled_full.log_joint(restrict(compiled_full, truth_full, batch), batch=batch), full)


@pytest.mark.parametrize("sizes", BATCH_SIZES)
def test_batched_log_joint_is_unbiased(compiled_full: CompiledModel, truth_full: dict[str, torch.Tensor],
                                       sizes: dict[str, int]) -> None:
    full = compiled_full.log_joint(truth_full).double()
    generator = torch.Generator().manual_seed(11)
    n = 1000
    estimates = []
    for _ in range(n):
        batch = compiled_full.sample_batch(sizes, generator)
        estimates.append(compiled_full.log_joint(restrict(compiled_full, truth_full, batch), batch=batch))
    estimates = torch.stack(estimates).double()
    sd = float(estimates.std())
    assert sd > 0  # the batches did vary
    assert abs(float(estimates.mean() - full)) < 4 * sd / math.sqrt(n)


def test_batched_log_joint_exact_expectation(build) -> None:
    """Enumerate every batch of 2 of 4 counties then 3 of their houses: the average of the
    estimates, weighted by each batch's probability, is the full log joint exactly."""
    compiled = build("radon").compile(dtype=torch.float64)
    latents = {k: v.double() for k, v in latents_of(compiled, compiled.sample_prior(seed=4)).items()}
    full = compiled.log_joint(latents)
    county_of = torch.tensor(HOUSE_COUNTY)
    expectation = torch.zeros((), dtype=torch.float64)
    pairs = list(itertools.combinations(range(4), 2))
    for pair in pairs:
        counties = torch.tensor(pair)
        pool = torch.nonzero(torch.isin(county_of, counties)).flatten().tolist()
        subsets = list(itertools.combinations(pool, min(3, len(pool))))
        for houses in subsets:
            batch = {"county": counties, "house": torch.tensor(houses)}
            value = compiled.log_joint(restrict(compiled, latents, batch), batch=batch)
            expectation += value / (len(pairs) * len(subsets))
    torch.testing.assert_close(expectation, full)


def test_batch_of_an_outer_element_without_members(compiled_full: CompiledModel,
                                                   truth_full: dict[str, torch.Tensor]) -> None:
    # county 5 has no houses: the house terms are empty sums
    batch = {"county": torch.tensor([5])}
    terms = compiled_full.log_joint_terms(restrict(compiled_full, truth_full, batch), batch=batch)
    assert float(terms["y"]) == 0.0
    assert torch.isfinite(terms["a"])
    draws = compiled_full.sample_prior((2,), batch=batch)
    assert draws["y"].shape == (2, 0) and draws["a"].shape == (2, 1)


def test_batched_terms_are_scaled(compiled_full: CompiledModel, truth_full: dict[str, torch.Tensor]) -> None:
    batch = {"group": torch.tensor([1]), "obs": torch.tensor([0, 3])}
    terms = compiled_full.log_joint_terms(restrict(compiled_full, truth_full, batch), batch=batch)
    full_terms = compiled_full.log_joint_terms(truth_full)
    # global terms are untouched, (group, obs) terms scaled by 3/1 * 4/2
    torch.testing.assert_close(terms["mu"], full_terms["mu"])
    x = torch.distributions.Normal(truth_full["eta"][1, [0, 3]], 0.3).log_prob(compiled_full.data["x"][1, [0, 3]])
    torch.testing.assert_close(terms["x"], 6 * x.sum())


# -- errors --------------------------------------------------------------------------
def test_wrong_latent_shape_names_variable(compiled_full: CompiledModel,
                                           truth_full: dict[str, torch.Tensor]) -> None:
    with pytest.raises(ModelError, match="'a'.*shape") as info:
        compiled_full.log_joint({**truth_full, "a": truth_full["a"][:3]})
    assert info.value.culprit == "a"
    # a batched value of the wrong batch size
    batch = {"group": torch.tensor([0, 2])}
    with pytest.raises(ModelError) as info:
        compiled_full.log_joint({**restrict(compiled_full, truth_full, batch), "eta": truth_full["eta"]}, batch=batch)
    assert info.value.culprit == "eta"
    # a wrong event shape
    compiled = event_model().compile(require_data=False)
    draws = compiled.sample_prior(seed=0)
    with pytest.raises(ModelError) as info:
        compiled.log_joint({**draws, "w": draws["w"][..., :2]})
    assert info.value.culprit == "w"


def test_missing_and_unknown_latents(compiled_full: CompiledModel, truth_full: dict[str, torch.Tensor]) -> None:
    with pytest.raises(ModelError, match="missing.*eta") as info:
        compiled_full.log_joint({k: v for k, v in truth_full.items() if k != "eta"})
    assert info.value.culprit == "eta"
    with pytest.raises(ModelError, match="not latent") as info:
        compiled_full.log_joint({**truth_full, "zzz": truth_full["mu"]})
    assert info.value.culprit == "zzz"
    with pytest.raises(ModelError, match="not latent") as info:  # observed: it is data
        compiled_full.log_joint({**truth_full, "x": compiled_full.data["x"]})
    assert info.value.culprit == "x"


def test_missing_data_at_evaluation(build) -> None:
    compiled = build("simple").with_data({"sigma": torch.ones(5)}).compile(require_data=False)
    latents = latents_of(compiled, compiled.sample_prior(seed=0))
    with pytest.raises(ModelError, match="no data") as info:
        compiled.log_joint(latents)
    assert info.value.culprit == "y"
    # given at call time, it works
    assert torch.isfinite(compiled.log_joint(latents, data={"y": torch.zeros(5)}))


def test_data_override(build) -> None:
    model = build("simple")
    compiled = model.compile()
    latents = latents_of(compiled, compiled.sample_prior(seed=5))
    y = torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0])
    overridden = compiled.log_joint(latents, data={"y": y})
    original_y = model.data["y"]
    reference = model.copy().with_data({**model.data, "y": y}).compile().log_joint(latents)
    torch.testing.assert_close(overridden, reference)
    assert not torch.equal(overridden, compiled.log_joint(latents))
    # a covariate can be overridden too, and a batch restricts the override
    batch = {"school": torch.tensor([1, 4])}
    sigma = torch.full((5,), 3.0)
    terms = compiled.log_joint_terms(restrict(compiled, latents, batch), data={"sigma": sigma}, batch=batch)
    expected = torch.distributions.Normal(latents["theta"][[1, 4]], 3.0).log_prob(original_y[[1, 4]]).sum()
    torch.testing.assert_close(terms["y"], 2.5 * expected)


def test_gradients_flow_to_latents(compiled_full: CompiledModel, truth_full: dict[str, torch.Tensor]) -> None:
    latents = {k: v.clone().requires_grad_(True) for k, v in truth_full.items()}
    batch = compiled_full.sample_batch({"county": 3, "house": 5, "group": 2}, torch.Generator().manual_seed(0))
    frame = compiled_full.frame(batch)
    batched = {k: frame.select(v, compiled_full.plates_of(k)) for k, v in latents.items()}
    compiled_full.log_joint(batched, batch=batch).backward()
    for name, value in latents.items():
        assert value.grad is not None and torch.isfinite(value.grad).all(), name
    # counties outside the batch get no gradient; those in it do
    chosen = batch["county"]
    others = torch.ones(8, dtype=torch.bool)
    others[chosen] = False
    assert torch.all(latents["a"].grad[others] == 0)
    assert torch.any(latents["a"].grad[chosen] != 0)


# -- sampling ------------------------------------------------------------------------------
def test_prior_sample_shapes_whole_graph(build) -> None:
    compiled = build("full").compile()
    draws = compiled.sample_prior()
    expected = {"mu": (), "a": (8,), "y": (40,), "theta": (3,), "eta": (3, 4), "x": (3, 4),
                "gain": (2,), "rate": (5,), "spikes": (5, 3)}
    assert {k: tuple(v.shape) for k, v in draws.items()} == expected
    draws = compiled.sample_prior((6, 2))
    assert {k: tuple(v.shape) for k, v in draws.items()} == {k: (6, 2, *s) for k, s in expected.items()}


def test_prior_sample_shapes_batch(build) -> None:
    compiled = build("full").compile()
    batch = compiled.sample_batch({"county": 2, "house": 3, "obs": 2, "animal": 1, "trial": 1},
                                  torch.Generator().manual_seed(0))
    n_neurons = len(compiled.frame(batch).indices("neuron"))
    draws = compiled.sample_prior((5,), batch=batch)
    assert {k: tuple(v.shape) for k, v in draws.items()} == {
        "mu": (5,), "a": (5, 2), "y": (5, 3), "theta": (5, 3), "eta": (5, 3, 2), "x": (5, 3, 2),
        "gain": (5, 1), "rate": (5, n_neurons), "spikes": (5, n_neurons, 1)}


def test_prior_sample_event_shapes_and_supports() -> None:
    compiled = event_model().compile(require_data=False)
    draws = compiled.sample_prior((5,), seed=0)
    assert {k: tuple(v.shape) for k, v in draws.items()} == {
        "beta": (5, 2), "w": (5, 3, 3), "s": (5, 3), "z": (5, 3, 4, 3)}
    torch.testing.assert_close(draws["w"].sum(-1), torch.ones(5, 3))
    assert (draws["s"] > 0).all()
    assert compiled.log_joint(draws).shape == (5,)


def test_prior_sample_follows_the_hierarchy(build) -> None:
    # a nearly deterministic child: each house's y is its county's a plus floor
    model = build("radon")
    model.variable("y").params = {"loc": "a[county] + b * floor", "scale": 1e-4}
    draws = model.sample_prior(seed=0)
    expected = draws["a"][torch.tensor(HOUSE_COUNTY)] + draws["b"] * model.data["floor"]
    torch.testing.assert_close(draws["y"], expected, atol=1e-3, rtol=0)


def test_seeded_sampling_is_reproducible(build) -> None:
    compiled = build("full").compile()
    first, second = compiled.sample_prior((3,), seed=42), compiled.sample_prior((3,), seed=42)
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = compiled.sample_prior((3,), seed=43)
    assert not torch.equal(first["a"], other["a"])
    # seeding leaves torch's global random state as it was
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    compiled.sample_prior(seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_sample_batch_through_compiled_model(build) -> None:
    compiled = build("full").compile()
    batch = compiled.sample_batch({"county": 3, "house": 10}, torch.Generator().manual_seed(0))
    assert len(batch["county"]) == 3
    assert torch.isin(torch.as_tensor(compiled.plates["house"].membership)[batch["house"]], batch["county"]).all()


# -- transforms and structure ---------------------------------------------------------------
def test_support_transform_maps_reals_into_the_support() -> None:
    compiled = event_model().compile(require_data=False)
    draws = compiled.sample_prior((4,), seed=0)
    frame = compiled.frame()
    positive = compiled.support_transform("s", draws, frame, (4,))
    out = positive(torch.linspace(-20, 20, 12).reshape(4, 3))
    assert (out > 0).all()
    torch.testing.assert_close(positive.inv(out), torch.linspace(-20, 20, 12).reshape(4, 3))
    simplex = compiled.support_transform("w", draws, frame, (4,))
    out = simplex(torch.randn(4, 3, 2) * 3)
    assert out.shape == (4, 3, 3)
    assert (out > 0).all()
    torch.testing.assert_close(out.sum(-1), torch.ones(4, 3))
    real = compiled.support_transform("z", draws, frame, (4,))
    x = torch.randn(4, 3, 4, 3)
    assert torch.equal(real(x), x)


def test_support_transform_half_cauchy_global() -> None:
    model = PlateModel([], [Variable("tau", "HalfCauchy", scale=2.0)])
    compiled = model.compile()
    transform = compiled.support_transform("tau", {}, compiled.frame())
    assert (transform(torch.tensor([-30.0, 0.0, 5.0])) > 0).all()


def test_topological_order_and_structure(build) -> None:
    model = build("full")
    model.variables = list(reversed(model.variables))  # children before parents
    compiled = model.compile()
    order = list(compiled.variables)
    for name, var in compiled.variables.items():
        assert all(order.index(p) < order.index(name) for p in var.parents)
    assert compiled.variables["y"].parents == ("a",)
    assert compiled.variables["spikes"].parents == ("gain", "rate")
    assert set(compiled.latent_names) == {"mu", "a", "theta", "eta", "gain", "rate"}
    assert set(compiled.observed_names) == {"y", "x", "spikes"}
    assert compiled.plates_of("floor") == ("house",)


def test_compile_dtype(build) -> None:
    compiled = build("radon").compile(dtype=torch.float64)
    assert compiled.data["y"].dtype == torch.float64
    draws = compiled.sample_prior(seed=0)
    assert draws["a"].dtype == torch.float64
    assert compiled.log_joint(latents_of(compiled, draws)).dtype == torch.float64


def test_compile_refuses_an_invalid_model(build) -> None:
    model = build("simple")
    model.variable("tau").params = {"scale": -1.0}
    with pytest.raises(ModelError) as info:
        model.compile()
    assert info.value.culprit == "tau"
