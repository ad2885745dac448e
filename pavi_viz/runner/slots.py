"""Turns to train: at most so many runs of one process train at once, the others queue.

A served app runs every session's training in the server's own process, as threads
that share its CPUs and its interpreter lock with the event loop answering every
browser. Twenty runs at once there (a workshop pressing Start together) starve the
loop: pages took minutes to open. :class:`RunSlots` bounds that. A run given slots
waits, in state ``queued``, until one of the ``size`` slots is free (first come, first
served), trains, and frees its slot when its thread ends.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable


class RunSlots:
    """At most ``size`` holders at once, served in the order they asked.

    Args:
        size: how many runs may train at once (at least 1).
    """

    def __init__(self, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"RunSlots needs a whole number of slots of at least 1, not {size!r}")
        self.size = size
        self._condition = threading.Condition()
        self._tickets = itertools.count()
        self._waiting: list[int] = []  # tickets in the order they asked
        self._holders = 0

    def take(self, cancelled: Callable[[], bool], on_wait: Callable[[int], None]) -> bool:
        """Wait for a free slot and hold it; False (holding none) once ``cancelled()``.

        Args:
            cancelled: asked each time the waiter wakes (see :meth:`wake`).
            on_wait: called once, with the number of runs waiting ahead, if no slot
                is free at once (under this object's lock: it must not wait on it).
        """
        with self._condition:
            ticket = next(self._tickets)
            self._waiting.append(ticket)
            told = False
            try:
                while True:
                    if cancelled():
                        return False
                    position = self._waiting.index(ticket)
                    if self._holders + position < self.size:
                        self._holders += 1
                        return True
                    if not told:
                        on_wait(position)
                        told = True
                    self._condition.wait()
            finally:
                self._waiting.remove(ticket)
                self._condition.notify_all()  # those behind move up

    def give_back(self) -> None:
        """Free a slot held (the next in line takes it)."""
        with self._condition:
            if self._holders == 0:
                raise RuntimeError("RunSlots.give_back() without a slot held")
            self._holders -= 1
            self._condition.notify_all()

    def wake(self) -> None:
        """Wake the waiters so that they ask ``cancelled()`` again (a run was stopped)."""
        with self._condition:
            self._condition.notify_all()

    @property
    def held(self) -> int:
        """Slots held now."""
        with self._condition:
            return self._holders

    @property
    def waiting(self) -> int:
        """Runs waiting for a slot now."""
        with self._condition:
            return len(self._waiting)
