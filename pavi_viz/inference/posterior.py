"""Posterior draws and summaries of a fitted family, as xarray objects.

:class:`Posterior` turns a variational family into what users and dashboards read:

* :meth:`Posterior.sample`: an :class:`xarray.Dataset` of joint draws, one data
  variable per latent with dims ``("sample", *plates, *event dims)``; event dims are
  named ``f"{variable}_dim_{i}"``;
* :meth:`Posterior.summary`: mean, sd and quantiles of every ground variable,
  without ever holding all the draws;
* :meth:`Posterior.predictive`: posterior predictive draws of the observed variables;
  :meth:`Posterior.observed_data` the data itself;
* :meth:`Posterior.to_datatree`: an ArviZ ``DataTree`` (optional extra
  ``pavi-viz[export]``), and :meth:`Posterior.to_netcdf` / :func:`load_netcdf`.

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

**Importance resampling.** Where one pool of ``4 n`` whole draws of the model's latents
fits :data:`IMPORTANCE_NUMBERS` (they are kept on the CPU), the ``n`` draws of every
method above are resampled from that pool by their Pareto smoothed importance weights
when the weights' Pareto k allows it, which corrects q's bias; otherwise they are q's
own. The pool is drawn from a defensive mixture of q, which reaches the tails a
reverse-KL fit leaves out: about half of its draws take the global latents from a
wider q, and about half take each funnel's ground variables (a location-scale prior
with a drawn scale) from that prior given the draws so far, which holds them to the
funnel's neck (``VariationalFamily.sample``'s ``spread``;
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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from pavi_viz.inference.families.base import VariationalFamily
from pavi_viz.inference.importance import (
    ImportanceCheck,
    effective_sample_size,
    pareto_k_bound,
    psis,
    systematic_resample,
)
from pavi_viz.model.compiled import CompiledModel, seeded
from pavi_viz.model.plates import Frame

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
    fixed: tuple[str, ...]  # latents drawn with the first range and given to the others


class Posterior:
    """Draws, summaries and exports of a variational family's posterior.

    Args:
        model: the compiled model the family was built for.
        family: the (fitted) variational family.
        coords: coordinate values by dim name: a plate's name (county names, subject
            ids; one per element, or per outer element's member for a regularly
            nested plate) or an event dim (``"beta_dim_0": ["uranium", "floor"]``).
            Dims left out are numbered from 0.
        importance: correct q's draws by importance resampling where that can be
            trusted (see :meth:`importance_check`); ``False``: q's draws as they are.

    The seeded calls share their importance pool: the last one is kept for the next
    call with the same number of draws and seed (``summary``, then ``importance_check``
    and ``sample``: one pool for all). Make a new ``Posterior`` once the family has
    trained further.
    """

    def __init__(
        self,
        model: CompiledModel,
        family: VariationalFamily,
        coords: Mapping[str, Sequence] | None = None,
        importance: bool = True,
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
        self.importance = importance
        # (n, chunk_elements, seed), the resampled draws and check, the generator's state after.
        self._last_pool: tuple[tuple[int, int, int], tuple[dict[str, Tensor], ImportanceCheck], Tensor] | None = None
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
        self._plans: dict[tuple[int, int, bool], _Plan] = {}

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

    def _plan(self, n: int, chunk_elements: int, observed: bool) -> _Plan:
        if n < 1:
            raise ValueError(f"the number of draws must be at least 1, not {n}")
        if chunk_elements < 1:
            raise ValueError(f"chunk_elements must be at least 1, not {chunk_elements}")
        key = (n, chunk_elements, observed)
        plan = self._plans.get(key)  # (read once: another thread may clear the cache)
        if plan is None:
            if len(self._plans) > 16:
                self._plans.clear()
            plan = self._plans[key] = self._make_plan(n, chunk_elements, observed)
        return plan

    def _make_plan(self, n: int, bound: int, observed: bool) -> _Plan:
        model = self.model
        names = model.latent_names + (model.observed_names if observed else [])
        # Per top-level plate: the numbers one draw holds for each of its elements, and
        # for the variables outside its tree.
        best: tuple[float, str, np.ndarray, float] | None = None
        for plate in model.plates:
            if plate.parent is not None:
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
        # Importance resampling draws whole joint draws: the chunks take their share.
        if best is None or best[0] == 0 or n * self._values(whole, names) <= bound or self._reweighable(n):
            return self._whole_plan(n, bound, whole, names)
        _, top, per, outside = best
        worst = float(per.max()) + outside
        group = min(n, max(1, int(bound // worst)))
        budget = bound / group - outside
        cumulative = np.cumsum(per)
        ranges = []
        start = 0
        while start < len(per):
            reached = (cumulative[start - 1] if start else 0.0) + budget
            stop = max(int(np.searchsorted(cumulative, reached + 1e-9, side="right")), start + 1)
            ranges.append((start, stop))
            start = stop
        chunks = []
        for part, (start, stop) in enumerate(ranges):
            indices = torch.arange(start, stop, device=model.device)
            frame = model.frame({top: indices}) if len(ranges) > 1 else whole
            values = self._values(frame, names)
            for first in range(0, n, group):
                chunks.append(Chunk(frame, part, slice(first, min(n, first + group)), values))
        fixed = tuple(
            name for name in model.latent_names if not any(self.model.plates.root(q) == top for q in model.plates_of(name))
        )
        return _Plan(tuple(chunks), top if len(ranges) > 1 else None, fixed if len(ranges) > 1 else ())

    def _whole_plan(self, n: int, bound: int, whole: Frame, names: Sequence[str]) -> _Plan:
        values = self._values(whole, names)
        group = min(n, max(1, bound // max(values, 1)))
        chunks = tuple(Chunk(whole, 0, slice(first, min(n, first + group)), values) for first in range(0, n, group))
        return _Plan(chunks, None, ())

    def chunks(self, n: int = 1000, chunk_elements: int = CHUNK_ELEMENTS, predictive: bool = False) -> Iterator[Chunk]:
        """The chunks that :meth:`sample` and :meth:`summary` (or, with ``predictive``,
        :meth:`predictive`) walk through for ``n`` draws.

        Each chunk's :attr:`Chunk.size` is at most ``chunk_elements``, unless one draw
        of a single element of the chunked plate (with the variables outside it) is
        larger by itself.
        """
        return iter(self._plan(n, chunk_elements, predictive).chunks)

    # -- drawing ------------------------------------------------------------------
    def _walk(
        self, n: int, chunk_elements: int, seed: int | None, observed: bool
    ) -> Iterator[tuple[Chunk, dict[str, Tensor], bool]]:
        """Draw chunk by chunk; yields each chunk, its draws (on the model's device) and
        whether the fixed (global) variables were drawn in it (rather than given)."""
        plan = self._plan(n, chunk_elements, observed)
        model = self.model
        generator = None if seed is None else torch.Generator(model.device).manual_seed(seed)
        fixed: dict[int, dict[str, Tensor]] = {}
        resampled = self._resampled(n, chunk_elements, seed, generator)[0] if self._reweighable(n) else None
        with torch.no_grad():
            for chunk in plan.chunks:
                if resampled is not None:
                    values = {name: draws[chunk.draws].to(model.device) for name, draws in resampled.items()}
                    known = None
                else:
                    known = fixed.get(chunk.draws.start)
                    given = None if known is None else {k: v.to(model.device) for k, v in known.items()}
                    draw = self.family.sample(chunk.frame, chunk.particles, given=given, generator=generator)
                    values = dict(draw.values)
                if known is None and plan.fixed:
                    # Kept off the device: the other chunks of these draws get them back.
                    fixed[chunk.draws.start] = {k: values[k].cpu() for k in plan.fixed}
                if observed:
                    context = {**model.batch_data(chunk.frame), **values}
                    with seeded(_next_seed(generator), model.device):  # sample() takes no generator
                        for name in model.observed_names:
                            dist = model.distribution(name, context, chunk.frame, (chunk.particles,))
                            values[name] = context[name] = dist.sample()
                yield chunk, values, known is None

    # -- importance resampling --------------------------------------------------------
    def _pool_size(self, n: int) -> int:
        return max(IMPORTANCE_DRAWS_PER_DRAW * n, IMPORTANCE_POOL)

    def _reweighable(self, n: int) -> bool:
        """Whether draws are corrected by importance resampling: asked for, and the
        whole model's latents of a pool of draws fit :data:`IMPORTANCE_NUMBERS`."""
        whole = self.model.frame()
        return self.importance and self._pool_size(n) * self._values(whole, self.model.latent_names) <= IMPORTANCE_NUMBERS

    def _resampled(
        self, n: int, chunk_elements: int, seed: int | None, generator: torch.Generator | None
    ) -> tuple[dict[str, Tensor], ImportanceCheck]:
        """:meth:`_resample`, or a seeded call's result again for the same ``n`` and
        ``seed``, with ``generator`` left in the state that call left it in."""
        if seed is None:
            return self._resample(n, chunk_elements, generator)
        key = (n, chunk_elements, seed)
        last = self._last_pool  # (read once: another thread may replace it)
        if last is not None and last[0] == key:
            generator.set_state(last[2])
            return last[1]
        result = self._resample(n, chunk_elements, generator)
        self._last_pool = (key, result, generator.get_state())
        return result

    def _resample(
        self, n: int, chunk_elements: int, generator: torch.Generator | None
    ) -> tuple[dict[str, Tensor], ImportanceCheck]:
        """``n`` draws of the latents (on the CPU) resampled from a pool of draws of a
        defensive mixture of q (:data:`IMPORTANCE_SPREAD`) by their Pareto smoothed
        importance weights, or ``n`` draws of q itself when the weights cannot be
        trusted; and the check that decided. The pool grows by
        :meth:`_pool_size` draws at a time while its effective sample size is below
        :data:`IMPORTANCE_ESS_PER_DRAW` ``* n``, up to :data:`IMPORTANCE_MAX_ROUNDS` times."""
        batch = self._pool_size(n)
        fits = IMPORTANCE_NUMBERS // self._values(self.model.frame(), self.model.latent_names)
        limit = max(batch, min(IMPORTANCE_MAX_ROUNDS * batch, fits))
        log_weights: list[Tensor] = []
        parts: list[dict[str, Tensor]] = []
        pool = 0
        while True:
            parts.append(self._draw_whole(batch, chunk_elements, generator, IMPORTANCE_SPREAD, log_weights))
            pool += batch
            smoothed, k = psis(torch.cat(log_weights).numpy())
            ess = effective_sample_size(smoothed)
            if ess >= IMPORTANCE_ESS_PER_DRAW * n or pool + batch > limit:
                break
        pooled = {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
        check = ImportanceCheck(k, ess, pool, bool(k <= pareto_k_bound(pool)))
        if not check.reweighted:
            return self._draw_whole(n, chunk_elements, generator), check
        chosen = torch.from_numpy(systematic_resample(np.exp(smoothed), n, _uniform(generator)))
        # Shuffled: systematic resampling lists copies of one draw side by side.
        chosen = chosen[torch.randperm(n, generator=generator, device=self.model.device).cpu()]
        return {name: draws[chosen] for name, draws in pooled.items()}, check

    def _draw_whole(
        self, n: int, chunk_elements: int, generator: torch.Generator | None, spread: float = 1.0,
        log_weights: list[Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """``n`` whole draws of the latents (on the CPU), in groups of at most
        ``chunk_elements`` numbers; with ``log_weights``, their importance log weights
        ``log p - log q`` (float64) are appended to it, group by group."""
        model = self.model
        whole = model.frame()
        group = max(1, chunk_elements // max(self._values(whole, model.latent_names), 1))
        parts: dict[str, list[Tensor]] = {name: [] for name in model.latent_names}
        with torch.no_grad():
            for first in range(0, n, group):
                draw = self.family.sample(whole, min(group, n - first), generator=generator, spread=spread)
                if log_weights is not None:
                    log_p = model.log_joint_terms(draw.values, frame=whole)
                    log_weights.append((sum(log_p.values()) - sum(draw.log_q.values())).double().cpu())
                for name in parts:
                    parts[name].append(draw.values[name].cpu())
        return {name: torch.cat(pieces) for name, pieces in parts.items()}

    def importance_check(self, n: int = 4000, seed: int | None = None,
                         chunk_elements: int = CHUNK_ELEMENTS) -> ImportanceCheck | None:
        """How far q can be trusted: the check that :meth:`sample` and :meth:`summary`
        make for ``n`` draws with the same ``seed`` (the Pareto k of the importance
        weights of ``IMPORTANCE_DRAWS_PER_DRAW * n`` draws of a defensive mixture of
        q, or a few times more where their effective sample size is small: see
        :meth:`_resample`, :mod:`pavi_viz.inference.importance` and
        :data:`IMPORTANCE_SPREAD`; the same seeded call's pool, when it was the last).
        Where k is at most :func:`~pavi_viz.inference.importance.pareto_k_bound` of
        the draws (0.7 from 2,200 draws on) they resample the draws by those
        weights, which corrects q's bias; above, the draws are q's own, and k says
        how far to trust them (above 0.7: little).

        ``None`` where the model is too large to weigh whole draws of it
        (:data:`IMPORTANCE_NUMBERS`), or when ``importance`` is off.
        """
        if not self._reweighable(n):
            return None
        generator = None if seed is None else torch.Generator(self.model.device).manual_seed(seed)
        return self._resampled(n, chunk_elements, seed, generator)[1]

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

    def _collect(
        self, n: int, chunk_elements: int, seed: int | None, names: Sequence[str], observed: bool
    ) -> dict[str, np.ndarray]:
        """The full draws of ``names``, assembled from the chunks."""
        dtype = _numpy_dtype(self.model.dtype)
        out = {name: np.empty((n, *self._shape_of(name)), dtype=dtype) for name in names}
        fixed = set(self._plan(n, chunk_elements, observed).fixed)
        with contextlib.closing(self._walk(n, chunk_elements, seed, observed)) as walk:
            for chunk, values, drew_fixed in walk:
                self._write(out, chunk, values, drew_fixed, names, fixed)
        return out

    def _write(self, out, chunk, values, drew_fixed, names, fixed) -> None:
        for name in names:
            if name in fixed and not drew_fixed:
                continue
            array = values[name].cpu().numpy()
            target = out[name][chunk.draws]
            where = self._positions(chunk.frame, name)
            if where is None:
                target[...] = array
            else:
                target[(slice(None), *where)] = array

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
    ) -> xr.Dataset:
        """``n`` joint draws of the latent variables.

        Args:
            n: the number of draws.
            chunk_elements: bounds the numbers drawn at once in torch (see :meth:`chunks`);
                the result holds all the draws, in numpy.
            seed: makes the draws reproducible, also while other threads draw (see
                the module's notes on random numbers); ``None``: torch's global generator.
            variables: the latents to return (all by default; all are drawn anyway).

        Returns:
            A Dataset with one data variable per latent, dims
            ``("sample", *plates, *event dims)``, and the coords of every dim.
        """
        names = self._names(variables, self.model.latent_names, "latent")
        arrays = self._collect(n, chunk_elements, seed, names, observed=False)
        return self._dataset(arrays, ("sample",), {"sample": np.arange(n)})

    def predictive(
        self,
        n: int = 100,
        chunk_elements: int = CHUNK_ELEMENTS,
        seed: int | None = None,
        latents: bool = False,
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

        Returns:
            A Dataset with dims ``("sample", *plates, *event dims)`` per variable.
        """
        names = self.model.observed_names + (self.model.latent_names if latents else [])
        arrays = self._collect(n, chunk_elements, seed, names, observed=True)
        return self._dataset(arrays, ("sample",), {"sample": np.arange(n)})

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
                ``n``, ``chunk_elements`` and seed, the statistics are those of
                :meth:`sample`'s draws.

        Returns:
            A Dataset with one data variable per latent, dims
            ``("stat", *plates, *event dims)``. The ``stat`` coord holds
            ``"mean"``, ``"sd"`` (ddof=1) and one label per quantile
            (``"5%"``, ``"50%"``, ``"95%"``); a ``quantile`` coord along it holds the
            levels (NaN for mean and sd). Select with ``summary["alpha"].sel(stat="mean")``.
        """
        names = self._names(variables, self.model.latent_names, "latent")
        levels = [float(q) for q in quantiles]
        if any(not 0.0 <= q <= 1.0 for q in levels):
            raise ValueError(f"quantiles must lie in [0, 1], not {levels}")
        labels = ["mean", "sd", *(_quantile_label(q) for q in levels)]
        if len(set(labels)) != len(labels):
            raise ValueError(f"quantiles must be distinct, not {levels}")
        dtype = _numpy_dtype(self.model.dtype)
        out = {name: np.empty((len(labels), *self._shape_of(name)), dtype=dtype) for name in names}
        plan = self._plan(n, chunk_elements, observed=False)
        fixed = set(plan.fixed)
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

        with contextlib.closing(self._walk(n, chunk_elements, seed, observed=False)) as walk:
            for chunk, values, drew_fixed in walk:
                if pending_part is not None and chunk.part != pending_part.part:
                    flush()
                pending_part = chunk
                split = chunk.particles < n
                for name in names:
                    if name in fixed and not drew_fixed:
                        continue
                    # Draws split in groups are gathered on the CPU, one element range at a time.
                    pending.setdefault(name, []).append(values[name].cpu() if split else values[name])
        flush()
        lead = {"stat": labels, "quantile": ("stat", [math.nan, math.nan, *levels])}
        result = self._dataset(out, ("stat",), lead)
        result.attrs["draws"] = n
        return result

    # -- export -----------------------------------------------------------------------
    def to_datatree(
        self,
        n: int = 1000,
        predictive: int | None = 100,
        chunk_elements: int = CHUNK_ELEMENTS,
        seed: int | None = None,
    ):
        """The posterior as an ArviZ ``xarray.DataTree`` (``arviz_base.from_dict``).

        Groups: ``posterior`` (dims ``("chain", "draw", *plates, *event dims)``, one
        chain), ``observed_data``, ``constant_data`` (the covariates, when the model has
        any) and, unless ``predictive`` is None, ``posterior_predictive`` with
        ``predictive`` draws. When ``predictive == n`` the predictive draws are made
        from the posterior group's own draws; otherwise from draws of their own.

        Needs the optional extra ``pavi-viz[export]`` (arviz-base).
        """
        try:
            import arviz_base
        except ImportError as err:
            raise ImportError(f"Posterior.to_datatree needs arviz-base: {_EXTRA_HINT}") from err
        latents = self.model.latent_names
        observed = self.model.observed_names
        if predictive is not None and predictive == n:
            both = self._collect(n, chunk_elements, seed, latents + observed, observed=True)
            posterior = {k: both[k] for k in latents}
            replicated = {k: both[k] for k in observed}
        else:
            posterior = self._collect(n, chunk_elements, seed, latents, observed=False)
            replicated = None
            if predictive is not None:
                replicated = self._collect(predictive, chunk_elements, seed, observed, observed=True)
        groups: dict[str, dict[str, np.ndarray]] = {"posterior": {k: v[None] for k, v in posterior.items()}}
        if replicated is not None:
            groups["posterior_predictive"] = {k: v[None] for k, v in replicated.items()}
        observed_data = {k: self.model.data[k].cpu().numpy() for k in observed if k in self.model.data}
        if observed_data:
            groups["observed_data"] = observed_data
        constants = {k: v.cpu().numpy() for k, v in self.model.data.items() if k not in self.model.variables}
        if constants:
            groups["constant_data"] = constants
        names = {k for group in groups.values() for k in group}
        dims = {k: list(self._dims[k]) for k in names}
        attrs = self._attrs()
        return arviz_base.from_dict(
            groups,
            coords={d: self.coords[d] for d in self._dims_order()},
            dims=dims,
            attrs={"/": attrs, **{g: dict(attrs) for g in groups}},
        )

    def to_netcdf(
        self,
        path: str | Path,
        n: int = 1000,
        chunk_elements: int = CHUNK_ELEMENTS,
        seed: int | None = None,
        engine: str | None = None,
    ) -> None:
        """Write :meth:`sample` ``(n)`` to a NetCDF-4 file; read it back with :func:`load_netcdf`.

        Args:
            engine: an xarray NetCDF engine; by default ``h5netcdf``, else ``netcdf4``
                (the optional extra ``pavi-viz[export]`` installs h5netcdf).
        """
        engine = engine or _netcdf_engine()
        self.sample(n, chunk_elements, seed).to_netcdf(path, engine=engine)


def load_netcdf(path: str | Path, engine: str | None = None) -> xr.Dataset:
    """A Dataset written by :meth:`Posterior.to_netcdf`, read fully into memory (the file is closed)."""
    with xr.open_dataset(path, engine=engine or _netcdf_engine()) as dataset:
        return dataset.load()


def _netcdf_engine() -> str:
    import importlib.util

    for engine in NETCDF_ENGINES:
        if importlib.util.find_spec(engine.replace("netcdf4", "netCDF4")) is not None:
            return engine
    raise ImportError(f"writing NetCDF files needs h5netcdf (or netCDF4): {_EXTRA_HINT}")


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


def _quantile_label(level: float) -> str:
    return f"{100 * level:g}%"


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return torch.empty((), dtype=dtype).numpy().dtype
