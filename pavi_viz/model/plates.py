"""Plate index structure: nesting, ragged membership, batches and frames.

A *plate* is a set of indexed copies. Plates nest in two ways:

* **regular** nesting: each element of the outer plate has ``size`` members of the
  inner one (``obs`` of size N inside ``group`` of size G: G * N observations); a
  variable in the inner plate lists both plates and has tensor dims ``(G, N)``;
* **ragged** nesting: the inner plate has ``size`` members in all, and an index
  array (``membership``) gives the outer element of each (919 houses in 85
  counties); a variable in the inner plate lists only it and has one dim ``(919,)``.

A :class:`PlateBatch` selects some elements of some plates; a :class:`Frame` is the
view of the model through one batch: batched sizes, the ``size / batch`` weights
that make batched sums unbiased, and the index maps that align a parent's tensor
with a child's plates. Everything is vectorized: no Python loop runs over plate
elements.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

#: A batch: the selected element indices (sorted, int64) for each batched plate.
#: Plates that are not keys are taken whole.
PlateBatch = dict[str, Tensor]


@dataclass(frozen=True)
class Shard:
    """One process's share of a top-level plate in data-parallel training: the elements
    ``start`` to ``stop - 1`` of ``plate``, one of ``replicas`` shards that together
    hold the plate (:func:`shard_of`).

    A batch drawn from the shard estimates the sum over the shard; scaled by
    ``replicas * (stop - start) / batch`` (:attr:`Frame.weights`), and averaged over
    the processes, the processes' estimates are unbiased for the sum over the plate.
    """

    plate: str
    start: int
    stop: int
    replicas: int


#: The sum of each tensor over the processes of a data-parallel run: a collective, which
#: every process calls at the same point of its run.
Total = Callable[[Sequence[Tensor]], list[Tensor]]


def shard_of(plate: str, size: int, rank: int, replicas: int) -> Shard:
    """Process ``rank``'s shard of ``plate`` (``size`` elements): contiguous, the
    shards' sizes differing by one at most."""
    if not 0 <= rank < replicas:
        raise ValueError(f"rank {rank} is not one of 0..{replicas - 1}")
    if size < replicas:
        raise ValueError(f"plate {plate!r} has {size} elements, fewer than the {replicas} processes to share them")
    return Shard(plate, rank * size // replicas, (rank + 1) * size // replicas, replicas)


@dataclass(frozen=True)
class PlateInfo:
    """A compiled plate.

    Attributes:
        name: the plate's name.
        size: its number of elements (for a regular nested plate, per outer element).
        parent: the plate it nests in, or ``None``.
        membership: for a ragged plate, the outer element of each member, shape
            ``(size,)``, int64; ``None`` otherwise.
    """

    name: str
    size: int
    parent: str | None = None
    membership: Tensor | None = None

    @property
    def ragged(self) -> bool:
        return self.membership is not None


class _Members:
    """The members of each outer element of a ragged plate, grouped (CSR layout).

    The groups are found by binary search in the sorted membership rather than in
    per-outer-element arrays: those would be as large as the outer plate, which a
    model file may declare huge while listing only a few members.
    """

    def __init__(self, membership: Tensor) -> None:
        self.order = torch.argsort(membership, stable=True)
        self.sorted = membership[self.order]

    def span(self, outer: Tensor) -> tuple[Tensor, Tensor]:
        """For each outer element, where its members start in ``order`` and how many it has."""
        starts = torch.searchsorted(self.sorted, outer)
        return starts, torch.searchsorted(self.sorted, outer, right=True) - starts

    def count(self, outer: Tensor) -> int:
        """The number of members of the outer elements ``outer``, all together."""
        return int(self.span(outer)[1].sum())

    def of(self, outer: Tensor) -> Tensor:
        """Sorted members of the outer elements ``outer``, shape ``(total,)``."""
        starts, lengths = self.span(outer)
        total = int(lengths.sum())
        first = torch.repeat_interleave(starts, lengths, output_size=total)
        offset_in_group = torch.arange(total, device=outer.device) - torch.repeat_interleave(
            torch.cumsum(lengths, 0) - lengths, lengths, output_size=total
        )
        return torch.sort(self.order[first + offset_in_group]).values


class PlateStructure:
    """The plates of a model, ordered outer to inner.

    Args:
        plates: the compiled plates; parents must come before their children.
    """

    def __init__(self, plates: Sequence[PlateInfo], device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.plates: dict[str, PlateInfo] = {p.name: p for p in plates}
        self._members = {p.name: _Members(p.membership) for p in plates if p.ragged}

    def __getitem__(self, name: str) -> PlateInfo:
        return self.plates[name]

    def __iter__(self):
        return iter(self.plates.values())

    def outer(self, name: str) -> list[str]:
        """The plates that ``name`` nests in, innermost first (empty for a top-level plate)."""
        chain = []
        parent = self.plates[name].parent
        while parent is not None:
            chain.append(parent)
            parent = self.plates[parent].parent
        return chain

    def root(self, name: str) -> str:
        """The top-level plate that ``name`` nests in (itself when top-level)."""
        chain = self.outer(name)
        return chain[-1] if chain else name

    def ragged_ancestors(self, name: str) -> list[str]:
        """The plates reached from ``name`` by following ragged links outwards."""
        chain = []
        plate = self.plates[name]
        while plate.ragged:
            chain.append(plate.parent)
            plate = self.plates[plate.parent]
        return chain

    def closure(self, plates: Sequence[str]) -> list[str]:
        """``plates`` with the ragged ancestors they sit in (each term's full plate set)."""
        out = list(plates)
        for name in plates:
            out += [a for a in self.ragged_ancestors(name) if a not in out]
        return out

    def to(self, device: torch.device | str) -> PlateStructure:
        """The same structure with its index arrays on ``device``."""
        return PlateStructure(
            [
                PlateInfo(p.name, p.size, p.parent, None if p.membership is None else p.membership.to(device))
                for p in self
            ],
            device,
        )

    def sample_batch(
        self,
        sizes: Mapping[str, int],
        generator: torch.Generator | None = None,
        shard: Shard | None = None,
    ) -> PlateBatch:
        """Draw a random batch, uniformly without replacement.

        Args:
            sizes: the number of elements to draw for each plate; plates left out, or
                asked for at least their size, are taken whole. For a ragged plate the
                outer plate is drawn first, then ``sizes[plate]`` members among the
                members of the drawn outer elements (all of them when left out).
            generator: the random source.
            shard: a range of one top-level plate's elements to draw that plate's
                batch from (all of the range when it holds at most ``sizes[plate]``),
                instead of the whole plate: a process's share of data-parallel training.

        Returns:
            The selected, sorted indices of each batched plate.
        """
        unknown = set(sizes) - set(self.plates)
        if unknown:
            raise KeyError(f"batch sizes name unknown plates: {sorted(unknown)}")
        batch: PlateBatch = {}
        for plate in self:
            offset = 0
            if plate.ragged and plate.parent in batch:
                candidates = self._members[plate.name].of(batch[plate.parent])
                pool = len(candidates)
            elif shard is not None and plate.name == shard.plate:
                candidates, offset, pool = None, shard.start, shard.stop - shard.start
            elif plate.name in sizes and sizes[plate.name] < plate.size:
                candidates, pool = None, plate.size
            else:
                continue
            wanted = sizes.get(plate.name)
            if wanted is not None and wanted < pool:
                if wanted < 1:
                    raise ValueError(f"batch size of plate {plate.name!r} must be at least 1")
                pick = _choose(pool, wanted, generator, self.device)
                chosen = pick + offset if candidates is None else candidates[pick]
                batch[plate.name] = torch.sort(chosen).values
            elif candidates is not None:
                # Possibly empty: the drawn outer elements may have no members.
                batch[plate.name] = candidates
            else:  # the whole shard
                batch[plate.name] = torch.arange(offset, offset + pool, device=self.device)
        return batch

    def frame(self, batch: PlateBatch | None = None, shard: Shard | None = None) -> Frame:
        """The view of the model through ``batch`` (the whole model when ``None``),
        drawn from ``shard`` when given (see :class:`Frame`)."""
        return Frame(self, batch or {}, shard)


def _choose(pool: int, wanted: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``wanted`` distinct elements of ``range(pool)``, drawn uniformly, in random order.

    ``randperm(pool)`` costs time and memory in proportion to the pool, far too much
    for a small batch of a huge plate. Then draw with replacement until enough distinct
    elements turn up: by symmetry every set of a given size is equally likely, so a
    random ``wanted`` of them are a uniform draw without replacement.
    """
    if 4 * wanted >= pool:
        return torch.randperm(pool, generator=generator, device=device)[:wanted]
    chosen = torch.empty(0, dtype=torch.int64, device=device)
    while len(chosen) < wanted:
        draws = torch.randint(pool, (2 * wanted,), generator=generator, device=device)
        chosen = torch.unique(torch.cat([chosen, draws]))
    return chosen[torch.randperm(len(chosen), generator=generator, device=device)[:wanted]]


class Frame:
    """The model seen through one batch of plate elements.

    Attributes:
        sizes: the batched size of each plate.
        weights: for each plate, (elements a term sums over in the full model) /
            (elements in the batch), given the batch of its outer plate; a term's
            weight is the product over the plates it sits in. A sharded plate's
            batch stands for ``replicas`` times its shard (see :class:`Shard`).
        shard: the process's share of a plate the batch was drawn from, or ``None``.
    """

    def __init__(self, structure: PlateStructure, batch: PlateBatch, shard: Shard | None = None) -> None:
        self.structure = structure
        self.batch = batch
        self.shard = shard
        unknown = set(batch) - set(structure.plates)
        if unknown:
            raise KeyError(f"the batch names unknown plates: {sorted(unknown)}")
        self.sizes: dict[str, int] = {}
        self.weights: dict[str, float] = {}
        self._sorted: dict[str, tuple[Tensor, Tensor]] = {}
        self._local: dict[tuple[str, str], Tensor] = {}
        #: Per-element offsets added where a value in no plate enters a plate's terms, by
        #: the key its callers give :meth:`align`: ``{key: (plate, offset)}``, the offset
        #: shaped ``(*sample, sizes[plate], *event)`` (see
        #: :mod:`pavi_viz.inference.control_variates`, whose gradients they carry).
        self.offsets: dict[Hashable, tuple[str, Tensor]] = {}
        for plate in structure:
            self._add(plate)

    def _add(self, plate: PlateInfo) -> None:
        name = plate.name
        idx = self.batch.get(name)
        if idx is not None:
            if idx.dim() != 1 or idx.dtype != torch.int64:
                raise ValueError(f"batch of plate {name!r} must be a 1-d int64 tensor")
            if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= plate.size):
                raise IndexError(f"batch of plate {name!r} holds indices outside 0..{plate.size - 1}")
        if plate.ragged and plate.parent in self.batch:
            outer = self.batch[plate.parent]
            pool = self.structure._members[name].count(outer)
            if idx is None:
                idx = self.structure._members[name].of(outer)
                self.batch = {**self.batch, name: idx}
            elif len(idx) == 0 and pool:
                raise ValueError(f"batch of plate {name!r} is empty")
            self.sizes[name] = len(idx)
            # When the outer batch holds no members at all, the plate's terms are
            # empty sums (zero, as in the full sum restricted to that batch).
            self.weights[name] = pool / len(idx) if len(idx) else 1.0
            # Checks that every member's outer element is in the outer batch.
            self.local_index(name, plate.parent)
        else:
            if idx is not None and len(idx) == 0:
                raise ValueError(f"batch of plate {name!r} is empty")
            self.sizes[name] = plate.size if idx is None else len(idx)
            shard = self.shard
            stands_for = plate.size if shard is None or shard.plate != name else shard.replicas * (shard.stop - shard.start)
            self.weights[name] = stands_for / self.sizes[name]

    def indices(self, plate: str) -> Tensor | None:
        """The selected elements of ``plate``, or ``None`` when it is whole."""
        return self.batch.get(plate)

    def batch_shape(self, plates: Sequence[str]) -> tuple[int, ...]:
        """The batched tensor shape of a variable living in ``plates``."""
        return tuple(self.sizes[p] for p in plates)

    def weight(self, plates: Sequence[str]) -> float:
        """The scale that makes a batched sum over ``plates`` unbiased."""
        w = 1.0
        for p in self.structure.closure(plates):
            w *= self.weights[p]
        return w

    def _position(self, plate: str, elements: Tensor) -> Tensor | None:
        """The positions in the batch of a plate's ``elements`` (global indices; -1: absent),
        or ``None`` when the plate is whole."""
        idx = self.batch.get(plate)
        if idx is None:
            return None
        if len(idx) == 0:
            return torch.full_like(elements, -1)
        # A binary search in the sorted batch: a lookup table would be as large as the plate.
        if plate not in self._sorted:
            self._sorted[plate] = torch.sort(idx)
        values, order = self._sorted[plate]
        at = torch.searchsorted(values, elements).clamp(max=len(values) - 1)
        return torch.where(values[at] == elements, order[at], -1)

    def local_index(self, plate: str, ancestor: str) -> Tensor:
        """For each batched element of ``plate``, the batch position of its ``ancestor``.

        ``ancestor`` must be reached from ``plate`` through ragged links.

        Returns:
            int64 tensor of shape ``(sizes[plate],)``.
        """
        key = (plate, ancestor)
        if key not in self._local:
            info = self.structure[plate]
            idx = self.batch.get(plate)
            glob = torch.arange(info.size, device=self.structure.device) if idx is None else idx
            current = info
            while current.name != ancestor:
                glob = current.membership[glob]
                current = self.structure[current.parent]
            pos = self._position(ancestor, glob)
            if pos is not None:
                glob = pos
                if bool((glob < 0).any()):
                    raise ValueError(
                        f"the batch of plate {plate!r} holds members whose {ancestor!r} "
                        f"is not in the batch of {ancestor!r}"
                    )
            self._local[key] = glob
        return self._local[key]

    def select(self, tensor: Tensor, plates: Sequence[str], sample_dims: int = 0) -> Tensor:
        """Restrict a full-size tensor to the batch.

        Args:
            tensor: shape ``(*sample, *plate sizes, *event)``.
            plates: the plates of its plate dims.
            sample_dims: the number of leading sample dims.
        """
        for dim, plate in enumerate(plates, start=sample_dims):
            idx = self.batch.get(plate)
            if idx is not None:
                tensor = tensor.index_select(dim, idx)
        return tensor

    def align(
        self,
        tensor: Tensor,
        source: Sequence[str],
        target: Sequence[str],
        event_rank: int,
        key: Hashable | None = None,
    ) -> Tensor:
        """Lay a parent's tensor out along a child's plates.

        Args:
            tensor: shape ``(*sample, *batch_shape(source), *event)``, with
                ``len(event) == event_rank`` and any number of leading sample dims.
            source: the parent's plates.
            target: the child's plates; each source plate must be among them or be a
                ragged ancestor of one of them.
            event_rank: the number of event dims.
            key: what the tensor is (a parent in no plate): where :attr:`offsets`
                holds an offset for it on a plate the child sits in, the offset is
                added, laid out along the child's plates too.

        Returns:
            shape ``(*sample, *b, *event)`` where ``b`` broadcasts to
            ``batch_shape(target)`` (1 on the child plates the parent is not in).
        """
        if key in self.offsets and not source:
            plate, offset = self.offsets[key]
            if plate in target or any(plate in self.structure.ragged_ancestors(p) for p in target):
                laid = self.align(tensor, source, target, event_rank)
                return laid + self.align(offset, (plate,), target, event_rank)
        n_sample = tensor.dim() - len(source) - event_rank
        dims: list[int] = []
        for i, plate in enumerate(source):
            if plate in target:
                dims.append(target.index(plate))
                continue
            child = next(p for p in target if plate in self.structure.ragged_ancestors(p))
            tensor = tensor.index_select(n_sample + i, self.local_index(child, plate))
            dims.append(target.index(child))
        order = sorted(range(len(dims)), key=dims.__getitem__)
        if order != list(range(len(dims))):
            tail = list(range(n_sample + len(source), tensor.dim()))
            tensor = tensor.permute(list(range(n_sample)) + [n_sample + i for i in order] + tail)
        present = sorted(dims)
        for j in range(len(target)):
            if j not in present:
                tensor = tensor.unsqueeze(n_sample + j)
        return tensor
