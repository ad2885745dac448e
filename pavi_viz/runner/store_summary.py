"""A posterior summary (the ``xarray.Dataset`` of :meth:`Posterior.summary`) as rows of
the run store, and back.

Each data variable becomes its values as little-endian float64 bytes, with its dims and
shape in JSON; the coordinates and the attributes (numbers and strings) are JSON too.
Reading back parses JSON and wraps bytes with :func:`numpy.frombuffer` after checking
their length against the shape: a malformed or hostile row gives a :class:`ValueError`,
and nothing in it is ever executed (no pickle; not NetCDF either, whose HDF5 parser
would read whatever the bytes claim).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import xarray as xr

#: How the values are stored: little-endian float64, whatever the model's dtype.
DTYPE = "<f8"


@dataclass(frozen=True)
class EncodedVariable:
    """One data variable of a summary: its name, dims and shape (JSON) and its values."""

    name: str
    dims: str
    shape: str
    data: bytes


@dataclass(frozen=True)
class EncodedSummary:
    """A summary as the store keeps it: coordinates and attributes (JSON), and variables."""

    coords: str
    attrs: str
    variables: tuple[EncodedVariable, ...]

    @property
    def numbers(self) -> int:
        """The values it holds (what bounds its size)."""
        return sum(len(v.data) for v in self.variables) // 8


def encode(summary: xr.Dataset) -> EncodedSummary:
    """The summary's rows. Attributes that are neither numbers nor strings are left out."""
    import numpy as np

    coords = {str(name): {"dims": list(map(str, c.dims)), "values": c.values.tolist()}
              for name, c in summary.coords.items()}
    variables = tuple(
        EncodedVariable(str(name), json.dumps(list(map(str, array.dims))), json.dumps(list(array.shape)),
                        np.ascontiguousarray(array.values, dtype=DTYPE).tobytes())
        for name, array in summary.data_vars.items()
    )
    attrs = {str(k): _plain(v) for k, v in summary.attrs.items() if _plain(v) is not None}
    return EncodedSummary(json.dumps(coords), json.dumps(attrs), variables)


def decode(encoded: EncodedSummary) -> xr.Dataset:
    """The summary of these rows.

    Raises:
        ValueError: malformed rows (bad JSON, a shape that does not match the bytes, dims
            that do not match the coordinates...), naming the part.
    """
    import numpy as np
    import xarray as xr

    coords = _json_object(encoded.coords, "coordinates")
    attrs = _json_object(encoded.attrs, "attributes")
    data_vars = {}
    for variable in encoded.variables:
        dims, shape = json.loads(variable.dims), json.loads(variable.shape)
        if not (isinstance(dims, list) and all(isinstance(d, str) for d in dims)):
            raise ValueError(f"variable {variable.name!r}: dims {variable.dims[:80]!r} are not a list of names")
        if not (isinstance(shape, list) and len(shape) == len(dims)
                and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
            raise ValueError(f"variable {variable.name!r}: shape {variable.shape[:80]!r} is not {len(dims)} sizes")
        if len(variable.data) != 8 * math.prod(shape):
            raise ValueError(f"variable {variable.name!r}: {len(variable.data)} bytes do not hold shape {shape}")
        data_vars[variable.name] = (dims, np.frombuffer(variable.data, dtype=DTYPE).reshape(shape))
    try:
        return xr.Dataset(data_vars, coords={name: _coordinate(name, c) for name, c in coords.items()},
                          attrs={k: v for k, v in attrs.items() if _plain(v) is not None})
    except (TypeError, ValueError) as err:
        raise ValueError(f"the coordinates do not fit the variables: {err}") from None


def _coordinate(name: str, coordinate: Any) -> tuple[list[str], list]:
    if not (isinstance(coordinate, dict) and isinstance(coordinate.get("dims"), list)
            and isinstance(coordinate.get("values"), list)):
        raise ValueError(f"coordinate {name!r} is not dims and values")
    return coordinate["dims"], coordinate["values"]


def _json_object(text: str, what: str) -> dict:
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as err:
        raise ValueError(f"the {what} are not JSON: {err}") from None
    if not isinstance(value, dict):
        raise ValueError(f"the {what} are not a JSON object")
    return value


def _plain(value: Any) -> str | int | float | None:
    """A number or a string as itself (numpy scalars too), anything else as None."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()
    return value if isinstance(value, str | int | float) and not isinstance(value, bool) else None


__all__ = ["DTYPE", "EncodedSummary", "EncodedVariable", "decode", "encode"]
