"""torch's intra-op threads, set for one thread without touching the others'.

``torch.set_num_threads(n)`` sets the calling thread's OpenMP thread count, and also a
process-wide value that every thread started *later* takes on its first parallel
operation. A run that set 1 thread would then hand its setting to the next run's
thread, to a server's request threads, and so on. :func:`use_threads` sets the
calling thread's count, then puts the process-wide value back from a short-lived
helper thread (whose own setting dies with it), under a lock so that two runs
starting at once read and restore that value one at a time.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch

_T = TypeVar("_T")
_LOCK = threading.Lock()


def _in_new_thread(function: Callable[[], _T]) -> _T:
    """``function()`` called in a thread of its own (as a newly started thread sees torch)."""
    out: list[_T] = []
    helper = threading.Thread(target=lambda: out.append(function()), name="pavi_viz threads")
    helper.start()
    helper.join()
    return out[0]


def set_own_threads(threads: int) -> None:
    """Give the calling thread ``threads`` intra-op threads; other threads, those started
    later included, keep what they had."""
    with _LOCK:
        inherited = _in_new_thread(torch.get_num_threads)
        torch.set_num_threads(threads)
        if inherited != threads:
            _in_new_thread(lambda: torch.set_num_threads(inherited))


@contextlib.contextmanager
def use_threads(threads: int) -> Iterator[None]:
    """The calling thread trains with ``threads`` intra-op threads inside the block, and
    gets its own count back after it."""
    previous = torch.get_num_threads()
    if previous == threads:
        yield
        return
    set_own_threads(threads)
    try:
        yield
    finally:
        set_own_threads(previous)


__all__ = ["set_own_threads", "use_threads"]
