"""The parts of a plate-graph model, as editable ``param.Parameterized`` objects.

These classes hold what a user describes (in Python, in a JSON file or in the
visual builder) and nothing computed: :meth:`PlateModel.compile` checks them and
turns them into a :class:`~pavi_viz.model.compiled.CompiledModel` with tensors,
parsed expressions and the plate index structure.

A parameter of a variable's distribution is written as

* a number or a (nested) list of numbers: a constant;
* a name: a parent variable or a covariate (``"mu"``);
* an expression over parents and covariates (``"alpha[county] + beta[county] * floor"``),
  parsed by :mod:`pavi_viz.model.expressions`, never evaluated as Python.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import param
import torch
from torch import Tensor

from pavi_viz.model.distributions import DISTRIBUTIONS
from pavi_viz.model.errors import ModelError

if TYPE_CHECKING:
    from pavi_viz.model.compiled import CompiledModel
    from pavi_viz.model.plates import PlateBatch

#: :meth:`PlateModel.simulate` refuses to draw more numbers than this (float32: 200 MB).
MAX_SIMULATED_NUMBERS = 50_000_000
#: A constant parameter value, or an expression over parents and covariates.
ParamValue = float | int | list | str


class Plate(param.Parameterized):
    """A set of indexed copies: subjects, groups, houses, trials.

    Args:
        name: the plate's name, used in variables' ``plates`` and in ``x[plate]``.
        size: its number of elements; for a regular nested plate, the number of
            members of each outer element. Taken from ``membership`` when left out.
        nested_in: the outer plate, if any.
        membership: makes the nesting ragged: for each element of this plate, the
            index (0-based) of its outer element. Radon's ``house`` plate has
            ``size=919, nested_in="county"`` and the county of each house.
    """

    name = param.String(default="", constant=False, doc="The plate's name.")
    size = param.Integer(default=1, softbounds=(1, 1000), doc="Number of elements (per outer element when regularly nested).")
    nested_in = param.String(default=None, allow_None=True, doc="The plate this one nests in.")
    membership = param.Array(default=None, allow_None=True, doc="Ragged nesting: the outer element of each member.")

    def __init__(
        self,
        name: str,
        size: int | None = None,
        *,
        nested_in: str | None = None,
        membership: Sequence[int] | np.ndarray | Tensor | None = None,
        **params: Any,
    ) -> None:
        if membership is not None:
            membership = np.asarray(membership)
            if size is None:
                size = len(membership)
        super().__init__(name=name, size=1 if size is None else size, nested_in=nested_in, membership=membership, **params)

    @property
    def ragged(self) -> bool:
        return self.membership is not None

    def __repr__(self) -> str:
        nest = ""
        if self.nested_in:
            nest = f", nested_in={self.nested_in!r}" + (", ragged" if self.ragged else "")
        return f"Plate({self.name!r}, {self.size}{nest})"

    __str__ = __repr__  # param's default str shows only the class and name


class Covariate(param.Parameterized):
    """Known data that enters expressions but is not modelled (``floor``, ``sigma``).

    Args:
        name: its name in expressions and in the data.
        plates: the plates it lives in, outer to inner.
        event_shape: the shape of its value for one plate element.
    """

    name = param.String(default="", constant=False, doc="The covariate's name.")
    plates = param.List(default=[], item_type=str, doc="Plates it lives in, outer to inner.")
    event_shape = param.List(default=[], item_type=int, doc="Shape of one element's value.")

    def __init__(self, name: str, plates: Sequence[str] = (), event_shape: Sequence[int] = (), **params: Any) -> None:
        super().__init__(name=name, plates=list(plates), event_shape=list(event_shape), **params)

    def __repr__(self) -> str:
        return f"Covariate({self.name!r}, plates={self.plates})"

    __str__ = __repr__


class Variable(param.Parameterized):
    """A random variable of the model, latent or observed.

    Args:
        name: its name.
        distribution: a name from :data:`pavi_viz.model.distributions.DISTRIBUTIONS`.
        plates: the plates it lives in, outer to inner.
        event_shape: the shape of one ground variable's value (``[2]`` for a vector
            of two coefficients; ``[3]`` for a Dirichlet over three weights).
        observed: whether its values are data.
        **dist_params: the distribution's parameters, each a constant, a parent's
            name or an expression.
    """

    name = param.String(default="", constant=False, doc="The variable's name.")
    # Text rather than a fixed menu: an unknown name is reported by validation, with
    # the variable's name, since the builder must be able to hold invalid states.
    distribution = param.String(default="Normal", doc=f"Its distribution: one of {', '.join(DISTRIBUTIONS)}.")
    params = param.Dict(default={}, doc="Distribution parameters: constants, parent names or expressions.")
    plates = param.List(default=[], item_type=str, doc="Plates it lives in, outer to inner.")
    event_shape = param.List(default=[], item_type=int, doc="Shape of one ground variable's value.")
    observed = param.Boolean(default=False, doc="Whether its values are data.")

    def __init__(
        self,
        name: str,
        distribution: str = "Normal",
        *,
        plates: Sequence[str] = (),
        event_shape: Sequence[int] = (),
        observed: bool = False,
        params: Mapping[str, ParamValue] | None = None,
        **dist_params: ParamValue,
    ) -> None:
        super().__init__(
            name=name,
            distribution=distribution,
            params={**(params or {}), **dist_params},
            plates=list(plates),
            event_shape=list(event_shape),
            observed=observed,
        )

    @property
    def latent(self) -> bool:
        return not self.observed

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        kind = "observed" if self.observed else "latent"
        return f"Variable({self.name!r}, {self.distribution}({args}), plates={self.plates}, {kind})"

    __str__ = __repr__


class PlateModel(param.Parameterized):
    """A hierarchical generative model described as a plate graph.

    Args:
        plates: the plates, outer ones before the plates nested in them.
        variables: the random variables, in any order.
        covariates: known data entering expressions.
        data: values of the observed variables and covariates, by name; full size,
            shape ``(*plate sizes, *event_shape)``.
        truth: when the data was simulated, the latent values that produced it.
        name: a short name for the model.
        description: a sentence or two for menus and dashboards.
    """

    name = param.String(default="model", constant=False, doc="The model's name.")
    description = param.String(default="", doc="What the model describes.")
    plates = param.List(default=[], item_type=Plate, doc="The plates.")
    variables = param.List(default=[], item_type=Variable, doc="The random variables.")
    covariates = param.List(default=[], item_type=Covariate, doc="Known data used in expressions.")
    data = param.Dict(default={}, doc="Observed values and covariates, by name.")
    truth = param.Dict(default=None, allow_None=True, doc="Latent values that simulated the data.")

    def __init__(
        self,
        plates: Sequence[Plate] = (),
        variables: Sequence[Variable] = (),
        covariates: Sequence[Covariate] = (),
        *,
        data: Mapping[str, Any] | None = None,
        truth: Mapping[str, Any] | None = None,
        name: str = "model",
        description: str = "",
    ) -> None:
        super().__init__(
            name=name,
            description=description,
            plates=list(plates),
            variables=list(variables),
            covariates=list(covariates),
            data=_as_tensors(data or {}),
            truth=None if truth is None else _as_tensors(truth),
        )

    # -- lookup ---------------------------------------------------------------
    def plate(self, name: str) -> Plate:
        """The plate called ``name``."""
        return _find(self.plates, name, "plate")

    def variable(self, name: str) -> Variable:
        """The variable called ``name``."""
        return _find(self.variables, name, "variable")

    def nesting_depth(self, plate: str) -> int:
        """How many plates ``plate`` sits in, through ``nested_in`` (0 for a top-level
        or unknown plate; a nesting cycle, which validation reports, stops the count)."""
        outer = {p.name: p.nested_in for p in self.plates}
        seen = {plate}
        while outer.get(plate) is not None and outer[plate] not in seen:
            plate = outer[plate]
            seen.add(plate)
        return len(seen) - 1

    @property
    def latent_names(self) -> list[str]:
        return [v.name for v in self.variables if not v.observed]

    @property
    def observed_names(self) -> list[str]:
        return [v.name for v in self.variables if v.observed]

    # -- checking and compiling -------------------------------------------------
    def problems(self, require_data: bool = True) -> list[ModelError]:
        """Every problem found in the model, each naming its culprit (empty when valid).

        Args:
            require_data: whether missing data for observed variables and
                covariates counts as a problem.
        """
        from pavi_viz.model.validation import find_problems

        return find_problems(self, require_data=require_data)

    def validate(self, require_data: bool = True) -> None:
        """Raise a :class:`ModelError` listing every problem, if there is one."""
        from pavi_viz.model.errors import ModelError

        found = self.problems(require_data=require_data)
        if found:
            raise ModelError.gather(found)

    def compile(
        self,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        require_data: bool = True,
    ) -> CompiledModel:
        """Validate the model and build its fast, immutable form.

        Args:
            device: where its tensors live.
            dtype: floating dtype of its data (default: torch's default dtype).
            require_data: whether observed variables and covariates must have data.

        Raises:
            ModelError: listing every problem found.
        """
        from pavi_viz.model.compiled import CompiledModel

        self.validate(require_data=require_data)
        return CompiledModel(self, device=device, dtype=dtype)

    # -- densities and sampling (conveniences over compile()) -------------------
    def log_joint(
        self,
        latents: Mapping[str, Tensor],
        data: Mapping[str, Tensor] | None = None,
        batch: PlateBatch | None = None,
    ) -> Tensor:
        """Log joint density of latents and data; see :meth:`CompiledModel.log_joint`."""
        return self.compile().log_joint(latents, data=data, batch=batch)

    def sample_prior(
        self,
        sample_shape: Sequence[int] = (),
        batch: PlateBatch | None = None,
        seed: int | None = None,
    ) -> dict[str, Tensor]:
        """Ancestral draws of every variable; see :meth:`CompiledModel.sample_prior`."""
        return self.compile(require_data=False).sample_prior(sample_shape, batch=batch, seed=seed)

    def numbers(self) -> int:
        """The numbers all its variables' ground variables hold (their values, from the
        plate sizes: a regular nested plate's size counts per outer element)."""
        plates = {p.name: p for p in self.plates}

        def elements(name: str, seen: frozenset[str] = frozenset()) -> int:
            plate = plates.get(name)
            if plate is None or name in seen:  # unknown or cyclic: validation reports it
                return 1
            outer = plate.nested_in
            if outer is None or plate.ragged:
                return max(plate.size, 0)
            return max(plate.size, 0) * elements(outer, seen | {name})

        total = 0
        for var in self.variables:
            outers = {plates[p].nested_in for p in var.plates if p in plates}
            innermost = [p for p in var.plates if p not in outers]
            count = 1
            for p in innermost:
                count *= elements(p)
            for size in var.event_shape:
                count *= size
            total += count
        return total

    def simulate(self, seed: int | None = None, max_numbers: int = MAX_SIMULATED_NUMBERS) -> PlateModel:
        """A copy of the model with observed data drawn from the prior.

        The latent values that produced the data are kept in ``truth``, so that a fit
        can be compared with them. Covariates keep their attached data.

        Raises:
            ModelError: the draws would hold more than ``max_numbers`` numbers (at
                most :data:`MAX_SIMULATED_NUMBERS`), naming the largest plate.
        """
        max_numbers = min(max_numbers, MAX_SIMULATED_NUMBERS)
        numbers = self.numbers()
        if numbers > max_numbers:
            largest = max(self.plates, key=lambda p: p.size)
            raise ModelError(
                f"simulating {self.name!r} would draw {numbers:,} numbers, over the {max_numbers:,} "
                f"allowed (about {max(1, max_numbers * 4 // 2**20):,} MB): make plate {largest.name!r} "
                f"(size {largest.size:,}) smaller", largest.name)
        draws = self.sample_prior(seed=seed)
        copy = self.copy()
        copy.data = {**{c.name: self.data[c.name] for c in self.covariates if c.name in self.data},
                     **{n: draws[n] for n in self.observed_names}}
        copy.truth = {n: draws[n] for n in self.latent_names}
        return copy

    # -- files ---------------------------------------------------------------
    def to_dict(self, include_data: bool = True) -> dict[str, Any]:
        """A plain, JSON-ready description (with a schema version)."""
        from pavi_viz.model.serialization import model_to_dict

        return model_to_dict(self, include_data=include_data)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> PlateModel:
        """The model a :meth:`to_dict` description describes (checked, never executed)."""
        from pavi_viz.model.serialization import model_from_dict

        return model_from_dict(spec)

    def to_json(self, path: str | Path | None = None, include_data: bool = True, indent: int | None = 1) -> str:
        """The model as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(include_data=include_data), indent=indent, allow_nan=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> PlateModel:
        """Load a model from JSON text or from a ``.json`` file's path."""
        from pavi_viz.model.serialization import model_from_json

        return model_from_json(source)

    def copy(self) -> PlateModel:
        """An independent copy (tensors are shared: they are never modified in place)."""
        return PlateModel.from_dict(self.to_dict(include_data=False)).with_data(self.data, self.truth)

    def with_data(self, data: Mapping[str, Any], truth: Mapping[str, Any] | None = None) -> PlateModel:
        """Attach data (and optionally ground truth) in place; returns the model."""
        self.data = _as_tensors(data)
        self.truth = None if truth is None else _as_tensors(truth)
        return self

    def summary(self) -> str:
        """A few lines describing the plates and variables."""
        lines = [f"{self.name}: {self.description}".rstrip(": ")]
        for p in self.plates:
            lines.append(f"  {p!r}")
        for c in self.covariates:
            lines.append(f"  {c!r}")
        for v in self.variables:
            lines.append(f"  {v!r}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"PlateModel({self.name!r}: {len(self.plates)} plates, "
            f"{len(self.latent_names)} latent, {len(self.observed_names)} observed variables)"
        )

    __str__ = __repr__


def _find(items: Sequence[param.Parameterized], name: str, kind: str) -> Any:
    for item in items:
        if item.name == name:
            return item
    raise KeyError(f"no {kind} called {name!r}; the model has: {[i.name for i in items]}")


def _as_tensors(values: Mapping[str, Any]) -> dict[str, Tensor]:
    """Arrays, lists and tensors as float tensors of torch's default dtype."""
    from pavi_viz.model.errors import ModelError

    out = {}
    for name, value in values.items():
        try:
            if isinstance(value, Tensor):
                array = value
            else:
                # Float arrays go to torch in their precision (float32 data are not copied to
                # float64 first), C-contiguous (torch takes no negative strides; unlike
                # np.ascontiguousarray, np.asarray keeps a 0-d array 0-d).
                floats = isinstance(value, np.ndarray) and value.dtype.kind == "f"
                array = torch.as_tensor(np.asarray(value, order="C") if floats else np.asarray(value, dtype=float))
        except (TypeError, ValueError, OverflowError) as err:
            raise ModelError(f"data {name!r} is not an array of numbers ({err})", culprit=name) from None
        out[name] = array.to(torch.get_default_dtype())
    return out
