"""Following a stored run: its records, read from the run store into a hub.

A dashboard shows a run by reading its :class:`~pavi_viz.runner.hub.MetricsHub`. A run
trained by another process (``pavi-viz fit`` in a terminal, an earlier server) has no
hub here, only its rows in the store. A :class:`StoreFollower` gives it one: a thread of
its own reads what the store holds of the run (its settings, state changes, ELBO points
and latest posterior summary) every :data:`FOLLOW_SECONDS`, and publishes what is new
to the follower's hub, as the training thread of a run in this process would. A reader
of the hub cannot tell the two apart, so the dashboard's views work on both.

The store is read from the follower's thread, never from a server's event loop: a
query waits while another process commits (SQLite's busy timeout), and a summary of a
large model takes a while to decode. Reading never blocks the run's writer (WAL mode:
readers see the last commit).

What a stored run lacks: posterior draws (the store keeps summaries only: views fall
back to their Normal approximation, and the predictive check has nothing to show) and
the family's parameter count (``Info.parameter_count`` None). A run taken up again from
an earlier step (``pavi-viz fit --resume``) drops its later points from the store; a
follower that showed them keeps them (follow the run anew to see the store's history).
"""

from __future__ import annotations

import threading
import time

from pavi_viz.runner.hub import Info, MetricsHub, StateChange
from pavi_viz.runner.store import LIVE, RunStore, StoredRun, StoreError

#: Seconds between two reads of a followed run: about the store's own commit period
#: (a run's points reach the file in batches every half second).
FOLLOW_SECONDS = 0.5
#: The follower thread's name, before the run's id.
THREAD_NAME = "pavi_viz follow run "


class StoreFollower:
    """One stored run, replayed into a hub and kept up to date from the store.

    Args:
        store: the run store. run_id: the run to follow.
        period: seconds between two reads (:data:`FOLLOW_SECONDS`).

    Attributes:
        hub: where the run's records are published (a reader from its start gets the
            whole stored history). run: the run as last read (None before the first
            read). error: why following stopped early (the run was deleted, the file
            became unreadable), or None.

    Raises:
        StoreError: there is no such run.
    """

    def __init__(self, store: RunStore, run_id: int, *, period: float = FOLLOW_SECONDS) -> None:
        self.store, self.run_id, self.period = store, run_id, period
        self.hub = MetricsHub(max_points=store.max_points)
        self.run: StoredRun | None = None
        self.error: StoreError | None = None
        self._step = 0  # the last step published
        self._transitions = 0  # the stored state changes published
        self._state: str | None = None  # the last state published
        self._summary_step: int | None = None  # the step of the last summary published
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        store.run(run_id)  # a missing run fails here, not later in the thread

    def start(self) -> StoreFollower:
        """Read the run's history now, then follow it from a thread until it ends (or
        :meth:`stop`); the follower itself."""
        self.read()
        if self.following:
            self._thread = threading.Thread(target=self._follow, name=f"{THREAD_NAME}{self.run_id}", daemon=True)
            self._thread.start()
        return self

    def stop(self, wait: bool = False) -> None:
        """Stop following (``wait``: until the thread has ended)."""
        self._stopping.set()
        if wait and self._thread is not None:
            self._thread.join()

    @property
    def following(self) -> bool:
        """Whether the run may still change: it trains, and nothing stopped the follower."""
        return (self.error is None and not self._stopping.is_set()
                and (self.run is None or self.run.state in LIVE))

    def _follow(self) -> None:
        while not self._stopping.wait(self.period) and self.following:
            self.read()

    def read(self) -> None:
        """Publish what the store holds of the run that the hub has not seen yet (one
        round of the thread's; any thread may call it while none runs). A run deleted
        meanwhile, or a store that cannot be read, ends the following, said in a
        :class:`StateChange` and kept in :attr:`error`."""
        try:
            run = self.store.run(self.run_id)
            if self.run is None:
                self.hub.publish(Info(run=run.name, model=run.model, family=run.family, parameter_count=None,
                                      total_steps=run.total_steps, device="", torch_threads=0,
                                      settings=dict(run.settings), truth=None, observed=None))
            # State changes read first and published last: a run commits its points and
            # its last summary before the change that ends it, so a reader that sees
            # "stopped" has the points and the summary that came before it.
            changes = self.store.transitions(self.run_id)
            for point in self.store.points(self.run_id, after_step=self._step):
                self.hub.publish(point)
                self._step = point.step
            if self.store.summary_step(self.run_id) not in (None, self._summary_step):
                summary = self.store.summary(self.run_id)
                if summary is not None:
                    self.hub.publish(summary)
                    self._summary_step = summary.step
            for change in changes[self._transitions:]:
                self._publish_state(change)
            self._transitions = len(changes)
            if run.state != self._state:  # seen by readers only: interrupted
                self._publish_state(StateChange(run=run.name, state=run.state, time=run.updated,
                                                message=f"its process {run.pid} on {run.hostname} ended while "
                                                        f"it trained, at step {run.step:,}"))
            # Set last: `following` reads it, and a reader that sees the run ended must
            # find in the hub all that this round read.
            self.run = run
        except StoreError as err:
            self._publish_state(StateChange(run=self.run.name if self.run else str(self.run_id),
                                            state=self._state or "failed", time=time.time(),
                                            message=f"no longer followed: {err}"))
            self.error = err  # last, as `self.run` above

    def _publish_state(self, change: StateChange) -> None:
        self.hub.publish(change)
        self._state = change.state

    def __repr__(self) -> str:
        state = self.run.state if self.run is not None else "unread"
        return f"StoreFollower(run {self.run_id} of {self.store.path}, {state}, step {self._step})"


__all__ = ["FOLLOW_SECONDS", "THREAD_NAME", "StoreFollower"]
