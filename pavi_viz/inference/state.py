"""The records of training, shared by the trainer and the checkpoints.

A leaf module: it imports neither :mod:`~pavi_viz.inference.trainer` nor
:mod:`~pavi_viz.inference.checkpoints`, which both import it.

* :class:`StepRecord`: what one step did (a frozen value);
* :class:`History`: every step's record, as columns;
* :class:`TrainingState`: all a run needs to go on (the family, the optimizer, the
  generators, the history and the running bookkeeping);
* :class:`FitResult`: what a run gives back;
* :class:`DivergenceError`: training went non-finite, with typed fields saying where.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from pavi_viz.inference.config import FitConfig
from pavi_viz.inference.families import VariationalFamily
from pavi_viz.model.compiled import CompiledModel

if TYPE_CHECKING:
    from pavi_viz.inference.posterior import Posterior


@dataclass(frozen=True)
class StepRecord:
    """One completed training step.

    Attributes:
        step: the step's number, counted from 1.
        elbo: the ELBO estimate on the step's batch.
        smoothed_elbo: its bias-corrected moving average, spikes winsorized
            (:mod:`pavi_viz.inference.smoothing`).
        time: seconds of training since the run began (resumed runs included).
        steps_per_second: the throughput over the last few steps.
        lr: the learning rate used.
        grad_norm: the gradient's norm before clipping.
        redraws: the batches drawn again because the first came out non-finite.
        spike: whether the estimate lay so far below the smoothed ELBO that it
            entered the average winsorized (:func:`~pavi_viz.inference.smoothing.spike_bound`).
    """

    step: int
    elbo: float
    smoothed_elbo: float
    time: float
    steps_per_second: float
    lr: float
    grad_norm: float
    redraws: int
    spike: bool


@dataclass
class History:
    """Every step's :class:`StepRecord`, as columns (plain lists): ``history.elbo[-1]``."""

    step: list[int] = field(default_factory=list)
    elbo: list[float] = field(default_factory=list)
    smoothed_elbo: list[float] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    steps_per_second: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    redraws: list[int] = field(default_factory=list)
    spike: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.step)

    def append(self, record: StepRecord) -> None:
        for column in COLUMNS:
            getattr(self, column).append(getattr(record, column))

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` records."""
        for column in COLUMNS:
            del getattr(self, column)[length:]

    def to_dict(self) -> dict[str, list]:
        """The columns as a dict of (copied) lists: ``pandas.DataFrame(history.to_dict())``."""
        return {column: list(getattr(self, column)) for column in COLUMNS}

    @classmethod
    def from_dict(cls, columns: Mapping[str, Sequence]) -> History:
        """The history of these columns; one that a checkpoint of an older pavi_viz lacks
        (``redraws``: runs then never drew again; ``spike``) is zeros."""
        length = len(columns["step"])
        return cls(**{column: list(columns[column]) if column in columns else [0] * length for column in COLUMNS})

    def __repr__(self) -> str:
        last = f", last smoothed ELBO {self.smoothed_elbo[-1]:.5g}" if self.step else ""
        return f"History({len(self)} steps{last})"


#: The columns of a :class:`History`, in the order of :class:`StepRecord`'s fields.
COLUMNS = tuple(f.name for f in dataclasses.fields(StepRecord))


@dataclass(eq=False)
class TrainingState:
    """Where a run stands; passed to callbacks, kept in results and checkpoints.

    Attributes:
        model: the compiled model.
        family: the variational family being trained.
        family_name, family_options: how to rebuild the family (for checkpoints).
        optimizer: its Adam optimizer.
        generator: the random source of the plate batches (on the model's device).
        noise_generator: the random source of the family's sampling noise (on the
            model's device).
        history: one record per completed step.
        settings: the run's settings (:meth:`~pavi_viz.inference.config.FitConfig.settings`
            with the seed drawn, when it was ``None``).
        step: the number of completed steps.
        total_steps: the number of steps the run aims at.
        elbo: the latest ELBO estimate. smoothed_elbo: its moving average.
        best_smoothed_elbo, steps_since_best: the early-stopping bookkeeping.
        elapsed: seconds of training so far, resumed runs included.
        finished: ``True`` once the run has ended (in the last callback call too).
        gradient_tables: SAGA's tables of each batched element's latest gradient with
            respect to each global latent's uses, ``{(name, use): (G, *shape)}``
            (:mod:`pavi_viz.inference.control_variates`; empty where it does not apply).
    """

    model: CompiledModel
    family: VariationalFamily
    family_name: str
    family_options: dict[str, Any]
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    noise_generator: torch.Generator
    history: History = field(default_factory=History)
    settings: dict[str, Any] = field(default_factory=dict)
    step: int = 0
    total_steps: int = 0
    elbo: float = float("nan")
    smoothed_elbo: float = float("nan")
    best_smoothed_elbo: float = float("-inf")
    steps_since_best: int = 0
    elapsed: float = 0.0
    finished: bool = False
    gradient_tables: dict[tuple[str, str], Tensor] = field(default_factory=dict)

    @property
    def steps_per_second(self) -> float:
        """The recent throughput (0 before the first step)."""
        return self.history.steps_per_second[-1] if self.history.step else 0.0

    @property
    def lr(self) -> float:
        """The learning rate of the latest step (NaN before the first)."""
        return self.history.lr[-1] if self.history.step else float("nan")

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
        state: the final :class:`~pavi_viz.inference.state.TrainingState`
            (``fit(..., resume=result.state)`` goes on).
        config: the settings the run trained with (a ``None`` seed replaced by the one drawn).
        steps_done: the number of completed steps (resumed ones included).
        stop_reason: ``"completed"`` (all its steps), ``"converged"``, ``"early_stopping"``,
            ``"callback"`` or ``"diverged"``.
        elapsed: seconds this call spent training.
    """

    family: VariationalFamily
    model: CompiledModel
    history: History
    state: TrainingState
    config: FitConfig
    steps_done: int
    stop_reason: str
    elapsed: float

    @classmethod
    def of(cls, state: TrainingState, config: FitConfig, stop_reason: str, elapsed: float) -> FitResult:
        """The result of a run so far: its state, its settings, why it stopped, and
        the seconds of training of this call."""
        return cls(state.family, state.model, state.history, state, config, state.step, stop_reason, elapsed)

    @property
    def stopped_early(self) -> bool:
        """Whether training ended before it converged or did all its steps (see ``stop_reason``)."""
        return self.stop_reason not in ("completed", "converged")

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


def make_optimizer(family: VariationalFamily, lr: float) -> torch.optim.Adam:
    """A run's optimizer: Adam over the family's parameters, its update fused into one
    kernel (``fused=True``). Adam's default on the CPU loops over the parameter tensors
    in Python: 2 of the 10 ms of a step of GRE at G = 1,000; fused, 0.3."""
    return torch.optim.Adam(family.parameters(), lr=lr, fused=True)


def derived_seed(seed: int, stream: str) -> int:
    """A seed for one of a run's generators (``stream``: ``"batches"`` or ``"noise"``),
    unrelated to (but fixed by) ``seed`` and to the other streams' seeds."""
    digest = hashlib.sha256(f"pavi_viz.fit.{stream}/{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class DivergenceError(RuntimeError):
    """Training went non-finite: a draw, the ELBO estimate or a gradient.

    Attributes:
        step: the step (counted from 1) that diverged. total: the steps the run aimed at.
        cause: what went non-finite: ``"draw"`` (a latent drawn from the family),
            ``"elbo"`` (the ELBO estimate) or ``"gradient"`` (a parameter's gradient);
            ``"replica"``: another process of a data-parallel run, whose own error says which.
        variable: the model variable at fault, when known.
        term: the value of that variable's ELBO term (log p - log q), for ``"elbo"``.
        parameter: the family parameter that is not finite (or whose gradient is not).
        value: the non-finite ELBO estimate, or gradient norm.
        rank: in a data-parallel run, the process that diverged (``None``: a run of one).
        restored_step: the step whose state the family and optimizer were put back to
            (0: before training), once restored; ``None`` until then.
        result: the partial :class:`FitResult` (the
            family restored, the history up to it), when :func:`~pavi_viz.inference.fit`
            raised the error.
    """

    ADVICE = "Lower the learning rate (lr=...), keep gradient clipping on (clip=...) or check the data's scale."

    def __init__(
        self,
        step: int,
        total: int,
        cause: str,
        *,
        variable: str | None = None,
        term: float | None = None,
        parameter: str | None = None,
        parameter_role: str | None = None,
        value: float | None = None,
    ) -> None:
        super().__init__(step, cause)
        self.step, self.total, self.cause = step, total, cause
        self.variable, self.term, self.value = variable, term, value
        self.parameter, self.parameter_role = parameter, parameter_role
        self.rank: int | None = None
        self.restored_step: int | None = None
        self.result: FitResult | None = None

    @property
    def reason(self) -> str:
        """What diverged and where, with advice (one sentence, no word on restoring)."""
        where = f"training diverged at step {self.step} of {self.total}"
        if self.rank is not None:
            where += f" on rank {self.rank}"
        parameter = f"family parameter {self.parameter!r}{self.parameter_role or ''}"
        if self.cause == "replica":
            because = "its draws or its ELBO estimate are not finite (that process's error says which)"
        elif self.cause == "draw":
            because = f"the family's draws of variable {self.variable!r} are not finite"
            if self.parameter:
                because += f" ({parameter} is not finite)"
        elif self.cause == "elbo":
            because = f"the ELBO estimate is {self.value}; "
            if self.variable is None:
                because += "every variable's term is finite but their sum is not"
            else:
                because += f"the term of variable {self.variable!r} (log p - log q) is {self.term}"
            if self.parameter:
                because += f", and {parameter} is not finite"
        else:
            because = "the ELBO estimate is finite but "
            because += f"the gradient of {parameter} is not finite" if self.parameter else (
                f"the gradient's norm is {self.value}")
        return f"{where}: {because}. {self.ADVICE}"

    @property
    def restored(self) -> str:
        """Where the family was put back, one sentence (``""`` until restored)."""
        if self.restored_step is None:
            return ""
        restored = "its state before training" if self.restored_step == 0 else f"its state after step {self.restored_step}"
        return f"The family is restored to {restored} (the last good one)."

    def __str__(self) -> str:
        if self.restored_step is None:
            return self.reason
        return f"{self.reason} {self.restored[:-1]}: see error.result."


__all__ = ["COLUMNS", "DivergenceError", "FitResult", "History", "StepRecord", "TrainingState", "derived_seed", "make_optimizer"]
