"""Tests for model validation: every problem a ModelError naming its culprit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pavi_viz.model import Covariate, ModelError, Plate, PlateModel, Variable
from pavi_viz.model.distributions import DISTRIBUTIONS


def problems_of(model: PlateModel, require_data: bool = True) -> list[ModelError]:
    """The problems, checked to agree between ``problems()`` and ``validate()``."""
    found = model.problems(require_data=require_data)
    assert all(isinstance(p, ModelError) for p in found)
    if found:
        with pytest.raises(ModelError) as info:
            model.validate(require_data=require_data)
        assert [p.message for p in info.value.problems] == [p.message for p in found]
        with pytest.raises(ModelError):
            model.compile(require_data=require_data)
    else:
        model.validate(require_data=require_data)
    return found


def expect(model: PlateModel, culprit: str | None, *words: str, require_data: bool = True) -> ModelError:
    """Check that ``model`` has a problem naming ``culprit`` whose message holds ``words``;
    ``validate()`` raises it (alone, or among others)."""
    found = problems_of(model, require_data)
    matching = [p for p in found if p.culprit == culprit and all(w.lower() in p.message.lower() for w in words)]
    assert matching, f"no problem for {culprit!r} mentioning {words}; found: {[(p.culprit, p.message) for p in found]}"
    with pytest.raises(ModelError) as info:
        model.validate(require_data=require_data)
    if len(found) == 1:
        assert info.value.culprit == culprit
        assert info.value.problems == [info.value]
    else:
        assert matching[0].message in str(info.value)
    return matching[0]


# -- valid models ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["simple", "nested", "radon", "full"])
def test_valid_models_have_no_problems(build, name: str) -> None:
    model = build(name)
    assert model.problems() == []
    model.validate()
    model.compile()


def test_require_data_false_allows_missing_data(build) -> None:
    model = build("radon")
    model.data = {}
    expect(model, "y", "no data", "observed")
    expect(model, "floor", "no data", "covariate")
    assert problems_of(model, require_data=False) == []
    model.compile(require_data=False)
    # partial data is fine too
    model.data = {"floor": torch.zeros(10)}
    assert problems_of(model, require_data=False) == []


def test_missing_covariate_data_can_still_simulate_the_rest(build) -> None:
    model = build("simple")
    model.data = {}
    assert model.problems(require_data=False) == []
    with pytest.raises(ModelError) as info:  # drawing y needs sigma
        model.sample_prior()
    assert info.value.culprit == "sigma"


# -- one test per failure kind ----------------------------------------------------------------
def test_duplicate_names(build) -> None:
    model = build("simple")
    model.variables.append(Variable("mu", "Normal", loc=0.0, scale=1.0))
    expect(model, "mu", "duplicate", "mu")
    model = build("simple")
    model.plates.append(Plate("tau", 2))
    expect(model, "tau", "duplicate", "plate", "variable")
    model = build("simple")
    model.covariates.append(Covariate("school"))
    expect(model, "school", "duplicate", "plate", "covariate")


@pytest.mark.parametrize(("name", "words"), [
    ("2x", ["not a valid name"]),
    ("a b", ["not a valid name"]),
    ("", ["not a valid name"]),
    ("__x", ["'__'"]),
    ("exp", ["function"]),
])
def test_bad_names(build, name: str, words: list[str]) -> None:
    model = build("simple")
    model.variables.append(Variable(name, "Normal", loc=0.0, scale=1.0))
    expect(model, name, *words)


def test_unknown_parent(build) -> None:
    model = build("simple")
    model.variable("theta").params = {"loc": "mux + 1", "scale": "tau"}
    expect(model, "theta", "unknown name", "mux")


def test_unknown_plate(build) -> None:
    model = build("simple")
    model.variable("theta").plates = ["schol"]
    expect(model, "theta", "unknown plate", "schol")
    model = build("simple")
    model.covariates[0].plates = ["nope"]
    expect(model, "sigma", "unknown plate", "nope")


def test_plate_nested_in_unknown_plate(build) -> None:
    model = build("simple")
    model.plate("school").nested_in = "district"
    expect(model, "school", "unknown plate", "district")


def test_plates_nested_in_each_other(build) -> None:
    model = build("nested")
    model.plate("group").nested_in = "obs"
    expect(model, "group", "nested in itself")


def test_cycle(build) -> None:
    model = build("simple")
    model.variable("mu").params = {"loc": "tau", "scale": 1.0}
    model.variable("tau").params = {"scale": "exp(mu)"}
    expect(model, "mu", "cycle", "mu -> tau -> mu")


def test_long_cycle(build) -> None:
    model = PlateModel([], [
        Variable("a", "Normal", loc="c", scale=1.0),
        Variable("b", "Normal", loc="a", scale=1.0),
        Variable("c", "Normal", loc="b * 2", scale=1.0),
    ])
    found = problems_of(model, require_data=False)
    assert len(found) == 1 and "cycle" in found[0].message
    assert all(n in found[0].message for n in "abc")


def test_self_dependence(build) -> None:
    model = build("simple")
    model.variable("mu").params = {"loc": "mu", "scale": 1.0}
    expect(model, "mu", "depends on itself")


def test_variable_outside_the_plates_of_its_parent(build) -> None:
    model = build("simple")
    model.variables.append(Variable("z", "Normal", loc="theta", scale=1.0))  # z global, theta per school
    expect(model, "z", "theta", "plate 'school'", "not in")
    # in a regular nested plate: a group-level variable depending on an obs-level one
    model = build("nested")
    model.variables.append(Variable("eta", "Normal", plates=["group"], loc="0.5 * x", scale=1.0))
    model.variable("x").observed = True
    expect(model, "eta", "'obs'", "not in")


def test_ragged_child_reaches_its_outer_plate(build) -> None:
    # a house-level variable may use a county-level parent: each house sits in one county
    model = build("radon")
    assert model.problems() == []
    # but a county-level variable cannot use a house-level one
    model.variables.append(Variable("c", "Normal", plates=["county"], loc="y", scale=1.0))
    expect(model, "c", "house", "not in")


@pytest.mark.parametrize(("distribution", "params", "words"), [
    ("HalfNormal", {"scale": -1.0}, ["'scale'", "positive", "-1.0"]),
    ("Normal", {"loc": 0.0, "scale": 0.0}, ["'scale'", "positive"]),
    ("Normal", {"loc": 0.0, "scale": [1.0, -2.0]}, ["'scale'", "positive"]),
    ("Gamma", {"concentration": 1.0, "rate": -3}, ["'rate'", "positive"]),
    ("Beta", {"concentration1": -1.0, "concentration0": 1.0}, ["'concentration1'", "positive"]),
    ("Dirichlet", {"concentration": [1.0, -1.0]}, ["'concentration'", "positive"]),
    ("Normal", {"loc": float("nan"), "scale": 1.0}, ["'loc'", "finite"]),
    ("Normal", {"loc": float("inf"), "scale": 1.0}, ["'loc'", "finite"]),
    ("Normal", {"loc": None, "scale": 1.0}, ["'loc'", "number"]),
    ("Normal", {"loc": True, "scale": 1.0}, ["'loc'", "number"]),
    ("Normal", {"loc": {"a": 1}, "scale": 1.0}, ["'loc'", "number"]),
    ("Normal", {"loc": [1.0, [2.0]], "scale": 1.0}, ["'loc'", "rectangular"]),
])
def test_wrong_parameter_constants(distribution: str, params: dict, words: list[str]) -> None:
    model = PlateModel([], [Variable("v", distribution, event_shape=[2] if distribution == "Dirichlet" else [],
                                     **params)])
    expect(model, "v", *words)


@pytest.mark.parametrize(("text", "words"), [
    ("mu +", ["bad expression", "mu +"]),
    ("mu ** ", ["bad expression"]),
    ("exp(mu", ["bad expression", "')'"]),
    ("foo(mu)", ["unknown function", "foo"]),
    ("mu; 1", ["unexpected character"]),
    ("mu.real", ["unexpected character"]),
    ("lambda: 1", ["unexpected character"]),
    ("", ["empty"]),
])
def test_bad_expression(build, text: str, words: list[str]) -> None:
    model = build("simple")
    model.variable("theta").params = {"loc": text, "scale": "tau"}
    expect(model, "theta", *words)


def test_data_shape_mismatch(build) -> None:
    model = build("simple")
    model.data = {**model.data, "y": torch.zeros(4)}
    expect(model, "y", "shape", "(4,)", "(5,)")
    model = build("nested")
    model.data = {"x": torch.zeros(4, 3)}  # transposed
    expect(model, "x", "shape", "(4, 3)", "(3, 4)")
    model = build("radon")
    model.data = {**model.data, "floor": torch.zeros(4)}  # per county instead of per house
    expect(model, "floor", "shape", "(4,)", "(10,)")


def test_ground_truth_shape_and_kind(build) -> None:
    model = build("simple")
    model.truth = {"theta": torch.zeros(4)}
    expect(model, "theta", "ground truth", "shape")
    model.truth = {"y": torch.zeros(5)}
    expect(model, "y", "ground truth", "not a latent")
    model.truth = {"theta": torch.tensor([0.0, float("nan"), 0, 0, 0])}
    expect(model, "theta", "ground truth", "nan")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_infinite_data(build, bad: float) -> None:
    model = build("simple")
    y = model.data["y"].clone()
    y[3] = bad
    model.data = {**model.data, "y": y}
    expect(model, "y", "nan or infinite", "(3,)")
    model = build("radon")
    floor = model.data["floor"].clone()
    floor[0] = bad
    model.data = {**model.data, "floor": floor}
    expect(model, "floor", "nan or infinite")


@pytest.mark.parametrize("size", [0, -3])
def test_empty_plate(build, size: int) -> None:
    model = build("simple")
    model.plate("school").size = size
    expect(model, "school", "empty", "at least one")


def test_huge_plate(build) -> None:
    model = build("simple")
    model.plate("school").size = 10**12
    expect(model, "school", "size", "supported")


def test_huge_variable(build) -> None:
    # plates that are each allowed, but too many ground variables together
    model = PlateModel(
        [Plate("a", 2**20), Plate("b", 2**20)],
        [Variable("z", "Normal", plates=["a", "b"], loc=0.0, scale=1.0)],
    )
    expect(model, "z", "elements")
    model = PlateModel([], [Variable("w", "Normal", event_shape=[2**16, 2**16], loc=0.0, scale=1.0)])
    expect(model, "w", "elements")


def test_large_plate_validates_quickly() -> None:
    # Validation draws a small batch: it must not build arrays as large as the plates.
    model = PlateModel(
        [Plate("p", 2**31 - 2), Plate("q", 5, nested_in="p", membership=[0, 3, 2**31 - 3, 3, 7])],
        [
            Variable("z", "Normal", plates=["p"], loc=0.0, scale=1.0),
            Variable("u", "Normal", plates=["q"], loc="z[p]", scale=1.0),
        ],
    )
    assert model.problems() == []


@pytest.mark.parametrize("distribution", [name for name, info in DISTRIBUTIONS.items() if info.discrete])
def test_discrete_latent_variable(distribution: str) -> None:
    params = {"probs": [0.5, 0.5]} if distribution == "Categorical" else {"rate": 1.0} if distribution == "Poisson" \
        else {"probs": 0.5}
    model = PlateModel([], [Variable("k", distribution, **params)])
    error = expect(model, "k", "discrete", "reparameterized", "continuous")
    assert distribution in error.message
    # observed, it is fine
    model.variable("k").observed = True
    model.data = {"k": torch.tensor(1.0)}
    assert problems_of(model) == []


def test_unknown_distribution() -> None:
    model = PlateModel([], [Variable("v", "Gaussian", loc=0.0, scale=1.0)])
    error = expect(model, "v", "unknown distribution", "Gaussian")
    assert "Normal" in error.message  # lists the known ones


def test_unknown_parameter() -> None:
    model = PlateModel([], [Variable("v", "Normal", loc=0.0, scale=1.0, sd=2.0)])
    error = expect(model, "v", "no parameter", "'sd'")
    assert "loc" in error.message and "scale" in error.message


def test_missing_parameter() -> None:
    model = PlateModel([], [Variable("v", "Normal", loc=0.0)])
    expect(model, "v", "needs parameter", "'scale'")
    # a parameter with a default may be left out
    model = PlateModel([], [Variable("t", "StudentT", df=3.0)])
    assert problems_of(model) == []


@pytest.mark.parametrize("params", [{"probs": 0.5, "logits": 0.0}, {}])
def test_exclusive_parameters(params: dict) -> None:
    model = PlateModel([], [Variable("k", "Bernoulli", observed=True, **params)], data={"k": 1.0})
    expect(model, "k", "exactly one of probs or logits")


def test_plate_listed_twice(build) -> None:
    model = build("simple")
    model.variable("theta").plates = ["school", "school"]
    expect(model, "theta", "'school' twice")


def test_regular_nested_plate_without_its_outer_plate(build) -> None:
    model = build("nested")
    model.variable("x").plates = ["obs"]
    expect(model, "x", "'obs'", "nested in 'group'", "list 'group' before 'obs'")
    model = build("nested")
    model.variable("x").plates = ["obs", "group"]  # wrong order
    expect(model, "x", "list 'group' before 'obs'")


def test_ragged_plate_listed_with_its_outer_plate(build) -> None:
    model = build("radon")
    model.variable("y").plates = ["county", "house"]
    expect(model, "y", "'county'", "'house'", "list 'house' only")


def test_ragged_plate_in_a_regular_nested_plate(build) -> None:
    model = build("nested")
    model.plates.append(Plate("leaf", nested_in="obs", membership=[0, 1, 1]))
    expect(model, "leaf", "regularly nested")


@pytest.mark.parametrize(("membership", "words"), [
    ([0, 1, 2, 4, 0, 3, 2, 3, 0, 2], ["from 0 to 3", "0 to 4"]),
    ([-1, 1, 2, 3, 0, 3, 2, 3, 0, 2], ["from 0 to 3"]),
    ([0.5, 1, 2, 3, 0, 3, 2, 3, 0, 2], ["whole numbers"]),
])
def test_membership_out_of_range(build, membership: list, words: list[str]) -> None:
    model = build("radon")
    model.plate("house").membership = np.array(membership)
    expect(model, "house", "membership", *words)


def test_membership_wrong_length(build) -> None:
    model = build("radon")
    model.plate("house").membership = np.array([0, 1, 2])
    expect(model, "house", "membership", "(10)", "(3,)")
    model = build("radon")
    model.plate("house").membership = np.zeros((10, 2), dtype=int)
    expect(model, "house", "membership")


def test_membership_without_outer_plate(build) -> None:
    model = build("simple")
    model.plates.append(Plate("loose", membership=[0, 1]))
    expect(model, "loose", "membership", "nested in no plate")


def test_data_for_a_latent_variable(build) -> None:
    model = build("simple")
    model.data = {**model.data, "theta": torch.zeros(5)}
    expect(model, "theta", "latent")


def test_unknown_data_key(build) -> None:
    model = build("simple")
    model.data = {**model.data, "yy": torch.zeros(5)}
    expect(model, "yy", "matches no")


@pytest.mark.parametrize("bad", [-1.0, 0.5])
def test_data_outside_a_discrete_support(build, bad: float) -> None:
    model = build("simple")
    model.variables.append(Variable("k", "Poisson", plates=["school"], observed=True, rate="exp(theta[school])"))
    model.data = {**model.data, "k": torch.tensor([0.0, 1.0, bad, 3.0, 0.0])}
    expect(model, "k", "outside the support", "Poisson", "(2,)")


@pytest.mark.parametrize(("distribution", "params", "data"), [
    ("Bernoulli", {"probs": 0.5}, [0.0, 1.0, 2.0]),
    ("Binomial", {"total_count": 3, "probs": 0.5}, [0.0, 1.0, -1.0]),
    ("HalfNormal", {"scale": 1.0}, [0.0, 1.0, -1.0]),
    ("Beta", {"concentration1": 1.0, "concentration0": 1.0}, [0.5, 0.2, 1.5]),
    ("Exponential", {"rate": 1.0}, [0.5, 0.2, -1.5]),
])
def test_data_outside_a_support(distribution: str, params: dict, data: list) -> None:
    model = PlateModel([Plate("i", 3)], [Variable("v", distribution, plates=["i"], observed=True, **params)],
                       data={"v": data})
    expect(model, "v", "outside the support", distribution, "(2,)")


def test_positive_parameter_given_a_real_valued_parent(build) -> None:
    model = build("simple")
    model.variable("theta").params = {"loc": "mu", "scale": "mu"}
    expect(model, "theta", "'scale'", "positive", "'mu'", "exp(mu)")
    # transformed, it is accepted
    model.variable("theta").params = {"loc": "mu", "scale": "exp(mu)"}
    assert problems_of(model) == []


def test_event_shape_contradicting_a_dirichlet() -> None:
    model = PlateModel([Plate("g", 3)], [
        Variable("w", "Dirichlet", plates=["g"], event_shape=[4], concentration=[1.0, 1.0, 1.0]),
    ])
    expect(model, "w", "event shape [4]", "[3]")
    model.variable("w").event_shape = [3]
    assert problems_of(model) == []


def test_event_shape_must_be_positive(build) -> None:
    model = build("simple")
    model.variable("mu").event_shape = [0]
    expect(model, "mu", "event shape", "positive")


def test_vector_parameter_for_a_scalar_variable() -> None:
    model = PlateModel([], [Variable("v", "Normal", loc=[1.0, 2.0], scale=1.0)])
    expect(model, "v", "more dimension", "event shape")
    model.variable("v").event_shape = [2]
    assert problems_of(model) == []


def test_parameter_mentions_a_plate_bare(build) -> None:
    model = build("simple")
    model.variable("theta").params = {"loc": "mu + school", "scale": "tau"}
    expect(model, "theta", "'school' is a plate", "brackets")


def test_indexing_by_a_plate_the_parent_is_not_in(build) -> None:
    model = build("simple")
    model.variable("theta").params = {"loc": "mu[school]", "scale": "tau"}
    expect(model, "theta", "mu[school]", "'school'", "lives in plates []")
    model = build("nested")
    model.variable("x").params = {"loc": "theta[obs]", "scale": 0.5}
    expect(model, "x", "theta[obs]")


def test_expression_reaching_for_python(build) -> None:
    model = build("simple")
    model.variable("theta").params = {"loc": "__import__('os').system('echo hi')", "scale": "tau"}
    expect(model, "theta", "'__'")


def test_index_out_of_range_found_by_dry_run() -> None:
    model = PlateModel([], [
        Variable("beta", "DiagNormal", event_shape=[2], loc=[0.0, 0.0], scale=[1.0, 1.0]),
        Variable("y", "Normal", loc="beta[2]", scale=1.0),
    ])
    expect(model, "y", "beta[2]", "2 entries")


def test_sampling_failure_found_by_dry_run() -> None:
    # A negative Poisson rate is only seen when the model is run.
    model = PlateModel([Plate("g", 3)], [
        Variable("m", "Normal", loc=0.0, scale=1.0),
        Variable("k", "Poisson", plates=["g"], observed=True, rate="m - 10"),
    ], data={"k": [0.0, 1.0, 2.0]})
    expect(model, "k", "Poisson")


def test_missing_data(build) -> None:
    model = build("radon")
    del model.data["y"]
    expect(model, "y", "no data for observed variable")


# -- several problems at once ---------------------------------------------------------
def test_several_problems_are_all_reported(build) -> None:
    model = build("full")
    model.variable("mu").params = {"loc": 0.0, "scale": -1.0}
    model.variable("theta").plates = ["nowhere"]
    model.variables.append(Variable("k", "Poisson", rate=2.0))
    model.data = {**model.data, "x": torch.zeros(2, 2)}
    found = problems_of(model)
    culprits = [p.culprit for p in found]
    for name in ("mu", "theta", "k", "x"):
        assert name in culprits
    with pytest.raises(ModelError) as info:
        model.validate()
    error = info.value
    assert error.culprit is None
    assert f"{len(found)} problems" in error.message
    assert [p.culprit for p in error.problems] == culprits
    for problem in found:
        assert problem.message in str(error)


def test_errors_are_value_errors(build) -> None:
    model = build("simple")
    model.plate("school").size = 0
    with pytest.raises(ValueError):
        model.validate()


# -- property test ---------------------------------------------------------------------
GOOD_NAMES = ["a", "b", "g", "obs", "mu", "x", "y", "theta"]
BAD_NAMES = ["2x", "a b", "", "__class__", "exp", "é", "a[g]"]
EXPRESSIONS = [
    "mu", "a[g]", "x[obs] + mu", "exp(theta)", "mu +", "exp(", "__import__('os').system('true')",
    "1 / 0", "mu ** 1000", "x[0][1]", "theta[g][0]", "log(mu - 100)", "softplus(mu) + 1",
    "g", "mu[mu]", "(((mu)))", "-" * 50 + "1", "sqrt(-1)", "minimum(mu, x)", "x[99]", "1e308 * 1e308",
    "theta[g] * x[obs]", "exp(b[a])", "y - 10", "sigmoid(a)",
]
DISTRIBUTION_NAMES = [*DISTRIBUTIONS, "Gaussian", ""]
PARAM_NAMES = sorted({p for info in DISTRIBUTIONS.values() for p in info.by_name} | {"sd", ""})

garbage = st.one_of(st.none(), st.booleans(), st.text(max_size=5), st.floats(allow_nan=True),
                    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1), st.lists(st.none(), max_size=2))


def mostly(good: st.SearchStrategy, bad: st.SearchStrategy = garbage, rarity: int = 3) -> st.SearchStrategy:
    """``good`` values, and once in ``2 ** rarity`` draws a ``bad`` one: type garbage is
    refused by the file checks, so most fields must pass them for validation to be reached."""
    # (coin flips, not integers(0, n) == 0: hypothesis draws an integer's bounds far more
    # often than uniformly, and one_of favours some branches)
    return st.lists(st.booleans(), min_size=rarity, max_size=rarity).flatmap(lambda coins: bad if all(coins) else good)


names = mostly(st.sampled_from(GOOD_NAMES), st.sampled_from(BAD_NAMES) | garbage, rarity=3)
keys = mostly(st.sampled_from(GOOD_NAMES), st.sampled_from(BAD_NAMES) | st.integers() | st.none(), rarity=3)
numbers = st.one_of(
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 0.5, 1e300, -1e-300, 10**30, -(10**400)]),
)
param_values = mostly(
    st.one_of(numbers, st.sampled_from(EXPRESSIONS), st.lists(numbers, max_size=4)),
    st.one_of(st.text(max_size=12), st.lists(st.lists(numbers, max_size=3), max_size=3),
              st.recursive(numbers, lambda inner: st.lists(inner, max_size=2), max_leaves=6), garbage),
    rarity=2,
)
sizes = mostly(
    st.integers(1, 6),
    st.one_of(st.integers(-2, 0), st.sampled_from([10**9, 2**31 - 1, 2**31, 10**12, 2**63, 10**30]), garbage),
    rarity=2,
)
plate_lists = mostly(st.lists(names, max_size=3))
event_shapes = mostly(
    st.lists(st.sampled_from([1, 2, 3]), max_size=2),
    st.lists(st.sampled_from([0, -1, 2**40, 1.5, True]), min_size=1, max_size=2) | garbage,
)


@st.composite
def arrays(draw) -> object:
    kind = draw(mostly(st.just("nested"), st.sampled_from(["numpy", "garbage", "scalar"]), rarity=3))
    if kind == "garbage":
        return draw(garbage)
    if kind == "scalar":
        return draw(numbers)
    shape = draw(st.lists(st.integers(0, 4), max_size=3))
    floats = mostly(st.floats(-5, 5, width=32), st.floats(allow_nan=True, allow_infinity=True, width=32), rarity=3)
    values = np.asarray(draw(st.lists(floats, min_size=math.prod(shape), max_size=math.prod(shape))))
    values = values.reshape(shape)
    return values if kind == "numpy" else values.tolist()


@st.composite
def plates(draw) -> object:
    plate = {"name": draw(names), "size": draw(sizes)}
    if draw(st.booleans()):
        plate["nested_in"] = draw(mostly(names))
    if draw(mostly(st.just(False), st.just(True), rarity=2)):
        plate["membership"] = draw(mostly(st.lists(st.integers(-1, 7), max_size=8),
                                          st.lists(numbers, max_size=3) | st.lists(st.text(max_size=1)) | garbage))
    if draw(mostly(st.just(False), st.just(True), rarity=4)):
        plate["colour"] = "red"
    return draw(mostly(st.just(plate), rarity=5))


@st.composite
def variables(draw) -> object:
    var = {
        "name": draw(names),
        "distribution": draw(mostly(st.sampled_from(DISTRIBUTION_NAMES))),
        "params": draw(mostly(st.dictionaries(st.sampled_from(PARAM_NAMES) | st.integers(), param_values, max_size=3))),
        "plates": draw(plate_lists),
        "event_shape": draw(event_shapes),
        "observed": draw(mostly(st.booleans())),
    }
    if draw(mostly(st.just(False), st.just(True), rarity=3)):
        for key in draw(st.lists(st.sampled_from(list(var)), max_size=2, unique=True)):
            del var[key]
    return draw(mostly(st.just(var), rarity=5))


@st.composite
def covariates(draw) -> object:
    return {"name": draw(names), "plates": draw(plate_lists), "event_shape": draw(event_shapes)}


@st.composite
def model_specs(draw) -> object:
    """Random model files: names, sizes, distributions, parameters, plate lists and data
    drawn mostly well-typed but often invalid, with some type garbage."""
    spec: dict = {
        "plates": draw(st.lists(plates(), max_size=3)),
        "variables": draw(st.lists(variables(), max_size=4)),
    }
    if draw(st.booleans()):
        spec["covariates"] = draw(st.lists(covariates(), max_size=2))
    if draw(st.booleans()):
        spec["data"] = draw(st.dictionaries(keys, arrays(), max_size=3))
    if draw(mostly(st.just(False), st.just(True), rarity=2)):
        spec["truth"] = draw(st.dictionaries(keys, arrays(), max_size=2))
    if draw(mostly(st.just(False), st.just(True), rarity=4)):
        spec[draw(st.sampled_from(["schema", "version", "name", "extra"]))] = draw(garbage | numbers)
    return draw(mostly(st.just(spec), garbage | st.lists(st.integers(), max_size=2), rarity=5))


def _valid_base() -> dict:
    return {
        "plates": [{"name": "g", "size": 3}, {"name": "obs", "size": 2, "nested_in": "g"},
                   {"name": "h", "size": 4, "nested_in": "g", "membership": [0, 2, 2, 1]}],
        "variables": [
            {"name": "mu", "distribution": "Normal", "params": {"loc": 0.0, "scale": 1.0}},
            {"name": "theta", "distribution": "Normal", "plates": ["g"], "params": {"loc": "mu", "scale": 1.0}},
            {"name": "x", "distribution": "Normal", "plates": ["g", "obs"], "observed": True,
             "params": {"loc": "theta[g]", "scale": 1.0}},
        ],
        "data": {"x": [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]},
    }


@st.composite
def mutated_specs(draw) -> dict:
    """A valid spec with a few fields replaced by random ones: invalid models that get
    past the file checks, so that validation's deeper checks and the dry run are hit."""
    spec = _valid_base()
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["plate", "variable", "param", "data", "new"]))
        if where == "plate":
            plate = draw(st.sampled_from(spec["plates"]))
            key = draw(st.sampled_from(["size", "nested_in", "membership"]))
            plate[key] = draw({"size": st.one_of(st.integers(-1, 5), st.sampled_from([10**9, 10**12])),
                               "nested_in": st.sampled_from(GOOD_NAMES + ["h", "obs"]),
                               "membership": st.lists(st.integers(-1, 4), max_size=5)}[key])
        elif where == "variable":
            var = draw(st.sampled_from(spec["variables"]))
            key = draw(st.sampled_from(["distribution", "plates", "event_shape", "observed"]))
            var[key] = draw({"distribution": st.sampled_from(DISTRIBUTION_NAMES),
                             "plates": st.lists(st.sampled_from(["g", "obs", "h", "nope"]), max_size=3),
                             "event_shape": st.lists(st.integers(0, 3), max_size=2),
                             "observed": st.booleans()}[key])
        elif where == "param":
            var = draw(st.sampled_from(spec["variables"]))
            var.setdefault("params", {})[draw(st.sampled_from(PARAM_NAMES))] = draw(
                st.one_of(st.sampled_from(EXPRESSIONS + ["theta[g] + mu", "x", "theta", "mu[g]"]),
                          st.lists(st.floats(-3, 3), min_size=1, max_size=3), st.floats(-3, 3)))
        elif where == "data":
            spec["data"][draw(st.sampled_from(["x", "mu", "theta", "z"]))] = draw(arrays())
        else:
            spec["variables"].append({
                "name": draw(st.sampled_from(["z", "k", "mu", "g"])),
                "distribution": draw(st.sampled_from(DISTRIBUTION_NAMES)),
                "plates": draw(st.lists(st.sampled_from(["g", "obs", "h"]), max_size=2)),
                "event_shape": draw(st.lists(st.integers(1, 3), max_size=1)),
                "observed": draw(st.booleans()),
                "params": draw(st.dictionaries(st.sampled_from(PARAM_NAMES), st.one_of(
                    st.sampled_from(EXPRESSIONS + ["theta[g]", "theta[h]", "x[obs]", "mu", "z"]),
                    st.floats(-3, 3), st.lists(st.floats(0.1, 3), min_size=1, max_size=3)), max_size=3)),
            })
    return spec


def _only_model_errors(spec: object) -> None:
    try:
        model = PlateModel.from_dict(spec)
    except ModelError:
        event("refused by from_dict")
        return
    for require_data in (True, False):
        try:
            problems = model.problems(require_data=require_data)
        except ModelError as error:  # pragma: no cover - problems() reports, it does not raise
            pytest.fail(f"problems() raised {error!r}")
        assert all(isinstance(p, ModelError) for p in problems)
        try:
            model.validate(require_data=require_data)
        except ModelError as error:
            assert error.problems
            event(f"invalid (require_data={require_data})")
            continue
        event(f"valid (require_data={require_data})")
        compiled = model.compile(require_data=require_data)
        # a valid model runs: a small batch of it can be drawn
        compiled.sample_prior((2,), batch=compiled.sample_batch({p.name: 2 for p in compiled.plates}))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model_specs())
def test_random_specs_raise_only_model_errors(spec: object) -> None:
    _only_model_errors(spec)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_specs())
def test_mutated_specs_raise_only_model_errors(spec: dict) -> None:
    _only_model_errors(spec)


def test_a_long_chain_listed_child_first_validates_and_compiles() -> None:
    """Walks keep stacks of their own: a 1,500-variable chain, children listed before
    their parents, is valid (it raised RecursionError)."""
    chain = [Variable("v0", "Normal", loc=0.0, scale=1.0)]
    chain += [Variable(f"v{i}", "Normal", loc=f"v{i - 1}", scale=1.0) for i in range(1, 1500)]
    model = PlateModel([], chain[::-1], name="chain")
    assert problems_of(model, require_data=False) == []
    compiled = model.compile(require_data=False)
    assert list(compiled.variables)[:2] == ["v0", "v1"]
    cyclic = PlateModel([], [Variable("a", "Normal", loc="c", scale=1.0), Variable("b", "Normal", loc="a", scale=1.0),
                             Variable("c", "Normal", loc="b", scale=1.0)], name="cycle")
    assert any("cycle: " in p.message for p in problems_of(cyclic, require_data=False))


@pytest.mark.parametrize(("plates", "variable_plates", "words", "culprit"), [
    ([Plate(f"p{i}", 1) for i in range(300)], ["p0"], "300 plates, more than the 256 supported", "p299"),
    ([Plate(f"p{i}", 1) for i in range(40)], [f"p{i}" for i in range(40)],
     "40 plates and 0 event dims, more than the 32 dims supported", "z"),
    ([Plate("p0", 1)] + [Plate(f"p{i}", 1, nested_in=f"p{i - 1}") for i in range(1, 20)], ["p0"],
     "plate 'p17' is nested 17 plates deep, more than the 16 supported", "p17"),
])
def test_plate_counts_and_depths_are_bounded_with_a_culprit(plates, variable_plates, words, culprit) -> None:
    model = PlateModel(plates, [Variable("z", "Normal", plates=variable_plates, loc=0.0, scale=1.0)], name="many")
    problems = problems_of(model, require_data=False)
    assert any(words in p.message and p.culprit == culprit for p in problems), [p.message for p in problems]
