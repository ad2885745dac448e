"""The compiled, immutable form of a model: log joint density and ancestral sampling.

A :class:`CompiledModel` holds tensors on one device, parsed expressions and the
plate index structure. Every computation is vectorized over plate elements and over
leading *sample* dimensions (Monte Carlo particles): a latent variable's value has
shape ``(*sample, *batch_shape, *event_shape)``, where ``batch_shape`` lists the
batched size of each of its plates.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, Transform, biject_to

from pavi_viz.model.distributions import DISTRIBUTIONS, DistributionInfo
from pavi_viz.model.errors import ModelError
from pavi_viz.model.expressions import Expression, Value
from pavi_viz.model.plates import Frame, PlateBatch, PlateInfo, PlateStructure, Shard

if TYPE_CHECKING:
    from pavi_viz.model.spec import PlateModel

#: Batch size per plate used by the dry run that validation performs.
DRY_RUN_BATCH = 2
#: Held by whoever seeds torch's process-wide (global) random generator and draws from
#: it (:func:`seeded`), so that seeded work in concurrent threads stays reproducible.
#: Re-entrant: a seeded block may call another (building a variational family inside
#: ``fit``'s seeded block draws a seeded prior sample).
GLOBAL_RNG_LOCK = threading.RLock()


@dataclass(frozen=True)
class CompiledVariable:
    """A variable ready for evaluation.

    Attributes:
        params: each parameter as a parsed expression or a constant tensor.
        parents: the variables its parameters refer to.
    """

    name: str
    info: DistributionInfo
    plates: tuple[str, ...]
    event_shape: tuple[int, ...]
    observed: bool
    params: dict[str, Expression | Tensor]
    parents: tuple[str, ...]


class CompiledModel:
    """A validated model, ready to evaluate and sample.

    Build it with :meth:`PlateModel.compile`, which validates first.

    Attributes:
        variables: the variables in topological order (parents first).
        plates: the plate structure.
        data: observed values and covariates on the device, full size.
        truth: the latent values that simulated the data, when known.
        part: where this model holds one shard of a larger model's top-level plate
            (one process's, in a data-parallel run: :func:`~pavi_viz.model.sharding.compile_part`),
            that shard, in the larger model's elements; ``None`` for a whole model.
    """

    def __init__(
        self,
        model: PlateModel,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        parsed: Mapping[str, Mapping[str, Expression | Tensor]] | None = None,
    ) -> None:
        from pavi_viz.model.validation import parse_param

        self.name = model.name
        self.device = torch.device(device)
        self.dtype = dtype or torch.get_default_dtype()
        if self.device.type == "mps" and self.dtype == torch.float64:
            raise ValueError("the MPS device has no float64: compile the model with dtype=torch.float32")
        self.plates = PlateStructure(_ordered_plates(model), self.device)
        self._event_ranks: dict[str, int] = {}
        self._plates_of: dict[str, tuple[str, ...]] = {}
        for cov in model.covariates:
            self._plates_of[cov.name] = tuple(cov.plates)
            self._event_ranks[cov.name] = len(cov.event_shape)
        unordered = {}
        variable_names = {v.name for v in model.variables}
        for var in model.variables:
            given = (parsed or {}).get(var.name)
            params = {
                k: (given[k] if given is not None else parse_param(v, var.name, k)) for k, v in var.params.items()
            }
            params = {k: (v.to(self.device, self.dtype) if isinstance(v, Tensor) else v) for k, v in params.items()}
            names = {n for p in params.values() if isinstance(p, Expression) for n in p.names}
            unordered[var.name] = CompiledVariable(
                name=var.name,
                info=DISTRIBUTIONS[var.distribution],
                plates=tuple(var.plates),
                event_shape=tuple(var.event_shape),
                observed=var.observed,
                params=params,
                parents=tuple(sorted(n for n in names if n in variable_names)),
            )
            self._plates_of[var.name] = tuple(var.plates)
            self._event_ranks[var.name] = len(var.event_shape)
        self.variables: dict[str, CompiledVariable] = _topological(unordered)
        self.data = {k: v.to(self.device, self.dtype) for k, v in (model.data or {}).items()}
        self.truth = None if model.truth is None else {k: v.to(self.device, self.dtype) for k, v in model.truth.items()}
        self.part: Shard | None = None

    # -- structure ---------------------------------------------------------------
    @property
    def latent_names(self) -> list[str]:
        return [n for n, v in self.variables.items() if not v.observed]

    @property
    def observed_names(self) -> list[str]:
        return [n for n, v in self.variables.items() if v.observed]

    def plates_of(self, name: str) -> tuple[str, ...]:
        """The plates of a variable or covariate."""
        return self._plates_of[name]

    def plate_shape(self, name: str) -> tuple[int, ...]:
        """The sizes of a variable's or covariate's plates: the leading dims of its whole value."""
        return tuple(self.plates[p].size for p in self._plates_of[name])

    def frame(self, batch: PlateBatch | None = None, shard: Shard | None = None) -> Frame:
        """The view of the model through a batch of plate elements (drawn from ``shard``)."""
        return self.plates.frame(batch, shard)

    def sample_batch(
        self, sizes: Mapping[str, int], generator: torch.Generator | None = None, shard: Shard | None = None
    ) -> PlateBatch:
        """A random batch; see :meth:`PlateStructure.sample_batch`."""
        return self.plates.sample_batch(sizes, generator, shard)

    # -- distributions ---------------------------------------------------------
    def distribution(
        self,
        name: str,
        values: Mapping[str, Tensor],
        frame: Frame,
        sample_shape: Sequence[int] = (),
    ) -> Distribution:
        """The distribution of variable ``name`` given its parents.

        Args:
            name: the variable.
            values: batched values of its parents, shape ``(*sample, *batch, *event)``,
                and of the covariates, shape ``(*batch, *event)``.
            frame: the batch's frame.
            sample_shape: the leading sample dims of the result.

        Returns:
            A distribution with batch shape ``(*sample_shape, *frame.batch_shape(plates))``
            and the variable's event shape.
        """
        var = self.variables[name]
        try:
            return self._distribution(var, values, frame, tuple(sample_shape))
        except ModelError:
            raise
        except (RuntimeError, ValueError, IndexError) as err:
            raise ModelError(f"cannot build the {var.info.name} distribution of {name!r}: {err}", name) from err

    def _distribution(
        self, var: CompiledVariable, values: Mapping[str, Tensor], frame: Frame, sample_shape: tuple[int, ...]
    ) -> Distribution:
        def lookup(parent: str) -> Value:
            if parent not in values:  # a covariate whose data is not attached (yet)
                raise ModelError(f"no data for covariate {parent!r}, which {var.name!r} needs", parent)
            rank = self._event_ranks[parent]
            aligned = frame.align(values[parent], self._plates_of[parent], var.plates, rank, key=(parent, "model"))
            return Value(aligned, rank)

        params = {}
        for pname, spec in var.params.items():
            params[pname] = Value(spec, spec.dim()) if isinstance(spec, Tensor) else spec.evaluate(lookup)
        tensors, excess = _align_param_ranks(var, params)
        base = var.info.build(tensors)
        event = var.event_shape
        natural = tuple(base.event_shape)
        if len(natural) > len(event) or event[len(event) - len(natural):] != natural:
            raise ModelError(
                f"variable {var.name!r} has event shape {list(event)}, but {var.info.name} with these "
                f"parameters gives values of shape {list(natural)}: set event_shape={list(natural)}",
                var.name,
            )
        extra = event[: len(event) - len(natural)]
        if excess > len(extra):
            raise ModelError(
                f"a parameter of {var.name!r} has {excess} more dimension(s) than {var.info.name} takes, "
                f"but {var.name!r} has event shape {list(event)}: index it (as in beta[0]) or "
                "declare a matching event shape",
                var.name,
            )
        target = sample_shape + frame.batch_shape(var.plates) + extra
        if tuple(base.batch_shape) != target:
            base = base.expand(torch.Size(target))
        return Independent(base, len(extra)) if extra else base

    def support_transform(self, name: str, values: Mapping[str, Tensor], frame: Frame,
                          sample_shape: Sequence[int] = ()) -> Transform:
        """The bijection from the real line (unconstrained space) onto the variable's support."""
        return biject_to(self.distribution(name, values, frame, sample_shape).support)

    # -- densities ------------------------------------------------------------------
    def batch_data(self, frame: Frame, data: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Observed values and covariates restricted to the frame's batch."""
        full = self.data if data is None else {
            **self.data, **{k: torch.as_tensor(v, device=self.device, dtype=self.dtype) for k, v in data.items()}}
        return {k: frame.select(v, self._plates_of[k]) for k, v in full.items() if k in self._plates_of}

    def log_joint_terms(
        self,
        latents: Mapping[str, Tensor],
        data: Mapping[str, Tensor] | None = None,
        batch: PlateBatch | None = None,
        frame: Frame | None = None,
    ) -> dict[str, Tensor]:
        """Each variable's log density summed over its (batched) ground variables.

        Args:
            latents: every latent variable's batched value, shape
                ``(*sample, *batch_shape, *event_shape)``.
            data: replaces attached data (full size) for the names it holds.
            batch: selected plate elements (the whole model when ``None``).
            frame: the batch's frame, when already built (then ``batch`` is ignored).

        Returns:
            For each variable, a tensor of shape ``sample``: its log density terms
            summed over the batch and scaled by ``size / batch`` for every plate they
            sit in, an unbiased estimate of the full sum.
        """
        frame = frame or self.frame(batch)
        sample_shape = self._sample_shape(latents, frame)
        values = {**self.batch_data(frame, data), **latents}
        terms = {}
        for name, var in self.variables.items():
            if name not in values:
                raise ModelError(f"no data for observed variable {name!r}", name)
            log_prob = self.distribution(name, values, frame, sample_shape).log_prob(values[name])
            terms[name] = sum_over_plates(log_prob, len(sample_shape)) * frame.weight(var.plates)
        return terms

    def log_joint(
        self,
        latents: Mapping[str, Tensor],
        data: Mapping[str, Tensor] | None = None,
        batch: PlateBatch | None = None,
    ) -> Tensor:
        """log p(latents, data), or its unbiased batch estimate; shape ``sample``."""
        return sum(self.log_joint_terms(latents, data, batch).values())

    def _sample_shape(self, latents: Mapping[str, Tensor], frame: Frame) -> tuple[int, ...]:
        missing = [n for n in self.latent_names if n not in latents]
        if missing:
            raise ModelError(f"values are missing for latent variables {missing}", missing[0])
        unknown = [n for n in latents if n not in self.latent_names]
        if unknown:
            raise ModelError(f"{unknown} are not latent variables of the model", unknown[0])
        sample_shape: tuple[int, ...] | None = None
        for name in self.latent_names:
            var = self.variables[name]
            expected = frame.batch_shape(var.plates) + var.event_shape
            shape = tuple(latents[name].shape)
            tail = shape[len(shape) - len(expected):] if expected else ()
            lead = shape[: len(shape) - len(expected)]
            if tail != expected or (sample_shape is not None and lead != sample_shape):
                want = (sample_shape or ("*sample",)) + expected
                raise ModelError(f"value of {name!r} has shape {shape}, expected {want}", name)
            sample_shape = lead
        return sample_shape or ()

    # -- sampling --------------------------------------------------------------------
    @torch.no_grad()
    def sample_prior(
        self,
        sample_shape: Sequence[int] = (),
        batch: PlateBatch | None = None,
        seed: int | None = None,
    ) -> dict[str, Tensor]:
        """Ancestral draws of every variable from the prior.

        Args:
            sample_shape: leading dims of independent draws.
            batch: draw only these plate elements (the whole graph when ``None``).
            seed: makes the draws reproducible.

        Returns:
            Each variable's draws, shape ``(*sample_shape, *batch_shape, *event_shape)``.
        """
        return self._sample(self.variables, sample_shape, self.frame(batch), seed)

    def _sample(
        self, names: Iterable[str], sample_shape: Sequence[int], frame: Frame, seed: int | None
    ) -> dict[str, Tensor]:
        """Ancestral draws of the variables ``names`` (parents before children)."""
        values = {k: v for k, v in self.batch_data(frame).items() if k not in self.variables}
        with seeded(seed, self.device):
            for name in names:
                dist = self.distribution(name, values, frame, sample_shape)
                try:
                    values[name] = dist.sample()
                except (RuntimeError, ValueError) as err:  # e.g. a negative Poisson rate
                    raise ModelError(f"cannot draw {name!r} from {self.variables[name].info.name}: {err}",
                                     name) from err
        return {name: values[name] for name in names}

    def dry_run(self) -> None:
        """Evaluate the model once on a small batch, reporting what fails as a ModelError.

        Variables that need a covariate with no data attached, and their descendants,
        are skipped: a model being built may lack data (``require_data=False``).
        """
        sizes = {p.name: DRY_RUN_BATCH for p in self.plates}
        batch = self.sample_batch(sizes, torch.Generator(self.device).manual_seed(0))
        runnable: list[str] = []
        for name, var in self.variables.items():  # parents come first
            inputs = {n for p in var.params.values() if isinstance(p, Expression) for n in p.names}
            if all(n in self.data or n in runnable for n in inputs):
                runnable.append(name)
        draws = self._sample(runnable, (DRY_RUN_BATCH,), self.frame(batch), seed=0)
        if all(n in self.data for n in self.observed_names) and len(runnable) == len(self.variables):
            self.log_joint_terms({n: draws[n] for n in self.latent_names}, batch=batch)


def _align_param_ranks(var: CompiledVariable, params: Mapping[str, Value]) -> tuple[dict[str, Tensor], int]:
    """Parameter tensors laid out for the torch constructor.

    A parameter may carry more event dims than the distribution takes (a vector
    ``loc`` for a variable with ``event_shape=[2]``); those *excess* dims become batch
    dims of the base distribution. Parameters with fewer excess dims get singleton
    dims so that the batch dims of all parameters line up.

    Returns:
        the tensors, and the number of excess dims.
    """
    excess = {}
    for pname, value in params.items():
        rank = var.info.by_name[pname].event_rank
        if value.event_rank < rank:
            raise ModelError(
                f"parameter {pname!r} of {var.name!r} must hold a {'vector' if rank == 1 else f'{rank}-d array'} "
                f"for each ground variable ({var.info.name} needs it), got a scalar",
                var.name,
            )
        excess[pname] = value.event_rank - rank
    most = max(excess.values(), default=0)
    tensors = {}
    for pname, value in params.items():
        t = value.tensor
        lead = t.dim() - value.event_rank
        tensors[pname] = t.reshape(t.shape[:lead] + (1,) * (most - excess[pname]) + t.shape[lead:])
    return tensors, most


def _ordered_plates(model: PlateModel) -> list[PlateInfo]:
    """Compiled plates, each after the plate it nests in."""
    out = []
    for plate in sorted(model.plates, key=lambda p: model.nesting_depth(p.name)):
        membership = None if plate.membership is None else torch.as_tensor(plate.membership).long()
        out.append(PlateInfo(plate.name, int(plate.size), plate.nested_in, membership))
    return out


def _topological(variables: dict[str, CompiledVariable]) -> dict[str, CompiledVariable]:
    """The variables, parents before children (the model is known to be acyclic). A walk
    with a stack of its own, so that a chain of any length fits (no recursion)."""
    ordered: dict[str, CompiledVariable] = {}
    for root in variables:
        stack = [(root, iter(variables[root].parents))]
        while stack:
            name, parents = stack[-1]
            parent = next((p for p in parents if p not in ordered), None)
            if parent is None:
                stack.pop()
                ordered.setdefault(name, variables[name])
            else:
                stack.append((parent, iter(variables[parent].parents)))
    return ordered


def sum_over_plates(terms: Tensor, sample_dims: int) -> Tensor:
    """Sum per-element terms of shape ``(*sample, *batch_shape)`` over the batch dims."""
    # Not terms.sum(()): torch reads an empty dim list as "all dims", which would also
    # sum a global variable's terms over the sample dims.
    dims = tuple(range(sample_dims, terms.dim()))
    return terms.sum(dims) if dims else terms


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device):
    """Run with torch's global RNG seeded, restoring its state afterwards.

    Holds :data:`GLOBAL_RNG_LOCK` throughout: other threads' seeded blocks wait, so
    each draws the same numbers as it would alone (unseeded draws from the global RNG
    elsewhere are not held back). ``seed=None`` leaves the global RNG as it is, unlocked.
    """
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
