"""A training run in a background thread: start, pause, resume, stop, and stream.

:class:`TrainingRun` wraps a model, its data and a :class:`RunConfig`, and steps a
:class:`~pavi_viz.inference.trainer.Trainer` in a loop of its own, in a thread of its
own. The training thread touches plain Python and torch objects only: after every
step it publishes the step's ELBO to the run's :class:`~pavi_viz.runner.hub.MetricsHub`,
every ``summary_every`` steps the posterior summaries. Between two steps it honours
pause requests (it waits there, taking no step) and stop requests (it leaves the loop).
Control calls (:meth:`~TrainingRun.start`, :meth:`~TrainingRun.pause`...) return at
once; :meth:`~TrainingRun.wait` blocks, for scripts and tests.

States::

    idle --start--> running <--pause/resume--> paused
    running/paused --stop--> stopped      running --(all steps done)--> finished
    running --(an error)--> failed        stopped/finished --resume--> running

A stopped or finished run keeps its training state in memory and in a checkpoint
file; :meth:`TrainingRun.resume` continues it, and ``TrainingRun(model,
resume_from=path)`` continues it in another process.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import math
import tempfile
import threading
import time
import traceback
import uuid
import warnings
from pathlib import Path
from typing import Any

import param
import torch

from pavi_viz.inference.checkpoints import read_checkpoint, save_checkpoint
from pavi_viz.inference.config import FitConfig, Whole
from pavi_viz.inference.posterior import Posterior
from pavi_viz.inference.state import DivergenceError, FitResult, History, TrainingState
from pavi_viz.inference.threads import use_threads
from pavi_viz.inference.trainer import Trainer
from pavi_viz.model.compiled import CompiledModel
from pavi_viz.model.spec import PlateModel
from pavi_viz.runner.hub import Info, MetricsHub, Point, StateChange, Summary
from pavi_viz.runner.slots import RunSlots
from pavi_viz.runner.store import RunStore, StoreError
from pavi_viz.runner.store_writer import RunWriter


class RunState(str, enum.Enum):
    """Where a run stands."""

    IDLE = "idle"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


#: The largest share of a run's time that posterior summaries may take.
SUMMARY_SHARE = 0.1
#: The most numbers (draws times numbers per joint draw) a summary record carries as
#: draws; larger models publish their summaries only.
DRAWS_LIMIT = 2_000_000
#: The name of each run's thread: this, then the run's name.
THREAD_PREFIX = "pavi_viz training "
#: States in which the run's thread is alive.
ACTIVE = frozenset({RunState.QUEUED, RunState.RUNNING, RunState.PAUSED})
#: States a run ends in.
ENDED = frozenset({RunState.FINISHED, RunState.STOPPED, RunState.FAILED})


class RunConfig(FitConfig):
    """How a run trains (every :class:`~pavi_viz.inference.config.FitConfig` setting)
    and what it publishes."""

    # A run trains: at least one step (the rest of the setting is FitConfig's).
    steps = Whole(default=FitConfig.param.steps.default, bounds=(1, None))
    summary_every = param.Integer(
        default=100, bounds=(1, None), label="Summary every",
        doc="Steps between two posterior summaries (more when summaries would take over 10% of the time).",
    )
    summary_draws = param.Integer(default=200, bounds=(2, None), label="Summary draws",
                                  doc="Draws each posterior summary is computed from.")
    detail_draws = param.Integer(
        default=100, bounds=(0, None), label="Detail draws",
        doc="Joint posterior and posterior predictive draws published with each summary, for density plots "
            "and predictive checks, when they hold at most DRAWS_LIMIT numbers (0: none).",
    )


@dataclasses.dataclass(frozen=True)
class Progress:
    """A snapshot of a run's progress, replaced whole after every step.

    Attributes:
        step: completed steps. total_steps: the steps the run aims at.
        elbo, smoothed_elbo: the latest ELBO estimate and its moving average.
        steps_per_second: the recent throughput. elapsed: training seconds so far.
    """

    step: int = 0
    total_steps: int = 0
    elbo: float = math.nan
    smoothed_elbo: float = math.nan
    steps_per_second: float = 0.0
    elapsed: float = 0.0

    @classmethod
    def of(cls, state: TrainingState) -> Progress:
        return cls(state.step, state.total_steps, state.elbo, state.smoothed_elbo, state.steps_per_second,
                   state.elapsed)


_run_numbers = itertools.count(1)


class TrainingRun:
    """One model fitted in a background thread, publishing to a metrics hub.

    Args:
        model: the model with its data (validated here: a :class:`~pavi_viz.model.ModelError`
            names what is wrong before any thread starts).
        config: the settings; ``**settings`` override some of them
            (``TrainingRun(model, steps=500, family="mean-field")``).
        name: a label for displays and the thread's name (default ``run-N``).
        hub: where to publish (a new hub by default).
        checkpoint: the file the run saves its state to when it stops or finishes
            (default: a file in the system's temporary folder).
        resume_from: a checkpoint file to continue from (the family is rebuilt from
            it; its steps and ELBO history carry on).
        slots: turns to train, shared with other runs (:class:`RunSlots`): each time
            the run's thread starts, or goes on after a pause, it waits for a free slot
            in state ``queued``; it gives the slot back while paused and when it ends
            (None: it trains at once).
        store: a run store to record the run in (its writer reads the run's hub from
            a thread of its own: training never waits for the file), or None. A
            resumed run goes on in the same record.
    """

    def __init__(
        self,
        model: PlateModel | CompiledModel,
        config: RunConfig | None = None,
        *,
        name: str | None = None,
        hub: MetricsHub | None = None,
        checkpoint: str | Path | None = None,
        resume_from: str | Path | None = None,
        slots: RunSlots | None = None,
        store: RunStore | None = None,
        **settings: Any,
    ) -> None:
        if isinstance(model, PlateModel):
            model.validate()
        elif not isinstance(model, CompiledModel):
            raise TypeError(f"TrainingRun needs a PlateModel or a CompiledModel, got {type(model).__name__}")
        self.model = model
        self.config = RunConfig(**settings) if config is None else config.copy(**settings)
        self.name = name or f"run-{next(_run_numbers)}"
        self.hub = hub if hub is not None else MetricsHub()
        #: Whether the run chose its checkpoint's path (in the temporary folder), which
        #: :meth:`discard` then deletes; a path the caller gave is theirs to keep.
        self.owns_checkpoint = checkpoint is None
        if checkpoint is None:
            folder = Path(tempfile.gettempdir()) / "pavi_viz-runs"
            folder.mkdir(exist_ok=True)
            checkpoint = folder / f"{self.name}-{uuid.uuid4().hex[:12]}.pt"
        self.checkpoint = Path(checkpoint)
        self._discarded = False
        self._resume_from = resume_from
        self._slots = slots
        self.store = store
        #: The run's id in ``store`` once its record began (None: not recorded).
        self.stored_id: int | None = None
        self._writer: RunWriter | None = None  # the record's writer while the thread trains
        self._holds_slot = False  # the training thread's: whether it holds one of the slots
        if resume_from is not None:
            self._adopt_family_of(resume_from, chosen=settings.get("family", config.family if config else None))

        self.state = RunState.IDLE
        #: Every state the run has been in, with the time it entered it (``time.time()``).
        self.transitions: list[tuple[RunState, float]] = [(RunState.IDLE, time.time())]
        self.progress = Progress(total_steps=self.config.steps)
        self.parameter_count: int | None = None
        #: The latest result (after the run stopped, finished or diverged).
        self.result: FitResult | None = None
        #: The exception of a failed run, and its formatted traceback.
        self.error: BaseException | None = None
        self.traceback: str | None = None

        self._condition = threading.Condition()
        self._pause_requested = False
        self._stop_requested = False
        self._thread: threading.Thread | None = None
        self._published_step = 0
        self._summary_step = 0
        self._summary_elapsed = 0.0  # training seconds at the latest summary
        self._summary_cost = 0.0  # seconds the latest summary took

    def _adopt_family_of(self, checkpoint: str | Path, chosen: str | None) -> None:
        """Take the family of the checkpoint to resume; refuse one that says otherwise."""
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"no checkpoint to resume from at {checkpoint}")
        saved = read_checkpoint(checkpoint)["family"]["name"]
        if chosen is not None and chosen != saved:
            raise ValueError(f"{checkpoint} holds a {saved!r} family, not the {chosen!r} asked for")
        self.config.family = saved

    # -- control (any thread) ---------------------------------------------------------
    def start(self) -> TrainingRun:
        """Start training in a background thread; returns at once (the run itself)."""
        with self._condition:
            if self.state is not RunState.IDLE:
                raise RuntimeError(f"{self.name} is {self.state}: start() starts an idle run (resume() goes on)")
            self._launch(self._resume_from)
        return self

    def pause(self) -> None:
        """Pause after the current step (the thread waits, holding its state)."""
        with self._condition:
            if self.state is RunState.RUNNING:
                self._pause_requested = True

    def resume(self, steps: int | None = None) -> None:
        """Go on: after a pause, or from a stopped or finished run's state.

        Args:
            steps: a new total number of steps (a finished run needs more than it did).
        """
        with self._condition:
            if self.state in ACTIVE:
                if steps is not None:
                    raise RuntimeError(f"{self.name} is {self.state}: change steps once it has stopped")
                self._pause_requested = False
                self._condition.notify_all()
                return
            if self.state not in (RunState.STOPPED, RunState.FINISHED):
                raise RuntimeError(f"{self.name} is {self.state}: only a paused, stopped or finished run resumes")
            total = self.config.steps if steps is None else int(steps)
            done = self.progress.step
            if total <= done:
                raise ValueError(
                    f"{self.name} has done {done} of its {self.config.steps} steps: "
                    f"resume(steps=...) with more than {done} to train further"
                )
            self.config.steps = total
            resume = self.result.state if self.result is not None else self.checkpoint
            self._launch(resume)

    def stop(self, wait: bool = False, timeout: float | None = None) -> None:
        """Stop after the current step, saving a checkpoint; ``wait`` for the thread to end."""
        with self._condition:
            if self.state is RunState.IDLE:
                self._set_state(RunState.STOPPED, "stopped before it started")
                return
            self._stop_requested = True
            self._condition.notify_all()
        if self._slots is not None:  # outside our lock: the slots' is always taken first
            self._slots.wake()
        if wait:
            self.wait(timeout)

    def discard(self) -> None:
        """Stop the run without waiting, and delete the checkpoint it chose itself once
        its thread has saved it (a dashboard whose session ends, or whose run is replaced,
        leaves no file behind)."""
        with self._condition:
            self._discarded = True
            ended = self.state is RunState.IDLE or self.state in ENDED
        if ended:  # no thread will save again
            self._delete_own_checkpoint()
        else:
            self.stop()

    def _delete_own_checkpoint(self) -> None:
        if self.owns_checkpoint:
            self.checkpoint.unlink(missing_ok=True)

    def wait(self, timeout: float | None = None) -> RunState:
        """Block until the run's thread ends (or ``timeout`` seconds pass); the state then."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.state

    @property
    def alive(self) -> bool:
        """Whether the run's thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    # -- the training thread -------------------------------------------------------------
    def _launch(self, resume: str | Path | TrainingState | None) -> None:
        """Start the thread towards ``config.steps`` (the condition's lock is held)."""
        self._pause_requested = self._stop_requested = False
        self.error = self.traceback = None
        self.progress = dataclasses.replace(self.progress, total_steps=self.config.steps)
        self._set_state(RunState.RUNNING)
        # Started before it is published: wait() in another thread may join it at once.
        thread = threading.Thread(target=self._train, args=(resume,), name=THREAD_PREFIX + self.name, daemon=True)
        thread.start()
        self._thread = thread

    def _train(self, resume: str | Path | TrainingState | None) -> None:
        """The thread's body: wait for a slot if the run has slots, train, end in a state."""
        if self._slots is None:
            self._end(self._train_now(resume))
        elif not self._slots.take(cancelled=lambda: self._stop_requested, on_wait=self._queued):
            self._end((RunState.STOPPED, "stopped while waiting for a training slot"))
        else:
            self._holds_slot = True
            with self._condition:
                if self.state is RunState.QUEUED:
                    self._set_state(RunState.RUNNING, "a training slot came free")
            try:
                ending = self._train_now(resume)
            finally:
                self._give_back_slot()  # unless a pause gave it back and a stop came before the next
            self._end(ending)

    def _wait_while_paused(self, step: int) -> bool:
        """Between two steps: wait while a pause is asked for, the training slot (if
        any) given back meanwhile, so that a paused run holds up no one; on resume, wait
        for a slot again. Whether a stop was asked for."""
        with self._condition:
            if not self._pause_requested or self._stop_requested:
                return self._stop_requested
            self._set_state(RunState.PAUSED, f"paused after step {step}")
        self._give_back_slot()
        with self._condition:
            while self._pause_requested and not self._stop_requested:
                self._condition.wait()
            if self._stop_requested:
                return True
        if self._slots is not None:
            if not self._slots.take(cancelled=lambda: self._stop_requested, on_wait=self._queued):
                return True
            self._holds_slot = True
        with self._condition:
            self._set_state(RunState.RUNNING, f"resumed at step {step}")
        return False

    def _give_back_slot(self) -> None:
        if self._holds_slot:
            self._holds_slot = False
            self._slots.give_back()

    def _queued(self, ahead: int) -> None:
        """Wait in state ``queued`` (called by :meth:`RunSlots.take`)."""
        with self._condition:
            self._set_state(RunState.QUEUED, f"waiting for a training slot: {self._slots.size} run(s) train at once "
                                             f"here, {ahead} more waiting ahead of this one")

    def _end(self, ending: tuple[RunState, str]) -> None:
        """Enter the state the thread ends in; complete the run's record in the store;
        delete a discarded run's own checkpoint."""
        with self._condition:
            self._set_state(*ending)
            discarded = self._discarded  # read with the state set: discard() sees one or the other
        if self._writer is not None:  # it takes the state just published, then ends
            self._writer.close()
            self._writer = None
        if discarded:
            self._delete_own_checkpoint()

    def _train_now(self, resume: str | Path | TrainingState | None) -> tuple[RunState, str]:
        """Set up, step until done or stopped; the state to end in, with its message."""
        trainer = None
        try:
            # In-process, go on from the family in memory rather than recompile the model.
            model = resume.model if isinstance(resume, TrainingState) else self.model
            trainer = Trainer.create(model, self.config, resume=resume)
            trained_before = trainer.state.elapsed
            with use_threads(trainer.threads):
                ending = self._step_until_done(trainer, trained_before)
        except Exception as err:  # noqa: BLE001 - a failed run keeps its error for display
            if isinstance(err, DivergenceError) and trainer is not None:
                err.restored_step = trainer.restore_last_good()
                elapsed = trainer.state.elapsed - trained_before
                self.result = err.result = FitResult.of(trainer.state, trainer.config, "diverged", elapsed)
            self.error, self.traceback = err, traceback.format_exc()
            # A dashboard shows the message: no word on `error.result` (Python's way to the partial fit).
            told = f"{err.reason} {err.restored}" if isinstance(err, DivergenceError) else str(err)
            ending = (RunState.FAILED, f"{type(err).__name__}: {told}")
        return ending

    def _step_until_done(self, trainer: Trainer, trained_before: float) -> tuple[RunState, str]:
        """Step, publishing, until the trainer is done or a stop is asked for; then the
        final summary and the checkpoint. The state to end in, with its message."""
        state = trainer.state
        self._publish_info(state)
        self._publish_points(state.history)
        self.progress = Progress.of(state)
        stopped = False
        while not trainer.done:
            stopped = self._wait_while_paused(state.step)
            if stopped:
                break
            trainer.step()
            self._publish_points(state.history)
            self.progress = Progress.of(state)
            if not trainer.done and self._summary_due(state):
                self._publish_summary(state)
        state.finished = True
        if self._summary_step != state.step or self.hub.latest(Summary) is None:
            self._publish_summary(state)
        save_checkpoint(self.checkpoint, state)
        reason = "callback" if stopped else trainer.stop_reason
        self.result = FitResult.of(trainer.state, trainer.config, reason, state.elapsed - trained_before)
        if stopped:
            return RunState.STOPPED, f"stopped after step {state.step}"
        how = {"converged": "converged", "early_stopping": "early stopping"}.get(reason, "all steps done")
        return RunState.FINISHED, f"{how}: {state.step} steps"

    def _publish_info(self, state: TrainingState) -> None:
        self.parameter_count = state.family.parameter_count()
        posterior = Posterior(state.model, state.family)
        info = Info(
            run=self.name,
            model=state.model.name,
            family=state.family_name,
            parameter_count=self.parameter_count,
            total_steps=state.total_steps,
            device=str(state.model.device),
            torch_threads=torch.get_num_threads(),
            settings=dict(state.settings),
            truth=posterior.truth() if state.model.truth else None,
            observed=posterior.observed_data(),
        )
        self.hub.publish(info)
        if self.store is not None:
            self._record(info, state.step)

    def _record(self, info: Info, step: int) -> None:
        """Begin (or take up again) the run's record in its store, from ``step``: its
        writer reads the hub from here on. A store that cannot be written is warned
        about, and the run trains unrecorded."""
        model_json = self.model.to_json(indent=None) if isinstance(self.model, PlateModel) else None
        try:
            self._writer = self.store.open_run(info, model_json=model_json, checkpoint=self.checkpoint,
                                               continues=self.stored_id, step=step,
                                               source=self.hub.reader(from_start=False))
        except StoreError as err:
            warnings.warn(f"{self.name} is not recorded: {err}", RuntimeWarning, stacklevel=2)
            return
        self.stored_id = self._writer.run_id

    def _publish_points(self, history: History) -> None:
        """Every history record not yet published (a resumed run's earlier ones too)."""
        steps = history.step
        first = len(steps)
        while first > 0 and steps[first - 1] > self._published_step:
            first -= 1
        now = time.time()
        for i in range(first, len(steps)):
            self.hub.publish(Point(
                step=steps[i],
                elbo=history.elbo[i],
                smoothed_elbo=history.smoothed_elbo[i],
                spike=bool(history.spike[i]),
                steps_per_second=history.steps_per_second[i],
                elapsed=history.time[i],
                lr=history.lr[i],
                time=now,
            ))
        if steps:
            self._published_step = steps[-1]

    def _summary_due(self, state: TrainingState) -> bool:
        """After ``summary_every`` steps, and once training has had 1 / SUMMARY_SHARE
        times the last summary's cost: summaries of a large model (PAVI-E encodes
        all the data for one) never take more than that share of the time."""
        if state.step - self._summary_step < self.config.summary_every:
            return False
        return state.elapsed - self._summary_elapsed >= self._summary_cost * (1 / SUMMARY_SHARE - 1)

    def _publish_summary(self, state: TrainingState) -> None:
        started = time.perf_counter()
        posterior = Posterior(state.model, state.family)
        summary = posterior.summary(n=self.config.summary_draws, seed=state.step)
        draws = None
        n = self.config.detail_draws
        if n and n * _numbers_per_draw(state.model) <= DRAWS_LIMIT:
            draws = posterior.predictive(n, seed=state.step + 1, latents=True)
        self.hub.publish(Summary(step=state.step, summary=summary, draws=draws))
        self._summary_step, self._summary_elapsed = state.step, state.elapsed
        self._summary_cost = time.perf_counter() - started

    def _set_state(self, new: RunState, message: str = "") -> None:
        """Record and publish a state change (the condition's lock is held)."""
        if new is self.state:
            return
        self.state = new
        now = time.time()
        self.transitions.append((new, now))
        self.hub.publish(StateChange(run=self.name, state=new.value, time=now, message=message))

    def __repr__(self) -> str:
        p = self.progress
        return f"TrainingRun({self.name!r}, {self.config.family}, {self.state}, step {p.step}/{p.total_steps})"


def _numbers_per_draw(model: CompiledModel) -> int:
    """The numbers in one joint draw of the latents and the observed variables."""
    total = 0
    for name in (*model.latent_names, *model.observed_names):
        elements = math.prod(model.plate_shape(name))
        total += elements * math.prod(model.variables[name].event_shape)
    return total
