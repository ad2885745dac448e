"""The training step: :class:`Trainer`.

A trainer holds a run's :class:`~pavi_viz.inference.state.TrainingState` and its
:class:`~pavi_viz.inference.config.FitConfig`, and takes one step at a time
(NumPyro's ``SVI.init`` / ``SVI.update`` split): :meth:`Trainer.create` sets a run
up (or takes one up again from a checkpoint), :meth:`Trainer.step` draws a batch of
plate elements, estimates the ELBO on it (unbiased for the full model's: see
:func:`pavi_viz.inference.elbo`), takes an Adam step on its negative with
gradient-norm clipping and a ``torch.optim.lr_scheduler`` schedule, and returns a
:class:`~pavi_viz.inference.state.StepRecord`. Loops belong to the callers:
:func:`pavi_viz.inference.fit`, the runner's thread (pause: stop calling ``step``;
stop: leave the loop) and the command line::

    trainer = Trainer.create(model, FitConfig(steps=500))
    with use_threads(trainer.threads):
        while not trainer.done:
            record = trainer.step()

Random numbers: the family's initial weights, the sampling noise and the batches all
come from the config's ``seed``. The noise and the batches come from two generators
of the run's own (``state.noise_generator``, ``state.generator``), never from torch's
global one. Only building the family draws from the global generator (torch's
layers initialise their weights from it): that happens seeded, inside
:func:`~pavi_viz.model.compiled.seeded`, so concurrent fits build their families one
at a time and the caller's global random state is left as it was. PAVI-E's
whole-data summaries are refreshed every ``refresh_every`` steps, a count, never a
measured time: the same seed gives the same run, bit for bit on the CPU, alone or
beside other runs.

Divergence: the family checks its draws (:class:`~pavi_viz.inference.families.base.NonFiniteDraw`),
the step checks the ELBO estimate and the gradient's norm; the first that is not
finite raises a :class:`~pavi_viz.inference.state.DivergenceError` naming the step,
the variable and the parameter, before any parameter changes.

Data-parallel runs: given its place among the processes of a run
(:class:`~pavi_viz.inference.distributed.Replicas`), a trainer draws its batches from
its shard of one plate, and agrees with the others on each step's estimate, divergence
and gradient (see :mod:`pavi_viz.inference.distributed`); :meth:`Trainer.save` is then
a step all of them take, whose file the leader writes. :meth:`Trainer.create` gives a
process other than the leader a model of its shard alone where it can; the batch
sizes, particles and refreshes still follow the whole model, as every process's must.

The last good state: before each Adam step whose ELBO and gradients are finite, the
parameters and Adam's moments are copied into reused buffers (every step for
families below :data:`SNAPSHOT_LIMIT` numbers, every :data:`SNAPSHOT_EVERY` steps
above). :meth:`Trainer.restore_last_good` puts the family and the optimizer back to
that copy and cuts the history to match: parameters that gave a finite ELBO and
finite gradients. The step that led to the bad parameters is dropped with them.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from pavi_viz.inference.checkpoints import check_model, load_checkpoint, model_entry, save_checkpoint
from pavi_viz.inference.config import FitConfig
from pavi_viz.inference.resolve import (
    accumulation_dtype,
    batch_sizes,
    data_numbers,
    resolve_device,
    resolve_particles,
    resolve_refresh_every,
    resolve_threads,
    unsupported_operator,
)
from pavi_viz.inference.control_variates import GlobalGradientTables
from pavi_viz.inference.distributed import Replicas
from pavi_viz.inference.objective import elbo
from pavi_viz.inference.smoothing import smoothed_elbo, spike_bound
from pavi_viz.inference.schedule import BATCHED_STAGES, ONE_STAGE, WHOLE_STAGES, Plateau, lr_factor
from pavi_viz.inference.families import FAMILIES, NonFiniteDraw, VariationalFamily, make_family
from pavi_viz.inference.state import DivergenceError, StepRecord, TrainingState, derived_seed, make_optimizer
from pavi_viz.model.compiled import CompiledModel, seeded
from pavi_viz.model.sharding import InMemory, ModelSource, compile_part

if TYPE_CHECKING:
    from pavi_viz.model.spec import PlateModel

#: Early stopping: the smoothed ELBO improves when it beats its best by more than
#: ``EARLY_STOPPING_RTOL * |best| + EARLY_STOPPING_ATOL``.
EARLY_STOPPING_RTOL = 1e-4
EARLY_STOPPING_ATOL = 1e-2
#: The last good state (parameters and Adam moments) is copied every step when the
#: family has at most this many numbers to copy (3 per parameter), every
#: ``SNAPSHOT_EVERY`` steps otherwise.
SNAPSHOT_LIMIT = 5_000_000
SNAPSHOT_EVERY = 50
#: Steps over which the throughput (steps per second) is measured.
RATE_WINDOW = 20


class Trainer:
    """Takes the steps of one run.

    Args:
        state: the run's state (:meth:`create` makes one).
        config: its settings; they become ``state.settings``, and ``config.steps``
            ``state.total_steps``.

    Attributes:
        state: the :class:`~pavi_viz.inference.state.TrainingState`, changed by each step.
        config: the settings.
        batch_sizes: the batch size of each batched plate (the others are taken whole).
        particles: the Monte Carlo draws of each step (``config.particles`` resolved).
        threads: the intra-op threads a loop should train with (``config.threads`` resolved).
        refresh_every: steps between two whole-data refreshes (``config.refresh_every`` resolved).
    """

    def __init__(
        self, state: TrainingState, config: FitConfig, replicas: Replicas | None = None,
        whole: CompiledModel | None = None,
    ) -> None:
        model = state.model
        if model.part is not None and whole is None:
            raise ValueError(f"this state's model holds elements {model.part.start} to {model.part.stop - 1} of plate "
                             f"{model.part.plate!r} only (one process's of a data-parallel run): continue the run "
                             "from its checkpoint file")
        # What every process must agree on (batches, particles, refreshes) follows the
        # whole model, also in a process that holds a shard of it alone.
        whole = model if whole is None else whole
        self.batch_sizes = batch_sizes(whole, config.batch)  # unknown plates fail here, before any change
        #: This process's place in a data-parallel run (``None``: a run of one process),
        #: and its shard of the plate the run shares out (in the whole model's elements).
        self.replicas = replicas if replicas is not None and replicas.size > 1 else None
        self.shard = None if self.replicas is None else self.replicas.shard(whole, self.batch_sizes)
        # The shard in the elements of the model this process holds: all of it where that
        # is the shard alone (:func:`~pavi_viz.model.sharding.compile_part`).
        self._drawn_shard = self.shard
        if self.shard is not None and model.part is not None:
            self._drawn_shard = dataclasses.replace(self.shard, start=0, stop=self.shard.stop - self.shard.start)
        self._whole_size = None if self.shard is None else whole.plates[self.shard.plate].size
        self.state, self.config = state, config
        state.total_steps, state.settings, state.finished = config.steps, config.settings(), False
        step_numbers = data_numbers(whole, self.batch_sizes)
        self.particles = resolve_particles(config.particles, step_numbers)
        if self.replicas is None:
            self.threads = resolve_threads(config.threads, step_numbers * self.particles)
        else:  # a process's share of the step, on CPUs shared with the run's other processes here
            self.threads = resolve_threads(config.threads, step_numbers * self.particles // self.replicas.size,
                                           self.replicas.local_size)
        self.refresh_every = resolve_refresh_every(config.refresh_every, data_numbers(whole), step_numbers)
        self.gradient_tables = GlobalGradientTables.for_run(model, self.batch_sizes, state.family, state.gradient_tables,
                                                            shard=self._drawn_shard)
        state.gradient_tables = self.gradient_tables.tables if self.gradient_tables is not None else {}
        self._draw_sizes = self.batch_sizes
        if self.shard is not None:
            self._join(config)
        self._params = [p for group in state.optimizer.param_groups for p in group["params"]]
        self._last_good = _LastGood(state.family, state.optimizer)
        self._plateau: Plateau | None = None
        self._scheduler = self._make_scheduler()
        self._durations: collections.deque[float] = collections.deque(maxlen=RATE_WINDOW)
        state.family.train()

    def _join(self, config: FitConfig) -> None:
        """Set up this process's part of a data-parallel run: the family's whole-data
        summaries pooled per shard and added up, its share of each step's
        batch of the shared plate, its own random streams (seeded by the run's seed, its
        rank and the step: a resumed run's are new), and the leader's parameters."""
        replicas, shard, state = self.replicas, self._drawn_shard, self.state
        state.family.share_out(shard, self._total_over_replicas)
        if shard.plate in self.batch_sizes:
            self._draw_sizes = {**self.batch_sizes, shard.plate: -(-self.batch_sizes[shard.plate] // replicas.size)}
        for stream, generator in (("batches", state.generator), ("noise", state.noise_generator)):
            generator.manual_seed(derived_seed(config.seed, f"{stream}-rank-{replicas.rank}-step-{state.step}"))
        replicas.copy_from_leader(state.family, state.step)

    def _total_over_replicas(self, tensors: Sequence[Tensor]) -> list[Tensor]:
        """The processes' sum of each of ``tensors``, within the step being taken."""
        return self.replicas.total(tensors, self.state.step + 1)

    # -- set-up ------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        model: PlateModel | CompiledModel | ModelSource,
        config: FitConfig,
        family: VariationalFamily | None = None,
        resume: str | Path | TrainingState | None = None,
        *,
        family_given: bool = False,
        replicas: Replicas | None = None,
    ) -> Trainer:
        """A trainer for a new run, or for one taken up again.

        Args:
            model: the model with its data (a :class:`PlateModel` is compiled on
                ``config.device``; a compiled model, or a built family's, is used as it
                is), or a :class:`~pavi_viz.model.sharding.ModelSource` of it (a data
                file: :class:`~pavi_viz.model.datafile.DataFile`), from which a process
                of a data-parallel run that can train on its shard alone reads that alone.
            config: the settings. A resumed run takes its family (name and options) from
                the checkpoint, and a ``None`` seed from it too.
            family: a built family to train instead of building ``config.family``.
            resume: a checkpoint file or a :class:`TrainingState` to continue from.
            family_given: whether the caller chose ``config.family`` and
                ``config.family_options`` (then a resumed run must have the same).
            replicas: this process's place in a data-parallel run
                (:mod:`~pavi_viz.inference.distributed`); every process creates its
                trainer with the same arguments.

        Raises:
            ValueError: a device, plate or family that does not fit, a family other
                than the resumed run's.
            CheckpointError: ``resume`` names a checkpoint made for another model.
        """
        # A process of a data-parallel run other than the leader holds only its shard of
        # the data where it can (a family it builds, of a model not yet compiled); the
        # leader holds the whole model, which it evaluates (the posterior, the run's record).
        partable = replicas is not None and not replicas.leader and family is None and not isinstance(model, CompiledModel)
        source = model if isinstance(model, ModelSource) else InMemory(model) if partable else None
        part = None
        if resume is None:
            seed = config.seed if config.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
            config = config.copy(seed=seed)
        if partable and resume is None:
            # A new run: the model's plates tell the shard, and the shard alone is read.
            layout = source.layout().compile(device=resolve_device(config.device), require_data=False)
            part = _part(source, layout, config, replicas, config.family)
            compiled = layout if part is not None else _compiled_model(source.whole(), config.device, None, None)
        else:
            compiled = _compiled_model(source.whole() if source is not None else model, config.device, family, resume)
        if resume is None:
            if family is None:
                # The initial weights come from torch's global generator: seed it, one fit at a time.
                with seeded(seed, compiled.device):
                    family = make_family(config.family, part or compiled, **config.family_options)
            else:
                config = config.copy(family=family.name)
            state = TrainingState(
                model=part or compiled,
                family=family,
                family_name=family.name,
                family_options=dict(config.family_options),
                optimizer=make_optimizer(family, config.lr),
                generator=torch.Generator(compiled.device).manual_seed(derived_seed(seed, "batches")),
                noise_generator=torch.Generator(compiled.device).manual_seed(derived_seed(seed, "noise")),
            )
        else:
            state = _resumed_state(resume, compiled, family)
            _check_resumed_family(state, config, family_given)
            seed = config.seed if config.seed is not None else state.settings.get("seed")
            config = config.copy(family=state.family_name, family_options=dict(state.family_options), seed=seed)
            if partable and isinstance(resume, (str, Path)):
                part = _part(source, compiled, config, replicas, state.family_name)
            if part is not None:
                state = _moved_to_part(state, part)
        return cls(state, config, replicas, whole=compiled if part is not None else None)

    def _make_scheduler(self) -> torch.optim.lr_scheduler.LambdaLR:
        """The schedule of ``config.steps`` steps, at ``state.step`` (a resumed run's too:
        the ``"plateau"`` schedule replays the run's ELBO history)."""
        schedule, total = self.config.schedule, self.config.steps
        for group in self.state.optimizer.param_groups:
            group["lr"] = group["initial_lr"] = self.config.lr
        if schedule == "plateau":
            if not self.state.family.standardisable:
                stages = ONE_STAGE
            else:
                stages = BATCHED_STAGES if self.batch_sizes else WHOLE_STAGES
            self._plateau = plateau = Plateau.replay(self.state.history.elbo, stages)
            factor = plateau.factor
        else:
            factor = lambda step: lr_factor(schedule, step, total)  # noqa: E731 - the scheduler's callable
        return torch.optim.lr_scheduler.LambdaLR(self.state.optimizer, factor, last_epoch=self.state.step - 1)

    # -- stepping ----------------------------------------------------------------------
    @property
    def early_stopped(self) -> bool:
        """Whether the smoothed ELBO has not improved for ``config.early_stopping`` steps."""
        patience = self.config.early_stopping
        return patience is not None and self.state.steps_since_best >= patience

    @property
    def converged(self) -> bool:
        """Whether the ``"plateau"`` schedule says the ELBO has converged (see
        :mod:`pavi_viz.inference.schedule`)."""
        return self._plateau is not None and self._plateau.converged

    @property
    def done(self) -> bool:
        """Whether the run has reached its steps, converged, or stopped early."""
        return self.state.step >= self.state.total_steps or self.converged or self.early_stopped

    @property
    def stop_reason(self) -> str:
        """Why a run that is :attr:`done` stopped: ``"converged"``, ``"early_stopping"``
        or ``"completed"`` (all its steps)."""
        if self.converged:
            return "converged"
        return "early_stopping" if self.early_stopped else "completed"

    def step(self) -> StepRecord:
        """Take one training step; its record (also appended to ``state.history``).

        A batch whose ELBO estimate or gradient comes out non-finite (a draw deep in a
        tail, where float32 under- or overflows) is drawn again, up to
        ``config.redraws`` times, before the step gives up.

        Raises:
            DivergenceError: a draw, the ELBO estimate or the gradient is not finite, on
                every redraw; the family and the optimizer are as they were before the step.
        """
        started = time.perf_counter()
        state, optimizer = self.state, self.state.optimizer
        index = state.step  # steps done before this one
        number = index + 1
        if index % self.refresh_every == 0:
            state.family.refresh()
        for redraws in itertools.count():
            try:
                value, norm_tensor = self._gradient(number)
                break
            except DivergenceError:
                if redraws >= self.config.redraws:
                    raise
            except NotImplementedError as err:
                clear = unsupported_operator(err, state.model.device)
                if clear is None:
                    raise
                raise clear from err
        norm = float(norm_tensor)
        grads = [p.grad for p in self._params if p.grad is not None]
        if self.config.clip is not None and grads:
            torch.nn.utils.clip_grads_with_norm_(self._params, self.config.clip, norm_tensor)
        if self._last_good.due(index):
            self._last_good.save(index, state)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        switched = False
        if self._plateau is not None:
            stage = self._plateau.stage
            self._plateau.update(value)
            if self._plateau.stage > stage:
                self._standardise(number)
                switched = True
        self._scheduler.step()

        # Bookkeeping: only the step's own time counts as training time (whatever the
        # caller does between steps, publishing or pausing, is left out).
        duration = time.perf_counter() - started
        self._durations.append(duration)
        bound = spike_bound(state.history.elbo, state.history.smoothed_elbo)
        state.step = number
        state.elbo = value
        state.smoothed_elbo = smoothed_elbo(state.smoothed_elbo, max(value, bound), number)
        state.elapsed += duration
        best = state.best_smoothed_elbo
        tolerance = EARLY_STOPPING_RTOL * abs(best) + EARLY_STOPPING_ATOL if math.isfinite(best) else 0.0
        if state.smoothed_elbo > best + tolerance:
            state.best_smoothed_elbo, state.steps_since_best = state.smoothed_elbo, 0
        else:
            state.steps_since_best += 1
        record = StepRecord(
            step=number,
            redraws=redraws,
            elbo=value,
            smoothed_elbo=state.smoothed_elbo,
            time=state.elapsed,
            steps_per_second=len(self._durations) / max(sum(self._durations), 1e-12),
            lr=lr,
            grad_norm=norm,
            spike=value < bound,
        )
        state.history.append(record)
        if switched:
            # The copy taken before the switch holds the flow of the old units: a
            # restore from it would pair that flow with the new centre and scale.
            self._last_good.save(number, state)
        return record

    def _standardise(self, number: int) -> None:
        """Between the plateau schedule's stages: the family draws its global latents in
        units of their q (:meth:`~pavi_viz.inference.families.pavi.PlateAmortizedFamily.standardise_globals`),
        its fresh weights and draws seeded by the run's seed and the step, and Adam
        starts afresh (its moments were of the old units)."""
        state = self.state
        seed = derived_seed(self.config.seed, f"standardise-{number}")
        with seeded(seed, state.model.device):
            generator = torch.Generator(state.model.device).manual_seed(seed)
            state.family.standardise_globals(generator)
        if self.replicas is not None:  # the same seed gave the same switch; the leader's is the one
            self.replicas.copy_from_leader(state.family, number)
        state.optimizer.state.clear()

    def _gradient(self, number: int) -> tuple[float, Tensor]:
        """Draw a batch, estimate the ELBO on it and back-propagate: the estimate and
        the gradient's norm, both finite (else a :class:`DivergenceError`)."""
        state, model, family = self.state, self.state.model, self.state.family
        frame = model.frame(model.sample_batch(self._draw_sizes, state.generator, self._drawn_shard), self._drawn_shard)
        tables = self.gradient_tables
        if tables is not None:
            tables.attach(frame, self.particles)
        state.optimizer.zero_grad(set_to_none=True)
        bad: DivergenceError | None = None
        try:
            estimate = elbo(model, family, frame, self.particles, state.noise_generator)
        except NonFiniteDraw as draw:
            bad = self._divergence(number, "draw", variable=draw.variable)
        else:
            value = float(estimate.value.detach())
            if not math.isfinite(value):
                terms = estimate.terms
                variable = next((name for name, t in terms.items() if not bool(torch.isfinite(t))), None)
                term = None if variable is None else float(terms[variable])
                bad = self._divergence(number, "elbo", variable=variable, term=term, value=value)
        if self.replicas is not None:
            value = self._agree(number, bad, None if bad else estimate.value.detach())
        elif bad is not None:
            raise bad
        objective = estimate.value
        if tables is not None:  # the global latents' gradient becomes SAGA's; the value stays
            objective = objective + tables.surrogate(frame, estimate.draw.values, estimate.draw.unconstrained)
        (-objective).backward()
        if self.replicas is not None:
            self.replicas.average_gradients(self._params, number)
        norm = _gradient_norm([p.grad for p in self._params if p.grad is not None], accumulation_dtype(model.device))
        if not bool(torch.isfinite(norm)):
            raise self._divergence(number, "gradient", value=float(norm))
        if tables is not None:
            tables.update(frame)
        return value, norm

    def _agree(self, number: int, bad: DivergenceError | None, value: Tensor | None) -> float:
        """A data-parallel step's agreement, in one all-reduce: the processes' average
        ELBO estimate, or (any of them having diverged) the same error on every process,
        naming the first that did."""
        replicas = self.replicas
        shared = torch.zeros(replicas.size + 1, dtype=torch.float64, device=self.state.model.device)
        shared[replicas.rank] = float(bad is not None)
        if value is not None:
            shared[-1] = value.double()
        shared = replicas.total([shared], number)[0]
        diverged = [rank for rank in range(replicas.size) if shared[rank] > 0]
        if diverged:
            if bad is None:
                bad = DivergenceError(number, self.state.total_steps, "replica")
            bad.rank = replicas.rank if replicas.rank in diverged else diverged[0]
            raise bad
        return float(shared[-1]) / replicas.size

    def save(self, path: str | Path) -> None:
        """Save the run as a checkpoint at ``path`` (see :func:`~pavi_viz.inference.save_checkpoint`).
        In a data-parallel run every process calls it, and the leader writes, with SAGA's
        tables of all the processes' shards in one."""
        state = self.state
        if self.replicas is not None:
            tables = state.gradient_tables
            if tables:
                summed = self.replicas.total([self._along_whole_plate(table) for table in tables.values()], state.step)
                state = dataclasses.replace(state, gradient_tables=dict(zip(tables, summed, strict=True)))
            if not self.replicas.leader:
                return
        save_checkpoint(path, state)

    def _along_whole_plate(self, table: Tensor) -> Tensor:
        """A table of this process's shard laid out along the whole plate (zero outside
        the shard), where the model it holds is the shard alone."""
        if self.state.model.part is None:
            return table
        whole = table.new_zeros(self._whole_size, *table.shape[1:])
        whole[self.shard.start : self.shard.stop] = table
        return whole

    def restore_last_good(self) -> int:
        """Put the family, the optimizer, the history and the bookkeeping back to the
        last good state (see the module's docstring); the step it holds (the current
        one when no step was taken)."""
        state, last = self.state, self._last_good
        if last.step is not None:
            last.restore()
            state.history.truncate(last.step)
            state.step = last.step
            state.elbo, state.smoothed_elbo, state.best_smoothed_elbo, state.steps_since_best = last.bookkeeping
            self._scheduler = self._make_scheduler()
        state.optimizer.zero_grad(set_to_none=True)
        return state.step

    # -- divergence reports ----------------------------------------------------------------
    def _divergence(self, step: int, cause: str, **fields: Any) -> DivergenceError:
        """A :class:`DivergenceError` for ``step``, naming the first non-finite family
        parameter (or gradient, for ``cause="gradient"``) and its variable."""
        model, family = self.state.model, self.state.family
        bad = _bad_parameters(family, gradients=cause == "gradient")
        if bad:
            fields["parameter"] = bad[0]
            owner = _variable_of(bad[0], model)
            role = "latent" if owner is None or not model.variables[owner].observed else "observed variable"
            where = " in the data encoder" if bad[0].startswith("encoder.") else ""
            fields["parameter_role"] = where + (f" (of {role} {owner!r})" if owner else "")
            if fields.get("variable") is None:
                fields["variable"] = owner
        return DivergenceError(step, self.state.total_steps, cause, **fields)


def _gradient_norm(grads: list[Tensor], dtype: torch.dtype) -> Tensor:
    """The gradients' joint 2-norm, summed in ``dtype`` (float64 but on MPS: see
    :func:`~pavi_viz.inference.resolve.accumulation_dtype`): near a funnel's neck finite
    float32 gradients reach 1e22, whose squares overflow float32, and clipping (not a
    divergence error) is the answer to them."""
    if not grads:
        return torch.zeros((), dtype=dtype)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2, dtype=dtype)))


def _variable_of(parameter: str, model: CompiledModel) -> str | None:
    """The model variable a family parameter belongs to, read from its dotted name
    (``flows.mu_g.transform...``, ``loc.mu_g``, ``encoder.embed.x...``)."""
    for part in parameter.split("."):
        if part in model.variables:
            return part
    return None


def _bad_parameters(family: VariationalFamily, gradients: bool) -> list[str]:
    """The names of the family's parameters (or gradients) that are not all finite."""
    bad = []
    for name, p in family.named_parameters():
        t = p.grad if gradients else p
        if t is not None and not bool(torch.isfinite(t).all()):
            bad.append(name)
    return bad


# -- set-up helpers ------------------------------------------------------------------------
def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device()
    return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)


def _compiled_model(
    model: PlateModel | CompiledModel,
    device: str,
    family: VariationalFamily | None,
    resume: str | Path | TrainingState | None,
) -> CompiledModel:
    """The compiled model to train on: the family's or the resumed state's when given."""
    bound = family.model if family is not None else None
    if isinstance(resume, TrainingState):
        if bound is not None and bound is not resume.model:
            raise ValueError("fit(resume=state) continues the state's own family: leave family out")
        bound = resume.model
    auto = device == "auto"
    if bound is not None:
        if not auto and not _same_device(resolve_device(device), bound.device):
            raise ValueError(f"the family lives on {bound.device}, not on the requested device {device!r}")
        if model is not bound:
            other = model if isinstance(model, CompiledModel) else model.compile(device=bound.device)
            check_model(model_entry(other), bound, what="family")
        return bound
    if isinstance(model, CompiledModel):
        if not auto and not _same_device(resolve_device(device), model.device):
            raise ValueError(
                f"the model was compiled on {model.device}, not on {device!r}: compile it there "
                f"(model.compile(device=...)) or pass the PlateModel"
            )
        return model
    if not hasattr(model, "compile"):
        raise TypeError(f"fit needs a PlateModel or a CompiledModel, got {type(model).__name__}")
    return model.compile(device=resolve_device(device))


def _part(source: ModelSource, whole: CompiledModel, config: FitConfig, replicas: Replicas,
          family_name: str) -> CompiledModel | None:
    """This process's shard of ``source``'s model alone, compiled (``whole`` is the whole
    model, compiled, or its layout: its plates alone), where a ``family_name`` family
    trains on it as on the whole model; else ``None`` (the process holds the whole model)."""
    sizes = batch_sizes(whole, config.batch)
    shard = replicas.shard(whole, sizes)
    if not FAMILIES[family_name].trains_on_a_part(whole, shard.plate):
        return None
    try:
        return compile_part(source, shard, whole.device)
    except ValueError:  # a model that cannot be cut to the shard (the message says why): held whole
        return None


def _moved_to_part(state: TrainingState, part: CompiledModel) -> TrainingState:
    """A resumed ``state`` of the whole model, its family rebuilt on ``part``, a shard
    of it, with the same state (the optimizer's too) and SAGA's tables of the shard."""
    with seeded(0, part.device):  # initial weights, replaced by the saved ones
        family = make_family(state.family_name, part, **state.family_options)
    family.load_state_dict(state.family.state_dict())
    optimizer = make_optimizer(family, state.optimizer.param_groups[0]["lr"])
    optimizer.load_state_dict(state.optimizer.state_dict())
    shard = part.part
    tables = {key: table[shard.start : shard.stop].clone() for key, table in state.gradient_tables.items()}
    return dataclasses.replace(state, model=part, family=family, optimizer=optimizer, gradient_tables=tables)


def _resumed_state(
    resume: str | Path | TrainingState, compiled: CompiledModel, family: VariationalFamily | None
) -> TrainingState:
    if isinstance(resume, TrainingState):
        if family is not None and family is not resume.family:
            raise ValueError("fit(resume=state) continues the state's own family: leave family out")
        return resume
    return load_checkpoint(resume, compiled, family)


def _check_resumed_family(state: TrainingState, config: FitConfig, family_given: bool) -> None:
    """A resumed run goes on with its own family: refuse another one asked for."""
    if not family_given:
        return
    if config.family != state.family_name:
        raise ValueError(f"the run to resume trained a {state.family_name!r} family, not a {config.family!r} one")
    if config.family_options and dict(config.family_options) != dict(state.family_options):
        raise ValueError(
            f"the run to resume built its family with options {state.family_options}, "
            f"not {dict(config.family_options)}"
        )


# -- the last good state ---------------------------------------------------------------------
class _LastGood:
    """A copy of the trained parameters and of Adam's state at the start of the latest
    step whose ELBO and gradients were all finite, with the run's bookkeeping then.

    Only what training changes is copied (the optimizer's parameters and state, not
    the family's constant buffers), into buffers reused from step to step, with one
    ``_foreach_copy_`` each: a small cost next to a step's forward and backward passes.
    """

    def __init__(self, family: VariationalFamily, optimizer: torch.optim.Optimizer) -> None:
        self.family, self.optimizer = family, optimizer
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        numbers = 3 * sum(p.numel() for p in self.params)
        self.every = 1 if numbers <= SNAPSHOT_LIMIT else SNAPSHOT_EVERY
        self.step: int | None = None  # completed steps at the copy
        #: elbo, smoothed_elbo, best_smoothed_elbo, steps_since_best at the copy.
        self.bookkeeping: tuple[float, float, float, int] = (math.nan, math.nan, -math.inf, 0)
        self._params: list[Tensor] = []
        self._keys: list[tuple[int, str]] = []  # (parameter index, state key) of each tensor in Adam's state
        self._state: list[Tensor] = []
        self._others: dict[int, dict[str, Any]] = {}  # Adam's non-tensor state entries

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def save(self, step: int, state: TrainingState) -> None:
        if not self._params:
            self._params = [p.detach().clone() for p in self.params]
        else:
            _copy_all(self._params, [p.detach() for p in self.params])
        adam = self.optimizer.state
        keys, tensors, others = [], [], {}
        for i, p in enumerate(self.params):
            for k, v in adam.get(p, {}).items():
                if isinstance(v, Tensor):
                    keys.append((i, k))
                    tensors.append(v)
                else:
                    others.setdefault(i, {})[k] = v
        if keys != self._keys or any(a.shape != b.shape for a, b in zip(self._state, tensors, strict=True)):
            self._keys, self._state = keys, [v.detach().clone() for v in tensors]
        else:
            _copy_all(self._state, tensors)
        self._others = others
        self.step = step
        self.bookkeeping = (state.elbo, state.smoothed_elbo, state.best_smoothed_elbo, state.steps_since_best)

    def restore(self) -> None:
        if self.step is None:
            return
        _copy_all([p.detach() for p in self.params], self._params)
        entries: dict[int, dict[str, Any]] = {i: dict(v) for i, v in self._others.items()}
        for (i, k), v in zip(self._keys, self._state, strict=True):
            entries.setdefault(i, {})[k] = v.clone()
        for i, p in enumerate(self.params):
            if i in entries:
                self.optimizer.state[p] = entries[i]
            else:
                self.optimizer.state.pop(p, None)


def _copy_all(targets: list[Tensor], sources: list[Tensor]) -> None:
    if targets:
        with torch.no_grad():
            torch._foreach_copy_(targets, sources)


__all__ = ["Trainer"]
