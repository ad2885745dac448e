"""The state of one dashboard: its model, its run, what is selected, what was polled.

:class:`DashboardState` is a ``param.Parameterized`` object that never imports Panel:
the views (:mod:`pavi_viz.ui.views`) watch its parameters and call its methods, and a
notebook or a test can drive it without any display. One state belongs to one
dashboard (one browser session, or one notebook output); its runs are its own.

Threading: the training thread only publishes to the run's hub. The dashboard's
periodic callback calls :meth:`DashboardState.poll` on the session's event loop; poll
reads the new records through the state's own cursor, updates the parameters (which
the views watch) and returns the new ELBO points for the views' streams.

Pacing: the views redraw on every new ``summary``, and a redraw costs far more than
reading the records (the dashboard runs in the training process and holds the GIL the
training thread needs). So :meth:`DashboardState.poll` keeps the newest summary (and
its draws) *pending* and applies it only once ``summary_interval`` seconds have passed
since the last one it applied; a newer one replaces a pending one unseen. The first
summary of a run, and the pending one of a run that is no longer running (paused,
stopped, finished, failed), are applied at once. The dashboard sets
``summary_interval`` from what applying cost (see :mod:`pavi_viz.ui.dashboard`); left
at 0, every summary is applied as it comes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import param
import xarray as xr

from pavi_viz.inference.posterior import Posterior
from pavi_viz.model.spec import PlateModel
from pavi_viz.ui.convergence import Settling, Stamp, settling
from pavi_viz.ui.limits import ServeLimits
from pavi_viz.runner import (
    ENDED,
    Info,
    Point,
    RunConfig,
    RunSlots,
    RunState,
    RunStore,
    StateChange,
    StoreError,
    StoreFollower,
    Summary,
    TrainingRun,
)


@dataclass
class Polled:
    """What one :meth:`DashboardState.poll` brought: new ELBO points, as columns.

    Attributes:
        step, elbo, smoothed_elbo, spike: one entry per new point, oldest first.
        new_summary: whether this poll applied a newer posterior summary (one that
            arrived now, or an earlier one held back until its interval passed).
        summary_pending: whether a newer summary is held back (see ``summary_interval``).
        restarted: whether a new run replaced the previous one (views clear their streams).
    """

    step: list[int] = field(default_factory=list)
    elbo: list[float] = field(default_factory=list)
    smoothed_elbo: list[float] = field(default_factory=list)
    spike: list[bool] = field(default_factory=list)
    new_summary: bool = False
    summary_pending: bool = False
    restarted: bool = False

    def __len__(self) -> int:
        return len(self.step)


class DashboardState(param.Parameterized):
    """The model, the run and the selections of one dashboard.

    Args:
        model: the model with its data (a bundled example by default).
        reference: reference posterior draws (dims ``("sample", *plates, ...)``), shown
            beside ours when given.
    """

    model = param.ClassSelector(class_=PlateModel, doc="The model being fitted, with its data.")
    config = param.ClassSelector(class_=RunConfig, doc="The training settings the next Start uses.")
    run = param.ClassSelector(class_=TrainingRun, allow_None=True, doc="The current run, if any.")
    watched = param.ClassSelector(class_=StoreFollower, allow_None=True,
                                  doc="The stored run shown instead of a run of this dashboard's (attach), if any.")
    store = param.ClassSelector(class_=RunStore, allow_None=True, constant=True,
                                doc="The run store its runs are recorded in, and stored runs attached from (None: none).")
    reference = param.ClassSelector(class_=xr.Dataset, allow_None=True, doc="Reference posterior draws.")

    # What the latest poll saw.
    run_name = param.String(default="", doc="The name of the run shown (empty: none).")
    run_state = param.String(default="idle", doc="The current run's state (RunState value).")
    message = param.String(default="", doc="The latest state message (the error of a failed run).")
    traceback = param.String(default="", doc="The traceback of a failed run.")
    step = param.Integer(default=0, doc="Completed steps.")
    total_steps = param.Integer(default=0, doc="The steps the run aims at.")
    steps_per_second = param.Number(default=0.0, doc="Recent throughput.")
    parameter_count = param.Integer(default=None, allow_None=True, doc="The family's learnable numbers.")
    summary = param.ClassSelector(class_=xr.Dataset, allow_None=True, doc="Latest posterior summary (stat dim).")
    draws = param.ClassSelector(class_=xr.Dataset, allow_None=True, doc="Latest joint and predictive draws.")
    summary_step = param.Integer(default=0, doc="The step of the latest summary.")
    summary_elbo = param.Number(default=math.nan, doc="The smoothed ELBO when the latest summary was taken.")
    previous = param.ClassSelector(class_=Stamp, allow_None=True,
                                   doc="The summary shown before the latest one, with its step (None: none yet).")
    truth = param.ClassSelector(class_=xr.Dataset, allow_None=True, doc="Ground truth of simulated data.")
    observed = param.ClassSelector(class_=xr.Dataset, allow_None=True, doc="The observed data.")

    summary_interval = param.Number(
        default=0.0, bounds=(0, None),
        doc="Seconds at least between two summaries applied by poll (a newer one waits, pending; "
            "the first of a run and the last of a run that stopped going are applied at once).",
    )

    limits = param.ClassSelector(class_=ServeLimits, default=ServeLimits(), constant=True,
                                 doc="What a run may ask for (set by whoever serves the app).")
    slots = param.ClassSelector(class_=RunSlots, default=None, allow_None=True, constant=True,
                                doc="Turns to train, shared by the server's sessions (None: runs train at once).")

    # Selections, linked across views.
    variable = param.String(default="", doc="The selected variable (model diagram, marginals).")
    selection = param.Dict(default={}, doc="The selected element of each plate, {plate: index}.")

    def __init__(self, model: PlateModel | None = None, reference: xr.Dataset | None = None, **params: Any) -> None:
        if model is None:
            from pavi_viz import examples

            model = examples.load(DEFAULT_EXAMPLE, **DEFAULT_OPTIONS)
        params.setdefault("config", RunConfig(**DEFAULT_CONFIG))
        super().__init__(model=model, reference=reference, **params)
        self._reader = None
        self._restarted = False
        self._pending: dict[str, Any] | None = None  # the newest summary not applied yet
        self._smoothed_elbo = math.nan  # the newest point's, read by poll
        self._applied_at: float | None = None  # time.monotonic() of the last summary applied (None: none yet)
        self._model_changed()

    @param.depends("model", watch=True)
    def _model_changed(self) -> None:
        """A new model: the run of the old one stops (its checkpoint deleted), the
        selections start afresh."""
        self._discard_run()
        latent = [v.name for v in self.model.variables if not v.observed]
        self._follow(None, truth=None, observed=None, variable=latent[0] if latent else "", selection={})

    def _follow(self, run: TrainingRun | None, watched: StoreFollower | None = None, **updates: Any) -> None:
        """Show ``run`` or the stored run ``watched`` (neither: no run) from its start:
        a reader of its hub, and every polled parameter back to where a new run begins,
        plus ``updates``."""
        hub = run.hub if run is not None else watched.hub if watched is not None else None
        self._reader = hub.reader() if hub is not None else None
        self._restarted = True
        self._pending, self._applied_at, self._smoothed_elbo = None, None, math.nan
        self.param.update(**{
            "run": run, "watched": watched, "run_name": run.name if run is not None else "",
            "run_state": "running" if run is not None else "idle", "message": "", "traceback": "", "step": 0,
            "total_steps": run.config.steps if run is not None else 0, "steps_per_second": 0.0,
            "parameter_count": None, "summary": None, "draws": None, "summary_step": 0, "summary_elbo": math.nan,
            "previous": None, **updates,
        })

    # -- control -----------------------------------------------------------------------
    def start(self) -> TrainingRun:
        """Start a new run of the current model with the current settings (the previous
        run, if still going, is stopped, and its checkpoint deleted).

        Raises:
            ValueError: a setting beyond the server's limits (the previous run goes on).
        """
        self.limits.check_run(self.config)
        self._discard_run()
        run = TrainingRun(self.model, self.config, slots=self.slots, store=self.store)
        self._follow(run)
        return run.start()

    def attach(self, run_id: int) -> StoreFollower:
        """Show the stored run ``run_id`` of :attr:`store`: its model (read from the
        store), its history, and, while its process trains it, what it records next (a
        :class:`~pavi_viz.runner.StoreFollower`). This dashboard's own run stops; Start
        trains the stored model afresh here.

        Raises:
            StoreError: there is no store, no such run, or its model is not stored (a
                run fitted from a compiled model); nothing changes then.
            ModelError: the stored model does not validate.
        """
        if self.store is None:
            raise StoreError("this dashboard has no run store to attach from")
        stored = self.store.run(run_id)
        text = self.store.model_json(run_id)
        if text is None:
            raise StoreError(f"run {run_id} ({stored.name}) was fitted from a compiled model, whose model "
                             f"the store does not keep: it cannot be shown")
        model = PlateModel.from_json(text)
        follower = StoreFollower(self.store, run_id)
        self.param.update(model=model, reference=None)  # stops our run, clears the selections
        self._follow(None, watched=follower.start(), run_name=f"{stored.name} (stored run {run_id})",
                     run_state=stored.state, total_steps=stored.total_steps)
        return follower

    def pause(self) -> None:
        if self.run is not None:
            self.run.pause()

    def resume(self, steps: int | None = None) -> None:
        """Resume a paused run, or a stopped or finished one (to ``steps`` in all).

        A stopped or finished run's thread restarts here, so ``run_state`` says
        ``running`` at once (a second click finds the run going, not stopped).
        """
        if self.run is not None:
            if steps is not None:
                self.limits.check_run(self.config, steps)
            self.run.resume(steps)
            self.run_state = self.run.state.value

    def stop(self, wait: bool = False) -> None:
        """Stop the current run, if it is going."""
        if self.run is not None and self.run.state not in ENDED:
            self.run.stop(wait=wait)

    # -- polling (the session's event loop) ------------------------------------------------
    def poll(self) -> Polled:
        """Read what the run published since the last poll, update the parameters, and
        return the new ELBO points.

        A new summary is applied (``summary``, ``draws``, ``summary_step``) only when its
        time has come (see the module's docstring and ``summary_interval``); until then
        it is pending, and ``Polled.summary_pending`` says so.
        """
        polled = Polled(restarted=self._restarted)
        self._restarted = False
        if self._reader is None:
            return polled
        updates: dict[str, Any] = {}
        for record in self._reader.read():
            match record:
                case Point():
                    polled.step.append(record.step)
                    polled.elbo.append(record.elbo)
                    polled.smoothed_elbo.append(record.smoothed_elbo)
                    polled.spike.append(record.spike)
                    self._smoothed_elbo = record.smoothed_elbo
                    updates["step"] = record.step
                    updates["steps_per_second"] = record.steps_per_second
                case Summary():
                    self._pending = {"summary": record.summary, "draws": record.draws, "summary_step": record.step,
                                     "summary_elbo": self._smoothed_elbo}
                case StateChange():
                    updates.update(run_state=record.state, message=record.message)
                    if record.state == RunState.FAILED.value and self.run is not None:
                        updates["traceback"] = self.run.traceback or ""
                case Info():
                    updates.update(
                        parameter_count=record.parameter_count, total_steps=record.total_steps,
                        truth=record.truth, observed=record.observed,
                    )
        if self._pending is not None and self._summary_due(updates.get("run_state", self.run_state)):
            updates.update(self._pending, previous=self.stamp)
            self._pending = None
            self._applied_at = time.monotonic()
            polled.new_summary = True
        polled.summary_pending = self._pending is not None
        if updates:
            self.param.update(**updates)
        return polled

    def _summary_due(self, run_state: str) -> bool:
        """Whether the pending summary is to be applied now: the run's first, one of a
        run no longer running, or ``summary_interval`` seconds after the last."""
        if self._applied_at is None or run_state != RunState.RUNNING.value:
            return True
        return time.monotonic() - self._applied_at >= self.summary_interval

    # -- reading ----------------------------------------------------------------------------
    @property
    def stamp(self) -> Stamp | None:
        """The summary shown and when it was taken (None before the run's first)."""
        if self.summary is None:
            return None
        return Stamp(self.summary_step, self.summary_elbo, self.summary)

    @property
    def settling(self) -> Settling | None:
        """What changed since the summary shown before (None before the second)."""
        now = self.stamp
        return settling(self.previous, now) if self.previous is not None and now is not None else None

    @property
    def fitted(self) -> bool:
        """Whether the current run has ended with a fitted family to export (stopped,
        finished, or diverged with its last good state kept)."""
        return self.run is not None and self.run.state in ENDED and self.run.result is not None

    def posterior(self) -> Posterior | None:
        """The current run's fitted posterior, once it has ended (see :attr:`fitted`);
        ``None`` before, and while its thread still trains the family."""
        return self.run.result.posterior if self.fitted else None

    def elbo_history(self) -> dict[str, list]:
        """The ELBO points so far of the run shown, as columns (``step``, ``elbo``,
        ``smoothed_elbo``, ``steps_per_second``, ``elapsed``, ``lr``); read from its hub
        (thread-safe, any time), so a very long run's older points come thinned."""
        columns: dict[str, list] = {name: [] for name in HISTORY_COLUMNS}
        if self._reader is not None:
            for record in self._reader.hub.since(0).records:
                if isinstance(record, Point):
                    for name in HISTORY_COLUMNS:
                        columns[name].append(getattr(record, name))
        return columns

    @property
    def seconds_left(self) -> float:
        """Time left at the current throughput (NaN when unknown)."""
        if self.steps_per_second <= 0:
            return math.nan
        return max(self.total_steps - self.step, 0) / self.steps_per_second

    def close(self, wait: bool = True) -> None:
        """Stop the run and delete its checkpoint once saved (a closed session frees its
        runs and leaves no file behind); ``wait``: until its thread has ended."""
        self._discard_run()
        if wait and self.run is not None:
            self.run.wait()

    def _discard_run(self) -> None:
        """Stop the current run without waiting, its own checkpoint gone once saved; stop
        following a stored run."""
        if self.run is not None:
            self.run.discard()
        if self.watched is not None:
            self.watched.stop()


#: The columns of :meth:`DashboardState.elbo_history`.
HISTORY_COLUMNS = ("step", "elbo", "smoothed_elbo", "steps_per_second", "elapsed", "lr")

#: What a dashboard opens on: a bundled example with simulated data (truth known),
#: small enough that a fit shows within seconds of pressing Start.
DEFAULT_EXAMPLE = "gre"
DEFAULT_OPTIONS: dict[str, Any] = {"G": 100, "N": 10, "D": 2}
DEFAULT_CONFIG: dict[str, Any] = {"family": "pavi-e", "steps": 3000, "lr": 0.01, "summary_every": 50}
