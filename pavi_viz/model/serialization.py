"""Models as JSON: a versioned, plain description that loading never executes.

The file holds the plates, covariates and variables, and optionally the data and
ground truth as nested lists of numbers. Loading checks every field's type before
building anything, so a malformed or hostile file gets a :class:`ModelError` that
names the field at fault; expressions stay text until the model layer's own parser
reads them.
"""

from __future__ import annotations

import copy
import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pavi_viz.model.errors import ModelError

if TYPE_CHECKING:
    from pavi_viz.model.spec import PlateModel

SCHEMA = "pavi_viz.model"
SCHEMA_VERSION = 1
#: Files larger than this are refused before parsing: JSON's numbers become Python
#: objects first, up to 26 bytes of memory a byte of file (a 75 MB file peaked at
#: 1.95 GB). More data belongs in a CSV or NetCDF file (:mod:`pavi_viz.model.tables`).
MAX_FILE_BYTES = 32 * 2**20
#: Whole numbers beyond this fit no float: JSON allows them, torch and numpy do not.
_LARGEST_INT = int(sys.float_info.max)

_TOP_KEYS = {"schema", "version", "name", "description", "plates", "covariates", "variables", "data", "truth"}
_PLATE_KEYS = {"name", "size", "nested_in", "membership"}
_COVARIATE_KEYS = {"name", "plates", "event_shape"}
_VARIABLE_KEYS = {"name", "distribution", "params", "plates", "event_shape", "observed"}


def model_to_dict(model: PlateModel, include_data: bool = True) -> dict[str, Any]:
    """The JSON-ready description of ``model``."""
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "name": model.name,
        "description": model.description,
        "plates": [_plate_to_dict(p) for p in model.plates],
        "covariates": [
            {"name": c.name, "plates": list(c.plates), "event_shape": list(c.event_shape)} for c in model.covariates
        ],
        "variables": [
            {
                "name": v.name,
                "distribution": v.distribution,
                # deep: list-valued parameters must not be shared with the model
                "params": copy.deepcopy(dict(v.params)),
                "plates": list(v.plates),
                "event_shape": list(v.event_shape),
                "observed": v.observed,
            }
            for v in model.variables
        ],
    }
    if include_data:
        out["data"] = {k: v.tolist() for k, v in (model.data or {}).items()}
        if model.truth is not None:
            out["truth"] = {k: v.tolist() for k, v in model.truth.items()}
    return out


def _plate_to_dict(plate: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": plate.name, "size": plate.size}
    if plate.nested_in is not None:
        out["nested_in"] = plate.nested_in
    if plate.membership is not None:
        out["membership"] = np.asarray(plate.membership).tolist()
    return out


def model_from_json(source: str | Path) -> PlateModel:
    """Load a model from JSON text or a file path (a ``.json`` name or an existing file)."""
    # Text that opens like JSON (or is blank) is JSON: taken as a path, a long "[[[..."
    # fails with the OS's "file name too long" instead of a clear error.
    is_path = isinstance(source, Path) or (isinstance(source, str) and source.lstrip()[:1] not in ("{", "[", ""))
    if is_path:
        path = Path(source)
        shown = repr(str(path)[:200])
        try:
            if not path.is_file():
                raise ModelError(f"no model file at {shown}")
            if path.stat().st_size > MAX_FILE_BYTES:
                raise ModelError(f"model file {shown} is larger than {MAX_FILE_BYTES // 2**20} MiB: keep its data "
                                 "in a CSV or NetCDF file and attach it")
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as err:
            raise ModelError(f"cannot read the model file {shown}: {err.strerror or err}") from None
    else:
        text = source
    if len(text) > MAX_FILE_BYTES:
        raise ModelError(f"model text is larger than {MAX_FILE_BYTES // 2**20} MiB: keep its data in a CSV or "
                         "NetCDF file and attach it")
    try:
        spec = json.loads(text, parse_constant=_refuse_constant)
    except ModelError:
        raise
    except ValueError as err:  # bad syntax, bad encoding, or an integer of thousands of digits
        raise ModelError(f"the model file is not valid JSON: {err}") from None
    except RecursionError:
        raise ModelError("the model file is nested too deeply") from None
    return model_from_dict(spec)


def _refuse_constant(name: str) -> float:
    raise ModelError(f"the model file holds {name}, which is not a number; data must be finite")


def model_from_dict(spec: Any) -> PlateModel:
    """Build a model from its description, checking every field first."""
    from pavi_viz.model.spec import Covariate, Plate, PlateModel, Variable

    top = _object(spec, "the model", required={"plates", "variables"}, allowed=_TOP_KEYS)
    if top.get("schema", SCHEMA) != SCHEMA:
        raise ModelError(f"not a pavi_viz model file (schema {top.get('schema')!r})")
    version = top.get("version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise ModelError(f"model file has schema version {version!r}; this pavi_viz reads version {SCHEMA_VERSION}")

    plates = []
    for i, item in enumerate(_list(top["plates"], "plates")):
        p = _object(item, f"plates[{i}]", required={"name", "size"}, allowed=_PLATE_KEYS)
        name = _string(p["name"], f"plates[{i}].name")
        membership = p.get("membership")
        if membership is not None:
            membership = _numbers(membership, f"plate {name!r} membership", depth=1)
        plates.append(
            Plate(
                name,
                _integer(p["size"], f"plate {name!r} size"),
                nested_in=_optional_string(p.get("nested_in"), f"plate {name!r} nested_in"),
                membership=membership,
            )
        )
    covariates = []
    for i, item in enumerate(_list(top.get("covariates", []), "covariates")):
        c = _object(item, f"covariates[{i}]", required={"name"}, allowed=_COVARIATE_KEYS)
        name = _string(c["name"], f"covariates[{i}].name")
        covariates.append(
            Covariate(name, _strings(c.get("plates", []), f"covariate {name!r} plates"),
                      _integers(c.get("event_shape", []), f"covariate {name!r} event_shape"))
        )
    variables = []
    for i, item in enumerate(_list(top["variables"], "variables")):
        v = _object(item, f"variables[{i}]", required={"name", "distribution"}, allowed=_VARIABLE_KEYS)
        name = _string(v["name"], f"variables[{i}].name")
        params = _object(v.get("params", {}), f"variable {name!r} params")
        for pname, value in params.items():
            if not isinstance(value, str):
                _numbers(value, f"parameter {pname!r} of {name!r}", depth=None)
        observed = v.get("observed", False)
        if not isinstance(observed, bool):
            raise ModelError(f"variable {name!r}: 'observed' must be true or false", name)
        variables.append(
            Variable(
                name,
                _string(v["distribution"], f"variable {name!r} distribution"),
                plates=_strings(v.get("plates", []), f"variable {name!r} plates"),
                event_shape=_integers(v.get("event_shape", []), f"variable {name!r} event_shape"),
                observed=observed,
                params=params,
            )
        )
    data = _arrays(top.get("data", {}), "data")
    truth = top.get("truth")
    return PlateModel(
        plates,
        variables,
        covariates,
        data=data,
        truth=None if truth is None else _arrays(truth, "truth"),
        name=_string(top.get("name", "model"), "name"),
        description=_string(top.get("description", ""), "description"),
    )


# -- field checks ----------------------------------------------------------------
def _object(value: Any, where: str, required: set[str] = frozenset(), allowed: set[str] | None = None) -> dict:
    if not isinstance(value, Mapping):
        raise ModelError(f"{where} must be a JSON object, got {type(value).__name__}")
    missing = required - set(value)
    if missing:
        raise ModelError(f"{where} lacks {', '.join(sorted(missing))}")
    if allowed is not None:
        unknown = set(value) - allowed
        if unknown:
            raise ModelError(f"{where} has unknown fields {sorted(map(str, unknown))}")
    return dict(value)


def _list(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise ModelError(f"{where} must be a list, got {type(value).__name__}")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ModelError(f"{where} must be text, got {value!r:.60}")
    return value


def _optional_string(value: Any, where: str) -> str | None:
    return None if value is None else _string(value, where)


def _strings(value: Any, where: str) -> list[str]:
    return [_string(v, where) for v in _list(value, where)]


def _integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelError(f"{where} must be a whole number, got {value!r:.60}")
    return value


def _integers(value: Any, where: str) -> list[int]:
    return [_integer(v, where) for v in _list(value, where)]


def _numbers(value: Any, where: str, depth: int | None) -> Any:
    """Check a number or nested lists of numbers (``depth`` levels when given)."""
    stack = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, list):
            if depth is not None and level >= depth:
                raise ModelError(f"{where} is nested too deeply")
            stack.extend((x, level + 1) for x in item)
        elif isinstance(item, bool) or not isinstance(item, (int, float)):
            raise ModelError(f"{where} must hold numbers only, found {item!r:.60}")
        elif isinstance(item, int) and abs(item) > _LARGEST_INT:  # math.isfinite would overflow
            raise ModelError(f"{where} holds a number too large to represent: {str(item)[:20]}...")
        elif not math.isfinite(item):
            raise ModelError(f"{where} must be finite")
        elif depth is not None and level != depth:
            raise ModelError(f"{where} must be a list of numbers")
    return value


def _arrays(value: Any, where: str) -> dict[str, np.ndarray]:
    out = {}
    for key, item in _object(value, where).items():
        _numbers(item, f"{where} {key!r}", depth=None)
        try:
            out[key] = np.asarray(item, dtype=float)
        except ValueError:
            raise ModelError(f"{where} {key!r} is not a rectangular array", key) from None
    return out
