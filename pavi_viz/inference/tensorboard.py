"""A run's curves in TensorBoard: :class:`TensorBoardLog`, what ``fit(..., tensorboard=DIR)``
and ``pavi-viz fit --tensorboard DIR`` write.

Each run gets a folder of its own under ``DIR``, ``<model>-<family>-<YYYYmmdd-HHMMSS>``
(``-2``, ``-3``... when that exists): TensorBoard shows each folder under its log
directory as one run, so ``tensorboard --logdir DIR`` draws runs side by side, named by
what they fitted and when. Its scalars, one point per step, are the history's columns
named by :data:`TAGS`; the ``elbo/`` and ``train/`` prefixes are TensorBoard's sections.
At the end the run's settings (the tag ``settings``) and how it ended, with the final
smoothed ELBO (``end``), are written as text.

DESIGN's threading rule: a training step never waits for TensorBoard. :meth:`TensorBoardLog.step`
only queues the new steps' numbers; a thread of its own wakes every :data:`FLUSH_SECONDS`
(not at every step: a thread woken at every step would take the GIL from training as
often), hands what is queued to torch's :class:`~torch.utils.tensorboard.SummaryWriter`
and flushes it, so that a TensorBoard watching the run sees it within a second.

TensorBoard's files are append-only: the steps that a divergence rolled back
(:meth:`~pavi_viz.inference.trainer.Trainer.restore_last_good`) stay in the curves, and
the ``end`` text says which step the family was restored to.

The ``tensorboard`` package is optional (``pip install 'pavi-viz[tensorboard]'``): this
module imports it only when a :class:`TensorBoardLog` is made.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from pavi_viz.inference.state import History, TrainingState

#: Seconds between two batches handed to the writer (and flushed to the file).
FLUSH_SECONDS = 0.5
#: The scalars written at every step: their tags, by the :class:`~pavi_viz.inference.state.History`
#: column they come from.
TAGS = {
    "elbo": "elbo/estimate",
    "smoothed_elbo": "elbo/smoothed",
    "lr": "train/lr",
    "steps_per_second": "train/steps_per_second",
}
#: What a missing ``tensorboard`` package is answered with.
MISSING = "TensorBoard logging needs the tensorboard package: pip install 'pavi-viz[tensorboard]'"

# One step's scalars, as queued: its number, when it was taken (seconds since the
# epoch, TensorBoard's wall time) and its values in the order of TAGS.
_Row = tuple[int, float, tuple[float, ...]]


class TensorBoardLog:
    """One run's scalars in a TensorBoard log directory, written from a thread of its own.

    Implements :class:`pavi_viz.inference.training.FitSink`: :meth:`step` after every
    step (on the training thread: it queues the new steps), :meth:`end` once. A resumed
    run writes its whole history, the steps before the checkpoint included, so that its
    folder holds the run's whole curve. A write that fails is warned about at :meth:`end`;
    the curves then stop there (training goes on).

    Args:
        log_dir: TensorBoard's log directory (``tensorboard --logdir log_dir``), made if
            missing; the run's folder is made inside it.
        state: the run's state before its first step (its model and family name the folder).

    Attributes:
        path: the run's folder.
        error: the write that failed, if one did.

    Raises:
        ImportError: the ``tensorboard`` package is missing (:data:`MISSING`).
        OSError: the folder cannot be made.
    """

    def __init__(self, log_dir: str | Path, state: TrainingState) -> None:
        writer_class = _summary_writer_class()
        self.path = _run_folder(Path(log_dir), f"{state.model.name}-{state.family_name}")
        self.error: Exception | None = None
        self._writer: SummaryWriter = writer_class(log_dir=str(self.path))
        self._step = 0  # the last step queued
        self._ended = False
        self._queue: queue.SimpleQueue[_Row] = queue.SimpleQueue()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pavi_viz tensorboard {self.path.name}", daemon=True)
        self._thread.start()

    def step(self, state: TrainingState) -> None:
        """Queue the steps taken since the last call (one, as a rule); returns at once."""
        history = state.history
        if self.error is None and history.step and history.step[-1] > self._step:
            now = time.time()
            for i in _steps_after(history, self._step):
                self._queue.put((history.step[i], now, tuple(getattr(history, column)[i] for column in TAGS)))
            self._step = history.step[-1]

    def end(self, state: TrainingState, reason: str, message: str = "") -> None:
        """Write the last steps, the settings and how the run ended, and close the files
        (this returns once all is on disk); later calls do nothing.

        Args:
            state: the run's state. reason: why it ended (a ``FitResult.stop_reason``,
                ``"interrupted"`` or ``"error"``). message: what to say (default: the
                reason and the step).
        """
        if self._ended:
            return
        self._ended = True
        restored = state.step < self._step  # a divergence put the family back to an earlier step
        self.step(state)
        self._closing.set()
        self._thread.join()
        said = message or f"{reason.replace('_', ' ')} at step {state.step} of {state.total_steps}"
        if restored:
            said += f" (the family was restored to step {state.step}; the later steps drawn here were undone)"
        try:
            if self.error is None:
                settings = json.dumps(state.settings, default=str, sort_keys=True, indent=2)
                # Markdown, as TensorBoard renders text: indented lines are kept as they are.
                self._writer.add_text("settings", "\n".join("    " + line for line in settings.splitlines()),
                                      state.step)
                self._writer.add_text("end", f"{said}. Final smoothed ELBO: {state.smoothed_elbo:.6g}", state.step)
            self._writer.close()
        except Exception as err:  # noqa: BLE001 - the run's outcome matters more than its curves: warned
            self.error = self.error or err
        if self.error is not None:
            warnings.warn(f"TensorBoard log {self.path}: the run could not be written to the end ({self.error})",
                          RuntimeWarning, stacklevel=2)

    # -- the thread --------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._closing.wait(FLUSH_SECONDS):  # at once when closed
                self._write_queued()
            self._write_queued()
        except Exception as err:  # noqa: BLE001 - the thread must not die unheard: end() warns
            self.error = err

    def _write_queued(self) -> None:
        rows: list[_Row] = []
        with contextlib.suppress(queue.Empty):
            while True:
                rows.append(self._queue.get_nowait())
        for step, walltime, values in rows:
            for tag, value in zip(TAGS.values(), values):
                self._writer.add_scalar(tag, value, step, walltime=walltime)
        if rows:
            self._writer.flush()


def _summary_writer_class() -> type[SummaryWriter]:
    """torch's ``SummaryWriter``, or an ImportError naming the extra to install."""
    try:
        # torch's module, once imported, stays imported without tensorboard: ask for it itself.
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ImportError(MISSING) from err
    return SummaryWriter


def _run_folder(log_dir: Path, name: str) -> Path:
    """A new folder in ``log_dir`` for a run: ``name`` (made safe for file names) and
    the time, numbered when two runs start in the same second."""
    stem = f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = log_dir / stem, 1
    while True:
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:  # mkdir either makes it or fails: two runs never share one
            n += 1
            path = log_dir / f"{stem}-{n}"


def _steps_after(history: History, after: int) -> range:
    """The indices of the history's steps after step ``after`` (the newest ones)."""
    steps = history.step
    first = len(steps)
    while first > 0 and steps[first - 1] > after:
        first -= 1
    return range(first, len(steps))


__all__ = ["FLUSH_SECONDS", "MISSING", "TAGS", "TensorBoardLog"]
