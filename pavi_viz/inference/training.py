"""Fitting a variational family: :func:`fit`, a short loop over a :class:`~pavi_viz.inference.trainer.Trainer`.

Around the trainer's steps :func:`fit` offers callbacks, early stopping on a plateau
of the smoothed ELBO, a progress bar, checkpoints that resume bit for bit on the CPU,
and divergence errors that keep the last good state::

    import pavi_viz

    result = pavi_viz.fit(pavi_viz.examples.load("gre"), "pavi-e", steps=2000)
    result.history.elbo[-1], result.stop_reason
    result.posterior                  # a Posterior over the fitted family

Its settings are those of :class:`~pavi_viz.inference.config.FitConfig`, given as a
config, as keywords (``fit(model, steps=500, lr=0.02)``), or both (the keywords win).

``fit(..., store=RunStore())`` records the run in a run store as it trains (its
points, how it ended, its posterior summary), where it outlives the process. The store
lives in the runner layer, above this one: :func:`fit` knows it only through the two
small protocols below (:class:`FitStore`, :class:`FitSink`), which
:class:`pavi_viz.runner.RunStore` implements; this layer imports nothing of the runner.
``fit(..., tensorboard=DIR)`` writes the run's curves for TensorBoard, through another
sink (:class:`~pavi_viz.inference.tensorboard.TensorBoardLog`); every sink hears every
step and the end.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from pavi_viz.inference.config import FitConfig
from pavi_viz.inference.distributed import Replicas, replica_device, world_size
from pavi_viz.inference.families import VariationalFamily
from pavi_viz.inference.state import DivergenceError, FitResult, TrainingState
from pavi_viz.inference.tensorboard import TensorBoardLog
from pavi_viz.inference.threads import use_threads
from pavi_viz.inference.trainer import Trainer
from pavi_viz.model.compiled import CompiledModel
from pavi_viz.model.sharding import ModelSource

if TYPE_CHECKING:
    from pavi_viz.model.spec import PlateModel


class StopTraining(Exception):
    """Raised by a :func:`fit` callback to end training after the current step (not an error)."""


#: Why a run ended, as a :class:`FitSink` hears it, beyond a ``FitResult.stop_reason``:
#: Ctrl-C (KeyboardInterrupt), and any other error but a divergence.
INTERRUPTED, ERROR = "interrupted", "error"


class FitSink(Protocol):
    """Where :func:`fit` reports one run as it trains (a run store's record of it, a
    TensorBoard log).

    ``step`` is called on the training thread after every step: it must return at once
    (a store queues the new points and writes them from a thread of its own). ``end`` is
    called once, when the run has ended (normally or by an exception), with the reason:
    a ``FitResult.stop_reason`` (``"diverged"`` too), :data:`INTERRUPTED` or
    :data:`ERROR`; it returns once the run's record is complete.
    """

    def step(self, state: TrainingState) -> None: ...

    def end(self, state: TrainingState, reason: str, message: str = "") -> None: ...


class FitStore(Protocol):
    """What ``fit(..., store=...)`` takes: :class:`pavi_viz.runner.RunStore`.

    ``open_fit`` starts the record of a run set up at ``state`` (resumed from the
    checkpoint file ``resume``, saving to ``checkpoint``), before its first step.
    """

    def open_fit(self, model: PlateModel | CompiledModel, state: TrainingState, *, checkpoint: str | Path | None,
                 resume: str | Path | None) -> FitSink: ...


class ProgressBar:
    """A tqdm progress bar of a run's steps showing the smoothed ELBO (a context manager);
    ``enabled=None`` shows it when stderr is a terminal, ``False`` never."""

    def __init__(self, state: TrainingState, enabled: bool | None = None) -> None:
        self._bar = None
        if _is_terminal(sys.stderr) if enabled is None else enabled:
            from tqdm.auto import tqdm

            total = state.total_steps
            self._bar = tqdm(total=total, initial=min(state.step, total), desc=f"fit {state.family_name}",
                             unit="step", dynamic_ncols=True)

    def update(self, state: TrainingState) -> None:
        if self._bar is not None:
            self._bar.update(1)
            if state.step % 10 == 0 or state.step == state.total_steps:
                self._bar.set_postfix(elbo=f"{state.smoothed_elbo:.5g}", refresh=False)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no stream (pythonw), or a closed one
        return False


def fit(
    model: PlateModel | CompiledModel | ModelSource,
    family: str | VariationalFamily | None = None,
    config: FitConfig | None = None,
    *,
    callbacks: Sequence[Callable[[TrainingState], None]] = (),
    callback_every: int = 10,
    progress: bool | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: str | Path | TrainingState | None = None,
    store: FitStore | None = None,
    tensorboard: str | Path | None = None,
    **settings: Any,
) -> FitResult:
    """Fit a variational family to a model's posterior by stochastic ELBO maximisation.

    Args:
        model: the model, with its data (a :class:`PlateModel` is compiled once, on the
            config's device), or a :class:`~pavi_viz.model.sharding.ModelSource` of it:
            a data file (:class:`~pavi_viz.model.datafile.DataFile`), read whole, or, on
            a process of a data-parallel run that trains on a shard of it alone, that
            shard alone.
        family: a family name (``"pavi-e"``, ``"pavi-f"``, ``"mean-field"``; default the
            config's) or a built family.
        config: the settings (:class:`~pavi_viz.inference.config.FitConfig`; default its
            defaults).
        **settings: settings that override the config's, by name (``steps=500``,
            ``lr=0.02``, ``batch={"group": 64}``, ``seed=None``, ``threads=2``...).
        callbacks: functions of the :class:`~pavi_viz.inference.state.TrainingState`,
            called every ``callback_every`` steps and once at the end (with
            ``state.finished`` set); one may end training by raising :class:`StopTraining`.
        callback_every: the callback period, in steps.
        progress: show a tqdm progress bar; ``None``: when stderr is a terminal.
        checkpoint: a file to save the training state to (at the end, and every
            ``checkpoint_every`` steps when given).
        checkpoint_every: the checkpoint period, in steps.
        resume: a checkpoint file or a :class:`~pavi_viz.inference.state.TrainingState`
            to continue from; with the same settings the run continues exactly as an
            uninterrupted one would (on the CPU). The family comes from the checkpoint
            (a family or family options asked for here must be the same).
        store: a run store to record the run in (``pavi_viz.runner.RunStore()``: the
            default file, ``.pavi_viz/runs.db`` here; ``RunStore(path)``), committed
            before this returns, whatever the outcome. A run resumed from a checkpoint
            that a stored run saves to continues that run's record.
        tensorboard: a TensorBoard log directory to write the run's curves to, in a
            folder of the run's own (:class:`~pavi_viz.inference.tensorboard.TensorBoardLog`:
            its tags, its folder's name), all on disk before this returns. Needs the
            ``tensorboard`` package (``pip install 'pavi-viz[tensorboard]'``).

    Under ``torchrun`` (``WORLD_SIZE`` above 1) each process of the launch trains on a
    shard of the model's largest top-level plate, data-parallel
    (:mod:`~pavi_viz.inference.distributed`); every process gets the same family and
    history, and only rank 0 shows progress, records the run and writes TensorBoard's
    curves (the checkpoint, too). Rank 0 holds the whole model, and its result's
    posterior is the run's; the other processes hold their shard of the data alone where
    the family allows (PAVI-E, a model given as a ``PlateModel`` or a data file), and their result's
    ``posterior`` then says so. The processes stay joined for the script's next fit; it
    leaves with ``pavi_viz.inference.distributed.Replicas.leave()``.

    Returns:
        A :class:`FitResult`.

    Raises:
        DivergenceError: a draw, the ELBO or a gradient became NaN or infinite; its
            ``result`` holds the run up to the last good step, the family restored to it.
        ValueError: bad settings (an unknown device, plate, family or schedule...),
            each naming the setting.
        TypeError: a keyword that is no setting.
        CheckpointError: ``resume`` names a checkpoint made for another model.
        ImportError: ``tensorboard`` is given and the ``tensorboard`` package is missing.
    """
    unknown = sorted(set(settings) - set(FitConfig.setting_names()))
    if unknown:
        raise TypeError(f"fit() got unknown setting(s) {unknown}; the settings are {FitConfig.setting_names()}")
    _check_loop_options(callback_every, checkpoint, checkpoint_every)
    _check_store(store)
    built = family if isinstance(family, VariationalFamily) else None
    if isinstance(family, str):
        settings["family"] = family
    if isinstance(settings.get("device"), torch.device):
        settings["device"] = str(settings["device"])
    family_given = "family" in settings or "family_options" in settings
    config = (config or FitConfig()).copy(**settings)
    replicas = None
    if world_size() > 1:  # a script that torchrun launched: one process of a data-parallel run
        config = config.copy(device=replica_device(config.device))
        replicas = Replicas.join(config.device)
        if not replicas.leader:  # rank 0 reports and records the run
            progress, store, tensorboard = False, None, None
    if isinstance(model, ModelSource) and (replicas is None or replicas.leader):
        model = model.whole()  # evaluated (the posterior, the run's record) whole

    trainer = Trainer.create(model, config, family=built, resume=resume, family_given=family_given, replicas=replicas)
    state = trainer.state
    trained_before = state.elapsed
    stop_reason = None
    final_called = False  # whether the latest callback call saw state.finished
    sinks: list[FitSink] = []
    ending: tuple[str, str]  # the reason and message the sinks hear: set as the run ends, however it ends
    try:
        # Opened in the try: one that fails has the sinks opened before it hear the error.
        if tensorboard is not None:
            sinks.append(TensorBoardLog(tensorboard, state))
        if store is not None:
            resumed_file = None if isinstance(resume, TrainingState) else resume
            sinks.append(store.open_fit(model, state, checkpoint=checkpoint, resume=resumed_file))
        with use_threads(trainer.threads), ProgressBar(state, progress) as bar:
            try:
                while not trainer.done:
                    trainer.step()
                    for sink in sinks:
                        sink.step(state)
                    bar.update(state)
                    if callbacks and (trainer.done or state.step % callback_every == 0):
                        state.finished = final_called = trainer.done
                        stop = _stop_asked(callbacks, state)
                        if replicas is not None:  # every process stops after the same step
                            stop = bool(replicas.ranks_where(stop, state.step, state.model.device))
                        if stop:
                            stop_reason = "callback"
                            break
                    if checkpoint_every is not None and state.step % checkpoint_every == 0 and not trainer.done:
                        trainer.save(checkpoint)
            except DivergenceError as err:
                err.restored_step = trainer.restore_last_good()
                state.finished = True
                err.result = FitResult.of(trainer.state, trainer.config, "diverged", state.elapsed - trained_before)
                raise
        state.finished = True
        if callbacks and not final_called:
            _stop_asked(callbacks, state)
        if checkpoint is not None:
            trainer.save(checkpoint)
        if stop_reason is None:
            stop_reason = trainer.stop_reason
        ending = (stop_reason, "")
    except BaseException as err:
        ending = _ending_of(err)
        raise
    finally:
        for sink in sinks:
            sink.end(state, *ending)
    return FitResult.of(trainer.state, trainer.config, stop_reason, state.elapsed - trained_before)


def _ending_of(err: BaseException) -> tuple[str, str]:
    """The reason and message a :class:`FitSink` hears of a run that ``err`` ended."""
    if isinstance(err, DivergenceError):
        return "diverged", err.reason
    if isinstance(err, KeyboardInterrupt):
        return INTERRUPTED, "interrupted (KeyboardInterrupt)"
    return ERROR, f"{type(err).__name__}: {err}"


def _check_store(store: object) -> None:
    if store is not None and not callable(getattr(store, "open_fit", None)):
        raise TypeError(f"store must be a run store, pavi_viz.runner.RunStore() (the default file) or "
                        f"RunStore(path), not {store!r}")


def _stop_asked(callbacks: Sequence[Callable[[TrainingState], None]], state: TrainingState) -> bool:
    """Call every callback; whether one raised :class:`StopTraining`."""
    stop = False
    for callback in callbacks:
        try:
            callback(state)
        except StopTraining:
            stop = True
    return stop


def _check_loop_options(callback_every: int, checkpoint: str | Path | None, checkpoint_every: int | None) -> None:
    for name, value in (("callback_every", callback_every), ("checkpoint_every", checkpoint_every)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
    if checkpoint_every is not None and checkpoint is None:
        raise ValueError("checkpoint_every needs a checkpoint path (checkpoint=...)")


__all__ = ["ERROR", "INTERRUPTED", "FitSink", "FitStore", "ProgressBar", "StopTraining", "fit"]
