"""A model restricted to a shard of one top-level plate: what one process of a
data-parallel run needs to hold.

:func:`restrict` keeps the elements ``start`` to ``stop - 1`` of a top-level plate and
everything nested in them: the members of ragged plates nested in those elements (at
any depth), renumbered from 0 in their order, and the plates nested regularly, whole.
Every data and truth array along those plates is cut to match; the other plates and
their data are kept whole. So the restricted model's log density, at the matching cut
of the latents, is the sum of the whole model's terms over the shard's elements (the
terms outside the shard's plate included, whole).

:func:`compile_part` compiles the restricted model and records, in
:attr:`~pavi_viz.model.compiled.CompiledModel.part`, which shard of the whole it holds.
It takes the model from a :class:`ModelSource`: a model in memory (:class:`InMemory`),
cut by :func:`restrict`, or a data file that reads the shard's slices alone
(:class:`~pavi_viz.model.datafile.DataFile`), so that a process need never hold the
whole data; the source's :meth:`~ModelSource.layout` (the plates, without data) tells
the process its shard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from pavi_viz.model.compiled import CompiledModel
from pavi_viz.model.plates import Shard
from pavi_viz.model.spec import Covariate, Plate, PlateModel, Variable


def kept_elements(model: PlateModel, plate: str, start: int, stop: int) -> dict[str, torch.Tensor | None]:
    """The elements that a shard of top-level ``plate`` (its elements ``start`` to
    ``stop - 1``) keeps of it and of every plate nested below it: for ``plate`` and each
    ragged plate, the indices of the kept elements in the whole model's plate, in order;
    ``None`` for a regularly nested plate, of which each kept outer element keeps all.
    The plates outside the shard's are not keys.

    Raises:
        ValueError: as :func:`restrict`, for the plate, the range and ragged plates.
    """
    top = model.plate(plate)
    if top.nested_in is not None:
        raise ValueError(f"plate {plate!r} nests in {top.nested_in!r}: only a top-level plate is shared out")
    if not 0 <= start < stop <= top.size:
        raise ValueError(f"elements {start} to {stop - 1} are not a range of plate {plate!r} (size {top.size})")
    kept: dict[str, torch.Tensor | None] = {plate: torch.arange(start, stop)}
    for p in model.plates:  # outer plates come before the plates nested in them
        if p.nested_in not in kept:
            continue
        outer = kept[p.nested_in]
        if not p.ragged:
            kept[p.name] = None
        elif outer is None:
            raise ValueError(f"plate {p.name!r} is ragged in {p.nested_in!r}, which nests regularly below "
                             f"{plate!r}: the model cannot be cut to a shard of {plate!r}")
        else:
            kept[p.name] = torch.isin(torch.as_tensor(p.membership, dtype=torch.int64), outer).nonzero().flatten()
    return kept


def restrict(model: PlateModel, plate: str, start: int, stop: int) -> PlateModel:
    """``model`` with elements ``start`` to ``stop - 1`` of top-level ``plate`` only
    (see the module's notes); the model itself is left as it is.

    Raises:
        ValueError: ``plate`` is not a top-level plate of the model, the range is empty
            or outside it, a ragged plate nests in a regularly nested one below
            ``plate`` (its membership would not say which of the shard's elements its
            members sit in), or a variable below ``plate`` has a parameter given as an
            array (it may run along the plate; the model's data cannot be cut to it).
    """
    kept = kept_elements(model, plate, start, stop)
    plates = []
    for p in model.plates:
        if p.name == plate:
            plates.append(Plate(p.name, stop - start))
        elif p.name in kept and p.ragged:
            outer, members = kept[p.nested_in], kept[p.name]
            membership = torch.as_tensor(p.membership, dtype=torch.int64)[members]
            # Renumbered: each member's outer element by its place among the kept ones.
            plates.append(Plate(p.name, nested_in=p.nested_in,
                                membership=torch.searchsorted(outer, membership).numpy()))
        elif p.name in kept:
            plates.append(Plate(p.name, p.size, nested_in=p.nested_in))
        else:
            plates.append(Plate(p.name, p.size, nested_in=p.nested_in,
                                membership=None if p.membership is None else p.membership.copy()))
    for v in model.variables:
        arrays = [k for k, value in v.params.items() if isinstance(value, (list, tuple))]
        if arrays and set(v.plates) & kept.keys():
            raise ValueError(f"variable {v.name!r} has its parameter {arrays[0]!r} given as an array: the model "
                             f"cannot be cut to a shard of {plate!r}")
    placed = {**{v.name: v.plates for v in model.variables}, **{c.name: c.plates for c in model.covariates}}

    def cut(name: str, value: torch.Tensor) -> torch.Tensor:
        for dim, p in enumerate(placed.get(name, ())):
            if kept.get(p) is not None:
                value = value.index_select(dim, kept[p])
        return value

    return PlateModel(
        plates,
        [Variable(v.name, v.distribution, plates=v.plates, event_shape=v.event_shape, observed=v.observed,
                  params=dict(v.params)) for v in model.variables],
        [Covariate(c.name, c.plates, c.event_shape) for c in model.covariates],
        data={name: cut(name, value) for name, value in model.data.items()},
        truth=None if model.truth is None else {name: cut(name, value) for name, value in model.truth.items()},
        name=model.name,
        description=model.description,
    )


@runtime_checkable
class ModelSource(Protocol):
    """Where a process gets a model with its data: whole, or one shard of a top-level
    plate alone (a model in memory, :class:`InMemory`; a data file read slice by slice,
    :class:`~pavi_viz.model.datafile.DataFile`)."""

    def layout(self) -> PlateModel:
        """The model's plates, sized and with their memberships, without its data."""

    def whole(self) -> PlateModel:
        """The model with all its data."""

    def part(self, plate: str, start: int, stop: int) -> PlateModel:
        """The model :func:`restrict` cuts from :meth:`whole` (and its errors)."""


@dataclass(frozen=True)
class InMemory:
    """The :class:`ModelSource` of a model held in memory whole."""

    model: PlateModel

    def layout(self) -> PlateModel:
        return self.model.copy().with_data({})

    def whole(self) -> PlateModel:
        return self.model

    def part(self, plate: str, start: int, stop: int) -> PlateModel:
        return restrict(self.model, plate, start, stop)


def compile_part(source: ModelSource | PlateModel, shard: Shard, device: str | torch.device = "cpu") -> CompiledModel:
    """``source``'s model restricted to ``shard`` (:meth:`ModelSource.part`; a
    :class:`PlateModel`'s, :func:`restrict`), compiled on ``device``; the result's
    :attr:`~pavi_viz.model.compiled.CompiledModel.part` is ``shard``."""
    source = source if isinstance(source, ModelSource) else InMemory(source)
    compiled = source.part(shard.plate, shard.start, shard.stop).compile(device=device)
    compiled.part = shard
    return compiled


__all__ = ["InMemory", "ModelSource", "compile_part", "kept_elements", "restrict"]
