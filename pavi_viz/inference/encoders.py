"""PAVI-E's data encoder: permutation-invariant summaries of the data below each ground variable.

For every observed variable ``o``, each ground datum becomes a feature vector (its
value with the covariates it sees), and its plates are pooled towards the root,
DeepSets style (Zaheer et al., 2017): at each step a network is applied to every
element, then the elements of the innermost plate are averaged (a regular plate's
dim, or the members of each outer element of a ragged plate). A latent variable
living in plates ``P`` reads the pooled summaries at level ``P`` of every observed
variable below it, and a linear read-out turns them into its encodings.

Where ``o``'s distribution sees its values through their low moments
(:attr:`~pavi_viz.model.distributions.DistributionInfo.summarised_by_moments`:
Normal, Poisson, Bernoulli...), the first plate is pooled before any network, with
fixed statistics: the means over its elements of the standardised features and of
their pairwise products (in a linear model, or a GLM with its canonical link, the
sufficient statistics of the data given the location), with the log of their number
(a ragged plate's groups differ in size, and a posterior's spread with them). The
data do not change, so these are computed once, for the whole data, when the encoder
is built, and an embedding network reads them: a step's cost no longer grows with
the number of data per group. Elsewhere (a mixture's values) the embedding network
reads each datum, and the first plate is pooled like the others.

Every network acts on one element at a time, so the parameter count does not grow
with the plates. The encoder sees the data of the batch: a batched ground variable is
summarised from all its own data (inner plates are taken whole unless batched too),
and the variables above the batch (the global ones) from the batch's summaries.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from pavi_viz.model.compiled import CompiledModel
from pavi_viz.model.plates import Frame, PlateInfo, PlateStructure, Shard, Total

#: A pooled summary's key: the observed variable it summarises and the plates it is laid out on.
Level = tuple[str, tuple[str, ...]]


def _mlp(inputs: int, hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())


def _segment_mean(values: Tensor, dim: int, index: Tensor, size: int) -> Tensor:
    """Average the slices of ``values`` along ``dim`` that share an ``index`` (``size`` groups)."""
    shape = list(values.shape)
    shape[dim] = size
    total = values.new_zeros(shape).index_add(dim, index, values)
    counts = torch.bincount(index, minlength=size).clamp(min=1).to(values.dtype)
    view = [1] * values.dim()
    view[dim] = size
    return total / counts.view(view)


def moments(features: Tensor) -> Tensor:
    """Each row's features followed by their pairwise products ``f_i f_j`` (``i <= j``).

    Args:
        features: shape ``(..., d)``.

    Returns:
        shape ``(..., d + d (d + 1) / 2)``.
    """
    i, j = torch.triu_indices(features.shape[-1], features.shape[-1], device=features.device)
    return torch.cat([features, features[..., i] * features[..., j]], -1)


def _statistics_size(features: int) -> int:
    """The length of a group's statistics: the moments of ``features`` features, and the log count."""
    return features + features * (features + 1) // 2 + 1


def _standardisation(statistics: Tensor) -> tuple[Tensor, Tensor]:
    """The centre and scale of each column of ``statistics`` (shape ``(..., k)``) over
    all its entries, shape ``(k,)`` each: its mean and sd, the sd infinite for a constant
    column (which then becomes zeros)."""
    rows = statistics.reshape(-1, statistics.shape[-1])
    sd = rows.std(0, correction=0)
    return rows.mean(0), torch.where(sd > 1e-5 * (1 + rows.mean(0).abs()), sd, torch.inf)


def _statistics_buffer(observed: str, plate: str, part: str = "") -> str:
    """The name of the buffer of ``observed``'s statistics pooled over ``plate``, or of
    their ``part`` (``"centre"``, ``"scale"``: their standardisation)."""
    return f"statistics:{observed}:{plate}" + (f":{part}" if part else "")  # no name holds a colon


def pooling_order(plates: PlateStructure, level: tuple[str, ...], target: tuple[str, ...]) -> list[str]:
    """The plates averaged, in order, to go from ``level`` to the plates of ``target``:
    each time the innermost plate that ``target`` is not in."""
    order = []
    while set(level) != set(target):
        i = max(j for j, p in enumerate(level) if p not in target)
        order.append(level[i])
        level = _pooled(plates, level, i)
    return order


def _closures(model: CompiledModel) -> dict[str, set[str]]:
    """Each variable's and covariate's plates, with the ragged ancestors they sit in."""
    return {name: set(model.plates.closure(model.plates_of(name))) for name in model._plates_of}


def encoded_sources(model: CompiledModel) -> dict[str, list[str]]:
    """The observed variables each latent variable's encoding reads: those that sit in
    all of its plates."""
    closure = _closures(model)
    return {v: [o for o in model.observed_names if closure[v] <= closure[o]] for v in model.latent_names}


def pooling_orders(model: CompiledModel) -> dict[str, dict[tuple[str, ...], list[str]]]:
    """For each observed variable, the plates averaged (:func:`pooling_order`) from its
    level to the level of each latent variable that reads it."""
    sources = encoded_sources(model)
    return {
        o: {
            model.plates_of(v): pooling_order(model.plates, model.plates_of(o), model.plates_of(v))
            for v, read in sources.items()
            if o in read
        }
        for o in model.observed_names
    }


def _roots(model: CompiledModel, observed: str) -> set[str]:
    """The top-level plates that ``observed``'s plates sit in (more than one where they cross)."""
    return {model.plates.root(p) for p in model.plates_of(observed)}


def encodes_per_shard(model: CompiledModel, plate: str) -> bool:
    """Whether a :class:`DataEncoder` built on a shard of top-level ``plate`` (a model of
    :func:`~pavi_viz.model.sharding.compile_part`), given the whole data's constants by
    :meth:`~torch.nn.Module.load_state_dict`, encodes the shard's elements as one built
    on the whole model: every observed variable below ``plate`` sits below it alone (its
    data are cut along the plate, never across it), and none is summarised by
    statistics averaged over ``plate`` itself (they would be the shard's average)."""
    orders = pooling_orders(model)
    for o in model.observed_names:
        roots = _roots(model, o)
        if plate not in roots:
            continue
        if len(roots) > 1:
            return False
        summarised = model.variables[o].info.summarised_by_moments
        if summarised and any(order[:1] == [plate] for order in orders[o].values()):
            return False
    return True


def _pooled(plates: PlateStructure, level: tuple[str, ...], i: int) -> tuple[str, ...]:
    """``level`` once its ``i``-th plate is averaged: a ragged plate leaves its parent in its place."""
    plate = plates[level[i]]
    return level[:i] + ((plate.parent,) if plate.ragged else ()) + level[i + 1 :]


class DataEncoder(nn.Module):
    """Encodings of every latent variable's ground variables, computed from the data.

    Args:
        model: the compiled model, with its data.
        encoding_size: the length of each encoding.
        hidden: the width of the embedding and pooling networks.
    """

    def __init__(self, model: CompiledModel, encoding_size: int, hidden: int = 32) -> None:
        super().__init__()
        self.model = model
        self.encoding_size = encoding_size
        closure = _closures(model)
        # The data each observed variable's features are made of: itself and the
        # covariates whose plates it sits in.
        self.features = {
            o: [o] + [c for c in model.data if c not in model.variables and closure[c] <= closure[o]]
            for o in model.observed_names
        }
        self.sources = encoded_sources(model)
        #: The plates averaged, in order, from each observed variable's level to each
        #: level that a latent reads it at.
        self.orders = pooling_orders(model)
        #: The observed variables whose first plate is pooled with fixed statistics.
        self.summarised = {o for o in model.observed_names if model.variables[o].info.summarised_by_moments}
        #: The (observed, plate) of each statistics buffer.
        self._statistics: list[tuple[str, str]] = []
        self.embed = nn.ModuleDict()
        self.steps = nn.ModuleDict()
        for o in model.observed_names:
            mean, sd = self._feature_moments(o)
            self.register_buffer(f"mean_{o}", mean)
            self.register_buffer(f"scale_{o}", sd.clamp(min=1e-6))
            orders = self.orders[o].values()
            if o in self.summarised:
                self.embed[o] = _mlp(_statistics_size(len(mean)), hidden)
                for plate in sorted({order[0] for order in orders if order}):
                    statistics = self._whole_data_statistics(o, plate)
                    for part, value in zip(("centre", "scale"), _standardisation(statistics), strict=True):
                        self.register_buffer(_statistics_buffer(o, plate, part), value)
                    # Computed again from the data (not saved): the data are the model's.
                    self.register_buffer(_statistics_buffer(o, plate), self._standardise(statistics, o, plate),
                                         persistent=False)
                    self._statistics.append((o, plate))
                stepped = {p for order in orders for p in order[1:]}
            else:
                self.embed[o] = _mlp(len(mean), hidden)
                stepped = {p for order in orders for p in order}
            self.steps[o] = nn.ModuleDict({plate: _mlp(hidden, hidden) for plate in sorted(stepped)})
        self.readout = nn.ModuleDict(
            {v: nn.Linear(hidden * len(sources), encoding_size) for v, sources in self.sources.items() if sources}
        )
        # A latent with no data below it gets one learnable encoding for all its copies.
        self.constant = nn.ParameterDict(
            {v: nn.Parameter(torch.zeros(encoding_size)) for v, sources in self.sources.items() if not sources}
        )
        self._constants_used = self._constants()
        self.register_load_state_dict_post_hook(lambda module, keys: module._restandardise())

    def _constants(self) -> Tensor:
        """The data's constants that the statistics are computed with, in one vector."""
        return torch.cat([getattr(self, f"{kind}_{o}").flatten() for o in self.model.observed_names
                          for kind in ("mean", "scale")]
                         + [getattr(self, _statistics_buffer(o, plate, part)).flatten()
                            for o, plate in self._statistics for part in ("centre", "scale")])

    def _feature_moments(self, observed: str, chunk_elements: int = 2**18) -> tuple[Tensor, Tensor]:
        """The mean and sd of each of ``observed``'s raw features over all its data,
        shape ``(features,)`` each: chunk by chunk (:meth:`_chunks`), so that no more than
        a chunk's features are held at once, the chunks' moments joined exactly in
        float64 (Chan, Golub and LeVeque, 1983, "Algorithms for computing the sample
        variance"). Data that fit one chunk get torch's own ``mean`` and ``std``."""
        moments = []  # each chunk's count, mean and sd
        for frame, _ in self._chunks(observed, chunk_elements):
            raw = self._raw_features(observed, frame)
            rows = raw.reshape(-1, raw.shape[-1])
            if len(rows):  # else outer elements without members
                moments.append((len(rows), rows.mean(0), rows.std(0, correction=0)))
        if len(moments) == 1:
            return moments[0][1:]
        count, mean, squares = 0, 0.0, 0.0
        for n, chunk_mean, chunk_sd in moments:
            delta, total = chunk_mean.double() - mean, count + n
            mean = mean + delta * (n / total)
            squares = squares + n * chunk_sd.double() ** 2 + delta**2 * (count * n / total)
            count = total
        dtype = self.model.dtype
        return mean.to(dtype), (squares / count).sqrt().to(dtype)

    def _standardise(self, statistics: Tensor, observed: str, plate: str) -> Tensor:
        """``statistics`` centred and scaled by their saved standardisation, in place."""
        centre = getattr(self, _statistics_buffer(observed, plate, "centre"))
        return statistics.sub_(centre).div_(getattr(self, _statistics_buffer(observed, plate, "scale")))

    def _restandardise(self) -> None:
        """Compute the statistics again with the constants just loaded (the data's mean
        and sd, the statistics' standardisation): they are the whole data's, also where
        this encoder's model holds only a shard of it (one process's of a data-parallel
        run, given the others' constants by :meth:`load_state_dict`)."""
        constants = self._constants()
        if torch.equal(constants, self._constants_used):
            return
        self._constants_used = constants
        for observed, plate in self._statistics:
            name = _statistics_buffer(observed, plate)
            setattr(self, name, None)  # the old ones go before the new are made: one copy at a time
            setattr(self, name, self._standardise(self._whole_data_statistics(observed, plate), observed, plate))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # Checkpoints made before the statistics' standardisation was saved lack it: it is
        # the one computed from the same data, kept.
        for observed, plate in self._statistics:
            for part in ("centre", "scale"):
                name = _statistics_buffer(observed, plate, part)
                state_dict.setdefault(prefix + name, getattr(self, name))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def _raw_features(self, observed: str, frame: Frame) -> Tensor:
        """The features of ``observed``'s batched data, shape ``(*batch_shape, features)``."""
        data = self.model.batch_data(frame)
        plates = self.model.plates_of(observed)
        batch_shape = frame.batch_shape(plates)
        columns = []
        for name in self.features[observed]:
            rank = data[name].dim() - len(self.model.plates_of(name))
            aligned = frame.align(data[name], self.model.plates_of(name), plates, rank)
            aligned = aligned.reshape(*aligned.shape[: aligned.dim() - rank], -1)
            columns.append(aligned.expand(*batch_shape, aligned.shape[-1]))
        return torch.cat(columns, -1)

    def _features(self, observed: str, frame: Frame) -> Tensor:
        """The features of ``observed``'s batched data, standardised by the whole data's
        mean and sd, shape ``(*batch_shape, features)``."""
        raw = self._raw_features(observed, frame)
        return (raw - getattr(self, f"mean_{observed}")) / getattr(self, f"scale_{observed}")

    def _datum_inputs(self, observed: str, frame: Frame) -> Tensor:
        """What ``observed``'s embedding network reads of each of its batched data alone,
        shape ``(*batch_shape, k)``: its standardised features, or for a summarised
        variable their moments and a log count of 0 (one datum)."""
        features = self._features(observed, frame)
        if observed not in self.summarised:
            return features
        stats = moments(features)
        return torch.cat([stats, stats.new_zeros(*stats.shape[:-1], 1)], -1)

    def _pooled_statistics(self, observed: str, plate: str, frame: Frame) -> Tensor:
        """The means over ``plate``'s elements in ``frame`` of the moments of ``observed``'s
        standardised features, and the log of their number, laid out along the pooled
        level, shape ``(*batch_shape(level), k)``."""
        i = self.model.plates_of(observed).index(plate)
        stats = moments(self._features(observed, frame))
        info = self.model.plates[plate]
        if info.ragged:
            index = frame.local_index(plate, info.parent)
            size = frame.sizes[info.parent]
            stats = _segment_mean(stats, i, index, size)
            view = [1] * stats.dim()
            view[i] = size
            counts = torch.bincount(index, minlength=size).clamp(min=1).to(stats.dtype).view(view)
        else:
            stats = stats.mean(i)
            counts = stats.new_full((1,) * stats.dim(), float(frame.sizes[plate]))
        return torch.cat([stats, counts.log().expand(*stats.shape[:-1], 1)], -1)

    def _whole_data_statistics(self, observed: str, plate: str, chunk_elements: int = 2**18) -> Tensor:
        """:meth:`_pooled_statistics` of the whole data, computed chunk by chunk (:meth:`_chunks`)."""
        level = self.model.plates_of(observed)
        key = (observed, _pooled(self.model.plates, level, level.index(plate)))
        out: dict[Level, Tensor] = {}
        for frame, share in self._chunks(observed, chunk_elements):
            self._gather(out, key, self._pooled_statistics(observed, plate, frame), frame, share)
        return out[key]

    def _along(self, level: tuple[str, ...], plate: str) -> bool:
        """Whether a summary at ``level`` lies along top-level ``plate`` (on it or inside it)."""
        return any(self.model.plates.root(p) == plate for p in level)

    def _chunked_plate(self, observed: str) -> str | None:
        """The plate :meth:`_chunks` cuts ``observed``'s data along: the one top-level
        plate above all its plates; ``None`` where its plates cross."""
        roots = _roots(self.model, observed)
        return roots.pop() if len(roots) == 1 else None

    def _chunks(self, observed: str, chunk_elements: int, within: Shard | None = None) -> Iterator[tuple[Frame, float]]:
        """Frames over consecutive chunks of ``observed``'s outermost plate (of its
        elements in ``within``, if given), each holding about ``chunk_elements`` of its
        data, with each chunk's share of the elements they go over; one frame of the
        whole data where its plates cross (no single plate to chunk over)."""
        chunked = self._chunked_plate(observed)
        if chunked is None:
            yield self.model.frame(), 1.0
            return
        root = self.model.plates[chunked]
        per_element = max(1, self.model.data[observed].numel() // root.size)
        step = max(1, chunk_elements // per_element)
        first, stop = (0, root.size) if within is None else (within.start, within.stop)
        for start in range(first, stop, step):
            chunk = torch.arange(start, min(stop, start + step), device=self.model.device)
            yield self.model.frame({root.name: chunk}), len(chunk) / (stop - first)

    def forward(self, frame: Frame, full: Mapping[Level, Tensor] | None = None) -> dict[str, Tensor]:
        """Each latent variable's encodings in the batch, shape ``(*batch_shape, encoding_size)``.

        Args:
            frame: the batch.
            full: summaries of the whole data (:meth:`full_summaries`), used where the
                batch holds only part of the elements a summary averages over.
        """
        pooled: dict[Level, Tensor] = {}
        out = {}
        for v, sources in self.sources.items():
            plates = self.model.plates_of(v)
            if not sources:
                out[v] = self.constant[v].expand(*frame.batch_shape(plates), self.encoding_size)
                continue
            summaries = [self._pool(o, plates, frame, pooled, full) for o in sources]
            out[v] = self.readout[v](torch.cat(summaries, -1))
        return out

    @torch.no_grad()
    def full_summaries(
        self,
        chunk_elements: int = 2**18,
        shard: Shard | None = None,
        total: Total | None = None,
        averaged_over: Collection[str] | None = None,
    ) -> dict[Level, Tensor]:
        """The pooled summaries of the whole data, for batches that see only part of it.

        Computed chunk by chunk over the outermost plate of each observed variable
        (:meth:`_chunks`). A summary that still lies along that plate is written back at
        the chunk's positions; the one that averages over it is the chunks' average
        weighted by their numbers of elements.

        With ``averaged_over``, only the summaries made by averaging over one of those
        plates are kept: the only ones a batch that holds part of just those plates
        reads (:meth:`partial_plates`). The others can be as large as the data (GRE's
        summary per group, at G = 10^6 122 MB of the 600 a fit takes) and a batch
        computes them itself.

        In a data-parallel run, with this process's ``shard`` and ``total`` (the sum of
        tensors over the processes, a collective), each process pools only the chunks of
        its shard of the data below ``shard.plate``, at ``1 / shard.replicas`` of the
        cost. A summary laid out along that plate holds the shard's elements only (zero
        at the others': a process's training draws stay in its shard); one averaged over
        it is the processes' averages over their shards, weighted by their sizes, which
        ``total`` adds up (a few numbers, not a number per element). The model may hold
        the shard alone (:attr:`~pavi_viz.model.compiled.CompiledModel.part`).
        """
        out: dict[Level, Tensor] = {}
        shared: list[Level] = []
        for o in self.model.observed_names:
            kept = self._averaged_levels(o, averaged_over)
            within = shard if shard is not None and self._chunked_plate(o) == shard.plate else None
            for frame, share in self._chunks(o, chunk_elements, within) if kept else ():
                pooled: dict[Level, Tensor] = {}
                for target in self.orders[o]:
                    self._pool(o, target, frame, pooled, None)
                for key in kept & pooled.keys():
                    self._gather(out, key, pooled[key], frame, share)
            if within is not None:  # the averages over the shard's plate
                shared.extend(key for key in out if key[0] == o and not self._along(key[1], shard.plate))
        if shared:
            size = torch.tensor(float(shard.stop - shard.start), device=self.model.device)
            *sums, elements = total([size * out[key] for key in shared] + [size])
            out.update((key, value / elements) for key, value in zip(shared, sums, strict=True))
        return out

    def _gather(self, out: dict[Level, Tensor], key: Level, value: Tensor, frame: Frame, share: float) -> None:
        """Add one chunk's summary at ``key`` to the whole data's."""
        level = key[1]
        batched = [i for i, p in enumerate(level) if frame.indices(p) is not None]
        if not batched:  # averaged over the chunked plate: a weighted average of chunks
            out[key] = out[key] + share * value if key in out else share * value
            return
        (dim,) = batched  # the chunked plate, or a ragged plate inside it, but never both
        if key not in out:
            shape = list(value.shape)
            shape[dim] = self.model.plates[level[dim]].size
            out[key] = value.new_zeros(shape)
        out[key].index_copy_(dim, frame.indices(level[dim]), value)

    def partial_plates(self, frame: Frame) -> frozenset[str]:
        """The plates some of whose elements ``frame`` leaves out, below its batched
        outer elements: a summary that averages over one of them needs the whole data's."""
        return frozenset(p for p in frame.batch if not _complete(self.model.plates[p], frame))

    def _averaged_levels(self, observed: str, plates: Collection[str] | None) -> set[Level]:
        """The levels of ``observed``'s summaries that :meth:`_pool` may take from the
        whole data's: those made by averaging over one of ``plates`` (any plate: ``None``),
        the first plate of a summarised variable aside (its statistics are the whole data's)."""
        levels = set()
        for order in self.orders[observed].values():
            level = self.model.plates_of(observed)
            for position, name in enumerate(order):
                level = _pooled(self.model.plates, level, level.index(name))
                if (plates is None or name in plates) and not (position == 0 and observed in self.summarised):
                    levels.add((observed, level))
        return levels

    def _pool(
        self,
        observed: str,
        target: tuple[str, ...],
        frame: Frame,
        pooled: dict[Level, Tensor],
        full: Mapping[Level, Tensor] | None,
    ) -> Tensor:
        """``observed``'s summaries laid out along the plates ``target``, memoised in ``pooled``."""
        level = self.model.plates_of(observed)
        order = self.orders[observed][target]
        if observed in self.summarised and order:  # the first plate: the whole data's statistics
            level = _pooled(self.model.plates, level, level.index(order[0]))
            key = (observed, level)
            if key not in pooled:
                statistics = frame.select(getattr(self, _statistics_buffer(observed, order[0])), level)
                pooled[key] = self.embed[observed](statistics)
            order = order[1:]
        else:
            key = (observed, level)
            if key not in pooled:
                pooled[key] = self.embed[observed](self._datum_inputs(observed, frame))
        values = pooled[key]
        for name in order:
            i = level.index(name)
            plate = self.model.plates[name]
            new_level = _pooled(self.model.plates, level, i)
            key = (observed, new_level)
            if key not in pooled:
                stepped = self.steps[observed][name](values)
                if plate.ragged:
                    index = frame.local_index(name, plate.parent)
                    pooled[key] = _segment_mean(stepped, i, index, frame.sizes[plate.parent])
                else:
                    pooled[key] = stepped.mean(i)
                if full is not None and not _complete(plate, frame):
                    # The batch holds only some of the elements to average: take the
                    # whole data's value, so that the encoding does not depend on which
                    # elements were drawn, and let gradients flow through the batch's
                    # estimate of it.
                    estimate = pooled[key]
                    pooled[key] = frame.select(full[key], new_level) + (estimate - estimate.detach())
            level, values = new_level, pooled[key]
        if level != target:  # crossing plates: same set, other order
            values = values.permute(*(level.index(p) for p in target), len(level))
        return values


def _complete(plate: PlateInfo, frame: Frame) -> bool:
    """Whether ``frame`` holds every element of ``plate`` below its batched outer elements."""
    if frame.indices(plate.name) is None:
        return True
    return plate.ragged and frame.indices(plate.parent) is not None and frame.weights[plate.name] == 1.0
