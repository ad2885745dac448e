"""The metrics hub: what a training thread publishes and any number of readers consume.

The training thread appends plain, immutable records (dicts of numbers and strings,
or an ``xarray.Dataset`` of posterior summaries) under a lock. Every record gets a
sequence number; a reader holds a cursor (the last number it has seen) and asks for
what came after it, so each reader sees every record once, however many there are
and whenever they join. Readers copy a slice under the lock and never block the
writer for longer than that.

Memory stays bounded on long runs: when there are more than ``max_points`` ELBO
points, the older ones are thinned to an even spacing (a reader that has not yet
read them gets the thinned history; the others are not affected), and only the
latest posterior summary is kept.
"""

from __future__ import annotations

import bisect
import threading
from typing import Any, NamedTuple

#: The kinds of records, in the ``"kind"`` field of each.
POINT = "point"  # one step: step, elbo, smoothed_elbo, steps_per_second, elapsed, lr, time (of publication)
SUMMARY = "summary"  # posterior: step, summary and draws (xarray.Datasets; draws None for large models)
STATE = "state"  # a state change of the run: state, time, message
INFO = "info"  # what the run trains: family, parameter count, steps, truth, observed data...
KINDS = (POINT, SUMMARY, STATE, INFO)

Record = dict[str, Any]


class Update(NamedTuple):
    """What :meth:`MetricsHub.since` returns: the new records, oldest first, and the
    cursor to pass next time."""

    records: list[Record]
    cursor: int


class MetricsHub:
    """A thread-safe, append-only log of a run's records, read through cursors.

    Args:
        max_points: the number of ELBO points above which old points are thinned.
    """

    def __init__(self, max_points: int = 20_000) -> None:
        if max_points < 2:
            raise ValueError(f"max_points must be at least 2, got {max_points}")
        self.max_points = max_points
        self._lock = threading.Lock()
        self._sequence = 0
        # Kept records (every kind but summaries), oldest first, and their numbers
        # (strictly increasing, so a cursor is found by bisection).
        self._records: list[Record] = []
        self._numbers: list[int] = []
        self._points = 0
        self._stride = 1
        self._summary: Record | None = None
        self._summary_number = 0

    def publish(self, kind: str, **fields: Any) -> int:
        """Append a record; its sequence number.

        The record is ``{"kind": kind, "seq": number, **fields}``; the hub keeps it as
        given: do not change the values afterwards.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown record kind {kind!r}; choose one of {KINDS}")
        with self._lock:
            self._sequence += 1
            record = {"kind": kind, "seq": self._sequence, **fields}
            if kind == SUMMARY:
                self._summary, self._summary_number = record, self._sequence
            else:
                self._records.append(record)
                self._numbers.append(self._sequence)
                if kind == POINT:
                    self._points += 1
                    if self._points > self.max_points:
                        self._thin()
            return self._sequence

    def _thin(self) -> None:
        """Thin the ELBO points but the newest quarter (the lock is held).

        The older points keep those whose sequence number is a multiple of a stride,
        doubled until at most three quarters of ``max_points`` are left: the old
        history stays evenly spaced, however long the run.
        """
        tail = self.max_points // 4
        cut, newer = len(self._records), 0
        while cut > 0 and newer < tail:
            cut -= 1
            newer += self._records[cut]["kind"] == POINT
        older, newest = self._records[:cut], self._records[cut:]
        while True:  # the current stride first, then doubled until enough are gone
            older = [r for r in older if r["kind"] != POINT or r["seq"] % self._stride == 0]
            self._points = newer + sum(r["kind"] == POINT for r in older)
            if self._points <= self.max_points * 3 // 4:
                break
            self._stride *= 2
        self._records = older + newest
        self._numbers = [r["seq"] for r in self._records]

    def since(self, cursor: int = 0) -> Update:
        """The records published after ``cursor`` (0: all of them), and the new cursor.

        Of the posterior summaries, only the latest is kept: it comes in its place in
        the order when it is newer than ``cursor``.
        """
        with self._lock:
            start = bisect.bisect_right(self._numbers, cursor)
            records = self._records[start:]
            if self._summary is not None and self._summary_number > cursor:
                where = bisect.bisect_right(self._numbers, self._summary_number, lo=start) - start
                records.insert(where, self._summary)
            return Update(records, self._sequence)

    def latest(self, kind: str) -> Record | None:
        """The newest record of one kind, or None."""
        with self._lock:
            if kind == SUMMARY:
                return self._summary
            for record in reversed(self._records):
                if record["kind"] == kind:
                    return record
        return None

    @property
    def cursor(self) -> int:
        """The number of the newest record (a reader starting here sees only what comes next)."""
        return self._sequence

    def reader(self, from_start: bool = True) -> Reader:
        """A reader with its own cursor, at the start (the whole history) or at the end."""
        return Reader(self, 0 if from_start else self.cursor)

    def __len__(self) -> int:
        """The number of records kept."""
        with self._lock:
            return len(self._records) + (self._summary is not None)

    def __repr__(self) -> str:
        return f"MetricsHub({len(self)} records kept, {self._sequence} published)"


class Reader:
    """One consumer of a hub: :meth:`read` returns what is new since its last call."""

    def __init__(self, hub: MetricsHub, cursor: int = 0) -> None:
        self.hub = hub
        self.cursor = cursor

    def read(self) -> list[Record]:
        """The records published since the previous call, oldest first."""
        update = self.hub.since(self.cursor)
        self.cursor = update.cursor
        return update.records
