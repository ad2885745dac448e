"""Ready-made example models, each with its data attached.

::

    from pavi_viz import examples
    examples.list()                      # ['gre', 'eight_schools', 'radon', ...]
    model = examples.load("gre", G=50)   # a PlateModel; options are the builder's keywords
    examples.describe()["radon"]         # a one-line description

    examples.reference("eight_schools")  # reference posterior draws (NUTS), or None
    examples.reference_summary("radon")  # a NUTS reference's mean, sd, quantiles per element
    examples.read_reference("benchmarks/references/glmm_reference.json")  # the same, from a file

Each example lives in its own small module with a ``build(**options)`` function.
The modules are imported on first use: listing the examples imports no torch.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import xarray as xr

    from pavi_viz.model import PlateModel

# name -> (module, builder function, description constant), in menu order:
# the simplest model first, then real data, then the richer simulated ones.
_EXAMPLES: dict[str, tuple[str, str, str]] = {
    "gre": ("gre", "build", "DESCRIPTION"),
    "eight_schools": ("eight_schools", "build", "DESCRIPTION"),
    "radon": ("radon", "build_radon", "RADON_DESCRIPTION"),
    "radon_uranium": ("radon", "build_radon_uranium", "RADON_URANIUM_DESCRIPTION"),
    "spikes": ("spikes", "build", "DESCRIPTION"),
    "mixture": ("mixture", "build", "DESCRIPTION"),
}


def list() -> builtins.list[str]:  # noqa: A001 - the public name the API asks for
    """The names of the examples, in menu order."""
    return builtins.list(_EXAMPLES)


def _entry(name: str) -> tuple[Any, str, str]:
    try:
        module, builder, description = _EXAMPLES[name]
    except (KeyError, TypeError):
        raise KeyError(f"unknown example {name!r}; the examples are: {', '.join(_EXAMPLES)}") from None
    return importlib.import_module(f"{__name__}.{module}"), builder, description


def _builder(name: str) -> Callable[..., PlateModel]:
    module, builder, _ = _entry(name)
    return getattr(module, builder)


def options(name: str) -> dict[str, Any]:
    """The options of example ``name`` with their default values."""
    parameters = inspect.signature(_builder(name)).parameters
    return {k: p.default for k, p in parameters.items()}


def load(name: str, **options: Any) -> PlateModel:
    """Example ``name``, built with ``options`` and with its data attached.

    Raises:
        KeyError: for an unknown name (the message lists the known ones).
        TypeError: for an option the example does not take (named in the message).
    """
    builder = _builder(name)
    known = inspect.signature(builder).parameters
    unknown = [k for k in options if k not in known]
    if unknown:
        takes = ", ".join(known) if known else "no options"
        raise TypeError(f"example {name!r} has no option {', '.join(map(repr, unknown))}; it takes: {takes}")
    return builder(**options)


# name -> (package data file of reference draws, {variable: its plates}).
_REFERENCES: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    "eight_schools": ("eight_schools_reference_draws.json", {"mu": (), "tau": (), "theta": ("school",)}),
}


def reference(name: str) -> xr.Dataset | None:
    """Reference posterior draws of example ``name`` (with its default options), or None
    when it ships none.

    Returns:
        A Dataset named like the posterior's draws: one data variable per latent, dims
        ``("sample", *plates)`` (eight schools: ``mu`` and ``tau`` ``("sample",)``,
        ``theta`` ``("sample", "school")``, 10,000 NUTS draws), its ``source`` in the attrs.

    Raises:
        KeyError: for an unknown example name.
    """
    _entry(name)
    if name not in _REFERENCES:
        return None
    import numpy as np
    import xarray as xr

    from pavi_viz.examples._data import read_dataset

    filename, dims = _REFERENCES[name]
    raw = read_dataset(filename)
    data = {k: (("sample", *dims[k]), np.asarray(v, dtype=np.float64)) for k, v in raw["draws"].items()}
    dataset = xr.Dataset(data, attrs={"source": raw["source"], "model": raw["model"]})
    return dataset.assign_coords({d: np.arange(n) for d, n in dataset.sizes.items()})


#: Examples with a NUTS reference summary (``benchmarks/references.py``), in ``NAME_reference.json``.
_REFERENCE_SUMMARIES = ("radon", "radon_uranium", "spikes")
#: The statistics of a reference summary, as ``Posterior.summary`` names them, and their quantiles.
_STATS = ("mean", "sd", "5%", "50%", "95%")
_QUANTILES = (float("nan"), float("nan"), 0.05, 0.5, 0.95)


def _summary_dataset(raw: Mapping[str, Any]) -> xr.Dataset:
    """A reference summary's JSON (``benchmarks/references.py``'s layout) as a Dataset."""
    import numpy as np
    import xarray as xr

    data = {k: (("stat", *v["dims"]), np.asarray(v["values"], dtype=np.float64)) for k, v in raw["variables"].items()}
    diagnostics = {k: v if isinstance(v, str) else float(v) for k, v in raw["diagnostics"].items()}
    summary = xr.Dataset(data, attrs={"source": raw["source"], **diagnostics})
    return summary.assign_coords({d: np.arange(n) for d, n in summary.sizes.items() if d != "stat"})


def _with_stats(summary: xr.Dataset) -> xr.Dataset:
    return summary.assign_coords(stat=builtins.list(_STATS), quantile=("stat", builtins.list(_QUANTILES)))


def read_reference(path: str | Path) -> xr.Dataset:
    """A NUTS reference summary from its JSON file (as ``benchmarks/references.py`` writes
    them), laid out as :func:`reference_summary` returns it.

    For references outside the package, such as those of the user models in
    ``benchmarks/references/``.

    Raises:
        FileNotFoundError: no such file.
        KeyError: the file lacks a part of the layout (``variables``, ``source``...).
    """
    return _with_stats(_summary_dataset(json.loads(Path(path).read_text(encoding="utf-8"))))


def reference_summary(name: str) -> xr.Dataset | None:
    """The NUTS reference posterior of example ``name`` (with its default options) as a
    summary, or None when it has none.

    Laid out as :meth:`pavi_viz.inference.Posterior.summary` (dims ``("stat", *plates,
    *event dims)``, ``stat`` = mean, sd, 5%, 50%, 95%), so the two compare element by
    element. Radon, radon_uranium and spikes come from NumPyro's NUTS on the models
    written again in NumPyro (``benchmarks/references.py``; its diagnostics in the
    attrs); eight schools' from the posterior database's draws (:func:`reference`).

    Raises:
        KeyError: for an unknown example name.
    """
    import xarray as xr

    from pavi_viz.examples._data import read_dataset

    draws = reference(name)
    if draws is not None:
        stats = [draws.mean("sample"), draws.std("sample", ddof=1),
                 *(draws.quantile(q, "sample").drop_vars("quantile") for q in _QUANTILES[2:])]
        return _with_stats(xr.concat(stats, dim="stat"))
    if name in _REFERENCE_SUMMARIES:
        return _with_stats(_summary_dataset(read_dataset(f"{name}_reference.json")))
    return None


def describe() -> dict[str, str]:
    """Each example's name and a one-line description."""
    out = {}
    for name in _EXAMPLES:
        module, _, description = _entry(name)
        out[name] = getattr(module, description)
    return out


__all__ = ["describe", "list", "load", "options", "read_reference", "reference", "reference_summary"]
