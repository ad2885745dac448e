"""The metrics hub: what a training thread publishes and any number of readers consume.

The training thread publishes immutable records, instances of four frozen dataclasses
(:class:`Point` after every step, :class:`Summary` of the posterior, :class:`StateChange`
and :class:`Info`), under a lock. The hub gives each a sequence number (its ``seq``); a
reader holds a cursor (the last number it has seen) and asks for what came after it, so
each reader sees every record once, however many there are and whenever they join.
Readers copy a slice under the lock and never block the writer for longer than that.
A reader tells records apart by their class::

    for record in reader.read():
        match record:
            case Point(step=step, elbo=elbo): ...
            case Summary(summary=summary): ...

Memory stays bounded on long runs: when there are more than ``max_points`` ELBO
points, the older ones are thinned to an even spacing (a reader that has not yet
read them gets the thinned history; the others are not affected), and only the
latest posterior summary is kept.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NamedTuple, TypeVar

if TYPE_CHECKING:  # the hub stores datasets, it never needs xarray itself
    import xarray as xr


@dataclass(frozen=True)
class Point:
    """One training step.

    Attributes:
        step: the step's number (from 1). elbo, smoothed_elbo: its ELBO estimate and
            the moving average. spike: whether the estimate was a spike (far below
            the average, which took it in winsorized). steps_per_second: the recent
            throughput.
        elapsed: training seconds so far. lr: the learning rate of the step.
        time: when it was published (``time.time()``). seq: its number in the hub.
    """

    step: int
    elbo: float
    smoothed_elbo: float
    spike: bool
    steps_per_second: float
    elapsed: float
    lr: float
    time: float
    seq: int = 0


@dataclass(frozen=True)
class Summary:
    """Posterior summaries after a step.

    Attributes:
        step: the step they follow. summary: mean, sd and quantiles per variable and
            plate element. draws: joint posterior and predictive draws, or None for
            models too large to send them. seq: its number in the hub.
    """

    step: int
    summary: xr.Dataset
    draws: xr.Dataset | None
    seq: int = 0


@dataclass(frozen=True)
class StateChange:
    """A state change of a run.

    Attributes:
        run: the run's name. state: the new state (a ``RunState`` value).
        time: when it changed (``time.time()``). message: why, or an empty string.
        seq: its number in the hub.
    """

    run: str
    state: str
    time: float
    message: str
    seq: int = 0


@dataclass(frozen=True)
class Info:
    """What a run trains, published as it starts (and again when it resumes).

    Attributes:
        run: the run's name. model: the model's name. family: the variational family.
        parameter_count: the family's trainable numbers (None: unknown, a run read
            from the run store). total_steps: the steps the
            run aims at. device: where it trains. torch_threads: its torch threads.
        settings: the run's settings (lr, particles, batch sizes, seed...).
        truth: the ground truth of simulated data, or None. observed: the observed
            data, or None. seq: its number in the hub.
    """

    run: str
    model: str
    family: str
    parameter_count: int | None
    total_steps: int
    device: str
    torch_threads: int
    settings: dict
    truth: xr.Dataset | None
    observed: xr.Dataset | None
    seq: int = 0


Record = Point | Summary | StateChange | Info
_R = TypeVar("_R", Point, Summary, StateChange, Info)


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
        # Kept records (every class but summaries), oldest first, and their numbers
        # (strictly increasing, so a cursor is found by bisection).
        self._records: list[Record] = []
        self._numbers: list[int] = []
        self._points = 0
        self._stride = 1
        self._summary: Summary | None = None

    def publish(self, record: Record) -> int:
        """Append a record; its sequence number.

        The hub keeps a copy of the record with ``seq`` set to that number (the record's
        own ``seq`` is ignored). The values are kept as given, not copied: do not change
        a dataset or the settings afterwards.
        """
        if not isinstance(record, Record):
            raise TypeError(f"a hub publishes Point, Summary, StateChange or Info, not {type(record).__name__}")
        with self._lock:
            self._sequence += 1
            record = replace(record, seq=self._sequence)
            if isinstance(record, Summary):
                self._summary = record
            else:
                self._records.append(record)
                self._numbers.append(self._sequence)
                if isinstance(record, Point):
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
            newer += isinstance(self._records[cut], Point)
        older, newest = self._records[:cut], self._records[cut:]
        while True:  # the current stride first, then doubled until enough are gone
            older = [r for r in older if not isinstance(r, Point) or r.seq % self._stride == 0]
            self._points = newer + sum(isinstance(r, Point) for r in older)
            if self._points <= self.max_points * 3 // 4:
                break
            self._stride *= 2
        self._records = older + newest
        self._numbers = [r.seq for r in self._records]

    def since(self, cursor: int = 0) -> Update:
        """The records published after ``cursor`` (0: all of them), and the new cursor.

        Of the posterior summaries, only the latest is kept: it comes in its place in
        the order when it is newer than ``cursor``.
        """
        with self._lock:
            start = bisect.bisect_right(self._numbers, cursor)
            records = self._records[start:]
            if self._summary is not None and self._summary.seq > cursor:
                where = bisect.bisect_right(self._numbers, self._summary.seq, lo=start) - start
                records.insert(where, self._summary)
            return Update(records, self._sequence)

    def latest(self, kind: type[_R]) -> _R | None:
        """The newest record of one class (``hub.latest(Info)``), or None."""
        with self._lock:
            if kind is Summary:
                return self._summary
            for record in reversed(self._records):
                if isinstance(record, kind):
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
