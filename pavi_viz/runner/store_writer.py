"""Writing one run to the run store from a thread of its own.

DESIGN's threading rule: a training step never waits for the store. The training side
hands records to a :class:`RunWriter` (:meth:`RunWriter.put` only appends to a queue);
the writer's thread, with its own connection, wakes every :data:`FLUSH_SECONDS` (not
at every record: a thread woken at every step would take the GIL from training as
often), takes what is queued and commits it, :data:`FLUSH_RECORDS` records a
transaction at most, and beats the run's heartbeat (``runs.updated``) at least every
:data:`HEARTBEAT_SECONDS` while the run lives, so that readers in other processes can
tell a live run from one whose process died (:data:`pavi_viz.runner.store.STALE_SECONDS`). :meth:`RunWriter.close` commits what is
queued and ends the thread.

The records are the hub's (:class:`~pavi_viz.runner.hub.Point`, ``Summary``,
``StateChange``, ``Info``): a :class:`~pavi_viz.runner.run.TrainingRun` can forward what
it publishes as it is. Two more say what only the writer needs: :class:`Rewind` (the
run's history was cut back: a divergence restored an earlier step) and :class:`Outputs`
(the files a run wrote, its Pareto k).

:class:`FitLog` adapts a writer to what :func:`pavi_viz.fit` and ``pavi-viz fit`` report
(the :class:`~pavi_viz.inference.training.FitSink` protocol): the new steps of a
``TrainingState``, a posterior summary now and then, and how the run ended.

Size stays bounded on long runs: once a run holds more than ``max_points`` points
(:data:`MAX_POINTS`), the older ones (all but the newest quarter) keep only the steps
that are multiples of a stride, doubled until three quarters of ``max_points`` are
left: the hub's own rule (:class:`~pavi_viz.runner.hub.MetricsHub`), so the old history
stays evenly spaced, however long the run.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import queue
import sqlite3
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pavi_viz.runner.hub import Info, Point, Reader, Record, StateChange, Summary
from pavi_viz.runner.store_schema import StoreError, connect, transaction
from pavi_viz.runner.store_summary import encode

if TYPE_CHECKING:
    import xarray as xr

    from pavi_viz.inference.families import VariationalFamily
    from pavi_viz.inference.state import History, TrainingState
    from pavi_viz.model.compiled import CompiledModel

#: Seconds between two commits of a busy run (its points arrive in batches this often).
FLUSH_SECONDS = 0.5
#: The most records one transaction writes (a long history queued at once, by a run
#: resumed from a checkpoint, goes in several, so that other writers wait less).
FLUSH_RECORDS = 1000
#: Seconds between two heartbeats of a run that has nothing to write (paused...).
HEARTBEAT_SECONDS = 5.0
#: The points a run keeps before the older ones are thinned: a live hub's default bound
#: (``MetricsHub(max_points=20_000)``), so a dashboard attached to a stored run sees as much.
MAX_POINTS = 20_000
#: The most numbers a stored posterior summary holds (8 bytes each): a larger model's
#: summaries (a million groups...) are not stored, so that the file stays small.
SUMMARY_NUMBERS = 2_000_000
#: The draws the summary that :class:`FitLog` stores at the end of a run is computed from.
SUMMARY_DRAWS = 1000
#: The draws of the summaries that :class:`FitLog` stores while a run trains (a
#: dashboard's own live summaries' default, ``RunConfig.summary_draws``)...
LIVE_SUMMARY_DRAWS = 200
#: ...at least this many seconds apart (a dashboard watching the run from the store sees
#: its posterior move)...
SUMMARY_SECONDS = 10.0
#: ...and so that their thread is busy this share of the time at most (a large model's
#: summaries come further apart).
SUMMARY_SHARE = 0.05
#: The states a run ends in, by the reason :func:`pavi_viz.fit` gives
#: (:data:`pavi_viz.inference.training.END_REASONS`); every other reason (a
#: ``FitResult.stop_reason``: completed, converged, early stopping) means "finished".
STATE_OF_REASON = {"callback": "stopped", "diverged": "diverged", "interrupted": "interrupted", "error": "failed"}
#: End reasons whose state is worth a posterior summary (not a broken or cut-short one).
SUMMARISED = frozenset({"completed", "converged", "early_stopping", "callback", "diverged"})


@dataclass(frozen=True)
class Rewind:
    """The run's history now ends at ``step``: later points are deleted."""

    step: int


@dataclass(frozen=True)
class Outputs:
    """What a run wrote besides its records (None: unchanged): its posterior file, the
    Pareto k of its importance check."""

    posterior: str | None = None
    pareto_k: float | None = None


StoreRecord = Record | Rewind | Outputs


class RunWriter:
    """The thread that writes one run's records to the store, in batches.

    Made by :meth:`pavi_viz.runner.store.RunStore.open_run`, which created (or took up)
    the run's row. A write that fails for another reason than a busy file is warned about
    once at :meth:`close`; the run's records then stop there (training goes on). Records
    put after :meth:`close` began are not written.

    Args:
        path: the store's file.
        run_id: the run's id.
        points_held: the points the run holds already.
        max_points: the bound of the points kept (see the module's notes).
        source: a reader of the run's hub, whose records the thread takes as well as
            those put (a :class:`~pavi_viz.runner.run.TrainingRun` records itself so:
            its training thread only publishes to its hub), or None.
    """

    def __init__(self, path: Path, run_id: int, *, points_held: int, max_points: int = MAX_POINTS,
                 source: Reader | None = None) -> None:
        if max_points < 4:
            raise ValueError(f"max_points must be at least 4, got {max_points}")
        self.path, self.run_id, self.max_points = path, run_id, max_points
        self.source = source
        self.error: Exception | None = None
        self._points_held = points_held
        self._stride = 1
        self._queue: queue.SimpleQueue[StoreRecord] = queue.SimpleQueue()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pavi_viz store run {run_id}", daemon=True)
        self._thread.start()

    def put(self, record: StoreRecord) -> None:
        """Queue a record for the next batch (any thread; returns at once)."""
        if self.error is None:  # after a failure, nothing is written: nothing is kept either
            self._queue.put(record)

    def close(self, timeout: float | None = None) -> None:
        """Commit what is queued and end the thread; warn if the run could not be written."""
        self._closing.set()
        self._thread.join(timeout)
        if self.error is not None:
            warnings.warn(f"run store {self.path}: run {self.run_id} could not be written to the end ({self.error})",
                          RuntimeWarning, stacklevel=2)

    # -- the thread --------------------------------------------------------------------
    def _run(self) -> None:
        try:
            connection = connect(self.path, create=False)
        except StoreError as err:
            self.error = err
            return
        try:
            self._write_until_closed(connection)
        finally:
            connection.close()

    def _write_until_closed(self, connection: sqlite3.Connection) -> None:
        pending: list[StoreRecord] = []
        last_write = time.monotonic()
        while True:
            closing = self._closing.wait(FLUSH_SECONDS)  # at once when closed
            pending += self._take_queued()
            if not pending and not closing and time.monotonic() - last_write < HEARTBEAT_SECONDS:
                continue
            try:
                while True:  # even an empty batch: it beats the heartbeat
                    batch = pending[:FLUSH_RECORDS]
                    with transaction(connection):
                        self._write(connection, batch)
                    del pending[:len(batch)]
                    if not pending:
                        break
            except sqlite3.OperationalError as err:
                if not _busy(err) or closing:
                    self.error = err
            except Exception as err:  # noqa: BLE001 - the thread must not die unheard: close() warns
                self.error = err
            if self.error is not None or (closing and not pending):
                return
            # Else a busy file (another process's long write): what is left waits for the next round.
            last_write = time.monotonic()

    def _take_queued(self) -> list[StoreRecord]:
        taken: list[StoreRecord] = [] if self.source is None else list(self.source.read())
        with contextlib.suppress(queue.Empty):
            while True:
                taken.append(self._queue.get_nowait())
        return taken

    def _write(self, connection: sqlite3.Connection, records: list[StoreRecord]) -> None:
        """Write a batch, in order (the lock is held), and beat the heartbeat."""
        points: list[Point] = []
        for record in records:
            if isinstance(record, Point):
                points.append(record)
                continue
            self._write_points(connection, points)
            points = []
            if isinstance(record, StateChange):
                connection.execute("INSERT INTO transitions VALUES (?, ?, ?, ?)",
                                   (self.run_id, record.state, record.time, record.message))
                connection.execute("UPDATE runs SET state = ? WHERE id = ?", (record.state, self.run_id))
            elif isinstance(record, Summary):
                self._write_summary(connection, record)
            elif isinstance(record, Info):
                connection.execute("UPDATE runs SET family = ?, total_steps = ?, settings = ? WHERE id = ?",
                                   (record.family, record.total_steps, settings_json(record.settings), self.run_id))
            elif isinstance(record, Rewind):
                self._rewind(connection, record.step)
            elif isinstance(record, Outputs):
                connection.execute(
                    "UPDATE runs SET posterior = coalesce(?, posterior), pareto_k = coalesce(?, pareto_k) WHERE id = ?",
                    (record.posterior, record.pareto_k, self.run_id))
            else:
                raise ValueError(f"a run writer writes hub records, Rewind or Outputs, not {type(record).__name__}")
        self._write_points(connection, points)
        connection.execute("UPDATE runs SET updated = ? WHERE id = ?", (time.time(), self.run_id))

    def _write_points(self, connection: sqlite3.Connection, points: list[Point]) -> None:
        if not points:
            return
        connection.executemany(
            "INSERT OR REPLACE INTO points VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(self.run_id, p.step, p.elbo, p.smoothed_elbo, int(p.spike), p.steps_per_second, p.elapsed, p.lr,
              p.time) for p in points])
        last = points[-1]
        connection.execute("UPDATE runs SET step = ?, smoothed_elbo = ? WHERE id = ?",
                           (last.step, last.smoothed_elbo, self.run_id))
        self._points_held += len(points)
        if self._points_held > self.max_points:
            self._thin(connection)

    def _thin(self, connection: sqlite3.Connection) -> None:
        """Thin the points but the newest quarter (see the module's notes)."""
        cut = connection.execute("SELECT step FROM points WHERE run = ? ORDER BY step DESC LIMIT 1 OFFSET ?",
                                 (self.run_id, self.max_points // 4 - 1)).fetchone()[0]
        while True:  # the current stride first, then doubled until enough are gone
            connection.execute("DELETE FROM points WHERE run = ? AND step < ? AND step % ? != 0",
                               (self.run_id, cut, self._stride))
            self._points_held = self._count_points(connection)
            if self._points_held <= self.max_points * 3 // 4:
                return
            self._stride *= 2

    def _rewind(self, connection: sqlite3.Connection, step: int) -> None:
        connection.execute("DELETE FROM points WHERE run = ? AND step > ?", (self.run_id, step))
        last = connection.execute("SELECT step, smoothed_elbo FROM points WHERE run = ? ORDER BY step DESC LIMIT 1",
                                  (self.run_id,)).fetchone()
        connection.execute("UPDATE runs SET step = ?, smoothed_elbo = ? WHERE id = ?",
                           (*(last or (step, None)), self.run_id))
        self._points_held = self._count_points(connection)

    def _count_points(self, connection: sqlite3.Connection) -> int:
        return connection.execute("SELECT count(*) FROM points WHERE run = ?", (self.run_id,)).fetchone()[0]

    def _write_summary(self, connection: sqlite3.Connection, record: Summary) -> None:
        pareto_k = record.summary.attrs.get("pareto_k")
        if pareto_k is not None and math.isfinite(pareto_k):  # the run's latest importance check
            connection.execute("UPDATE runs SET pareto_k = ? WHERE id = ?", (float(pareto_k), self.run_id))
        encoded = encode(record.summary)
        if encoded.numbers > SUMMARY_NUMBERS:
            return
        # The latest replaces the one before (its variables go with it: ON DELETE CASCADE).
        connection.execute("DELETE FROM summaries WHERE run = ?", (self.run_id,))
        connection.execute("INSERT INTO summaries VALUES (?, ?, ?, ?, ?)",
                           (self.run_id, record.step, time.time(), encoded.coords, encoded.attrs))
        connection.executemany("INSERT INTO summary_variables VALUES (?, ?, ?, ?, ?)",
                               [(self.run_id, v.name, v.dims, v.shape, v.data) for v in encoded.variables])


def _busy(err: sqlite3.OperationalError) -> bool:
    """Whether the file was locked by another connection for longer than the busy timeout."""
    return getattr(err, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def settings_json(settings: dict[str, Any]) -> str:
    """A run's settings as JSON (values JSON has no word for, as their text)."""
    return json.dumps(settings, default=str, sort_keys=True)


def new_points(history: History, after: int) -> list[Point]:
    """The points of the history's steps after step ``after``, stamped now."""
    steps = history.step
    first = len(steps)
    while first > 0 and steps[first - 1] > after:
        first -= 1
    now = time.time()
    return [Point(step=steps[i], elbo=history.elbo[i], smoothed_elbo=history.smoothed_elbo[i],
                  spike=bool(history.spike[i]), steps_per_second=history.steps_per_second[i],
                  elapsed=history.time[i], lr=history.lr[i], time=now)
            for i in range(first, len(steps))]


class FitLog:
    """One run of :func:`pavi_viz.fit` or ``pavi-viz fit`` in the store, through its writer.

    Implements :class:`pavi_viz.inference.training.FitSink`: :meth:`step` after every
    step (on the training thread: it queues the new points), :meth:`end` once.
    Made by :meth:`pavi_viz.runner.store.RunStore.open_fit`.

    While the run trains, a posterior summary is stored now and then
    (:data:`SUMMARY_SECONDS`, :data:`SUMMARY_SHARE`): the training thread copies the
    family (its parameters, a few milliseconds), and a thread of its own summarises the
    copy, seeded by the step (a summary of a large model takes seconds; training goes on
    meanwhile, its random numbers untouched: they come from the run's own generators).

    Attributes:
        writer: the run's writer. run_id: its id in the store. name: its name.
    """

    def __init__(self, writer: RunWriter, name: str, stored_step: int) -> None:
        self.writer, self.run_id, self.name = writer, writer.run_id, name
        self._step = stored_step  # the last step handed to the writer
        self._ended = False
        self._summary_started: float | None = None  # time.monotonic() of the last summary's start
        self._summary_cost = 0.0  # seconds the last summary took
        self._summarising: threading.Thread | None = None

    def step(self, state: TrainingState) -> None:
        """Queue the steps taken since the last call (one, as a rule); start a posterior
        summary when one is due."""
        self._queue_points(state)
        now = time.monotonic()
        if self._summary_started is None:  # the clock starts at the run's first call
            self._summary_started = now
        elif ((self._summarising is None or not self._summarising.is_alive())
              and now - self._summary_started >= max(SUMMARY_SECONDS, self._summary_cost / SUMMARY_SHARE)):
            self._summary_started = now
            self._summarising = threading.Thread(
                target=self._summarise_copy, args=(state.model, copy.deepcopy(state.family), state.step),
                name=f"pavi_viz store summary run {self.run_id}", daemon=True)
            self._summarising.start()

    def _queue_points(self, state: TrainingState) -> None:
        history = state.history
        if history.step and history.step[-1] > self._step:
            for point in new_points(history, self._step):
                self.writer.put(point)
            self._step = history.step[-1]

    def _summarise_copy(self, model: CompiledModel, family: VariationalFamily, step: int) -> None:
        """The summary thread's body: summarise a copy of the family, as it was at ``step``."""
        started = time.perf_counter()
        summary = _summarise(model, family, n=LIVE_SUMMARY_DRAWS, seed=step)
        if summary is not None:
            self.writer.put(Summary(step=step, summary=summary, draws=None))
        self._summary_cost = time.perf_counter() - started

    def end(self, state: TrainingState, reason: str, message: str = "", *, summary: xr.Dataset | None = None,
            posterior: str | Path | None = None, pareto_k: float | None = None) -> None:
        """Record how the run ended, with its last points and a posterior summary, and
        commit it all (this returns once it is in the file); later calls do nothing.

        Args:
            state: the run's state. reason: why it ended (a ``FitResult.stop_reason``,
                ``"interrupted"`` or ``"error"``). message: what to say (default: the
                reason and the step).
            summary: the posterior summary to store (default: one of
                :data:`SUMMARY_DRAWS` draws, for runs that ended whole).
            posterior: the file the posterior was written to. pareto_k: the Pareto k
                of its importance check (default: the summary's, when it has one,
                stored with the summary).
        """
        if self._ended:
            return
        self._ended = True
        if self._summarising is not None:  # its summary, older, goes in before the last one
            self._summarising.join()
        if state.step < self._step:  # a divergence restored an earlier step
            self.writer.put(Rewind(state.step))
            self._step = state.step
        self._queue_points(state)
        if summary is None and reason in SUMMARISED:
            summary = _summarise(state.model, state.family, n=SUMMARY_DRAWS, seed=state.settings.get("seed"))
        if summary is not None:  # its Pareto k is stored with it
            self.writer.put(Summary(step=state.step, summary=summary, draws=None))
        if posterior is not None or pareto_k is not None:
            self.writer.put(Outputs(posterior=None if posterior is None else str(Path(posterior).resolve()),
                                    pareto_k=None if pareto_k is None or math.isnan(pareto_k) else pareto_k))
        new = STATE_OF_REASON.get(reason, "finished")
        said = message or f"{reason.replace('_', ' ')} at step {state.step} of {state.total_steps}"
        self.writer.put(StateChange(run=self.name, state=new, time=time.time(), message=said))
        self.writer.close()


def _summarise(model: CompiledModel, family: VariationalFamily, n: int, seed: int | None) -> xr.Dataset | None:
    """The posterior summary of a run's family, of ``n`` draws (None, with a warning, if
    it fails: the run's record is worth more than its summary)."""
    from pavi_viz.inference.posterior import Posterior

    try:
        return Posterior(model, family).summary(n=n, seed=seed)
    except Exception as err:  # noqa: BLE001 - reported, the run is stored without its summary
        warnings.warn(f"the run's posterior summary could not be stored: {type(err).__name__}: {err}",
                      RuntimeWarning, stacklevel=3)
        return None


__all__ = ["FLUSH_RECORDS", "FLUSH_SECONDS", "HEARTBEAT_SECONDS", "MAX_POINTS", "SUMMARY_DRAWS", "SUMMARY_NUMBERS",
           "LIVE_SUMMARY_DRAWS", "SUMMARY_SECONDS", "SUMMARY_SHARE",
           "FitLog", "Outputs", "Rewind", "RunWriter", "StoreRecord", "new_points", "settings_json"]
