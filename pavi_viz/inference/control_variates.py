"""A control variate for the global latents' gradient on batched plates (SAGA).

When a step sees ``B`` of a plate's ``G`` elements, the batch's terms, scaled by
``w = G / B``, estimate the gradient that reaches the global latents (those in no
plate) without bias but with a noise that grows like ``sqrt(G / B)``: at ``G = 10^6``
and ``B = 2,272``, q's mean of GRE's ``mu`` wandered by several posterior sds between
evaluations. SAGA (Defazio, Bach and Lacoste-Julien, 2014) keeps each element's
latest gradient ``h_old[g]`` and their sum ``H_old``, and steps along

    w * sum_{g in batch} (h[g] - h_old[g]) + H_old,

whose expectation is the full gradient whatever the table holds, and whose noise is
that of the elements' gradients' *changes* between their visits, not of their spread.

Here ``h[g]`` is element ``g``'s share of the ELBO's gradient with respect to a global
latent's value as the batch uses it: its constrained value in the model's densities
(use ``"model"``) and its unconstrained draw in the conditioned flows' contexts (use
``"context"``). Each use enters the batch through
:meth:`~pavi_viz.model.plates.Frame.align`, where the frame adds a zero *offset* per
element (shape ``(particles, B, *shape)``): its gradient is each element's share.
Adding ``mean_p <c, value_p>`` with ``c = H_old - w * sum_{g in batch} h_old[g]``
(detached) to the ELBO before back-propagating turns the gradient of every parameter
upstream of the global draws into SAGA's estimate; the other gradients and the ELBO's
value are unchanged. Measured on GRE with ``fit``'s defaults (seed 0; README,
"Scaling benchmark"): at one state of a fit at G = 10^5, the noise of ``mu``'s gradient
was 6.4 posterior sds without the tables and 2.3 with them (an 8-fold variance; a
prototype of this module), for about 1% more time a step; a fit now gets every latent
within 0.1 posterior sd on average at G = 10^5 (77 s) and 10^6 (143 s), where before it
ended 0.16 and 1.7 sds off.

It applies when exactly one top-level plate is batched (the one the tables are laid
along); nested batched plates inside it are fine (an element's share is then itself an
unbiased estimate). In a data-parallel run (:mod:`~pavi_viz.inference.distributed`)
each process keeps the entries of its shard of the plate: its batch's terms, scaled by
``w = replicas * shard / B``, estimate ``replicas`` times the shard's sum, so ``H_old``,
the shard's sum, enters ``c`` ``replicas`` times.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from pavi_viz.inference.families.base import VariationalFamily
from pavi_viz.inference.resolve import accumulation_dtype
from pavi_viz.model.compiled import CompiledModel
from pavi_viz.model.plates import Frame, Shard

#: The ways a batch uses a global latent: its value in the model's densities, its
#: unconstrained draw in the flows' contexts.
USES = ("model", "context")
#: A table's key: the global latent and the use.
Key = tuple[str, str]


def entry_shape(family: VariationalFamily, name: str, use: str) -> tuple[int, ...]:
    """The shape of one element's entry in the table of global latent ``name``'s ``use``:
    its event shape in the model's densities, its unconstrained size in the contexts."""
    if use == "model":
        return tuple(family.model.variables[name].event_shape)
    return (family.unconstrained_size(name),)


class GlobalGradientTables:
    """SAGA's tables of each element's latest gradient, for every global latent and use.

    Args:
        model: the compiled model.
        plate: the batched top-level plate the tables are laid along.
        shapes: the shape of each table's entries: ``event_shape`` for a ``"model"``
            use, ``(k,)`` (the unconstrained size) for a ``"context"`` one.
        tables: saved tables to go on from (shape ``(G, *shape)``; zeros when absent).
        shard: this process's shard of ``plate`` in a data-parallel run: the entries
            outside it stay zero.
    """

    def __init__(self, model: CompiledModel, plate: str, shapes: Mapping[Key, tuple[int, ...]],
                 tables: Mapping[Key, Tensor] | None = None, shard: Shard | None = None) -> None:
        size = model.plates[plate].size
        self.plate = plate
        self.replicas = 1 if shard is None else shard.replicas
        dtype = accumulation_dtype(model.device)
        self.tables = {key: torch.zeros(size, *shape, dtype=dtype, device=model.device)
                       for key, shape in shapes.items()}
        for key, table in (tables or {}).items():
            self.tables[key].copy_(table)
            if shard is not None:
                self.tables[key][: shard.start] = 0
                self.tables[key][shard.stop :] = 0
        self.sums = {key: table.sum(0) for key, table in self.tables.items()}
        self._offsets: dict[Key, Tensor] = {}

    @classmethod
    def for_run(cls, model: CompiledModel, batch_sizes: Mapping[str, int | None], family: VariationalFamily,
                tables: Mapping[Key, Tensor] | None = None, shard: Shard | None = None) -> GlobalGradientTables | None:
        """Tables for a run that batches ``batch_sizes`` (this process drawing from
        ``shard``); None where SAGA does not apply (no global latent, or not exactly one
        batched top-level plate)."""
        roots = [p for p in batch_sizes if model.plates[p].parent is None]
        globals_ = [name for name in model.latent_names if not model.plates_of(name)]
        if len(roots) != 1 or not globals_:
            return None
        shapes = {(name, use): entry_shape(family, name, use) for name in globals_ for use in USES}
        return cls(model, roots[0], shapes, tables, shard)

    def attach(self, frame: Frame, particles: int) -> None:
        """Give ``frame`` a zero offset per element of the batch for every table, whose
        gradients :meth:`update` reads once the step has back-propagated."""
        elements = frame.sizes[self.plate]
        self._offsets = {
            key: torch.zeros(particles, elements, *table.shape[1:], device=table.device, requires_grad=True)
            for key, table in self.tables.items()
        }
        frame.offsets = {key: (self.plate, offset) for key, offset in self._offsets.items()}

    def surrogate(self, frame: Frame, values: Mapping[str, Tensor], unconstrained: Mapping[str, Tensor]) -> Tensor:
        """``sum over tables of mean_p <c, value_p>``, to add to the batch's ELBO estimate
        (``values``, ``unconstrained``: the step's draws, with their graph)."""
        indices, weight = frame.indices(self.plate), frame.weights[self.plate]
        total = torch.zeros((), device=indices.device)
        for (name, use), table in self.tables.items():
            drawn = (values if use == "model" else unconstrained)[name]
            c = (self.replicas * self.sums[name, use] - weight * table[indices].sum(0)).to(drawn.dtype)
            total = total + (drawn * c).reshape(drawn.shape[0], -1).sum(-1).mean()
        return total

    @torch.no_grad()
    def update(self, frame: Frame) -> None:
        """Put the step's elements' gradients in the tables (after a successful step:
        the offsets' gradients, from back-propagating the negated ELBO)."""
        indices, weight = frame.indices(self.plate), frame.weights[self.plate]
        for key, offset in self._offsets.items():
            if offset.grad is None:  # not used by this family (no conditioned flows)
                continue
            particles = offset.shape[0]
            table = self.tables[key]
            shares = (-offset.grad.to(table.dtype) * (particles / weight)).mean(0)  # (B, *shape)
            self.sums[key] += shares.sum(0) - table[indices].sum(0)
            table[indices] = shares
        self._offsets = {}
