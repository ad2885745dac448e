"""Posterior draws and summaries of a fitted family, as xarray objects.

:class:`Posterior` turns a variational family into what users and dashboards read:

* :meth:`Posterior.sample`: an :class:`xarray.Dataset` of joint draws, one data
  variable per latent with dims ``("sample", *plates, *event dims)``; event dims are
  named ``f"{variable}_dim_{i}"``;
* :meth:`Posterior.summary`: mean, sd and quantiles of every ground variable,
  without ever holding all the draws;
* :meth:`Posterior.predictive`: posterior predictive draws of the observed variables;
  :meth:`Posterior.observed_data` the data itself;
* :meth:`Posterior.to_datatree`: an ArviZ ``xarray.DataTree`` (groups ``posterior``,
  ``log_likelihood``, ``sample_stats``, ``posterior_predictive``, ``observed_data``,
  ``constant_data``; needs arviz-base, optional extra ``pavi-viz[export]``), which
  ``arviz_stats.loo`` reads; :meth:`Posterior.to_netcdf` writes it and
  :func:`load_netcdf` reads it back.

**Memory.** Draws are taken without gradients and in *chunks*, so that torch never
holds more than about ``chunk_elements`` drawn numbers at a time (the family's own
working memory is a family-dependent multiple of that: the flows' hidden layers, for
instance). The variables outside the chunked plate (the global ones) are drawn once,
with the first chunk, and every later chunk is drawn *given* them: the chunks make
up one joint draw from the family. Chunks run over the elements of the top-level
plate that holds the most drawn numbers (the members of a ragged plate nested in it
come along with their outer element; other top-level plates are taken whole); when a
single element's draws exceed the bound, the draws are split in groups too. See
:meth:`Posterior.chunks`.

**Shares.** The processes of a data-parallel run draw the chunks of q's draws between
them (:mod:`~pavi_viz.inference.parallel_posterior`): each walks the chunks of its
:class:`Share` of the shared plate's elements, given the same draws of the latents
outside that plate's tree (:meth:`Posterior.draw_share`), and one process puts the
shares together (:meth:`Posterior.add_share`, :meth:`Posterior.tree`).

**Correction** (``correct=``, :data:`Correction`). Where one pool of ``4 n`` whole
draws of the model's latents fits :data:`IMPORTANCE_NUMBERS` (they are kept on the
CPU), the ``n`` draws of every method above can be resampled from that pool by their
Pareto smoothed importance weights (PSIS; Vehtari et al., 2024, "Pareto smoothed
importance sampling", JMLR 25; Yao et al., 2018, "Yes, but did it work?"), which
corrects q's bias: ``"auto"`` does so when the weights' Pareto k is within
:func:`~pavi_viz.inference.importance.pareto_k_bound` and otherwise returns q's own
draws; ``"psis"`` always does (with a warning above the bound); ``"none"`` returns
q's own draws. The pool is drawn from a defensive mixture of q, which reaches the
tails a reverse-KL fit leaves out: about half of its draws take the global latents
from a wider q, and about half take each funnel's ground variables (a location-scale
prior with a drawn scale) from that prior given the draws so far, which holds them to
the funnel's neck (``VariationalFamily.sample``'s ``spread``;
:mod:`pavi_viz.inference.importance`, :meth:`Posterior.importance_check`).

**Random numbers.** With a ``seed``, the family's noise comes from a generator of the
call's own, seeded by it; the posterior predictive's draws of the observed variables
come from ``torch.distributions``' ``sample()``, which only reads torch's global
generator: each chunk seeds it (from the call's generator) and draws from it holding
:data:`~pavi_viz.model.compiled.GLOBAL_RNG_LOCK`. So the same seed gives the same
draws also when other threads draw at the same time, and the caller's global random
state is left as it was. Without a seed, everything comes from the global generator.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from pavi_viz.inference.families.base import Draw, VariationalFamily
from pavi_viz.inference.importance import (
    ImportanceCheck,
    effective_sample_size,
    pareto_k_bound,
    psis,
    systematic_resample,
)
from pavi_viz.model.compiled import CompiledModel, seeded, sum_over_plates
from pavi_viz.model.plates import Frame

#: How a call corrects q's draws by importance resampling (see the module's notes):
#: ``"auto"`` where the Pareto k allows it, ``"psis"`` always, ``"none"`` never.
Correction = Literal["auto", "psis", "none"]
CORRECTIONS: tuple[str, ...] = get_args(Correction)
#: Default bound on the numbers drawn in one chunk (draws x ground variables x event size).
CHUNK_ELEMENTS = 2**20
#: Importance resampling weighs this many draws of q per draw asked for (an importance
#: estimate's error follows the weights' effective sample size, often a tenth of the
#: draws or less), and at least IMPORTANCE_POOL...
IMPORTANCE_DRAWS_PER_DRAW = 4
IMPORTANCE_POOL = 1000
#: ... where one pool of them holds at most this many latent numbers: beyond, the
#: model is drawn in chunks, and its weights (a sum over thousands of ground
#: variables) would leave one draw with all the weight anyway.
IMPORTANCE_NUMBERS = 2**24
#: Pools are drawn again and weighed together while their effective sample size is
#: below this share of the draws asked for, up to IMPORTANCE_MAX_ROUNDS pools (and
#: IMPORTANCE_NUMBERS): the resampled draws' error follows the effective sample size.
IMPORTANCE_ESS_PER_DRAW = 0.25
IMPORTANCE_MAX_ROUNDS = 4
#: About half of a pool's draws take the global latents from q with its base noise
#: spread by this factor (a defensive mixture: :func:`~pavi_viz.inference.flows.gaussian_draw`;
#: the funnels' ground variables have a mixture of their own, with their prior:
#: ``VariationalFamily._prior_mixture``). Reverse-KL fits leave q too narrow where the
#: posterior has a funnel's neck (radon's sigma_beta, spikes' sigma_animal: q's 5%
#: quantile 3 to 6 times the reference's); the mixture's draws reach it. On one fit
#: each, before the prior's mixture, k went from 0.78 to 0.48 (radon), 0.77 to 0.70
#: and 0.88 to 0.62 (spikes), 0.75 to 0.56 (a funnel), 0.63 to 0.51 (radon_uranium),
#: 0.73 to 0.75 (eight schools); factors 1.5 and 3 did better on some of these and
#: worse on others.
IMPORTANCE_SPREAD = 2.0
#: to_datatree leaves its log_likelihood group out where it would hold more numbers
#: than this (draws x observed elements: 128 MiB of float32), a size that loo handles.
LOG_LIKELIHOOD_NUMBERS = 2**25
#: Dimension names the results use for themselves; plates may not take them.
RESERVED_DIMS = ("sample", "stat", "chain", "draw")
#: NetCDF engines tried in this order when none is named (both need the ``export`` extra).
NETCDF_ENGINES = ("h5netcdf", "netcdf4")
_EXTRA_HINT = "install the optional extra: pip install 'pavi-viz[export]'"


@dataclass(frozen=True)
class Chunk:
    """One step of a chunked draw.

    Attributes:
        frame: the plate elements drawn (``frame.batch`` holds the chunked plate's
            indices and the ragged members that come along; empty for the whole model).
        part: the index of the chunk's element range (chunks of one range differ
            only in ``draws``).
        draws: which of the ``n`` draws the chunk takes.
        values: the numbers drawn for one draw: ground variables times event size,
            summed over the variables drawn.
    """

    frame: Frame
    part: int
    draws: slice
    values: int

    @property
    def particles(self) -> int:
        return self.draws.stop - self.draws.start

    @property
    def size(self) -> int:
        """The numbers drawn in this chunk, all variables and draws together."""
        return self.particles * self.values


@dataclass(frozen=True)
class _Plan:
    chunks: tuple[Chunk, ...]
    plate: str | None  # the chunked plate; None when the model is drawn whole
    # The variables (latent and observed) outside the chunked plate's tree: the first
    # element range draws (and counts) them, the later ones are given them.
    outside: tuple[str, ...]


@dataclass(frozen=True)
class _Whole:
    """Whole draws of the latents, on the CPU.

    Attributes:
        values: each latent's draws, shape ``(n, *shape)``.
        log_q: the log density of each draw under the proposal it came from (q, or
            the defensive mixture of a pool), shape ``(n,)``, float64.
    """

    values: dict[str, Tensor]
    log_q: Tensor

    @staticmethod
    def cat(parts: Sequence[_Whole]) -> _Whole:
        return _Whole({name: torch.cat([p.values[name] for p in parts]) for name in parts[0].values},
                      torch.cat([p.log_q for p in parts]))

    def take(self, indices: Tensor) -> _Whole:
        return _Whole({name: draws[indices] for name, draws in self.values.items()}, self.log_q[indices])


@dataclass(frozen=True)
class Share:
    """One process's share of ``n`` draws of q made by the processes of a data-parallel
    run together (:mod:`~pavi_viz.inference.parallel_posterior`): the elements ``start``
    to ``stop - 1`` of top-level ``plate`` (in the numbering of the process's model),
    drawn given the draws of the latents outside ``plate``'s tree.

    Attributes:
        plate, start, stop: the elements.
        given: the latents outside ``plate``'s tree, ``n`` draws each, shape
            ``(n, *shape)`` (the same on every process).
        counts_outside: whether this process places the given draws and counts the
            densities of the variables outside ``plate``'s tree (one process does).
    """

    plate: str
    start: int
    stop: int
    given: dict[str, Tensor]
    counts_outside: bool


@dataclass(frozen=True)
class _Source:
    """Where one call's ``n`` draws come from.

    Attributes:
        generator: the call's generator (``None``: torch's global one).
        check: the importance check that was made (``None``: none).
        whole: the ``n`` draws, whole (PSIS-resampled, or q's own after a failed
            check); ``None``: they are drawn from q chunk by chunk.
        share: this process's share of draws made by several (``None``: all of them).
    """

    generator: torch.Generator | None
    check: ImportanceCheck | None = None
    whole: _Whole | None = None
    share: Share | None = None


@dataclass(frozen=True)
class _Step:
    """One chunk of a walk through the draws (:meth:`Posterior._walk`).

    Attributes:
        chunk: the chunk.
        values: the latents' draws, shape ``(particles, *batch shape, *event shape)``,
            on the model's device (the variables outside the chunked plate included).
        log_q: this chunk's share of each draw's log proposal density, shape
            ``(particles,)``, float64 on the CPU: summed over a draw's chunks, its log q.
        replicated: draws of the observed variables given the chunk's first draws
            (as many as asked for), shape ``(m, *batch shape, *event shape)``.
        repeated: the variables the chunk holds again: those outside the chunked
            plate, drawn (or counted) in an earlier chunk of the same draws.
    """

    chunk: Chunk
    values: dict[str, Tensor]
    log_q: Tensor
    replicated: dict[str, Tensor]
    repeated: frozenset[str]

    def fresh(self, arrays: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``arrays`` less the variables an earlier chunk of these draws held."""
        return {name: array for name, array in arrays.items() if name not in self.repeated}


@dataclass(frozen=True)
class Gathered:
    """What a walk gathered, in numpy, full size (:meth:`Posterior._gather`); for a
    :class:`Share`, its elements alone are filled (and its draws' ``lp`` and ``log_q``
    are sums over them)."""

    latents: dict[str, np.ndarray]  # (n, *shape)
    replicated: dict[str, np.ndarray]  # (replicate, *shape)
    log_likelihood: dict[str, np.ndarray]  # (n, *plate shape)
    lp: np.ndarray | None  # (n,), float64
    log_q: np.ndarray | None  # (n,), float64


class Posterior:
    """Draws, summaries and exports of a variational family's posterior.

    Args:
        model: the compiled model the family was built for.
        family: the (fitted) variational family.
        coords: coordinate values by dim name: a plate's name (county names, subject
            ids; one per element, or per outer element's member for a regularly
            nested plate) or an event dim (``"beta_dim_0": ["uranium", "floor"]``).
            Dims left out are numbered from 0.
        correct: how the draws of every call are corrected by importance resampling
            unless the call says otherwise (:data:`Correction`: ``"auto"``,
            ``"psis"``, ``"none"``; see the module's notes and :meth:`importance_check`).

    The seeded calls share their importance pool: the last one is kept for the next
    call with the same number of draws, seed and correction (``summary``, then
    ``importance_check`` and ``sample``: one pool for all). Make a new ``Posterior``
    once the family has trained further.
    """

    def __init__(
        self,
        model: CompiledModel,
        family: VariationalFamily,
        coords: Mapping[str, Sequence] | None = None,
        correct: Correction = "auto",
    ) -> None:
        if model.part is not None:
            raise ValueError(
                f"this process holds elements {model.part.start} to {model.part.stop - 1} of plate "
                f"{model.part.plate!r} of model {model.name!r} only (its shard of a data-parallel run): "
                "the posterior is drawn by rank 0, which holds the whole model, or by all the processes "
                "together (pavi_viz.inference.parallel_posterior.to_netcdf)"
            )
        self._build(model, family, coords, correct)

    @classmethod
    def for_share(cls, model: CompiledModel, family: VariationalFamily) -> Posterior:
        """A posterior of ``model``, which may be one process's part of a data-parallel
        run's model (:func:`~pavi_viz.model.sharding.compile_part`), of which only its
        :class:`Share` of draws made by all the processes is asked
        (:mod:`~pavi_viz.inference.parallel_posterior`): its draws are numbered as the
        part's elements, not the whole model's."""
        posterior = cls.__new__(cls)
        posterior._build(model, family, None, "none")
        return posterior

    def _build(
        self, model: CompiledModel, family: VariationalFamily, coords: Mapping[str, Sequence] | None,
        correct: Correction,
    ) -> None:
        if list(family.model.latent_names) != list(model.latent_names):
            raise ValueError(
                f"the family was built for a model with latents {family.model.latent_names}, "
                f"not {model.latent_names}"
            )
        clash = [p for p in model.plates.plates if p in RESERVED_DIMS]
        if clash:
            raise ValueError(f"plates may not be called {clash}: the results use these dim names")
        self.model = model
        self.family = family
        self.correct = _checked_correction(correct)
        # (n, chunk_elements, seed, correction), the draws and check, the generator's state after.
        self._last_pool: tuple[tuple[int, int, int, str], tuple[_Whole, ImportanceCheck], Tensor] | None = None
        names = [*model.variables, *(k for k in model.data if k not in model.variables)]  # and covariates
        self._dims = {name: self._dims_of(name) for name in names}
        sizes: dict[str, int] = {}
        for name, dims in self._dims.items():
            sizes.update(zip(dims, self._shape_of(name), strict=True))
        self._sizes = sizes
        coords = dict(coords or {})
        unknown = sorted(set(coords) - set(sizes))
        if unknown:
            raise ValueError(f"coords name unknown dims {unknown}; the dims are {sorted(sizes)}")
        self.coords: dict[str, np.ndarray] = {}
        for dim, size in sizes.items():
            values = np.asarray(coords[dim]) if dim in coords else np.arange(size)
            if values.shape != (size,):
                raise ValueError(f"coords of {dim!r} hold {values.shape} values, expected ({size},)")
            self.coords[dim] = values
        self._plans: dict[tuple, _Plan] = {}

    # -- structure --------------------------------------------------------------
    def _dims_of(self, name: str) -> tuple[str, ...]:
        """A variable's or covariate's dims, without the sample dim."""
        plates = self.model.plates_of(name)
        if name in self.model.variables:
            rank = len(self.model.variables[name].event_shape)
        else:
            rank = self.model.data[name].dim() - len(plates)
        return (*plates, *(f"{name}_dim_{i}" for i in range(rank)))

    def _shape_of(self, name: str) -> tuple[int, ...]:
        """The full-size shape of a variable's or covariate's value, without the sample dim."""
        batch = self.model.plate_shape(name)
        if name in self.model.variables:
            return batch + tuple(self.model.variables[name].event_shape)
        return tuple(self.model.data[name].shape) if name in self.model.data else batch

    def _event_size(self, name: str) -> int:
        return math.prod(self.model.variables[name].event_shape)

    def _per_element(self, plate: str, top: str) -> np.ndarray | int:
        """The number of elements of ``plate`` that one element of the top-level plate
        ``top`` holds (for a plate outside ``top``'s tree: all of them)."""
        info = self.model.plates[plate]
        if plate == top:
            return 1
        if self.model.plates.root(plate) != top:
            return info.size
        members = None
        while info.ragged:  # follow ragged links outwards to top
            members = info.membership if members is None else info.membership[members]
            info = self.model.plates[info.parent]
            if info.name == top:
                counts = torch.bincount(members.cpu(), minlength=self.model.plates[top].size)
                return counts.numpy().astype(np.float64)
        # A regular link: the plate's outer plate is among the variable's plates, so
        # its per-outer size multiplies that one's count. (A ragged plate behind a
        # regular link counts all its members: an overestimate, never an underestimate.)
        return self.model.plates[plate].size

    def _values(self, frame: Frame, names: Sequence[str]) -> int:
        """The numbers one draw of ``names`` holds in ``frame``."""
        return sum(
            math.prod(frame.batch_shape(self.model.plates_of(n))) * self._event_size(n) for n in names
        )

    def _plan(
        self, n: int, chunk_elements: int, observed: bool, whole: bool, share: Share | None = None
    ) -> _Plan:
        """The chunks of ``n`` draws; ``observed``: the observed variables' numbers count
        too; ``whole``: the draws are whole (resampled from a pool) and split by draws only;
        ``share``: the chunks run over the share's elements of its plate alone."""
        _check_counts(n, chunk_elements)
        key = (n, chunk_elements, observed, whole, None if share is None else (share.plate, share.start, share.stop))
        plan = self._plans.get(key)  # (read once: another thread may clear the cache)
        if plan is None:
            if len(self._plans) > 16:
                self._plans.clear()
            plan = self._plans[key] = self._make_plan(n, chunk_elements, observed, whole, share)
        return plan

    def _make_plan(self, n: int, bound: int, observed: bool, whole_draws: bool, share: Share | None) -> _Plan:
        model = self.model
        names = model.latent_names + (model.observed_names if observed else [])
        # Per top-level plate (the share's alone, for a share): the numbers one draw holds
        # for each of its elements, and for the variables outside its tree.
        best: tuple[float, str, np.ndarray, float] | None = None
        for plate in model.plates:
            if plate.parent is not None or (share is not None and plate.name != share.plate):
                continue
            per = np.zeros(plate.size)
            outside = 0.0
            for name in names:
                plates = model.plates_of(name)
                if any(self.model.plates.root(q) == plate.name for q in plates):
                    factor: np.ndarray | int = 1
                    for q in plates:
                        factor = factor * self._per_element(q, plate.name)
                    per = per + factor * self._event_size(name)
                else:
                    outside += math.prod(model.plates[q].size for q in plates) * self._event_size(name)
            total = float(per.sum())
            if best is None or total > best[0]:
                best = (total, plate.name, per, outside)
        whole = model.frame()
        if share is None and (best is None or best[0] == 0 or n * self._values(whole, names) <= bound or whole_draws):
            return self._whole_plan(n, bound, whole, names)
        _, top, per, outside = best
        first_element, end = (0, len(per)) if share is None else (share.start, share.stop)
        worst = float(per[first_element:end].max()) + outside
        group = min(n, max(1, int(bound // worst)))
        budget = bound / group - outside
        cumulative = np.cumsum(per)
        ranges = []
        start = first_element
        while start < end:
            reached = (cumulative[start - 1] if start else 0.0) + budget
            stop = min(max(int(np.searchsorted(cumulative, reached + 1e-9, side="right")), start + 1), end)
            ranges.append((start, stop))
            start = stop
        chunks = []
        for part, (start, stop) in enumerate(ranges):
            indices = torch.arange(start, stop, device=model.device)
            frame = model.frame({top: indices}) if len(ranges) > 1 or share is not None else whole
            values = self._values(frame, names)
            for first in range(0, n, group):
                chunks.append(Chunk(frame, part, slice(first, min(n, first + group)), values))
        if len(ranges) == 1 and share is None:
            return _Plan(tuple(chunks), None, ())
        in_tree = self._tree_of(top)
        return _Plan(tuple(chunks), top, tuple(name for name in model.variables if name not in in_tree))

    def _whole_plan(self, n: int, bound: int, whole: Frame, names: Sequence[str]) -> _Plan:
        values = self._values(whole, names)
        group = min(n, max(1, bound // max(values, 1)))
        chunks = tuple(Chunk(whole, 0, slice(first, min(n, first + group)), values) for first in range(0, n, group))
        return _Plan(chunks, None, ())

    def chunks(
        self, n: int = 1000, chunk_elements: int = CHUNK_ELEMENTS, predictive: bool = False,
        correct: Correction | None = None,
    ) -> Iterator[Chunk]:
        """The chunks that :meth:`sample` and :meth:`summary` (or, with ``predictive``,
        :meth:`predictive` and :meth:`to_datatree`) walk through for ``n`` draws with
        correction ``correct`` (``None``: the posterior's).

        Each chunk's :attr:`Chunk.size` is at most ``chunk_elements``, unless one draw
        of a single element of the chunked plate (with the variables outside it) is
        larger by itself. Draws resampled from an importance pool are whole: their
        chunks split the draws only.
        """
        whole = self._checked(correct) != "none" and self._weighable(n)
        return iter(self._plan(n, chunk_elements, predictive, whole).chunks)

    # -- drawing ------------------------------------------------------------------
    def _walk(
        self, n: int, chunk_elements: int, source: _Source, observed: bool, replicate: int = 0
    ) -> Iterator[_Step]:
        """Walk through ``n`` draws from ``source`` (:meth:`_source`) chunk by chunk.

        Args:
            observed: size the chunks for the observed variables too (their replicates
                or their densities).
            replicate: draw the observed variables given the first ``replicate`` draws.
        """
        share = source.share
        plan = self._plan(n, chunk_elements, observed, source.whole is not None, share)
        model = self.model
        fixed = [name for name in model.latent_names if name in plan.outside]
        held: dict[int, dict[str, Tensor]] = {}
        with torch.no_grad():
            for chunk in plan.chunks:
                known = held.get(chunk.draws.start)
                if share is not None:  # the share's draws outside its plate's tree come with it
                    known = {k: v[chunk.draws] for k, v in share.given.items()} if known is None else known
                if source.whole is not None:
                    values = {name: draws[chunk.draws].to(model.device) for name, draws in source.whole.values.items()}
                    log_q = source.whole.log_q[chunk.draws]
                else:
                    given = None if known is None else {k: v.to(model.device) for k, v in known.items()}
                    draw = self.family.sample(chunk.frame, chunk.particles, given=given, generator=source.generator)
                    values = dict(draw.values)
                    log_q = self._unscaled_log_q(draw, chunk)
                # The variables outside the chunked plate's tree are placed and counted once
                # for each draw: with its first chunk, and in a share by one process only.
                counted = chunk.draws.start not in held and (share is None or share.counts_outside)
                if chunk.draws.start not in held and fixed:
                    # Kept off the device: the other chunks of these draws get them back.
                    held[chunk.draws.start] = {k: values[k].cpu() for k in fixed}
                count = min(chunk.particles, replicate - chunk.draws.start)
                replicated = self._replicate(chunk, values, count, source.generator) if count > 0 else {}
                yield _Step(chunk, values, log_q, replicated, frozenset(() if counted else plan.outside))

    def _unscaled_log_q(self, draw: Draw, chunk: Chunk) -> Tensor:
        """A chunk's share of its draws' log q, shape ``(particles,)``, float64 on the CPU.

        ``draw.log_q`` scales each latent's term by its plates' batch weight (an ELBO's
        unbiased estimate of the whole sum); undone here, so that the chunks of a draw
        add up to its log q (the variables given to a chunk have no term).
        """
        total = torch.zeros(chunk.particles, dtype=torch.float64)
        for name, term in draw.log_q.items():
            total += term.double().cpu() / chunk.frame.weight(self.model.plates_of(name))
        return total

    def _replicate(
        self, chunk: Chunk, values: Mapping[str, Tensor], count: int, generator: torch.Generator | None
    ) -> dict[str, Tensor]:
        """Draws of the observed variables given the chunk's first ``count`` draws of the
        latents, in topological order (an observed variable given the replicated draws
        of its observed parents), shape ``(count, *batch shape, *event shape)``."""
        model = self.model
        context = {**model.batch_data(chunk.frame), **{k: v[:count] for k, v in values.items()}}
        replicated = {}
        with seeded(_next_seed(generator), model.device):  # sample() takes no generator
            for name in model.observed_names:
                dist = model.distribution(name, context, chunk.frame, (count,))
                replicated[name] = context[name] = dist.sample()
        return replicated

    def _log_densities(self, step: _Step, names: Sequence[str]) -> dict[str, Tensor]:
        """``log p`` of each ground variable of ``names`` in the step's chunk given its
        parents' draws (an observed variable at its data, given its observed parents'
        data), shape ``(particles, *batch shape)``: event dims reduced as ``log_prob``
        reduces them."""
        frame, particles = step.chunk.frame, step.chunk.particles
        context = {**self.model.batch_data(frame), **step.values}
        return {
            name: self.model.distribution(name, context, frame, (particles,)).log_prob(context[name]) for name in names
        }

    # -- importance resampling --------------------------------------------------------
    def _checked(self, correct: Correction | None) -> Correction:
        """A call's correction: its own, or the posterior's (``None``)."""
        return self.correct if correct is None else _checked_correction(correct)

    def _pool_size(self, n: int) -> int:
        return max(IMPORTANCE_DRAWS_PER_DRAW * n, IMPORTANCE_POOL)

    def _pool_numbers(self, n: int) -> int:
        """The latent numbers that one pool of whole draws for ``n`` draws holds."""
        return self._pool_size(n) * self._values(self.model.frame(), self.model.latent_names)

    def _weighable(self, n: int) -> bool:
        """Whether ``n`` draws can be resampled from a pool of whole draws: one pool fits
        :data:`IMPORTANCE_NUMBERS`."""
        return self._pool_numbers(n) <= IMPORTANCE_NUMBERS

    def _source(self, n: int, chunk_elements: int, seed: int | None, correct: Correction | None) -> _Source:
        """Where a call's ``n`` draws come from with correction ``correct`` (see the
        module's notes): q chunk by chunk, or whole draws after an importance check.

        Raises:
            ValueError: ``correct="psis"`` where the model is too large to weigh whole draws.
        """
        _check_counts(n, chunk_elements)
        correct = self._checked(correct)
        generator = None if seed is None else torch.Generator(self.model.device).manual_seed(seed)
        if correct == "none" or (correct == "auto" and not self._weighable(n)):
            return _Source(generator)
        if not self._weighable(n):
            raise ValueError(
                f"correct='psis' weighs whole draws of the model, but the pool of {self._pool_size(n):,} draws "
                f"for {n:,} would hold {self._pool_numbers(n):,} latent numbers, more than IMPORTANCE_NUMBERS "
                f"= {IMPORTANCE_NUMBERS:,}: use correct='auto' (q's own draws here) or 'none'"
            )
        whole, check = self._resampled(n, chunk_elements, seed, generator, correct)
        bound = pareto_k_bound(check.draws)
        if correct == "psis" and not check.pareto_k <= bound:
            warnings.warn(
                f"the PSIS-resampled draws are unreliable: the Pareto k of their importance weights, "
                f"{check.pareto_k:.2f}, is above {bound:.2f}, the bound for {check.draws:,} draws "
                "(Vehtari et al., 2024); correct='auto' would return q's own draws",
                stacklevel=3,
            )
        return _Source(generator, check, whole)

    def _resampled(
        self, n: int, chunk_elements: int, seed: int | None, generator: torch.Generator | None, correct: Correction
    ) -> tuple[_Whole, ImportanceCheck]:
        """:meth:`_resample`, or a seeded call's result again for the same ``n``,
        ``seed`` and ``correct``, with ``generator`` left in the state that call left it in."""
        if seed is None:
            return self._resample(n, chunk_elements, generator, correct)
        key = (n, chunk_elements, seed, correct)
        last = self._last_pool  # (read once: another thread may replace it)
        if last is not None and last[0] == key:
            generator.set_state(last[2])
            return last[1]
        result = self._resample(n, chunk_elements, generator, correct)
        self._last_pool = (key, result, generator.get_state())
        return result

    def _resample(
        self, n: int, chunk_elements: int, generator: torch.Generator | None, correct: Correction
    ) -> tuple[_Whole, ImportanceCheck]:
        """``n`` draws of the latents (on the CPU) resampled from a pool of draws of a
        defensive mixture of q (:data:`IMPORTANCE_SPREAD`) by their Pareto smoothed
        importance weights, or (``correct="auto"``, the weights not to be trusted) ``n``
        draws of q itself; and the check that decided. The pool grows by
        :meth:`_pool_size` draws at a time while its effective sample size is below
        :data:`IMPORTANCE_ESS_PER_DRAW` ``* n``, up to :data:`IMPORTANCE_MAX_ROUNDS` times."""
        batch = self._pool_size(n)
        fits = IMPORTANCE_NUMBERS // self._values(self.model.frame(), self.model.latent_names)
        limit = max(batch, min(IMPORTANCE_MAX_ROUNDS * batch, fits))
        log_weights: list[Tensor] = []
        parts: list[_Whole] = []
        pool = 0
        while True:
            parts.append(self._draw_whole(batch, chunk_elements, generator, IMPORTANCE_SPREAD, log_weights))
            pool += batch
            smoothed, k = psis(torch.cat(log_weights).numpy())
            ess = effective_sample_size(smoothed)
            if ess >= IMPORTANCE_ESS_PER_DRAW * n or pool + batch > limit:
                break
        check = ImportanceCheck(k, ess, pool, correct == "psis" or bool(k <= pareto_k_bound(pool)))
        if not check.reweighted:
            return self._draw_whole(n, chunk_elements, generator), check
        chosen = torch.from_numpy(systematic_resample(np.exp(smoothed), n, _uniform(generator)))
        # Shuffled: systematic resampling lists copies of one draw side by side.
        chosen = chosen[torch.randperm(n, generator=generator, device=self.model.device).cpu()]
        return _Whole.cat(parts).take(chosen), check

    def _draw_whole(
        self, n: int, chunk_elements: int, generator: torch.Generator | None, spread: float = 1.0,
        log_weights: list[Tensor] | None = None,
    ) -> _Whole:
        """``n`` whole draws of the latents (on the CPU), in groups of at most
        ``chunk_elements`` numbers, with their log density under the proposal (q, or
        its defensive mixture for ``spread > 1``); with ``log_weights``, their
        importance log weights ``log p - log q`` (float64) are appended to it, group by group."""
        model = self.model
        whole = model.frame()
        group = max(1, chunk_elements // max(self._values(whole, model.latent_names), 1))
        parts: list[_Whole] = []
        with torch.no_grad():
            for first in range(0, n, group):
                draw = self.family.sample(whole, min(group, n - first), generator=generator, spread=spread)
                log_q = sum(draw.log_q.values())
                if log_weights is not None:
                    log_p = model.log_joint_terms(draw.values, frame=whole)
                    log_weights.append((sum(log_p.values()) - log_q).double().cpu())
                parts.append(_Whole({name: value.cpu() for name, value in draw.values.items()}, log_q.double().cpu()))
        return _Whole.cat(parts)

    def importance_check(
        self, n: int = 4000, seed: int | None = None, chunk_elements: int = CHUNK_ELEMENTS,
        correct: Correction | None = None,
    ) -> ImportanceCheck | None:
        """How far q can be trusted: the check that :meth:`sample` and :meth:`summary`
        make for ``n`` draws with the same ``seed`` and ``correct`` (the Pareto k of the
        importance weights of ``IMPORTANCE_DRAWS_PER_DRAW * n`` draws of a defensive
        mixture of q, or a few times more where their effective sample size is small:
        see :meth:`_resample`, :mod:`pavi_viz.inference.importance` and
        :data:`IMPORTANCE_SPREAD`; the same seeded call's pool, when it was the last).
        Where k is at most :func:`~pavi_viz.inference.importance.pareto_k_bound` of
        the draws (0.7 from 2,200 draws on) they resample the draws by those
        weights, which corrects q's bias; above, the draws are q's own (with
        ``correct="psis"``: resampled all the same, with a warning), and k says how
        far to trust them (above 0.7: little).

        ``None`` where no check is made: ``correct="none"``, or (``"auto"``) the model
        too large to weigh whole draws of it (:data:`IMPORTANCE_NUMBERS`).
        """
        return self._source(n, chunk_elements, seed, correct).check

    # -- assembling -----------------------------------------------------------------------
    def _positions(self, frame: Frame, name: str) -> tuple | None:
        """Where a chunk's values of ``name`` go in the full arrays (after the leading dim)."""
        plates = self.model.plates_of(name)
        indices = [frame.indices(p) for p in plates]
        if all(i is None for i in indices):
            return None
        grids = [
            np.arange(self.model.plates[p].size) if i is None else i.cpu().numpy() for p, i in zip(plates, indices)
        ]
        return np.ix_(*grids)

    def _place(self, out: Mapping[str, np.ndarray], frame: Frame, rows: slice, arrays: Mapping[str, Tensor]) -> None:
        """Write a chunk's ``arrays`` (shape ``(draws, *batch shape, ...)``) into the full
        arrays ``out`` (shape ``(N, *full shape, ...)``): at ``rows``, at the chunk's elements."""
        for name, array in arrays.items():
            target = out[name][rows]
            where = self._positions(frame, name)
            if where is None:
                target[...] = array.cpu().numpy()
            else:
                target[(slice(None), *where)] = array.cpu().numpy()

    def _gather(
        self, n: int, chunk_elements: int, source: _Source, latents: Sequence[str], replicate: int = 0,
        stats: bool = False, log_likelihood: bool = False,
    ) -> Gathered:
        """Walk through ``n`` draws from ``source`` and gather, full size: the draws of
        ``latents``, the observed variables' replicates given the first ``replicate``
        draws and, with ``stats``, each draw's ``log p(x, theta)`` and log proposal
        density, with ``log_likelihood`` each observed ground variable's ``log p(x_i | theta)``."""
        model = self.model
        dtype = _numpy_dtype(model.dtype)
        observed = model.observed_names
        got = Gathered(
            latents={name: np.empty((n, *self._shape_of(name)), dtype) for name in latents},
            replicated={name: np.empty((replicate, *self._shape_of(name)), dtype) for name in observed if replicate},
            log_likelihood={name: np.empty((n, *model.plate_shape(name)), dtype) for name in observed if log_likelihood},
            lp=np.zeros(n) if stats else None,
            log_q=np.zeros(n) if stats else None,
        )
        weigh = stats or log_likelihood
        names = list(model.variables) if stats else observed
        with contextlib.closing(self._walk(n, chunk_elements, source, weigh or replicate > 0, replicate)) as walk:
            for step in walk:
                frame, rows = step.chunk.frame, step.chunk.draws
                self._place(got.latents, frame, rows, step.fresh({name: step.values[name] for name in latents}))
                if step.replicated:
                    count = next(iter(step.replicated.values())).shape[0]
                    self._place(got.replicated, frame, slice(rows.start, rows.start + count), step.fresh(step.replicated))
                if not weigh:
                    continue
                densities = step.fresh(self._log_densities(step, names))
                if log_likelihood:
                    self._place(got.log_likelihood, frame, rows, {k: v for k, v in densities.items() if k in observed})
                if stats:
                    got.lp[rows] += sum(sum_over_plates(d, 1).double().cpu().numpy() for d in densities.values())
                    got.log_q[rows] += step.log_q.numpy()
        return got

    def _dataset(
        self, arrays: Mapping[str, np.ndarray], lead: tuple[str, ...], lead_coords: Mapping[str, Any]
    ) -> xr.Dataset:
        variables = {name: ((*lead, *self._dims[name]), array) for name, array in arrays.items()}
        used = {d for name in arrays for d in self._dims[name]}
        coords = {**lead_coords, **{d: self.coords[d] for d in self._dims_order() if d in used}}
        return xr.Dataset(variables, coords=coords, attrs=self._attrs())

    def _dims_order(self) -> list[str]:
        return list(self._sizes)

    def _attrs(self) -> dict[str, str]:
        return {"model": self.model.name, "family": self.family.name, "created_by": "pavi_viz"}

    def _names(self, variables: Sequence[str] | None, allowed: Sequence[str], kind: str) -> list[str]:
        if variables is None:
            return list(allowed)
        if isinstance(variables, str):
            variables = [variables]
        unknown = [v for v in variables if v not in allowed]
        if unknown:
            raise ValueError(f"{unknown} are not {kind} variables of the model; choose among {list(allowed)}")
        return [v for v in allowed if v in variables]

    def sample(
        self,
        n: int = 1000,
        chunk_elements: int = CHUNK_ELEMENTS,
        seed: int | None = None,
        variables: Sequence[str] | None = None,
        correct: Correction | None = None,
    ) -> xr.Dataset:
        """``n`` joint draws of the latent variables.

        Args:
            n: the number of draws.
            chunk_elements: bounds the numbers drawn at once in torch (see :meth:`chunks`);
                the result holds all the draws, in numpy.
            seed: makes the draws reproducible, also while other threads draw (see
                the module's notes on random numbers); ``None``: torch's global generator.
            variables: the latents to return (all by default; all are drawn anyway).
            correct: ``"auto"``, ``"psis"`` or ``"none"`` (:data:`Correction`; see the
                module's notes); ``None``: the posterior's.

        Returns:
            A Dataset with one data variable per latent, dims
            ``("sample", *plates, *event dims)``, and the coords of every dim; its
            attrs hold the importance check when one was made (as :meth:`summary`'s).

        Raises:
            ValueError: ``correct="psis"`` where the model is too large to weigh
                whole draws of it (:data:`IMPORTANCE_NUMBERS`).
        """
        names = self._names(variables, self.model.latent_names, "latent")
        source = self._source(n, chunk_elements, seed, correct)
        got = self._gather(n, chunk_elements, source, names)
        return self._dataset(got.latents, ("sample",), {"sample": np.arange(n)}).assign_attrs(_check_attrs(source.check))

    def predictive(
        self,
        n: int = 100,
        chunk_elements: int = CHUNK_ELEMENTS,
        seed: int | None = None,
        latents: bool = False,
        correct: Correction | None = None,
    ) -> xr.Dataset:
        """Posterior predictive draws of the observed variables.

        Each draw takes a joint posterior draw of the latents, then draws the observed
        variables from the model given it (in topological order, an observed variable
        given the replicated draws of its observed parents).

        Args:
            n: the number of draws.
            chunk_elements: as for :meth:`sample` (the observed values count too).
            seed: makes the draws reproducible, as for :meth:`sample`.
            latents: also return the latent draws the predictive draws were made from.
            correct: how the latent draws are corrected, as for :meth:`sample`.

        Returns:
            A Dataset with dims ``("sample", *plates, *event dims)`` per variable; its
            attrs hold the importance check when one was made.
        """
        source = self._source(n, chunk_elements, seed, correct)
        got = self._gather(n, chunk_elements, source, self.model.latent_names if latents else [], replicate=n)
        arrays = {**got.replicated, **got.latents}
        return self._dataset(arrays, ("sample",), {"sample": np.arange(n)}).assign_attrs(_check_attrs(source.check))

    def observed_data(self) -> xr.Dataset:
        """The observed variables' data, dims ``(*plates, *event dims)``."""
        arrays = {
            name: self.model.data[name].cpu().numpy() for name in self.model.observed_names if name in self.model.data
        }
        return self._dataset(arrays, (), {})

    def truth(self) -> xr.Dataset:
        """The true values of the latents a simulated dataset was drawn with (the
        model's ``truth``), dims ``(*plates, *event dims)``; empty when there is none."""
        arrays = {name: value.cpu().numpy() for name, value in (self.model.truth or {}).items() if name in self._dims}
        return self._dataset(arrays, (), {})

    def constant_data(self) -> xr.Dataset:
        """The covariates' data, dims ``(*plates, *event dims)``."""
        arrays = {
            name: value.cpu().numpy() for name, value in self.model.data.items() if name not in self.model.variables
        }
        return self._dataset(arrays, (), {})

    # -- summaries ------------------------------------------------------------------
    def summary(
        self,
        n: int = 1000,
        quantiles: Sequence[float] = (0.05, 0.5, 0.95),
        chunk_elements: int = CHUNK_ELEMENTS,
        variables: Sequence[str] | None = None,
        seed: int | None = None,
        correct: Correction | None = None,
    ) -> xr.Dataset:
        """Mean, standard deviation and quantiles of every ground latent variable.

        Computed from ``n`` joint draws, chunk by chunk: only the statistics are kept,
        never all the draws of all the elements.

        Args:
            n: the number of draws the statistics are estimated from.
            quantiles: the quantile levels, in [0, 1] (linear interpolation, as numpy's
                default).
            chunk_elements: bounds the numbers drawn at once (see :meth:`chunks`).
            variables: the latents to summarise (all by default).
            seed: makes the draws reproducible, as for :meth:`sample`; with the same
                ``n``, ``chunk_elements``, seed and ``correct``, the statistics are
                those of :meth:`sample`'s draws.
            correct: how the draws are corrected, as for :meth:`sample`.

        Returns:
            A Dataset with one data variable per latent, dims
            ``("stat", *plates, *event dims)``. The ``stat`` coord holds
            ``"mean"``, ``"sd"`` (ddof=1) and one label per quantile
            (``"5%"``, ``"50%"``, ``"95%"``); a ``quantile`` coord along it holds the
            levels (NaN for mean and sd). Select with ``summary["alpha"].sel(stat="mean")``.
            Its attrs: ``draws`` (``n``) and, when an importance check was made
            (:meth:`importance_check`), ``pareto_k`` (float), ``pareto_k_draws`` (int:
            the draws weighed) and ``psis_resampled`` (int 1 or 0: whether the draws
            were resampled by their weights).
        """
        names = self._names(variables, self.model.latent_names, "latent")
        levels, labels = _levels_and_labels(quantiles)
        dtype = _numpy_dtype(self.model.dtype)
        out = {name: np.empty((len(labels), *self._shape_of(name)), dtype=dtype) for name in names}
        pending: dict[str, list[Tensor]] = {}
        pending_part: Chunk | None = None

        def flush() -> None:
            if pending_part is None:
                return
            for name, pieces in pending.items():
                draws = pieces[0] if len(pieces) == 1 else torch.cat([p.cpu() for p in pieces])
                stats = _stats(draws, levels).cpu().numpy()
                where = self._positions(pending_part.frame, name)
                if where is None:
                    out[name][...] = stats
                else:
                    out[name][(slice(None), *where)] = stats
            pending.clear()

        source = self._source(n, chunk_elements, seed, correct)
        with contextlib.closing(self._walk(n, chunk_elements, source, observed=False)) as walk:
            for step in walk:
                chunk = step.chunk
                if pending_part is not None and chunk.part != pending_part.part:
                    flush()
                pending_part = chunk
                split = chunk.particles < n
                for name, draws in step.fresh({name: step.values[name] for name in names}).items():
                    # Draws split in groups are gathered on the CPU, one element range at a time.
                    pending.setdefault(name, []).append(draws.cpu() if split else draws)
        flush()
        lead = {"stat": labels, "quantile": ("stat", [math.nan, math.nan, *levels])}
        return self._dataset(out, ("stat",), lead).assign_attrs(draws=n, **_check_attrs(source.check))

    def summary_of(self, tree: xr.DataTree, quantiles: Sequence[float] = (0.05, 0.5, 0.95)) -> xr.Dataset:
        """:meth:`summary`'s statistics of the draws in ``tree``'s posterior group (a tree of
        :meth:`to_datatree`, or of a data-parallel run's processes:
        :mod:`~pavi_viz.inference.parallel_posterior`), without drawing again: the same
        Dataset, its attrs the tree's importance check."""
        levels, labels = _levels_and_labels(quantiles)
        draws = tree["posterior"]
        out = {name: _stats(torch.from_numpy(np.ascontiguousarray(draws[name].values[0])), levels).numpy()
               for name in self.model.latent_names}
        checked = {k: v for k, v in tree["sample_stats"].attrs.items() if k in ("pareto_k", "pareto_k_draws",
                                                                             "psis_resampled")}
        lead = {"stat": labels, "quantile": ("stat", [math.nan, math.nan, *levels])}
        return self._dataset(out, ("stat",), lead).assign_attrs(draws=draws.sizes["draw"], **checked)

    # -- export -----------------------------------------------------------------------
    def resamples(self, n: int, correct: Correction | None = None) -> bool:
        """Whether ``n`` draws with correction ``correct`` (``None``: the posterior's) are
        taken from an importance pool of whole draws (see the module's notes), rather
        than drawn from q chunk by chunk."""
        correct = self._checked(correct)
        return correct == "psis" or (correct == "auto" and self._weighable(n))

    def draw_share(
        self, n: int, share: Share, seed: int | None = None, predictive: int | None = 100,
        log_likelihood: bool = True, chunk_elements: int = CHUNK_ELEMENTS,
    ) -> Gathered:
        """This process's ``share`` of ``n`` draws of q that the processes of a
        data-parallel run make together (:mod:`~pavi_viz.inference.parallel_posterior`):
        the latents' draws of its elements, their log likelihood (unless
        ``log_likelihood`` is False) and the replicates of the observed variables given
        the first ``min(predictive, n)`` draws (none for ``None``), and the draws' log p
        and log q summed over its elements, as :meth:`to_datatree` gathers them. The
        variables outside the share's plate's tree are given (``share.given``), and
        placed and counted where ``share.counts_outside`` says; their log q is not in
        ``log_q``. The noise comes from a generator seeded by ``seed``."""
        generator = None if seed is None else torch.Generator(self.model.device).manual_seed(seed)
        replicate = 0 if predictive is None else min(predictive, n)
        return self._gather(n, chunk_elements, _Source(generator, share=share), self.model.latent_names, replicate,
                            stats=True, log_likelihood=log_likelihood)

    def cut_to_share(self, got: Gathered, share: Share) -> Gathered:
        """A :meth:`draw_share`'s arrays of the variables in the share's plate's tree, cut
        to its elements (what another process needs of it: :meth:`add_share`)."""
        frame = self._share_frame(share.plate, share.start, share.stop)
        in_tree = self._tree_of(share.plate)
        whole = share.start == 0 and share.stop == self.model.plates[share.plate].size  # a part's share: all of it

        def cut(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {name: array if whole else array[(slice(None), *self._positions(frame, name))]
                    for name, array in arrays.items() if name in in_tree}

        return Gathered(cut(got.latents), cut(got.replicated), cut(got.log_likelihood), got.lp, got.log_q)

    def add_share(self, into: Gathered, share: Gathered, plate: str, start: int, stop: int) -> None:
        """Place another process's share (:meth:`cut_to_share`: the elements ``start`` to
        ``stop - 1`` of top-level ``plate`` of this posterior's model) into ``into``, this
        model's full-size arrays, and add its draws' log p and log q to ``into``'s."""
        frame = self._share_frame(plate, start, stop)
        for mine, theirs in ((into.latents, share.latents), (into.log_likelihood, share.log_likelihood),
                             (into.replicated, share.replicated)):
            self._place(mine, frame, slice(None), {name: torch.from_numpy(array) for name, array in theirs.items()})
        into.lp[:] += share.lp
        into.log_q[:] += share.log_q

    def _share_frame(self, plate: str, start: int, stop: int) -> Frame:
        return self.model.frame({plate: torch.arange(start, stop, device=self.model.device)})

    def _tree_of(self, plate: str) -> set[str]:
        """The variables in top-level ``plate``'s tree (in it, or in a plate nested in it)."""
        return {name for name in self.model.variables
                if any(self.model.plates.root(q) == plate for q in self.model.plates_of(name))}

    def tree(self, got: Gathered, check: ImportanceCheck | None = None, left_out: str | None = None) -> xr.DataTree:
        """:meth:`to_datatree`'s ArviZ tree of draws gathered otherwise (several
        processes' :meth:`draw_share`, put together by :meth:`add_share`)."""
        return self._tree(got, check, left_out)

    def to_datatree(
        self,
        n: int = 1000,
        predictive: int | None = 100,
        chunk_elements: int = CHUNK_ELEMENTS,
        seed: int | None = None,
        correct: Correction | None = None,
        log_likelihood: bool = True,
    ) -> xr.DataTree:
        """The posterior as an ArviZ ``xarray.DataTree`` (``arviz_base.from_dict``), as
        ``arviz_stats.loo`` and ArviZ's plots read it.

        Groups (one chain; ``draw`` numbers the ``n`` draws):

        * ``posterior``: the latents' draws, dims ``("chain", "draw", *plates, *event dims)``
          (corrected as ``correct`` says, as for :meth:`sample`);
        * ``log_likelihood`` (unless ``log_likelihood`` is False): for each observed
          variable, ``log p(x_i | theta_s)`` of each ground variable ``x_i`` at each
          draw ``theta_s`` of the posterior group, dims ``("chain", "draw", *plates)``
          (event dims reduced as the distribution's ``log_prob`` reduces them); an
          observed variable whose parents are observed is conditioned on their data.
          Left out, with a warning and a note in the tree's attrs
          (``log_likelihood_left_out``), where it would hold more than
          :data:`LOG_LIKELIHOOD_NUMBERS` numbers;
        * ``sample_stats``: ``lp``, ``log p(x, theta_s)`` of each draw (of the
          constrained values, as ``model.log_joint`` computes it), and ``log_q``, the
          log density of each draw under the proposal it was drawn from: q's for q's
          own draws; for PSIS-resampled draws, that of the defensive mixture of q that
          drew the importance pool (:data:`IMPORTANCE_SPREAD`), so that ``lp - log_q``
          are their raw importance log weights. Both dims ``("chain", "draw")``; the
          attrs hold the importance check when one was made (``pareto_k``,
          ``pareto_k_draws``, ``psis_resampled``: as :meth:`summary`'s);
        * ``posterior_predictive`` (unless ``predictive`` is None): the observed
          variables replicated given the first ``min(predictive, n)`` draws of the
          posterior group (``predictive >= n`` gives the tree that
          ``arviz_stats.loo_pit`` reads: its draws match the log likelihood's);
        * ``observed_data`` and ``constant_data`` (the covariates, when the model has any).

        Large models are walked chunk by chunk (:meth:`chunks`), the log likelihood
        and the stats too.

        Needs arviz-base (the optional extra ``pavi-viz[export]``).

        Raises:
            ValueError: ``predictive`` below 1, or ``correct="psis"`` where the model
                is too large to weigh whole draws of it.
        """
        try:
            import arviz_base  # noqa: F401 - needed by _tree: fail before drawing
        except ImportError as err:
            raise ImportError(f"Posterior.to_datatree needs arviz-base: {_EXTRA_HINT}") from err
        if predictive is not None and predictive < 1:
            raise ValueError(f"predictive must be at least 1 (or None: no predictive draws), not {predictive}")
        too_large = self.log_likelihood_left_out(n) if log_likelihood else None
        if too_large:
            warnings.warn(f"to_datatree leaves the log_likelihood group out: {too_large}", stacklevel=2)
        source = self._source(n, chunk_elements, seed, correct)
        replicate = 0 if predictive is None else min(predictive, n)
        got = self._gather(n, chunk_elements, source, self.model.latent_names, replicate, stats=True,
                           log_likelihood=log_likelihood and not too_large)
        return self._tree(got, source.check, too_large)

    def _tree(self, got: Gathered, check: ImportanceCheck | None, left_out: str | None) -> xr.DataTree:
        """:meth:`to_datatree`'s tree of gathered draws, made after ``check`` (``None``:
        none), the log likelihood left out for the reason ``left_out`` (``None``: kept)."""
        import arviz_base

        attrs = self._attrs()
        root = dict(attrs)
        if left_out:
            root["log_likelihood_left_out"] = left_out
        sampled = {"posterior": got.latents, "log_likelihood": got.log_likelihood, "posterior_predictive": got.replicated}
        groups = {group: {k: v[None] for k, v in arrays.items()} for group, arrays in sampled.items() if arrays}
        constant = {"observed_data": self.observed_data(), "constant_data": self.constant_data()}
        groups.update({group: {k: v.values for k, v in data.items()} for group, data in constant.items() if data})
        tree = arviz_base.from_dict(
            groups,
            coords={d: self.coords[d] for d in self._dims_order()},
            dims={k: list(self._dims[k]) for group in groups.values() for k in group},
            attrs={"/": root, **{g: dict(attrs) for g in groups}},
        )
        # Apart from from_dict's dims: a model variable may also be called lp or log_q.
        stats = arviz_base.dict_to_dataset(
            {"lp": got.lp[None], "log_q": got.log_q[None]}, attrs={**attrs, **_check_attrs(check)})
        stats["lp"].attrs["description"] = "log p(x, theta) of the draw"
        stats["log_q"].attrs["description"] = (
            "log density of the draw under its proposal: q, or for PSIS-resampled draws the defensive mixture of q "
            "that drew the importance pool")
        tree["sample_stats"] = xr.DataTree(stats)
        return tree

    def log_likelihood_left_out(self, n: int) -> str | None:
        """Why :meth:`to_datatree` leaves the log_likelihood group of ``n`` draws out (too
        large to make), or None."""
        elements = sum(math.prod(self.model.plate_shape(name)) for name in self.model.observed_names)
        if n * elements <= LOG_LIKELIHOOD_NUMBERS:
            return None
        return (f"{n:,} draws x {elements:,} observed elements = {n * elements:,} numbers, more than "
                f"LOG_LIKELIHOOD_NUMBERS = {LOG_LIKELIHOOD_NUMBERS:,}: ask for fewer draws")

    def to_netcdf(
        self,
        path: str | Path,
        n: int = 1000,
        predictive: int | None = 100,
        chunk_elements: int = CHUNK_ELEMENTS,
        seed: int | None = None,
        correct: Correction | None = None,
        log_likelihood: bool = True,
        engine: str | None = None,
    ) -> None:
        """Write :meth:`to_datatree` to a NetCDF-4 file, one HDF5 group per ArviZ group
        (``xarray.DataTree.to_netcdf``); read it back with :func:`load_netcdf` or
        ``xarray.open_datatree``.

        Args:
            engine: an xarray NetCDF engine; by default ``h5netcdf``, else ``netcdf4``
                (the optional extra ``pavi-viz[export]`` installs h5netcdf).
            The others: as for :meth:`to_datatree`.
        """
        engine = engine or netcdf_engine()
        tree = self.to_datatree(n, predictive, chunk_elements, seed, correct, log_likelihood)
        tree.to_netcdf(path, engine=engine)


def load_netcdf(path: str | Path, engine: str | None = None) -> xr.DataTree:
    """The ``DataTree`` that :meth:`Posterior.to_netcdf` wrote, read fully into memory
    (the file is closed).

    Files written by pavi_viz 0.1's ``to_netcdf`` hold one flat Dataset of draws with
    dims ``("sample", *plates, *event dims)``: they are read as a tree whose
    ``posterior`` group holds those draws with dims ``("chain", "draw", ...)``, one
    chain and ``draw`` the ``sample`` index (its attrs the file's, at the root too).
    """
    with xr.open_datatree(path, engine=engine or netcdf_engine()) as tree:
        tree.load()
    if tree.children or "sample" not in tree.dims:
        return tree
    flat = tree.to_dataset()
    posterior = flat.rename({"sample": "draw"}).expand_dims(chain=[0])
    old = xr.DataTree.from_dict({"posterior": posterior})
    old.attrs = dict(flat.attrs)
    return old


def netcdf_engine() -> str:
    """The NetCDF engine files are written with: the first of :data:`NETCDF_ENGINES` installed."""
    import importlib.util

    for engine in NETCDF_ENGINES:
        if importlib.util.find_spec(engine.replace("netcdf4", "netCDF4")) is not None:
            return engine
    raise ImportError(f"writing NetCDF files needs h5netcdf (or netCDF4): {_EXTRA_HINT}")


def _check_counts(n: int, chunk_elements: int) -> None:
    if n < 1:
        raise ValueError(f"the number of draws must be at least 1, not {n}")
    if chunk_elements < 1:
        raise ValueError(f"chunk_elements must be at least 1, not {chunk_elements}")


def _checked_correction(correct: str) -> Correction:
    if correct not in CORRECTIONS:
        raise ValueError(f"correct must be one of {', '.join(map(repr, CORRECTIONS))}, not {correct!r}")
    return correct  # type: ignore[return-value]


def _check_attrs(check: ImportanceCheck | None) -> dict[str, float | int]:
    """An importance check as attrs that NetCDF stores (no bools): ``pareto_k``,
    ``pareto_k_draws`` and ``psis_resampled`` (1 or 0); none without a check."""
    if check is None:
        return {}
    return {"pareto_k": float(check.pareto_k), "pareto_k_draws": int(check.draws),
            "psis_resampled": int(check.reweighted)}


def _uniform(generator: torch.Generator | None) -> float:
    """One uniform number in [0, 1) from ``generator`` (``None``: torch's global one)."""
    return float(torch.rand((), generator=generator, device="cpu" if generator is None else generator.device))


def _next_seed(generator: torch.Generator | None) -> int | None:
    """A seed for torch's global generator drawn from ``generator`` (``None`` for none)."""
    if generator is None:
        return None
    return int(torch.randint(2**62, (), generator=generator, device=generator.device))


def _stats(draws: Tensor, levels: Sequence[float]) -> Tensor:
    """Mean, sd (ddof=1) and quantiles along dim 0, stacked along a new dim 0."""
    n = draws.shape[0]
    mean = draws.mean(0)
    sd = draws.std(0, correction=1) if n > 1 else torch.full_like(mean, math.nan)
    rows = [mean, sd]
    if levels:
        ordered = draws.sort(0).values
        position = torch.tensor(levels, dtype=torch.float64) * (n - 1)
        low = position.floor().long()
        high = position.ceil().long()
        fraction = (position - low).to(draws.dtype).to(draws.device)
        shape = (-1,) + (1,) * (draws.dim() - 1)
        below = ordered[low.to(draws.device)]
        above = ordered[high.to(draws.device)]
        rows += list(below + fraction.view(shape) * (above - below))
    return torch.stack(rows)


def _levels_and_labels(quantiles: Sequence[float]) -> tuple[list[float], list[str]]:
    """A summary's quantile levels, and its stats' labels (``"mean"``, ``"sd"``, ``"5%"``...).

    Raises:
        ValueError: a level outside [0, 1], or two the same.
    """
    levels = [float(q) for q in quantiles]
    if any(not 0.0 <= q <= 1.0 for q in levels):
        raise ValueError(f"quantiles must lie in [0, 1], not {levels}")
    labels = ["mean", "sd", *(_quantile_label(q) for q in levels)]
    if len(set(labels)) != len(labels):
        raise ValueError(f"quantiles must be distinct, not {levels}")
    return levels, labels


def _quantile_label(level: float) -> str:
    return f"{100 * level:g}%"


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return torch.empty((), dtype=dtype).numpy().dtype
