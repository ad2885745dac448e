"""Tests for models as JSON: round trips, versions, malformed and malicious files."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pavi_viz.model import Covariate, ModelError, Plate, PlateModel, Variable
from pavi_viz.model.serialization import SCHEMA, SCHEMA_VERSION


def minimal(**extra) -> dict:
    """A tiny valid model file's content, with fields replaced by ``extra``."""
    spec = {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "plates": [{"name": "g", "size": 3}],
        "variables": [
            {"name": "mu", "distribution": "Normal", "params": {"loc": 0.0, "scale": 1.0}},
            {"name": "y", "distribution": "Normal", "plates": ["g"], "observed": True,
             "params": {"loc": "mu", "scale": 1.0}},
        ],
        "data": {"y": [0.5, 1.0, -0.5]},
    }
    spec.update(extra)
    return spec


def assert_same_model(a: PlateModel, b: PlateModel) -> None:
    assert a.to_dict() == b.to_dict()
    assert a.data.keys() == b.data.keys()
    for key in a.data:
        assert torch.equal(a.data[key], b.data[key]), key
    assert (a.truth is None) == (b.truth is None)
    for key in a.truth or {}:
        assert torch.equal(a.truth[key], b.truth[key]), key


# -- round trips ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["simple", "nested", "radon", "full"])
def test_round_trip_text(build, name: str) -> None:
    model = build(name)
    text = model.to_json()
    loaded = PlateModel.from_json(text)
    assert_same_model(model, loaded)
    assert loaded.name == model.name and loaded.description == model.description
    # and the loaded model works like the original
    compiled, again = model.compile(), loaded.compile()
    latents = {n: v for n, v in compiled.sample_prior(seed=0).items() if n in compiled.latent_names}
    torch.testing.assert_close(compiled.log_joint(latents), again.log_joint(latents))


def test_round_trip_file(build, tmp_path: Path) -> None:
    model = build("full")
    path = tmp_path / "model.json"
    text = model.to_json(path)
    assert path.read_text() == text
    for source in (path, str(path)):
        assert_same_model(model, PlateModel.from_json(source))


def test_round_trip_keeps_truth_and_ragged_membership(build) -> None:
    model = build("full").simulate(seed=3)
    loaded = PlateModel.from_json(model.to_json())
    assert_same_model(model, loaded)
    assert set(loaded.truth) == set(model.latent_names)
    for plate in ("house", "neuron"):
        assert np.array_equal(np.asarray(loaded.plate(plate).membership), np.asarray(model.plate(plate).membership))
        assert loaded.plate(plate).nested_in == model.plate(plate).nested_in
    assert loaded.plate("obs").membership is None and loaded.plate("obs").nested_in == "group"


def test_round_trip_event_shapes_and_vector_params() -> None:
    model = PlateModel(
        [Plate("g", 2)],
        [
            Variable("w", "Dirichlet", plates=["g"], event_shape=[3], concentration=[1.0, 2.0, 3.0]),
            Variable("m", "GaussianMixture", event_shape=[2], weights=[0.3, 0.7],
                     locs=[[0.0, 0.0], [1.0, 1.0]], scale=0.5),
            Variable("k", "Categorical", plates=["g"], observed=True, probs="w"),
        ],
        [Covariate("c", plates=["g"], event_shape=[2])],
        data={"k": [0, 2], "c": [[1.0, 2.0], [3.0, 4.0]]},
        name="events",
        description="vectors and matrices",
    )
    assert model.problems() == []
    loaded = PlateModel.from_json(model.to_json())
    assert_same_model(model, loaded)
    assert loaded.variable("m").params["locs"] == [[0.0, 0.0], [1.0, 1.0]]
    assert loaded.covariates[0].event_shape == [2]


def test_round_trip_without_data(build) -> None:
    model = build("radon")
    spec = model.to_dict(include_data=False)
    assert "data" not in spec and "truth" not in spec
    loaded = PlateModel.from_json(model.to_json(include_data=False))
    assert loaded.data == {} and loaded.truth is None
    assert loaded.problems(require_data=False) == []
    assert loaded.to_dict(include_data=False) == spec


def test_to_dict_is_plain_json(build) -> None:
    spec = build("full").simulate(seed=0).to_dict()
    assert json.loads(json.dumps(spec, allow_nan=False)) == spec


def test_from_dict_equals_from_json(build) -> None:
    model = build("radon")
    assert_same_model(PlateModel.from_dict(model.to_dict()), PlateModel.from_json(model.to_json()))


def test_compact_json(build) -> None:
    text = build("simple").to_json(indent=None)
    assert "\n" not in text
    assert_same_model(build("simple"), PlateModel.from_json(text))


# -- schema and version ----------------------------------------------------------------
def test_version_field_present(build) -> None:
    spec = json.loads(build("simple").to_json())
    assert spec["schema"] == SCHEMA == "pavi_viz.model"
    assert spec["version"] == SCHEMA_VERSION == 1


def test_version_and_schema_may_be_left_out() -> None:
    spec = minimal()
    del spec["schema"], spec["version"]
    assert PlateModel.from_dict(spec).problems() == []


@pytest.mark.parametrize(("field", "value", "words"), [
    ("version", 2, ["version 2", "version 1"]),
    ("version", 0, ["version 0"]),
    ("version", "1", ["version '1'"]),
    ("version", None, ["version None"]),
    ("schema", "other.thing", ["not a pavi_viz model", "other.thing"]),
    ("schema", None, ["not a pavi_viz model"]),
])
def test_wrong_schema_or_version_refused(field: str, value: object, words: list[str]) -> None:
    with pytest.raises(ModelError) as info:
        PlateModel.from_json(json.dumps(minimal(**{field: value})))
    for word in words:
        assert word in info.value.message


# -- malformed files ---------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "",
    "{",
    "{not json}",
    '{"plates": [], "variables": [],}',
    "[1, 2, 3]",
    '"a string"',
    "[" * 100000,
    "[" * 100000 + "]" * 100000,
    '{"plates": ' + "[" * 100000 + "]" * 100000 + ', "variables": []}',
    '{"a":' * 100000,
    '{"plates": [{"name": "g", "size": 1' + "0" * 5000 + '}], "variables": []}',
], ids=["empty", "open-brace", "not-json", "trailing-comma", "array", "string", "deep-open", "deep-closed",
        "deep-plates", "deep-objects", "5000-digit-int"])
def test_malformed_text(text: str) -> None:
    with pytest.raises(ModelError):
        PlateModel.from_json(text)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_literal_refused(constant: str) -> None:
    text = json.dumps(minimal()).replace("0.5", constant)
    with pytest.raises(ModelError, match=constant.lstrip("-")):
        PlateModel.from_json(text)
    text = json.dumps(minimal()).replace('"loc": 0.0', f'"loc": {constant}')
    with pytest.raises(ModelError):
        PlateModel.from_json(text)


def test_overflowing_number_refused() -> None:
    # 1e400 is valid JSON, read as infinity
    text = json.dumps(minimal()).replace("0.5", "1e400")
    with pytest.raises(ModelError, match="data 'y' must be finite"):
        PlateModel.from_json(text)


def test_not_json_file(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    path.write_text("plates: [g]\nvariables: []\n")
    with pytest.raises(ModelError, match="not valid JSON"):
        PlateModel.from_json(path)
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ModelError):
        PlateModel.from_json(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no model file"):
        PlateModel.from_json(tmp_path / "nope.json")
    with pytest.raises(ModelError, match="no model file"):
        PlateModel.from_json(str(tmp_path / "nope.json"))
    with pytest.raises(ModelError, match="no model file"):
        PlateModel.from_json(tmp_path)  # a folder
    with pytest.raises(ModelError):
        PlateModel.from_json("x" * 100000)  # a path too long for the OS


@pytest.mark.parametrize(("change", "words"), [
    ({"plates": {"g": 3}}, ["plates", "list"]),
    ({"plates": [["g", 3]]}, ["plates[0]", "object"]),
    ({"plates": [{"name": "g", "size": "3"}]}, ["size", "whole number"]),
    ({"plates": [{"name": "g", "size": 3.5}]}, ["size", "whole number"]),
    ({"plates": [{"name": "g", "size": True}]}, ["size", "whole number"]),
    ({"plates": [{"name": 3, "size": 3}]}, ["name", "text"]),
    ({"plates": [{"name": "g", "size": 3, "nested_in": 1}]}, ["nested_in", "text"]),
    ({"plates": [{"name": "g", "size": 3, "membership": [0, "a"]}]}, ["membership", "numbers"]),
    ({"plates": [{"name": "g", "size": 3, "membership": [[0], [1]]}]}, ["membership", "nested"]),
    ({"variables": "mu"}, ["variables", "list"]),
    ({"variables": [{"name": "mu", "distribution": 3}]}, ["distribution", "text"]),
    ({"variables": [{"name": "mu", "distribution": "Normal", "observed": "yes"}]}, ["observed", "true or false"]),
    ({"variables": [{"name": "mu", "distribution": "Normal", "params": [0, 1]}]}, ["params", "object"]),
    ({"variables": [{"name": "mu", "distribution": "Normal", "params": {"loc": None}}]}, ["'loc'", "numbers"]),
    ({"variables": [{"name": "mu", "distribution": "Normal", "params": {"loc": {"x": 1}}}]}, ["'loc'", "numbers"]),
    ({"variables": [{"name": "mu", "distribution": "Normal", "plates": "g"}]}, ["plates", "list"]),
    ({"variables": [{"name": "mu", "distribution": "Normal", "event_shape": [2.5]}]}, ["event_shape", "whole"]),
    ({"covariates": [{"name": "c", "plates": [1]}]}, ["covariate", "plates", "text"]),
    ({"data": [1, 2]}, ["data", "object"]),
    ({"data": {"y": "1, 2, 3"}}, ["data 'y'", "numbers"]),
    ({"data": {"y": [1, None, 3]}}, ["data 'y'", "numbers"]),
    ({"data": {"y": [[1, 2], [3]]}}, ["data 'y'", "rectangular"]),
    ({"data": {"y": [10**400]}}, ["data 'y'", "too large"]),
    ({"truth": {"mu": "zero"}}, ["truth 'mu'", "numbers"]),
    ({"name": 3}, ["name", "text"]),
    ({"description": ["a"]}, ["description", "text"]),
])
def test_wrong_types(change: dict, words: list[str]) -> None:
    with pytest.raises(ModelError) as info:
        PlateModel.from_json(json.dumps(minimal(**change)))
    for word in words:
        assert word.lower() in info.value.message.lower(), info.value.message


@pytest.mark.parametrize(("where", "words"), [
    ("top", ["the model", "unknown fields", "'colour'"]),
    ("plate", ["plates[0]", "unknown fields", "'colour'"]),
    ("variable", ["variables[0]", "unknown fields", "'colour'"]),
    ("covariate", ["covariates[0]", "unknown fields", "'colour'"]),
])
def test_unknown_fields(where: str, words: list[str]) -> None:
    spec = minimal(covariates=[{"name": "c"}])
    target = {"top": spec, "plate": spec["plates"][0], "variable": spec["variables"][0],
              "covariate": spec["covariates"][0]}[where]
    target["colour"] = "red"
    with pytest.raises(ModelError) as info:
        PlateModel.from_json(json.dumps(spec))
    for word in words:
        assert word in info.value.message


@pytest.mark.parametrize(("path", "words"), [
    ((), ["lacks", "plates"]),
    (("plates", 0, "size"), ["plates[0]", "lacks", "size"]),
    (("plates", 0, "name"), ["plates[0]", "lacks", "name"]),
    (("variables", 0, "distribution"), ["variables[0]", "lacks", "distribution"]),
    (("variables", 0, "name"), ["variables[0]", "lacks", "name"]),
])
def test_missing_fields(path: tuple, words: list[str]) -> None:
    spec = minimal()
    if path:
        target = spec
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    else:
        del spec["plates"]
    with pytest.raises(ModelError) as info:
        PlateModel.from_json(json.dumps(spec))
    for word in words:
        assert word in info.value.message


def test_from_dict_refuses_non_mappings() -> None:
    for spec in (None, [], "model", 3):
        with pytest.raises(ModelError, match="JSON object"):
            PlateModel.from_dict(spec)


# -- malicious files -------------------------------------------------------------------------
def test_expression_reaching_for_import_runs_nothing(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    attacks = [
        f"__import__('os').system('touch {sentinel}')",
        f"exp(__import__('os').system('touch {sentinel}'))",
        "mu.__class__.__mro__",
        "().__class__.__bases__[0].__subclasses__()",
        f"eval(\"__import__('os').system('touch {sentinel}')\")",
        f"open('{sentinel}', 'w')",
        "mu if 1 else 0",
        "[x for x in mu]",
    ]
    for attack in attacks:
        path = tmp_path / "model.json"
        spec = minimal()
        spec["variables"][1]["params"]["loc"] = attack
        path.write_text(json.dumps(spec))
        model = PlateModel.from_json(path)  # loading reads the text, nothing more
        assert model.variable("y").params["loc"] == attack
        with pytest.raises(ModelError) as info:
            model.validate()
        assert info.value.culprit == "y"
        with pytest.raises(ModelError):
            model.compile()
        with pytest.raises(ModelError):
            model.sample_prior()
        assert not sentinel.exists(), attack


def test_loading_never_calls_eval_or_exec(build, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    build("full").simulate(seed=0).to_json(path)

    def refuse(*args, **kwargs):
        raise AssertionError("eval/exec/compile called while loading a model")

    for name in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, name, refuse)
    try:
        model = PlateModel.from_json(path)
        model.validate()
        compiled = model.compile()
        compiled.log_joint({n: compiled.truth[n] for n in compiled.latent_names})
    finally:  # before pytest reports a failure: it compiles the source it shows
        monkeypatch.undo()


def test_huge_plate_size_in_a_file() -> None:
    spec = minimal(plates=[{"name": "g", "size": 10**12}])
    spec["variables"][1]["observed"] = False
    del spec["data"]
    model = PlateModel.from_json(json.dumps(spec))
    with pytest.raises(ModelError) as info:
        model.validate()
    assert info.value.culprit == "g" and "size" in info.value.message
    spec["plates"] = [{"name": "g", "size": 2**63 + 5}]
    with pytest.raises(ModelError):
        PlateModel.from_json(json.dumps(spec)).validate()


def test_huge_sizes_together_in_a_file() -> None:
    # each plate within the limit, their product not: refused, without allocating anything
    spec = minimal(plates=[{"name": "g", "size": 2**30}, {"name": "h", "size": 2**30, "nested_in": "g"}])
    spec["variables"][1].update(plates=["g", "h"], observed=False)
    del spec["data"]
    with pytest.raises(ModelError) as info:
        PlateModel.from_json(json.dumps(spec)).validate()
    assert info.value.culprit == "y" and "elements" in info.value.message
    spec["variables"][1].update(plates=[], event_shape=[2**31])
    with pytest.raises(ModelError) as info:
        PlateModel.from_json(json.dumps(spec)).validate()
    assert info.value.culprit == "y"


@pytest.mark.parametrize("where", ["data", "truth", "param", "membership"])
def test_huge_nested_list_in_a_file(where: str) -> None:
    spec = minimal(truth={"mu": 0.0})
    slot = {"data": spec["data"], "truth": spec["truth"], "param": spec["variables"][0]["params"]}
    if where == "membership":
        spec["plates"].append({"name": "h", "size": 1, "nested_in": "g", "membership": "DEEP"})
    else:
        slot[where][next(iter(slot[where]))] = "DEEP"
    deep = "[" * 50000 + "1.0" + "]" * 50000
    with pytest.raises(ModelError, match="nested too deeply"):
        PlateModel.from_json(json.dumps(spec).replace('"DEEP"', deep))


def test_nested_list_too_deep_for_an_array() -> None:
    # JSON reads it, but no array has 200 dims
    spec = minimal()
    spec["variables"][0]["params"]["loc"] = json.loads("[" * 200 + "0.0" + "]" * 200)
    with pytest.raises(ModelError) as info:
        PlateModel.from_json(json.dumps(spec)).validate()
    assert info.value.culprit == "mu"
    spec = minimal()
    spec["data"]["y"] = json.loads("[" * 200 + "0.0" + "]" * 200)
    with pytest.raises(ModelError, match="data 'y'"):
        PlateModel.from_json(json.dumps(spec))


def test_huge_wide_data_in_a_file() -> None:
    # a million numbers load fine (and are checked against the plates)
    spec = minimal()
    spec["data"]["y"] = [0.5] * 1_000_000
    model = PlateModel.from_json(json.dumps(spec))
    with pytest.raises(ModelError) as info:
        model.validate()
    assert info.value.culprit == "y" and "shape" in info.value.message


def test_long_expression_in_a_file() -> None:
    spec = minimal()
    spec["variables"][1]["params"]["loc"] = "mu + " * 100000 + "mu"
    model = PlateModel.from_json(json.dumps(spec))
    with pytest.raises(ModelError) as info:
        model.validate()
    assert info.value.culprit == "y" and "limit" in info.value.message
    spec["variables"][1]["params"]["loc"] = "(" * 500 + "mu" + ")" * 500
    with pytest.raises(ModelError, match="nested too deeply"):
        PlateModel.from_json(json.dumps(spec)).validate()


def test_file_too_large(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pavi_viz.model import serialization

    monkeypatch.setattr(serialization, "MAX_FILE_BYTES", 100)
    path = tmp_path / "model.json"
    path.write_text(json.dumps(minimal()))
    with pytest.raises(ModelError, match="larger than"):
        PlateModel.from_json(path)
    with pytest.raises(ModelError, match="larger than"):
        PlateModel.from_json(json.dumps(minimal()))
