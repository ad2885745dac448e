"""The visual builder's state: each action's change to the model, undo / redo, the
problems found after each change, and the data (simulated or attached)."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
import torch

from pavi_viz import examples
from pavi_viz.model import DISTRIBUTIONS, ModelError, PlateModel
from pavi_viz.model.expressions import rename
from pavi_viz.model.tables import read_table
from pavi_viz.ui.builder_state import DEFAULT_PARAMS, BuilderState, param_value, read_model_file

#: Options that keep the slower examples small.
SMALL: dict[str, dict[str, Any]] = {"gre": {"G": 4, "N": 3}, "spikes": {"A": 2, "T": 4}, "mixture": {"G": 3, "N": 5}}


def state_of(example: str) -> BuilderState:
    return BuilderState(examples.load(example, **SMALL.get(example, {})))


def spec(state: BuilderState) -> dict[str, Any]:
    return state.model.to_dict(include_data=False)


def named(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The plate, variable or covariate called ``name`` in a ``to_dict`` description."""
    return next(item for item in items if item["name"] == name)


def plate(d: dict[str, Any], name: str) -> dict[str, Any]:
    return named(d["plates"], name)


def var(d: dict[str, Any], name: str) -> dict[str, Any]:
    return named(d["variables"], name)


def params(d: dict[str, Any], name: str) -> dict[str, Any]:
    return var(d, name)["params"]


def check_undo_redo(state: BuilderState, before: dict[str, Any], after: dict[str, Any]) -> None:
    """The state holds ``after``; undo gives ``before`` back and redo ``after`` again."""
    assert spec(state) == after
    assert state.can_undo and not state.can_redo
    state.undo()
    assert spec(state) == before
    assert state.can_redo
    state.redo()
    assert spec(state) == after
    assert not state.can_redo


# (example, action, the same change made by hand to the example's description)
ACTIONS: list[tuple[str, Callable[[BuilderState], Any], Callable[[dict], Any]]] = [
    ("gre", lambda s: s.add_plate(),
     lambda d: d["plates"].append({"name": "plate1", "size": 10})),
    ("gre", lambda s: s.add_plate("trial", size=5, nested_in="obs"),
     lambda d: d["plates"].append({"name": "trial", "size": 5, "nested_in": "obs"})),
    ("radon", lambda s: s.rename_plate("county", "region"),
     lambda d: (plate(d, "county").update(name="region"), plate(d, "house").update(nested_in="region"),
                var(d, "alpha").update(plates=["region"]), var(d, "beta").update(plates=["region"]),
                params(d, "log_radon").update(loc="alpha[region] + beta[region] * floor"))),
    ("gre", lambda s: s.resize_plate("group", 7),
     lambda d: plate(d, "group").update(size=7)),
    ("gre", lambda s: s.remove_plate("group"),
     lambda d: (d["plates"].pop(0), plate(d, "obs").pop("nested_in"),
                var(d, "mu_g").update(plates=[]), var(d, "x").update(plates=["obs"]))),
    ("radon", lambda s: s.remove_plate("county"),
     lambda d: (d["plates"].pop(0), plate(d, "house").pop("nested_in"), plate(d, "house").pop("membership"),
                var(d, "alpha").update(plates=[]), var(d, "beta").update(plates=[]),
                params(d, "log_radon").update(loc="alpha + beta * floor"))),
    ("gre", lambda s: s.nest_plate("obs", None),
     lambda d: plate(d, "obs").pop("nested_in")),
    ("gre", lambda s: s.set_ragged("obs", [0, 0, 1, 2, 3, 3]),
     lambda d: plate(d, "obs").update(size=6, membership=[0, 0, 1, 2, 3, 3])),
    ("radon", lambda s: s.set_ragged("house", None),
     lambda d: plate(d, "house").pop("membership")),
    ("gre", lambda s: s.add_variable(),
     lambda d: d["variables"].append({"name": "var1", "distribution": "Normal", "params": {"loc": 0.0, "scale": 1.0},
                                      "plates": [], "event_shape": [], "observed": False})),
    ("gre", lambda s: s.add_variable("w", "Dirichlet", plates=["group"]),
     lambda d: d["variables"].append({"name": "w", "distribution": "Dirichlet", "params": {"concentration": [1.0] * 3},
                                      "plates": ["group"], "event_shape": [3], "observed": False})),
    ("gre", lambda s: s.rename_variable("mu", "m"),
     lambda d: (var(d, "mu").update(name="m"), params(d, "mu_g").update(loc="m"))),
    ("eight_schools", lambda s: s.rename_variable("theta", "effect"),
     lambda d: (var(d, "theta").update(name="effect"), params(d, "y").update(loc="effect"))),
    ("gre", lambda s: s.remove_variable("mu"),
     lambda d: d["variables"].pop(0)),
    ("gre", lambda s: s.set_observed("mu_g", True),
     lambda d: var(d, "mu_g").update(observed=True)),
    ("eight_schools", lambda s: s.set_distribution("tau", "HalfNormal"),
     lambda d: var(d, "tau").update(distribution="HalfNormal")),
    ("eight_schools", lambda s: s.set_distribution("theta", "StudentT"),
     lambda d: var(d, "theta").update(distribution="StudentT", params={"df": 3.0, "loc": "mu", "scale": "tau"})),
    ("gre", lambda s: s.set_distribution("mu", "DiagNormal"),
     lambda d: var(d, "mu").update(distribution="DiagNormal", params={"loc": [0.0, 0.0], "scale": [1.0, 1.0]})),
    ("gre", lambda s: s.set_param("mu", "loc", " 1.5 "),
     lambda d: params(d, "mu").update(loc=1.5)),
    ("gre", lambda s: s.set_param("mu_g", "scale", "exp(mu[0]) / 2"),
     lambda d: params(d, "mu_g").update(scale="exp(mu[0]) / 2")),
    ("gre", lambda s: s.set_param("x", "scale", [0.5, 2]),
     lambda d: params(d, "x").update(scale=[0.5, 2])),
    ("gre", lambda s: s.set_param("x", "scale", ""),
     lambda d: params(d, "x").pop("scale")),
    ("gre", lambda s: s.set_plates("mu", ["group"]),
     lambda d: var(d, "mu").update(plates=["group"])),
    ("gre", lambda s: s.set_event_shape("mu", [3]),
     lambda d: var(d, "mu").update(event_shape=[3])),
    ("eight_schools", lambda s: s.add_covariate(plates=["school"]),
     lambda d: d["covariates"].append({"name": "cov1", "plates": ["school"], "event_shape": []})),
    ("eight_schools", lambda s: s.rename_covariate("sigma", "se"),
     lambda d: (d["covariates"][0].update(name="se"), params(d, "y").update(scale="se"))),
    ("eight_schools", lambda s: s.remove_covariate("sigma"),
     lambda d: d["covariates"].pop()),
    ("eight_schools", lambda s: s.set_plates("sigma", []),
     lambda d: d["covariates"][0].update(plates=[])),
]


@pytest.mark.parametrize(("example", "action", "expect"), ACTIONS,
                         ids=[f"{i}-{example}" for i, (example, _, _) in enumerate(ACTIONS)])
def test_each_action_changes_the_model_as_expected_and_undo_maps_back(
        example: str, action: Callable[[BuilderState], Any], expect: Callable[[dict], Any]) -> None:
    state = state_of(example)
    before = spec(state)
    after = copy.deepcopy(before)
    expect(after)
    revision = state.revision
    action(state)
    assert state.revision == revision + 1
    check_undo_redo(state, before, after)


def test_a_new_state_holds_an_empty_model_with_nothing_to_undo() -> None:
    state = BuilderState()
    assert state.model.plates == [] and state.model.variables == []
    assert state.problems == [] and not state.valid
    assert not state.can_undo and not state.can_redo
    state.undo()
    state.redo()  # nothing to undo or redo: nothing happens
    assert spec(state) == PlateModel().to_dict(include_data=False)


def test_auto_names_skip_names_in_use() -> None:
    state = BuilderState()
    assert state.add_variable("plate1") == "plate1"
    assert [state.add_plate(), state.add_plate()] == ["plate2", "plate3"]
    assert [state.add_variable(), state.add_covariate()] == ["var1", "cov1"]


def test_building_gre_by_actions_gives_the_example_and_simulating_makes_it_valid() -> None:
    state = BuilderState()
    state.add_plate("group", size=4)
    state.add_plate("obs", size=3)
    state.nest_plate("obs", "group")
    state.add_variable("mu", "Normal", event_shape=[2])
    state.add_variable("mu_g", "Normal", plates=["group"], event_shape=[2])
    state.set_param("mu_g", "loc", "mu")
    state.add_variable("x", plates=["group", "obs"], event_shape=[2], loc="mu_g")
    state.set_param("x", "scale", "0.5")
    state.set_observed("x", True)
    assert state.problems == [] and not state.valid  # a valid graph, but no data yet

    example = examples.load("gre", G=4, N=3, obs_scale=0.5).to_dict(include_data=False)
    built = spec(state)
    for part in ("plates", "variables", "covariates"):
        assert built[part] == example[part]

    state.simulate(seed=3)
    assert state.valid and state.problems == []
    assert state.model.data["x"].shape == (4, 3, 2)
    assert {k: v.shape for k, v in state.model.truth.items()} == {"mu": (2,), "mu_g": (4, 2)}


def test_simulate_resizes_plates_first_and_undo_brings_back_sizes_and_data() -> None:
    state = state_of("gre")
    old_data = state.model.data["x"]
    state.simulate(seed=1, sizes={"group": 6, "obs": 2})
    assert (state.model.plate("group").size, state.model.plate("obs").size) == (6, 2)
    assert state.model.data["x"].shape == (6, 2, 2)
    assert state.model.truth["mu_g"].shape == (6, 2)
    assert state.valid
    state.undo()
    assert state.model.plate("group").size == 4
    assert state.model.data["x"] is old_data  # snapshots keep the (immutable) tensors themselves


def test_simulating_a_huge_plate_is_refused_and_rolled_back() -> None:
    state = state_of("gre")
    with pytest.raises(ModelError, match="make plate 'group'"):
        state.simulate(seed=1, sizes={"group": 10**9})
    assert state.model.plate("group").size == 4 and state.error is not None and "group" in state.message


def test_resizing_a_plate_makes_attached_data_a_problem_until_simulated_again() -> None:
    state = state_of("gre")
    assert state.valid
    state.resize_plate("group", 5)
    assert not state.valid
    assert any("shape" in message for message in state.problems_for("x"))
    state.simulate()
    assert state.valid


def test_a_cycle_is_reported_on_a_variable_in_it_and_editing_goes_on() -> None:
    state = BuilderState()
    state.add_variable("a")
    state.add_variable("b", loc="a")
    state.set_param("a", "loc", "b")
    assert not state.valid
    cycles = [p for p in state.problems if "cycle" in p.message]
    assert len(cycles) == 1 and cycles[0].culprit in {"a", "b"}
    assert cycles[0].message in state.problems_for(cycles[0].culprit)
    assert state.candidate_parents("a") == []  # b depends on a
    state.set_param("a", "loc", 0)
    assert state.problems == []


def test_a_negative_scale_is_reported_on_its_variable_until_fixed() -> None:
    state = state_of("gre")
    state.set_param("mu_g", "scale", "-1")
    assert not state.valid
    assert [p.culprit for p in state.problems] == ["mu_g"]
    assert "'scale'" in state.problems_for("mu_g")[0] and "positive" in state.problems_for("mu_g")[0]
    assert state.problems_for("x") == [] and state.problems_for(None) == []
    state.set_param("mu_g", "scale", "2")
    assert state.valid


def test_missing_data_counts_once_some_data_is_attached() -> None:
    state = state_of("gre")
    state.add_variable("y", plates=["group"], observed=True)
    assert not state.valid
    assert state.problems_for("y") == ["no data for observed variable 'y'"]
    state.simulate()
    assert state.valid and state.model.data["y"].shape == (4,)


def test_renaming_rewrites_whole_names_only_in_expressions_data_and_truth() -> None:
    state = state_of("gre")
    state.add_variable("mu2", loc="mu + mu_g[group]*mu - exp(mu)", plates=["group"], event_shape=[2])
    state.rename_variable("mu", "m")
    assert state.model.variable("mu2").params["loc"] == "m + mu_g[group]*m - exp(m)"
    assert "m" in state.model.truth and "mu" not in state.model.truth
    state.rename_variable("x", "y")
    assert state.model.variable("mu_g").name == "mu_g"
    assert list(state.model.data) == ["y"] and state.valid


@pytest.mark.parametrize(("text", "old", "new", "is_plate", "expected"), [
    ("mu + mu_g*mu - exp(mu)", "mu", "m", False, "m + mu_g*m - exp(m)"),
    ("x[mu] + mu", "mu", "m", False, "x[mu] + m"),  # an index names a plate
    ("alpha[county] + beta[ county ] * county", "county", "region", True,
     "alpha[region] + beta[ region ] * county"),
    ("alpha[county] + beta[ county ] * floor", "county", None, True, "alpha + beta * floor"),
    ("mu + $", "mu", "m", False, "mu + $"),  # no tokens: left for the user to fix
])
def test_rename_in_expressions_works_on_tokens(text: str, old: str, new: str | None, is_plate: bool,
                                              expected: str) -> None:
    assert rename(text, old, new, plate=is_plate) == expected


def test_renaming_a_covariate_renames_its_data() -> None:
    state = state_of("eight_schools")
    data = state.model.data["sigma"]
    state.rename_covariate("sigma", "se")
    assert state.model.data["se"] is data and state.valid
    with pytest.raises(ModelError) as raised:
        state.rename_covariate("se", "mu")
    assert raised.value.culprit == "se"  # shown by the covariate being renamed


def test_observing_or_hiding_a_variable_drops_values_of_the_other_kind() -> None:
    state = state_of("gre")
    state.set_observed("mu_g", True)
    assert "mu_g" not in state.model.truth
    assert state.problems_for("mu_g") == ["no data for observed variable 'mu_g'"]
    state.set_observed("x", False)
    assert state.model.data == {}
    state.undo()
    state.undo()
    assert set(state.model.data) == {"x"} and set(state.model.truth) == {"mu", "mu_g"} and state.valid


def test_removing_a_variable_reports_the_variables_still_using_it() -> None:
    state = state_of("gre")
    state.remove_variable("mu_g")
    assert "mu_g" not in state.model.truth
    assert any("unknown name 'mu_g'" in message for message in state.problems_for("x"))


@pytest.mark.parametrize("distribution", list(DISTRIBUTIONS))
def test_a_new_variable_with_default_parameters_is_valid(distribution: str) -> None:
    state = BuilderState()
    state.add_plate("g", size=3)
    state.add_variable("v", distribution, plates=["g"], observed=DISTRIBUTIONS[distribution].discrete)
    assert state.model.variable("v").params == DEFAULT_PARAMS[distribution]
    assert state.problems == []


def test_changing_distribution_keeps_a_logits_rather_than_adding_probs() -> None:
    state = BuilderState()
    state.add_variable("k", "Bernoulli", observed=True)
    state.set_param("k", "probs", None)
    state.set_param("k", "logits", "0.3")
    state.set_distribution("k", "Binomial")
    assert state.model.variable("k").params == {"total_count": 10.0, "logits": 0.3}
    assert state.problems == []


@pytest.mark.parametrize(("value", "expected"), [
    ("1.5", 1.5), ("2", 2.0), (" [1, 2.5] ", [1, 2.5]), ("mu", "mu"), ("mu + 2*x", "mu + 2*x"),
    ("", None), ("  ", None), (None, None), (3, 3), ([[0.0, 1.0]], [[0.0, 1.0]]),
    ("NaN", "NaN"), ("1e400", "1e400"),  # not finite numbers: kept as text, which validation reports
])
def test_param_value_reads_widget_text(value: Any, expected: Any) -> None:
    assert param_value(value) == expected
    assert type(param_value(value)) is type(expected)


@pytest.mark.parametrize("value", [float("inf"), True, {"a": 1}, [1, "x"]])
def test_param_value_refuses_what_is_no_parameter(value: Any) -> None:
    with pytest.raises(ModelError):
        param_value(value)


def test_parents_and_candidate_parents() -> None:
    state = state_of("radon")
    assert state.parents_of("log_radon") == ["alpha", "beta", "floor", "sigma_y"]
    assert state.parents_of("floor") == []
    assert state.candidate_parents("log_radon") == [v for v in state.model.latent_names] + ["floor"]
    assert "log_radon" not in state.candidate_parents("alpha")
    assert "alpha" not in state.candidate_parents("mu_alpha")  # alpha depends on mu_alpha
    assert "sigma_beta" in state.candidate_parents("mu_alpha")
    assert state.candidate_parents("floor") == []


def test_distribution_params() -> None:
    assert [p.name for p in BuilderState.distribution_params("Normal")] == ["loc", "scale"]
    with pytest.raises(ModelError, match="unknown distribution 'Norml'"):
        BuilderState.distribution_params("Norml")


def test_starting_afresh_or_from_an_example_is_undoable() -> None:
    state = state_of("gre")
    gre = spec(state)
    state.new()
    check_undo_redo(state, gre, PlateModel().to_dict(include_data=False))
    state.load_example("eight_schools")
    check_undo_redo(state, PlateModel().to_dict(include_data=False),
                    examples.load("eight_schools").to_dict(include_data=False))
    assert state.valid


@pytest.mark.parametrize(("action", "words"), [
    (lambda s: s.rename_variable("mu", "mu_g"), "already used"),
    (lambda s: s.add_plate("group"), "already used"),
    (lambda s: s.add_variable("2x"), "not a valid name"),
    (lambda s: s.rename_plate("obs", "exp"), "name of a function"),
    (lambda s: s.resize_plate("group", 2.5), "whole number"),
    (lambda s: s.set_event_shape("mu", ["2"]), "whole numbers"),
    (lambda s: s.set_ragged("obs", [[0, 1]]), "one whole number per element"),
    (lambda s: s.set_param("nobody", "loc", 0), "no variable called 'nobody'"),
    (lambda s: s.set_distribution("mu", "Gauss"), "unknown distribution"),
    (lambda s: s.load_example("nope"), "unknown example"),
    (lambda s: s.load_example("gre", K=3), "no option 'K'"),
    (lambda s: s.load_json("{not json"), "not valid JSON"),
    (lambda s: s.load_json(b'{"plates": 3, "variables": []}'), "plates must be a list"),
    (lambda s: s.load_json("/etc/passwd"), "not a model file"),
])
def test_a_failed_action_is_recorded_and_changes_nothing(action: Callable[[BuilderState], Any], words: str) -> None:
    state = state_of("gre")
    start = spec(state)
    state.set_param("mu", "loc", 1.0)  # one step to keep
    model, before, data = state.model, spec(state), state.model.data["x"]
    with pytest.raises(ModelError, match=words):
        action(state)
    assert words in state.message and state.error is not None
    assert state.model is model and spec(state) == before and state.model.data["x"] is data
    state.undo()  # the failed action added no step
    assert spec(state) == start and not state.can_undo
    state.redo()
    assert state.message == "" and state.error is None


def test_simulating_an_invalid_model_fails_and_keeps_its_data() -> None:
    state = state_of("gre")
    state.set_param("mu", "scale", -1)
    before, data = spec(state), state.model.data["x"]
    with pytest.raises(ModelError, match="must be positive"):
        state.simulate(sizes={"group": 9})
    assert state.problems_for(None) == [] and "positive" in state.message
    assert spec(state) == before and state.model.data["x"] is data


@pytest.mark.parametrize("name", examples.list())
def test_every_example_loads_and_saves_to_the_same_json(name: str) -> None:
    options = SMALL.get(name, {})
    state = BuilderState()
    state.load_example(name, **options)
    text = state.to_json()
    assert text == examples.load(name, **options).to_json()
    state.new()
    state.load_json(text)
    assert state.to_json() == text and state.valid
    state.undo()
    assert state.model.plates == []


def test_a_new_action_clears_redo_and_an_unchanged_model_adds_no_step() -> None:
    state = BuilderState()
    state.add_plate("a")
    state.add_plate("b")
    state.undo()
    assert state.can_redo
    state.resize_plate("a", 3)
    assert not state.can_redo and [p.name for p in state.model.plates] == ["a"]
    state.resize_plate("a", 3)
    state.rename_plate("a", "a")
    state.undo()  # undoes the first resize: the others changed nothing
    assert state.model.plate("a").size == 10


def test_undo_and_redo_walk_a_long_history_both_ways() -> None:
    state = BuilderState()
    history = [spec(state)]
    for step in itertools.count():
        actions = [lambda: state.load_example("gre", G=2, N=2), lambda: state.rename_plate("group", "g"),
                   lambda: state.add_variable("z", plates=["g"]), lambda: state.simulate(seed=2),
                   lambda: state.remove_plate("g"), lambda: state.set_distribution("mu", "Laplace")]
        if step == len(actions):
            break
        actions[step]()
        history.append(spec(state))
    for expected in reversed(history[:-1]):
        state.undo()
        assert spec(state) == expected
    assert not state.can_undo
    for expected in history[1:]:
        state.redo()
        assert spec(state) == expected


def test_watchers_hear_of_every_change_once() -> None:
    state = state_of("gre")
    heard: list[int] = []
    state.param.watch(lambda event: heard.append(event.new), "revision")
    variables = state.model.variables
    state.add_variable("z")
    assert state.model.variables is not variables  # a new list: the model's own watchers hear of it
    state.set_param("z", "loc", "mu")
    state.undo()
    assert heard == [state.revision - 2, state.revision - 1, state.revision]


def gre_table(groups: int, points: int) -> pd.DataFrame:
    rows = [{"group": g, "obs": n, "x[0]": g + 0.5 * n, "x[1]": -g} for g in range(groups) for n in range(points)]
    return pd.DataFrame(rows)


def test_attaching_a_table_sizes_the_plates_and_replaces_data_and_truth() -> None:
    state = state_of("gre")
    attached = state.attach(gre_table(5, 2))
    assert attached.model is state.model and attached.ignored_columns == []
    assert (state.model.plate("group").size, state.model.plate("obs").size) == (5, 2)
    assert state.model.data["x"][3, 1].tolist() == [3.5, -3.0]
    assert state.model.truth is None and state.valid
    state.undo()
    assert state.model.plate("group").size == 4 and set(state.model.truth) == {"mu", "mu_g"}


def test_a_table_that_does_not_fit_is_reported_and_changes_nothing() -> None:
    state = state_of("gre")
    before, data = spec(state), state.model.data["x"]
    with pytest.raises(ModelError) as raised:
        state.attach(gre_table(5, 2).drop(columns=["x[1]"]))
    assert raised.value.culprit == "x" and "x[1]" in state.message
    assert spec(state) == before and state.model.data["x"] is data and not state.can_undo


def test_attaching_an_uploaded_csv_file() -> None:
    state = state_of("gre")
    content = gre_table(3, 2).to_csv(index=False).encode()
    state.attach(read_table(content, "points.csv"))
    assert state.model.data["x"].shape == (3, 2, 2) and state.valid
    with pytest.raises(ModelError, match="upload a .csv"):
        read_table(content, "points.xlsx")
    assert state.model.data["x"].dtype == torch.get_default_dtype()


def test_a_file_read_elsewhere_is_loaded_as_one_step_or_refused_with_its_reason() -> None:
    """The builder reads uploads on a worker thread, then hands the state the model
    read, or the reason it could not be read."""
    state = state_of("gre")
    before = spec(state)
    with pytest.raises(ModelError) as unreadable:
        read_model_file(b"name,plates\n")
    with pytest.raises(ModelError):
        state.refuse(unreadable.value)
    assert "not a model file" in state.message and spec(state) == before and not state.can_undo
    state.load_model(read_model_file(examples.load("eight_schools").to_json()))
    assert state.model.name == "eight_schools" and state.message == "" and state.can_undo
    state.undo()
    assert spec(state) == before


def test_the_selected_variable_follows_the_model() -> None:
    state = state_of("gre")
    assert state.variable == "mu"  # the first variable of a model
    state.variable = "mu_g"
    state.rename_variable("mu_g", "theta")
    assert state.variable == "theta"  # a renamed variable stays selected
    state.rename_variable("mu", "m")
    assert state.variable == "theta"  # renaming another keeps the selection
    assert state.add_variable("z") == "z" and state.variable == "z"  # a new variable is selected
    with pytest.raises(ModelError):
        state.add_variable("theta")  # a name in use: nothing added, the selection stays
    assert state.variable == "z"
    state.remove_variable("z")
    assert state.variable == "m"  # gone: the first variable
    state.new()
    assert state.variable == ""  # no variable to select
    state.undo()
    assert state.variable == "m"
