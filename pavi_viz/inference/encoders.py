"""PAVI-E's data encoder: permutation-invariant summaries of the data below each ground variable.

For every observed variable ``o``, each ground datum becomes a feature vector (its
value with the covariates it sees), embedded by a small network, then pooled plate by
plate towards the root, DeepSets style: at each step a network is applied to every
element, then the elements of the innermost plate are averaged (a regular plate's
dim, or the members of each outer element of a ragged plate). A latent variable
living in plates ``P`` reads the pooled summaries at level ``P`` of every observed
variable below it, and a linear read-out turns them into its encodings.

Every network acts on one element at a time, so the parameter count does not grow
with the plates. The encoder sees the data of the batch: a batched ground variable is
summarised from all its own data (inner plates are taken whole unless batched too),
and the variables above the batch (the global ones) from the batch's summaries.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from pavi_viz.model.compiled import CompiledModel
from pavi_viz.model.plates import Frame, PlateInfo

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
        closure = {name: set(model.plates.closure(model.plates_of(name))) for name in model._plates_of}
        # The data each observed variable's features are made of: itself and the
        # covariates whose plates it sits in.
        self.features = {
            o: [o] + [c for c in model.data if c not in model.variables and closure[c] <= closure[o]]
            for o in model.observed_names
        }
        self.sources = {
            v: [o for o in model.observed_names if closure[v] <= closure[o]] for v in model.latent_names
        }
        full = model.frame()
        self.embed = nn.ModuleDict()
        self.steps = nn.ModuleDict()
        for o in model.observed_names:
            raw = self._raw_features(o, full)
            self.register_buffer(f"mean_{o}", raw.reshape(-1, raw.shape[-1]).mean(0))
            self.register_buffer(f"scale_{o}", raw.reshape(-1, raw.shape[-1]).std(0, correction=0).clamp(min=1e-6))
            self.embed[o] = _mlp(raw.shape[-1], hidden)
            self.steps[o] = nn.ModuleDict(
                {plate: _mlp(hidden, hidden) for plate in model.plates.closure(model.plates_of(o))}
            )
        self.readout = nn.ModuleDict(
            {v: nn.Linear(hidden * len(sources), encoding_size) for v, sources in self.sources.items() if sources}
        )
        # A latent with no data below it gets one learnable encoding for all its copies.
        self.constant = nn.ParameterDict(
            {v: nn.Parameter(torch.zeros(encoding_size)) for v, sources in self.sources.items() if not sources}
        )

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

    def forward(self, frame: Frame, full: Mapping[Level, Tensor] | None = None) -> dict[str, Tensor]:
        """Each latent variable's encodings in the batch, shape ``(*batch_shape, encoding_size)``.

        Args:
            frame: the batch.
            full: summaries of the whole data (:meth:`full_summaries`), used where the
                batch holds only part of the elements a summary averages over.
        """
        pooled = self._embedded(frame)
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
    def full_summaries(self, chunk_elements: int = 2**18) -> dict[Level, Tensor]:
        """Every pooled summary of the whole data, for batches that see only part of it.

        The data is embedded chunk by chunk over the outermost plate of each observed
        variable, so that at most about ``chunk_elements`` data elements (times
        ``hidden``) are embedded at once. A summary that still lies along that plate is
        written back at the chunk's positions; the one that averages over it is the
        chunks' average weighted by their numbers of elements.
        """
        out: dict[Level, Tensor] = {}
        for o in self.model.observed_names:
            targets = {self.model.plates_of(v) for v, sources in self.sources.items() if o in sources}
            roots = {self.model.plates.root(p) for p in self.model.plates_of(o)}
            if len(roots) != 1:  # crossing top-level plates: no single plate to chunk over
                out.update(self._summaries_of(o, targets, self.model.frame()))
                continue
            root = self.model.plates[roots.pop()]
            per_element = max(1, self.model.data[o].numel() // root.size)
            step = max(1, chunk_elements // per_element)
            for start in range(0, root.size, step):
                chunk = torch.arange(start, min(root.size, start + step), device=self.model.device)
                frame = self.model.frame({root.name: chunk})
                for key, value in self._summaries_of(o, targets, frame).items():
                    self._gather(out, key, value, frame, len(chunk) / root.size)
        return out

    def _summaries_of(self, observed: str, targets: set[tuple[str, ...]], frame: Frame) -> dict[Level, Tensor]:
        """``observed``'s pooled summaries at every level leading to ``targets`` (not its own level)."""
        own = (observed, self.model.plates_of(observed))
        pooled = {own: self._embed(observed, frame)}
        for target in targets:
            self._pool(observed, target, frame, pooled, None)
        del pooled[own]
        return pooled

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

    def partial(self, frame: Frame) -> bool:
        """Whether some summary averages over plate elements that ``frame`` leaves out."""
        return any(not _complete(self.model.plates[p], frame) for p in frame.batch)

    def _embedded(self, frame: Frame) -> dict[Level, Tensor]:
        return {(o, self.model.plates_of(o)): self._embed(o, frame) for o in self.model.observed_names}

    def _embed(self, observed: str, frame: Frame) -> Tensor:
        """The embedding of each of ``observed``'s batched data, shape ``(*batch_shape, hidden)``."""
        raw = self._raw_features(observed, frame)
        features = (raw - getattr(self, f"mean_{observed}")) / getattr(self, f"scale_{observed}")
        return self.embed[observed](features)

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
        values = pooled[observed, level]
        while set(level) != set(target):
            # Pool the innermost plate that the target is not in.
            i = max(j for j, p in enumerate(level) if p not in target)
            plate = self.model.plates[level[i]]
            if plate.ragged:
                new_level = level[:i] + (plate.parent,) + level[i + 1 :]
            else:
                new_level = level[:i] + level[i + 1 :]
            key = (observed, new_level)
            if key not in pooled:
                stepped = self.steps[observed][plate.name](values)
                if plate.ragged:
                    index = frame.local_index(plate.name, plate.parent)
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
