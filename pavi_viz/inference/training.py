"""Fitting a variational family: :func:`fit`.

Each step draws a batch of plate elements, estimates the ELBO on it (unbiased for
the full model's: see :func:`pavi_viz.inference.elbo`), and takes an Adam step on
its negative, with gradient-norm clipping and an optional learning-rate schedule.
Around that loop :func:`fit` offers callbacks, early stopping on a plateau of the
smoothed ELBO, divergence checks that name the culprit and keep the last good
state, a progress bar, and checkpoints that resume bit for bit on the CPU::

    import pavi_viz
    from pavi_viz.inference import fit

    result = fit(pavi_viz.examples.load("gre"), "pavi-e", steps=2000)
    result.history["elbo"][-1], result.stopped_early
    result.posterior                  # a Posterior over the fitted family

Random numbers: the family's initial weights, the sampling noise and the batches all
come from ``seed``, and the same seed gives the same run, also when several fits run
at once in threads of one process. The noise and the batches come from two
generators of the run's own (``state.noise_generator``, ``state.generator``), never
from torch's global one. Only building the family draws from the global generator
(torch's layers initialise their weights from it): that happens seeded, inside
:func:`torch.random.fork_rng` and holding
:data:`~pavi_viz.model.compiled.GLOBAL_RNG_LOCK`, so concurrent fits build their
families one at a time and the caller's global random state is left as it was.

The last good state: before each Adam step whose ELBO and gradients are finite, the
parameters and Adam's moments are copied into reused buffers (every step for
families below :data:`SNAPSHOT_LIMIT` numbers, every :data:`SNAPSHOT_EVERY` steps
above). When a later step diverges, the family and the optimizer are put back to
that copy and the history is cut to match, so ``error.result`` holds parameters
that gave a finite ELBO and finite gradients. The step that led to the bad
parameters is dropped with them.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from pavi_viz.inference.checkpoints import (
    _model_entry,
    check_model,
    load_checkpoint,
    save_checkpoint,
)
from pavi_viz.inference.elbo import elbo
from pavi_viz.inference.families import FAMILIES, VariationalFamily, make_family
from pavi_viz.model.compiled import CompiledModel, seeded

if TYPE_CHECKING:
    from pavi_viz.inference.posterior import Posterior
    from pavi_viz.model.spec import PlateModel

#: Plates (regular, not ragged) larger than this are batched to this many elements per step.
DEFAULT_BATCH = 64
#: Ragged plates with more members than this are capped at this many per step (among the
#: members of the drawn outer elements); smaller ones are taken whole within them.
DEFAULT_RAGGED_BATCH = 4096
#: Weight of the newest value in the exponential moving average of the ELBO.
SMOOTHING = 0.02
#: Early stopping: the smoothed ELBO improves when it beats its best by more than
#: ``EARLY_STOPPING_RTOL * |best| + EARLY_STOPPING_ATOL``.
EARLY_STOPPING_RTOL = 1e-4
EARLY_STOPPING_ATOL = 1e-2
#: The learning rate at the end of a ``"cosine"`` or ``"exponential"`` schedule, as a
#: fraction of ``lr``.
FINAL_LR_FACTOR = 0.01
SCHEDULES = (None, "cosine", "exponential")
#: The last good state (parameters and Adam moments) is copied every step when the
#: family has at most this many numbers to copy (3 per parameter), every
#: ``SNAPSHOT_EVERY`` steps otherwise.
SNAPSHOT_LIMIT = 5_000_000
SNAPSHOT_EVERY = 50
#: Steps over which the throughput (steps per second) is measured.
RATE_WINDOW = 20


class StopTraining(Exception):
    """Raised by a callback to end training after the current step (not an error)."""


class DivergenceError(RuntimeError):
    """The ELBO estimate or a gradient is not finite.

    Attributes:
        step: the step (counted from 1) that diverged.
        variable: the variable whose term or parameters went bad, when known.
        parameter: the family parameter with a non-finite gradient, when that was the cause.
        result: the partial :class:`FitResult`: the family and optimizer restored to the
            last good state, and the history up to it.
    """

    def __init__(self, message: str, step: int, variable: str | None = None, parameter: str | None = None) -> None:
        super().__init__(message)
        self.step, self.variable, self.parameter = step, variable, parameter
        self.result: FitResult | None = None


# -- records -----------------------------------------------------------------------
@dataclass
class History:
    """One record per completed step, as plain lists: ``history["elbo"]``, ``history.elbo``.

    Attributes:
        step: the step number, counted from 1.
        elbo: the ELBO estimate on the step's batch.
        smoothed_elbo: its exponential moving average (weight :data:`SMOOTHING`).
        time: seconds of training since the run began (resumed runs included).
        steps_per_second: the throughput over the last :data:`RATE_WINDOW` steps.
        lr: the learning rate used.
        grad_norm: the gradient's norm before clipping.
    """

    step: list[int] = field(default_factory=list)
    elbo: list[float] = field(default_factory=list)
    smoothed_elbo: list[float] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    steps_per_second: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]

    def __getitem__(self, key: str) -> list:
        if key not in self.keys():
            raise KeyError(f"no history column {key!r}; the columns are {self.keys()}")
        return getattr(self, key)

    def __len__(self) -> int:
        return len(self.step)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def items(self) -> list[tuple[str, list]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def to_dict(self) -> dict[str, list]:
        """The columns as a dict of (copied) lists: ``pandas.DataFrame(history.to_dict())``."""
        return {k: list(v) for k, v in self.items()}

    @classmethod
    def from_dict(cls, columns: Mapping[str, Sequence]) -> History:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: list(v) for k, v in columns.items() if k in known})

    def copy(self) -> History:
        return History.from_dict(self.to_dict())

    def append(self, **record: float) -> None:
        for key in self.keys():
            getattr(self, key).append(record[key])

    def __repr__(self) -> str:
        last = f", last smoothed ELBO {self.smoothed_elbo[-1]:.5g}" if self.step else ""
        return f"History({len(self)} steps{last}; columns {self.keys()})"

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` records."""
        for key in self.keys():
            del getattr(self, key)[length:]


@dataclass(eq=False)
class TrainingState:
    """Where training stands; passed to callbacks, kept in results and checkpoints.

    Attributes:
        step: the number of completed steps.
        total_steps: the number of steps the run aims at.
        elbo: the latest ELBO estimate.
        smoothed_elbo: its exponential moving average.
        steps_per_second: the recent throughput.
        family: the variational family being trained.
        optimizer: its Adam optimizer.
        model: the compiled model.
        history: one record per completed step.
        stop_requested: set it to ``True`` (in a callback, or from another thread) to
            end training after the current step.
        finished: ``True`` in the last callback call of a run.
        lr: the learning rate of the latest step.
        elapsed: seconds of training so far, resumed runs included.
        family_name, family_options: how to rebuild the family (for checkpoints).
        generator: the random source of the plate batches (on the model's device).
        noise_generator: the random source of the family's sampling noise (on the
            model's device).
        best_smoothed_elbo, steps_since_best: the early-stopping bookkeeping.
        settings: the run's settings (lr, particles, batch sizes, schedule, clip, seed...).
    """

    step: int
    total_steps: int
    elbo: float
    smoothed_elbo: float
    steps_per_second: float
    family: VariationalFamily
    optimizer: torch.optim.Optimizer
    model: CompiledModel
    history: History
    stop_requested: bool = False
    finished: bool = False
    lr: float = float("nan")
    elapsed: float = 0.0
    family_name: str = ""
    family_options: dict[str, Any] = field(default_factory=dict)
    generator: torch.Generator | None = None
    noise_generator: torch.Generator | None = None
    best_smoothed_elbo: float = float("-inf")
    steps_since_best: int = 0
    settings: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"TrainingState(step={self.step}/{self.total_steps}, elbo={self.elbo:.4g}, "
            f"smoothed_elbo={self.smoothed_elbo:.4g}, family={self.family_name!r}, model={self.model.name!r})"
        )


@dataclass(eq=False)
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        family: the trained variational family.
        model: the compiled model.
        history: one record per completed step (plain lists).
        state: the final :class:`TrainingState` (``fit(..., resume=result.state)`` goes on).
        steps_done: the number of completed steps (resumed ones included).
        stopped_early: whether training ended before ``steps`` (see ``stop_reason``).
        stop_reason: ``"completed"``, ``"early_stopping"``, ``"callback"`` or ``"diverged"``.
        elapsed: seconds this call spent training.
    """

    family: VariationalFamily
    model: CompiledModel
    history: History
    state: TrainingState
    steps_done: int
    stopped_early: bool
    elapsed: float
    stop_reason: str = "completed"

    @property
    def posterior(self) -> Posterior:
        """The fitted posterior (:class:`pavi_viz.inference.posterior.Posterior`)."""
        from pavi_viz.inference.posterior import Posterior

        return Posterior(self.model, self.family)

    @property
    def elbo(self) -> float:
        """The final smoothed ELBO."""
        return self.state.smoothed_elbo

    def __repr__(self) -> str:
        return (
            f"FitResult({self.state.family_name!r} on {self.model.name!r}: {self.steps_done} steps, "
            f"smoothed ELBO {self.state.smoothed_elbo:.4g}, {self.stop_reason}, {self.elapsed:.1f} s)"
        )


# -- settings ----------------------------------------------------------------------
def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (CUDA when available, else the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a torch.device."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available here; use 'cpu' or 'auto'")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} asked for, but there are {torch.cuda.device_count()} CUDA devices")
    return resolved


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device()
    return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)


def default_batch_sizes(model: CompiledModel) -> dict[str, int]:
    """The batch size of each plate that :func:`fit` batches by default.

    * a regular plate (top-level or nested with a fixed count per outer element) of
      at most :data:`DEFAULT_BATCH` elements is taken whole; a larger one gets
      :data:`DEFAULT_BATCH` elements per step (per outer element, for a nested one);
    * a ragged plate is taken whole within the drawn outer elements, unless it has
      more than :data:`DEFAULT_RAGGED_BATCH` members: then at most that many are drawn
      among the members of the drawn outer elements.

    Plates left out of the result are taken whole.
    """
    sizes = {}
    for plate in model.plates:
        limit = DEFAULT_RAGGED_BATCH if plate.ragged else DEFAULT_BATCH
        if plate.size > limit:
            sizes[plate.name] = limit
    return sizes


def batch_sizes(model: CompiledModel, batch: Mapping[str, int | None] | None = None) -> dict[str, int]:
    """The defaults of :func:`default_batch_sizes`, overridden by ``batch``.

    ``batch`` maps plate names to a number of elements per step; ``None``, or a number
    at least the plate's size, takes the plate whole.

    Raises:
        ValueError: for unknown plate names (all named) or sizes below 1.
    """
    sizes = default_batch_sizes(model)
    if not batch:
        return sizes
    known = [p.name for p in model.plates]
    unknown = [name for name in batch if name not in known]
    if unknown:
        raise ValueError(
            f"batch sizes name unknown plate(s) {unknown}; model {model.name!r} has plates {known}"
        )
    for name, size in batch.items():
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"the batch size of plate {name!r} must be a whole number of at least 1, got {size!r}")
        if size is None or size >= model.plates[name].size:
            sizes.pop(name, None)  # taken whole
        else:
            sizes[name] = size
    return sizes


def lr_factor(schedule: str | None, step: int, total: int) -> float:
    """The learning rate of step ``step`` (from 0) of ``total``, as a fraction of ``lr``.

    ``None``: constant. ``"cosine"``: half a cosine from 1 down to :data:`FINAL_LR_FACTOR`.
    ``"exponential"``: geometric decay from 1 to :data:`FINAL_LR_FACTOR`.
    """
    if schedule is None:
        return 1.0
    progress = min(step / max(total - 1, 1), 1.0)
    if schedule == "cosine":
        return FINAL_LR_FACTOR + (1 - FINAL_LR_FACTOR) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "exponential":
        return FINAL_LR_FACTOR**progress
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {list(SCHEDULES)}")


def _derived_seed(seed: int, stream: str = "batches") -> int:
    """A seed for one of a run's generators (``stream``: ``"batches"`` or ``"noise"``),
    unrelated to (but fixed by) ``seed`` and to the other streams' seeds."""
    digest = hashlib.sha256(f"pavi_viz.fit.{stream}/{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class _DefaultFamily(str):
    """The default family name, told apart from a name the caller passes (which must
    then match a resumed checkpoint's)."""

    __slots__ = ()


DEFAULT_FAMILY = _DefaultFamily("pavi-e")


def _check_settings(steps, lr, particles, callback_every, schedule, clip, early_stopping, checkpoint, checkpoint_every):
    def whole(value: Any, name: str, least: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be a whole number of at least {least}, got {value!r}")

    whole(steps, "steps", 0)
    whole(particles, "particles", 1)
    whole(callback_every, "callback_every", 1)
    if early_stopping is not None:
        whole(early_stopping, "early_stopping", 1)
    if checkpoint_every is not None:
        whole(checkpoint_every, "checkpoint_every", 1)
        if checkpoint is None:
            raise ValueError("checkpoint_every needs a checkpoint path (checkpoint=...)")
    if not isinstance(lr, int | float) or isinstance(lr, bool) or not math.isfinite(lr) or lr < 0:
        raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {list(SCHEDULES)}")
    if clip is not None and (not isinstance(clip, int | float) or isinstance(clip, bool) or not clip > 0):
        raise ValueError(f"clip must be a positive number or None, got {clip!r}")


# -- the last good state -----------------------------------------------------------
class _LastGood:
    """A copy of the trained parameters and of Adam's state at the start of the latest
    step whose ELBO and gradients were all finite.

    Only what training changes is copied (the optimizer's parameters and state, not
    the family's constant buffers), into buffers reused from step to step, with one
    ``_foreach_copy_`` each: a small cost next to a step's forward and backward passes.
    """

    def __init__(self, family: VariationalFamily, optimizer: torch.optim.Optimizer) -> None:
        self.family, self.optimizer = family, optimizer
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        numbers = 3 * sum(p.numel() for p in self.params)
        self.every = 1 if numbers <= SNAPSHOT_LIMIT else SNAPSHOT_EVERY
        self.step: int | None = None  # completed steps at the copy
        self.extra: dict[str, Any] = {}
        self._params: list[Tensor] = []
        self._keys: list[tuple[int, str]] = []  # (parameter index, state key) of each tensor in Adam's state
        self._state: list[Tensor] = []
        self._others: dict[int, dict[str, Any]] = {}  # Adam's non-tensor state entries

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def save(self, step: int, **extra: Any) -> None:
        if not self._params:
            self._params = [p.detach().clone() for p in self.params]
        else:
            _copy_all(self._params, [p.detach() for p in self.params])
        state = self.optimizer.state
        keys, tensors, others = [], [], {}
        for i, p in enumerate(self.params):
            for k, v in state.get(p, {}).items():
                if isinstance(v, Tensor):
                    keys.append((i, k))
                    tensors.append(v)
                else:
                    others.setdefault(i, {})[k] = v
        if keys != self._keys or any(a.shape != b.shape for a, b in zip(self._state, tensors, strict=True)):
            self._keys, self._state = keys, [v.detach().clone() for v in tensors]
        else:
            _copy_all(self._state, tensors)
        self._others = others
        self.step, self.extra = step, extra

    def restore(self) -> None:
        if self.step is None:
            return
        _copy_all([p.detach() for p in self.params], self._params)
        entries: dict[int, dict[str, Any]] = {i: dict(v) for i, v in self._others.items()}
        for (i, k), v in zip(self._keys, self._state, strict=True):
            entries.setdefault(i, {})[k] = v.clone()
        for i, p in enumerate(self.params):
            if i in entries:
                self.optimizer.state[p] = entries[i]
            else:
                self.optimizer.state.pop(p, None)


def _copy_all(targets: list[Tensor], sources: list[Tensor]) -> None:
    if not targets:
        return
    with torch.no_grad():
        if hasattr(torch, "_foreach_copy_"):
            torch._foreach_copy_(targets, sources)
        else:  # pragma: no cover - older torch
            for t, s in zip(targets, sources, strict=True):
                t.copy_(s)


# -- divergence reports ------------------------------------------------------------
def _variable_of(parameter: str, model: CompiledModel) -> str | None:
    """The model variable a family parameter belongs to, read from its dotted name
    (``flows.mu_g.transform...``, ``loc.mu_g``, ``encoder.embed.x...``)."""
    for part in parameter.split("."):
        if part in model.variables:
            return part
    return None


def _bad_parameters(family: VariationalFamily, gradients: bool) -> list[str]:
    bad = []
    for name, p in family.named_parameters():
        t = p.grad if gradients else p
        if t is not None and not bool(torch.isfinite(t).all()):
            bad.append(name)
    return bad


def _describe_parameter(name: str, model: CompiledModel) -> str:
    var = _variable_of(name, model)
    if var is None:
        return f"family parameter {name!r}"
    role = "latent" if not model.variables[var].observed else "observed variable"
    where = " in the data encoder" if name.startswith("encoder.") else ""
    return f"family parameter {name!r}{where} (of {role} {var!r})"


_ADVICE = "Lower the learning rate (lr=...), keep gradient clipping on (clip=...) or check the data's scale"


def _elbo_divergence(
    step: int, total: int, value: float, terms: Mapping[str, Tensor], family: VariationalFamily
) -> DivergenceError:
    bad = next((name for name, t in terms.items() if not bool(torch.isfinite(t))), None)
    if bad is None:
        culprit = f"every variable's term is finite but their sum is {value}"
    else:
        culprit = f"the term of variable {bad!r} (log p - log q) is {float(terms[bad])}"
    broken = _bad_parameters(family, gradients=False)
    if broken:
        culprit += f", and {_describe_parameter(broken[0], family.model)} is not finite"
    return DivergenceError(
        f"training diverged at step {step} of {total}: the ELBO estimate is {value}; {culprit}. {_ADVICE}.",
        step,
        variable=bad,
        parameter=broken[0] if broken else None,
    )


def _gradient_divergence(step: int, total: int, family: VariationalFamily, norm: float) -> DivergenceError:
    bad = _bad_parameters(family, gradients=True)
    model = family.model
    if bad:
        first = bad[0]
        others = f" and {len(bad) - 1} other parameter(s)" if len(bad) > 1 else ""
        culprit = f"the gradient of {_describe_parameter(first, model)}{others} is not finite"
        variable = _variable_of(first, model)
    else:
        culprit, first, variable = f"the gradient's norm is {norm}", None, None
    return DivergenceError(
        f"training diverged at step {step} of {total}: the ELBO estimate is finite but {culprit}. {_ADVICE}.",
        step,
        variable=variable,
        parameter=first,
    )


def _error_divergence(step: int, total: int, family: VariationalFamily, err: ValueError) -> DivergenceError:
    culprit = getattr(err, "culprit", None)
    bad = _bad_parameters(family, gradients=False)
    if bad:
        because = f"{_describe_parameter(bad[0], family.model)} is not finite"
        variable = _variable_of(bad[0], family.model) or culprit
    else:
        because = "a draw from the family is not finite"
        variable = culprit
    where = f"a distribution of variable {culprit!r}" if culprit else "a distribution"
    detail = str(err).splitlines()[0][:300]
    return DivergenceError(
        f"training diverged at step {step} of {total}: {where} got invalid values because {because} "
        f"({detail}). {_ADVICE}.",
        step,
        variable=variable,
        parameter=bad[0] if bad else None,
    )


def _is_divergence(err: ValueError, family: VariationalFamily) -> bool:
    """Whether a distribution refused values because training diverged (non-finite
    parameters or draws), rather than because of the model or its data."""
    text = str(err)
    if "satisfy the constraint" not in text and "found invalid values" not in text:
        return False
    if _bad_parameters(family, gradients=False):
        return True
    shown = text.split("found invalid values", 1)[-1]
    return re.search(r"\b(nan|inf)\b", shown) is not None


# -- the loop ----------------------------------------------------------------------
def fit(
    model: PlateModel | CompiledModel,
    family: str | VariationalFamily = DEFAULT_FAMILY,
    *,
    steps: int = 2000,
    batch: Mapping[str, int | None] | None = None,
    lr: float = 1e-2,
    particles: int = 1,
    seed: int | None = 0,
    device: str | torch.device = "auto",
    callbacks: Sequence[Callable[[TrainingState], None]] = (),
    callback_every: int = 10,
    schedule: str | None = None,
    clip: float | None = 10.0,
    early_stopping: int | None = None,
    progress: bool | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: str | Path | TrainingState | None = None,
    family_options: Mapping[str, Any] | None = None,
) -> FitResult:
    """Fit a variational family to a model's posterior by stochastic ELBO maximisation.

    Args:
        model: the model, with its data (a :class:`PlateModel` is compiled once, on ``device``).
        family: a family name (``"pavi-e"``, ``"pavi-f"``, ``"mean-field"``) or a built family.
        steps: the total number of steps (a resumed run counts the steps already done).
        batch: elements per step for some plates, overriding :func:`default_batch_sizes`
            (``None`` or a size at least the plate's takes it whole).
        lr: Adam's learning rate (the start of the schedule).
        particles: Monte Carlo draws per ELBO estimate.
        seed: seeds the family's initial weights, the sampling noise and the batches;
            ``None`` draws a fresh seed (kept in ``result.state.settings["seed"]``).
        device: ``"auto"`` (CUDA when available, else the CPU), ``"cpu"``, ``"cuda"``...
            A compiled model stays where it is (``"auto"``), or must already be there.
        callbacks: functions of the :class:`TrainingState`, called every
            ``callback_every`` steps and once at the end; one may end training by
            raising :class:`StopTraining` or setting ``state.stop_requested``.
        callback_every: the callback period, in steps.
        schedule: ``None`` (constant), ``"cosine"`` or ``"exponential"`` decay of the
            learning rate from ``lr`` to ``lr * FINAL_LR_FACTOR`` at ``steps``.
        clip: the maximum gradient norm (``None``: no clipping).
        early_stopping: stop once the smoothed ELBO has not improved (beyond a small
            tolerance) for this many steps; ``None``: never.
        progress: show a tqdm progress bar; ``None``: when stderr is a terminal.
        checkpoint: a file to save the training state to (at the end, and every
            ``checkpoint_every`` steps when given).
        checkpoint_every: the checkpoint period, in steps.
        resume: a checkpoint file or a :class:`TrainingState` to continue from; with
            the same settings the run continues exactly as an uninterrupted one would
            (on the CPU). The family comes from the checkpoint.
        family_options: keyword options of the family (see :mod:`pavi_viz.inference.families`).

    Returns:
        A :class:`FitResult`.

    Raises:
        DivergenceError: the ELBO or a gradient became NaN or infinite; its ``result``
            holds the run up to the last good step, the family restored to it.
        ValueError: bad settings (an unknown device, plate, family or schedule...).
        CheckpointError: ``resume`` names a checkpoint made for another model.
    """
    _check_settings(steps, lr, particles, callback_every, schedule, clip, early_stopping, checkpoint, checkpoint_every)
    compiled = _compiled_model(model, device, family, resume)
    if isinstance(family, str) and family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    sizes = batch_sizes(compiled, batch)
    options = dict(family_options or {})
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little") >> 1
    elif isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be a whole number or None, got {seed!r}")

    if resume is None:
        if isinstance(family, VariationalFamily):
            built, name = family, family.name
        else:
            name = str(family)
            # The initial weights come from torch's global generator: seed it, one fit at a time.
            with seeded(seed, compiled.device):
                built = make_family(name, compiled, **options)
        state = TrainingState(
            step=0,
            total_steps=steps,
            elbo=float("nan"),
            smoothed_elbo=float("nan"),
            steps_per_second=0.0,
            family=built,
            optimizer=torch.optim.Adam(built.parameters(), lr=lr),
            model=compiled,
            history=History(),
            family_name=name,
            family_options=options,
            generator=torch.Generator(compiled.device).manual_seed(_derived_seed(seed, "batches")),
            noise_generator=torch.Generator(compiled.device).manual_seed(_derived_seed(seed, "noise")),
        )
    else:
        state = _resumed_state(resume, compiled, family, family_options)
        seed = state.settings.get("seed", seed)
    state.total_steps = steps
    state.stop_requested = state.finished = False
    state.settings = {
        "lr": float(lr),
        "particles": particles,
        "batch": dict(sizes),
        "schedule": schedule,
        "clip": None if clip is None else float(clip),
        "seed": seed,
        "early_stopping": early_stopping,
    }
    return _train(
        state,
        sizes=sizes,
        particles=particles,
        lr=float(lr),
        schedule=schedule,
        clip=clip,
        early_stopping=early_stopping,
        callbacks=tuple(callbacks),
        callback_every=callback_every,
        progress=_is_terminal(sys.stderr) if progress is None else bool(progress),
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
    )


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no stream (pythonw), or a closed one
        return False


def _compiled_model(
    model: PlateModel | CompiledModel,
    device: str | torch.device,
    family: str | VariationalFamily,
    resume: str | Path | TrainingState | None,
) -> CompiledModel:
    """The compiled model to train on: the family's or the resumed state's when given."""
    bound = family.model if isinstance(family, VariationalFamily) else None
    if isinstance(resume, TrainingState):
        if bound is not None and bound is not resume.model:
            raise ValueError("fit(resume=state) continues the state's own family: leave family out")
        bound = resume.model
    auto = device is None or (isinstance(device, str) and device == "auto")
    if bound is not None:
        if not auto and not _same_device(resolve_device(device), bound.device):
            raise ValueError(f"the family lives on {bound.device}, not on the requested device {device!r}")
        if model is not bound:
            other = model if isinstance(model, CompiledModel) else model.compile(device=bound.device)
            check_model(_model_entry(other), bound, what="family")
        return bound
    if isinstance(model, CompiledModel):
        if not auto and not _same_device(resolve_device(device), model.device):
            raise ValueError(
                f"the model was compiled on {model.device}, not on {device!r}: compile it there "
                f"(model.compile(device=...)) or pass the PlateModel"
            )
        return model
    if not hasattr(model, "compile"):
        raise TypeError(f"fit needs a PlateModel or a CompiledModel, got {type(model).__name__}")
    return model.compile(device=resolve_device(device))


def _resumed_state(
    resume: str | Path | TrainingState,
    compiled: CompiledModel,
    family: str | VariationalFamily,
    family_options: Mapping[str, Any] | None,
) -> TrainingState:
    if isinstance(resume, TrainingState):
        state = resume
        if isinstance(family, VariationalFamily) and family is not state.family:
            raise ValueError("fit(resume=state) continues the state's own family: leave family out")
    else:
        state = load_checkpoint(resume, compiled, family if isinstance(family, VariationalFamily) else None)
    if isinstance(family, str) and not isinstance(family, _DefaultFamily) and family != state.family_name:
        raise ValueError(f"the run to resume trained a {state.family_name!r} family, not a {family!r} one")
    if family_options is not None and dict(family_options) != dict(state.family_options):
        raise ValueError(
            f"the run to resume built its family with options {state.family_options}, not {dict(family_options)}"
        )
    return state


def _train(
    state: TrainingState,
    *,
    sizes: dict[str, int],
    particles: int,
    lr: float,
    schedule: str | None,
    clip: float | None,
    early_stopping: int | None,
    callbacks: tuple[Callable[[TrainingState], None], ...],
    callback_every: int,
    progress: bool,
    checkpoint: str | Path | None,
    checkpoint_every: int | None,
) -> FitResult:
    model, family, optimizer, history = state.model, state.family, state.optimizer, state.history
    total = state.total_steps
    params = [p for group in optimizer.param_groups for p in group["params"]]
    last_good = _LastGood(family, optimizer)
    start = time.perf_counter()
    elapsed_before = state.elapsed
    ticks: collections.deque[float] = collections.deque(maxlen=RATE_WINDOW + 1)
    ticks.append(start)
    stop_reason = "completed"
    final_called = False  # whether the latest callback call had state.finished set

    def run_callbacks() -> bool:
        """Call every callback; whether one asked to stop."""
        nonlocal final_called, start
        final_called = state.finished
        called = time.perf_counter()
        for callback in callbacks:
            try:
                callback(state)
            except StopTraining:
                state.stop_requested = True
        # Time spent in callbacks is not training time: leave it out of the elapsed
        # time and of the throughput (shift the clock's origin and the recent ticks).
        spent = time.perf_counter() - called
        start += spent
        shifted = [t + spent for t in ticks]
        ticks.clear()
        ticks.extend(shifted)
        return state.stop_requested

    def result(reason: str) -> FitResult:
        return FitResult(
            family=family,
            model=model,
            history=history,
            state=state,
            steps_done=state.step,
            stopped_early=reason != "completed",
            elapsed=time.perf_counter() - start,
            stop_reason=reason,
        )

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=min(state.step, total), desc=f"fit {state.family_name}", unit="step",
                   dynamic_ncols=True)
    try:
        family.train()
        while state.step < total:
            index = state.step  # steps done before this one
            number = index + 1
            step_lr = lr * lr_factor(schedule, index, total)
            for group in optimizer.param_groups:
                group["lr"] = step_lr
            frame = model.frame(model.sample_batch(sizes, state.generator))
            optimizer.zero_grad(set_to_none=True)
            try:
                estimate = elbo(model, family, frame, particles, state.noise_generator)
            except ValueError as err:  # ModelError included
                if not _is_divergence(err, family):
                    raise
                raise _error_divergence(number, total, family, err) from err
            value = float(estimate.value.detach())
            if not math.isfinite(value):
                raise _elbo_divergence(number, total, value, estimate.terms, family)
            (-estimate.value).backward()
            grads = [p.grad for p in params if p.grad is not None]
            norm_tensor = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
            norm = float(norm_tensor)
            if not math.isfinite(norm):
                raise _gradient_divergence(number, total, family, norm)
            if clip is not None and grads:
                torch.nn.utils.clip_grads_with_norm_(params, clip, norm_tensor)
            if last_good.due(index):
                last_good.save(
                    index,
                    elbo=state.elbo,
                    smoothed=state.smoothed_elbo,
                    best=state.best_smoothed_elbo,
                    since=state.steps_since_best,
                )
            optimizer.step()

            # Bookkeeping.
            now = time.perf_counter()
            ticks.append(now)
            state.step = number
            state.elbo = value
            state.lr = step_lr
            state.smoothed_elbo = (
                value if not history.step else (1 - SMOOTHING) * state.smoothed_elbo + SMOOTHING * value
            )
            state.steps_per_second = (len(ticks) - 1) / max(ticks[-1] - ticks[0], 1e-12)
            state.elapsed = elapsed_before + (now - start)
            history.append(
                step=number,
                elbo=value,
                smoothed_elbo=state.smoothed_elbo,
                time=state.elapsed,
                steps_per_second=state.steps_per_second,
                lr=step_lr,
                grad_norm=norm,
            )
            best = state.best_smoothed_elbo
            tolerance = EARLY_STOPPING_RTOL * abs(best) + EARLY_STOPPING_ATOL if math.isfinite(best) else 0.0
            if state.smoothed_elbo > best + tolerance:
                state.best_smoothed_elbo, state.steps_since_best = state.smoothed_elbo, 0
            else:
                state.steps_since_best += 1
            if bar is not None:
                bar.update(1)
                if number % 10 == 0 or number == total:
                    bar.set_postfix(elbo=f"{state.smoothed_elbo:.5g}", refresh=False)

            stop = None
            if state.stop_requested:
                stop = "callback"
            elif early_stopping is not None and state.steps_since_best >= early_stopping:
                stop = "early_stopping"
            ending = stop is not None or number >= total
            state.finished = ending
            if callbacks and (ending or number % callback_every == 0) and run_callbacks() and stop is None:
                stop = "callback"
            if stop is not None:
                stop_reason = stop
                break
            if checkpoint_every is not None and number % checkpoint_every == 0 and number < total:
                save_checkpoint(checkpoint, state)
        state.finished = True
        if callbacks and not final_called:
            run_callbacks()
        if checkpoint is not None:
            save_checkpoint(checkpoint, state)
        return result(stop_reason)
    except DivergenceError as err:
        if last_good.step is not None:
            last_good.restore()
            history.truncate(last_good.step)
            state.step = last_good.step
            state.elbo = last_good.extra["elbo"]
            state.smoothed_elbo = last_good.extra["smoothed"]
            state.best_smoothed_elbo = last_good.extra["best"]
            state.steps_since_best = last_good.extra["since"]
        optimizer.zero_grad(set_to_none=True)
        state.finished = True
        err.result = result("diverged")
        restored = "its state before training" if state.step == 0 else f"its state after step {state.step}"
        err.args = (
            f"{err.args[0]} The family is restored to {restored} (the last good one): see error.result.",
        )
        raise
    finally:
        if bar is not None:
            bar.close()


__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_RAGGED_BATCH",
    "DivergenceError",
    "FitResult",
    "History",
    "StopTraining",
    "TrainingState",
    "batch_sizes",
    "default_batch_sizes",
    "fit",
    "lr_factor",
    "resolve_device",
]
