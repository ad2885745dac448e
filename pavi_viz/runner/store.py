"""The run store: runs that outlive the process that trained them.

A :class:`RunStore` is one SQLite file (:mod:`pavi_viz.runner.store_schema`: where it
lies, its schema) that any number of processes write and read at once: each run is
written by the process that trains it, from a thread of its own
(:mod:`pavi_viz.runner.store_writer`), and read by anyone::

    from pavi_viz.runner import RunStore

    store = RunStore()                          # .pavi_viz/runs.db here, or $PAVI_VIZ_STORE
    result = pavi_viz.fit(model, steps=2000, store=store)
    for run in store.runs():                    # newest first
        print(run.id, run.name, run.state, run.step, run.smoothed_elbo)
    store.points(run.id)                        # its ELBO history: hub Points
    store.summary(run.id)                       # its latest posterior summary: a hub Summary

Readers get typed records: :class:`StoredRun`, and the hub's own ``Point``,
``StateChange`` and ``Summary`` (so that a dashboard can replay a stored run as it
reads a live one).

**Liveness.** A run whose state says it trains (running, queued, paused) but whose
process is gone (its pid is no longer alive on this host), or whose heartbeat is older
than :data:`STALE_SECONDS` (a process on another host, or one that hangs), is reported
``interrupted``, with its history up to its last committed point.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pavi_viz.runner.hub import Info, Point, Reader, StateChange, Summary
from pavi_viz.runner.store_schema import StoreError, connect, default_path, transaction
from pavi_viz.runner.store_summary import EncodedSummary, EncodedVariable, decode
from pavi_viz.runner.store_writer import HEARTBEAT_SECONDS, MAX_POINTS, FitLog, RunWriter, settings_json

if TYPE_CHECKING:
    from pavi_viz.inference.state import TrainingState
    from pavi_viz.model.compiled import CompiledModel
    from pavi_viz.model.spec import PlateModel

#: Seconds without a heartbeat after which a run said to train is reported interrupted
#: (twelve missed heartbeats: a writer beats every HEARTBEAT_SECONDS).
STALE_SECONDS = 12 * HEARTBEAT_SECONDS
#: The states of a run whose process is at it: a TrainingRun's ACTIVE states, by value.
LIVE = frozenset({"running", "queued", "paused"})
#: The state readers see for a live-looking run whose process is gone.
INTERRUPTED = "interrupted"
#: The state of a run that reached its end (what ``delete_finished`` deletes).
FINISHED = "finished"


@dataclass(frozen=True)
class StoredRun:
    """One run of the store, as readers see it.

    Attributes:
        id: its number in the store. name: its label. model: the model's name.
        model_hash: the SHA-256 of its model's JSON (the same for runs of the same
            model and data), or None when it was fitted from a compiled model. family: the variational family. state: where it stands (``interrupted`` when
            its process died while it trained: see the module's notes).
        settings: its fit settings. created, updated: when it began, and its latest
            write (``time.time()``). pid, hostname: the process that writes it.
        total_steps: the steps it aims at. step: the last step stored.
        smoothed_elbo: the smoothed ELBO at that step (NaN before the first).
        checkpoint, posterior: the files it saves its state to and wrote its posterior
            to (absolute paths), or None. pareto_k: the Pareto k of its importance
            check, when known.
    """

    id: int
    name: str
    model: str
    model_hash: str | None
    family: str
    state: str
    settings: dict[str, Any]
    created: float
    updated: float
    pid: int
    hostname: str
    total_steps: int
    step: int
    smoothed_elbo: float
    checkpoint: str | None
    posterior: str | None
    pareto_k: float | None

    @property
    def live(self) -> bool:
        """Whether its process is training it now."""
        return self.state in LIVE


_RUN_COLUMNS = ("id, name, model, model_hash, family, state, settings, created, updated, pid, hostname, total_steps, step, "
                "smoothed_elbo, checkpoint, posterior, pareto_k")


class RunStore:
    """The runs of one store file.

    Args:
        path: the file (default :func:`~pavi_viz.runner.store_schema.default_path`:
            ``$PAVI_VIZ_STORE``, else ``.pavi_viz/runs.db`` in the working directory).
        create: make the file (and its folder) when there is none; False: a missing
            file is an error (for readers).
        max_points: the points a run keeps before its older ones are thinned.

    Raises:
        StoreError: the file is missing (and not ``create``), not a pavi_viz store, or
            of a newer schema: checked here, so that a bad path fails before training.
    """

    def __init__(self, path: str | Path | None = None, *, create: bool = True, max_points: int = MAX_POINTS) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.max_points = max_points
        connect(self.path, create=create).close()

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A connection for one operation; SQLite errors, and values of the wrong kind
        (SQLite's columns take any), as StoreErrors naming the file."""
        connection = connect(self.path, create=False)
        try:
            yield connection
        except sqlite3.Error as err:
            raise StoreError(f"run store {self.path}: {err}") from err
        except (TypeError, ValueError) as err:
            raise StoreError(f"run store {self.path} holds malformed values: {err}") from None
        finally:
            connection.close()

    # -- reading -------------------------------------------------------------------------
    def runs(self) -> list[StoredRun]:
        """Every run, newest first."""
        with self._connection() as db:
            rows = db.execute(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY id DESC").fetchall()
            return [self._stored_run(row) for row in rows]

    def run(self, run_id: int) -> StoredRun:
        """One run. Raises StoreError when there is none of that id."""
        with self._connection() as db:
            row = db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise StoreError(f"there is no run {run_id} in {self.path}")
            return self._stored_run(row)

    def points(self, run_id: int, after_step: int = 0) -> list[Point]:
        """The run's ELBO points after step ``after_step`` (0: all), oldest first (the
        older ones thinned on long runs); missing numbers are NaN."""
        with self._connection() as db:
            rows = db.execute("SELECT step, elbo, smoothed_elbo, spike, steps_per_second, elapsed, lr, time "
                              "FROM points WHERE run = ? AND step > ? ORDER BY step", (run_id, after_step)).fetchall()
            return [Point(int(step), _number(elbo), _number(smoothed), bool(spike), _number(rate), _number(elapsed),
                          _number(lr), float(when)) for step, elbo, smoothed, spike, rate, elapsed, lr, when in rows]

    def transitions(self, run_id: int) -> list[StateChange]:
        """The run's state changes, oldest first (an interruption seen by a reader is
        not among them until the run is taken up again)."""
        with self._connection() as db:
            name = self._name(db, run_id)
            rows = db.execute("SELECT state, time, message FROM transitions WHERE run = ? ORDER BY time, rowid",
                              (run_id,)).fetchall()
        return [StateChange(run=name, state=state, time=when, message=message) for state, when, message in rows]

    def summary(self, run_id: int) -> Summary | None:
        """The run's latest posterior summary (its ``draws`` None), or None.

        Raises:
            StoreError: the stored summary is malformed (naming what is wrong).
        """
        with self._connection() as db:
            head = db.execute("SELECT step, coords, attrs FROM summaries WHERE run = ?", (run_id,)).fetchone()
            if head is None:
                return None
            rows = db.execute("SELECT name, dims, shape, data FROM summary_variables WHERE run = ? ORDER BY rowid",
                              (run_id,)).fetchall()
        step, coords, attrs = head
        try:
            encoded = EncodedSummary(coords, attrs, tuple(EncodedVariable(*row) for row in rows))
            return Summary(step=step, summary=decode(encoded), draws=None)
        except (TypeError, ValueError) as err:
            raise StoreError(f"the summary of run {run_id} in {self.path} is malformed: {err}") from None

    def summary_step(self, run_id: int) -> int | None:
        """The step of the run's latest summary (None: none), without reading it: a
        follower asks this often, and reads the summary only when it is new."""
        with self._connection() as db:
            row = db.execute("SELECT step FROM summaries WHERE run = ?", (run_id,)).fetchone()
        return None if row is None else int(row[0])

    def model_json(self, run_id: int) -> str | None:
        """The JSON of the run's model (``PlateModel.from_json`` reads it), or None when
        it was fitted from a compiled model."""
        with self._connection() as db:
            self._name(db, run_id)
            row = db.execute("SELECT json FROM models JOIN runs ON runs.model_hash = models.hash WHERE runs.id = ?",
                             (run_id,)).fetchone()
        return None if row is None else row[0]

    def find_checkpoint(self, checkpoint: str | Path) -> StoredRun | None:
        """The newest run that saves its state to this checkpoint file and is not
        training now, or None."""
        with self._connection() as db:
            rows = db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE checkpoint = ? ORDER BY id DESC",
                              (_absolute(checkpoint),)).fetchall()
            return next((run for run in map(self._stored_run, rows) if not run.live), None)

    def _stored_run(self, row: tuple) -> StoredRun:
        """The record of a ``runs`` row (TypeError or ValueError: a malformed one)."""
        (run_id, name, model, model_hash, family, state, settings, created, updated, pid, hostname, total, step,
         smoothed, checkpoint, posterior, pareto_k) = row
        settings = json.loads(settings)
        if not isinstance(settings, dict):
            raise ValueError(f"the settings of run {run_id} are not a JSON object")
        pid, updated = int(pid), float(updated)
        return StoredRun(int(run_id), str(name), str(model), _text(model_hash), str(family), _seen_state(str(state), pid, hostname,
                         updated), settings, float(created), updated, pid, str(hostname), int(total), int(step),
                         _number(smoothed), _text(checkpoint), _text(posterior),
                         None if pareto_k is None else float(pareto_k))

    def _name(self, db: sqlite3.Connection, run_id: int) -> str:
        row = db.execute("SELECT name FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"there is no run {run_id} in {self.path}")
        return row[0]

    # -- writing -------------------------------------------------------------------------
    def open_run(self, info: Info, *, model_json: str | None = None, checkpoint: str | Path | None = None,
                 continues: int | None = None, step: int = 0, source: Reader | None = None) -> RunWriter:
        """Start recording a run: its row, in state ``running``, and the writer that
        records the rest (hand it the run's records; close it when the run has ended).

        Args:
            info: what the run trains (name, model, family, total steps, settings).
            model_json: the model's JSON (``PlateModel.to_json()``), or None.
            checkpoint: the file the run saves its state to.
            continues: the id of a stored run that this one takes up again (from its
                checkpoint at ``step``: its later points are deleted), or None for a
                new run.
            step: the step the run starts from.
            source: a reader of the run's hub, which the writer reads too (see
                :class:`~pavi_viz.runner.store_writer.RunWriter`).
        """
        now = time.time()
        digest = None if model_json is None else hashlib.sha256(model_json.encode()).hexdigest()
        fields = {"name": info.run, "model": info.model, "model_hash": digest, "settings": settings_json(info.settings),
                  "family": info.family, "state": "running", "updated": now, "pid": os.getpid(),
                  "hostname": socket.gethostname(), "total_steps": info.total_steps, "step": step,
                  "checkpoint": None if checkpoint is None else _absolute(checkpoint)}
        with self._connection() as db, transaction(db):
            if digest is not None:
                db.execute("INSERT OR IGNORE INTO models VALUES (?, ?)", (digest, model_json))
            if continues is None:
                run_id = db.execute(f"INSERT INTO runs ({', '.join(fields)}, created) VALUES "
                                    f"({', '.join('?' * len(fields))}, ?)", (*fields.values(), now)).lastrowid
                message = f"started at step {step}"
            else:
                run_id = continues
                self._take_up(db, run_id, fields, step)
                message = f"taken up again at step {step}"
            db.execute("INSERT INTO transitions VALUES (?, ?, ?, ?)", (run_id, "running", now, message))
            held = db.execute("SELECT count(*) FROM points WHERE run = ?", (run_id,)).fetchone()[0]
        return RunWriter(self.path, run_id, points_held=held, max_points=self.max_points, source=source)

    def _take_up(self, db: sqlite3.Connection, run_id: int, fields: dict[str, Any], step: int) -> None:
        """Point a stored run at this process again; record the interruption readers saw
        (at its last heartbeat); drop its points after ``step``."""
        row = db.execute("SELECT state, pid, hostname, updated FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"there is no run {run_id} in {self.path} to take up")
        state, pid, hostname, updated = row
        if _seen_state(state, pid, hostname, updated) == INTERRUPTED:
            db.execute("INSERT INTO transitions VALUES (?, ?, ?, ?)",
                       (run_id, INTERRUPTED, updated, f"its process {pid} on {hostname} ended while it trained"))
        elif state in LIVE:
            raise StoreError(f"run {run_id} in {self.path} is {state} in process {pid} on {hostname}")
        # The run keeps its name, and its checkpoint unless another is named.
        fields = {k: v for k, v in fields.items() if k != "name" and not (k == "checkpoint" and v is None)}
        db.execute(f"UPDATE runs SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?", (*fields.values(), run_id))
        db.execute("DELETE FROM points WHERE run = ? AND step > ?", (run_id, step))
        last = db.execute("SELECT smoothed_elbo FROM points WHERE run = ? ORDER BY step DESC LIMIT 1",
                          (run_id,)).fetchone()
        db.execute("UPDATE runs SET smoothed_elbo = ? WHERE id = ?", (last[0] if last else None, run_id))

    def open_fit(self, model: PlateModel | CompiledModel, state: TrainingState, *,
                 checkpoint: str | Path | None = None, resume: str | Path | None = None,
                 name: str | None = None) -> FitLog:
        """Start recording a run of :func:`pavi_viz.fit` (or ``pavi-viz fit``), set up at
        ``state``: the :class:`~pavi_viz.inference.training.FitStore` protocol.

        A run resumed from a checkpoint that a stored run saves to takes that run up
        again; any other run is a new one (named ``name``, default the model's name),
        which first records the history it resumes with.
        """
        import torch

        taken_up = self.find_checkpoint(resume) if resume is not None else None
        info = Info(run=name or state.model.name, model=state.model.name, family=state.family_name,
                    parameter_count=state.family.parameter_count(), total_steps=state.total_steps,
                    device=str(state.model.device), torch_threads=torch.get_num_threads(),
                    settings=dict(state.settings), truth=None, observed=None)
        # A compiled model has no JSON of its own: its run is stored without it.
        model_json = model.to_json(indent=None) if hasattr(model, "to_json") else None
        writer = self.open_run(info, model_json=model_json, checkpoint=checkpoint, step=state.step,
                               continues=None if taken_up is None else taken_up.id)
        stored = 0 if taken_up is None else min(taken_up.step, state.step)
        log = FitLog(writer, info.run if taken_up is None else taken_up.name, stored)
        log.step(state)  # the history it resumes with, where the store lacks it
        return log

    # -- deleting ------------------------------------------------------------------------
    def delete(self, run_ids: Iterable[int]) -> list[int]:
        """Delete these runs (all they hold), then compact the file; the ids deleted.

        Raises:
            StoreError: one of them is not in the store, or is training now (nothing
                is deleted then).
        """
        wanted = sorted(set(run_ids))
        runs = {run.id: run for run in self.runs()}
        missing = [i for i in wanted if i not in runs]
        if missing:
            raise StoreError(f"there is no run {', '.join(map(str, missing))} in {self.path}")
        live = [f"{i} ({runs[i].state} in process {runs[i].pid} on {runs[i].hostname})"
                for i in wanted if runs[i].live]
        if live:
            raise StoreError(f"run {', '.join(live)} is training: stop it before deleting it")
        with self._connection() as db:
            with transaction(db):
                db.executemany("DELETE FROM runs WHERE id = ?", [(i,) for i in wanted])
                db.execute("DELETE FROM models WHERE hash NOT IN (SELECT model_hash FROM runs "
                           "WHERE model_hash IS NOT NULL)")
            db.execute("VACUUM")  # give the space back to the disk
        return wanted

    def delete_finished(self) -> list[int]:
        """Delete the runs that finished (see :meth:`delete`); the ids deleted."""
        finished = [run.id for run in self.runs() if run.state == FINISHED]
        return self.delete(finished) if finished else []


def _seen_state(state: str, pid: int, hostname: str, updated: float) -> str:
    """The state readers see: :data:`INTERRUPTED` for a live state whose process is gone."""
    if state not in LIVE:
        return state
    if time.time() - updated > STALE_SECONDS:
        return INTERRUPTED
    if hostname == socket.gethostname() and not _process_alive(pid):
        return INTERRUPTED
    return state


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (not a zombie: an ended process that its
    parent has not yet waited for). Where that cannot be asked (not POSIX, where
    ``os.kill`` would end the process), the heartbeat alone decides."""
    if pid == os.getpid() or os.name != "posix":
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether it exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (macOS): the signal's answer stands
        return True
    return status.rpartition(")")[2].split()[:1] != ["Z"]


def duration_text(seconds: float) -> str:
    """A duration as its largest unit, for lists of runs: ``45 s``, ``12 min``, ``3 h``, ``2 d``."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{max(0, int(seconds))} s"


def _absolute(path: str | Path) -> str:
    return str(Path(path).resolve())


def _text(value: str | None) -> str | None:
    return None if value is None else str(value)


def _number(value: float | None) -> float:
    """A stored number (SQLite keeps NaN as NULL) as a float."""
    return math.nan if value is None else float(value)


__all__ = ["FINISHED", "INTERRUPTED", "LIVE", "STALE_SECONDS", "RunStore", "StoreError", "StoredRun", "duration_text"]
