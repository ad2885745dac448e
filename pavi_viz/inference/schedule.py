"""Learning-rate schedules, and the plateau test that ends a converged fit.

A fixed-length schedule (``"cosine"``, ``"exponential"``) is a function of the step
and the run's length: :func:`lr_factor`. The default, ``"plateau"``, needs no length:
after a linear warm-up it keeps the learning rate while the ELBO still improves, and
divides it by :data:`PLATEAU_DECAY` each time a window of :data:`PLATEAU_WINDOW`
steps fails to beat the best window so far by more than its noise (the rule of
``torch.optim.lr_scheduler.ReduceLROnPlateau``, with a significance test instead of
a fixed threshold, since single-draw ELBO estimates are noisy). Once the rate is
below :data:`FINAL_LR_FACTOR` of ``lr`` and a window still does not improve, the fit
has converged: the optimiser's steps are too small to move the ELBO by more than its
Monte Carlo error. The PAVI families run that rule in stages (:class:`Stages`): at
the start of each later stage the trainer has the family draw its global latents in
units of their q, and the stage runs by the rule above from its own fraction of
``lr``. The decisions read the ELBO history alone, so a resumed run (whose history is
in its checkpoint) replays them exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

#: The learning rate at the end of a ``"cosine"`` or ``"exponential"`` schedule, and
#: the floor of ``"plateau"``, as a fraction of ``lr``.
FINAL_LR_FACTOR = 0.01
#: Steps of the linear warm-up of every schedule but the constant one (at most a tenth
#: of a fixed-length one): from ``1 / WARMUP_STEPS`` of ``lr`` up to ``lr``, so that
#: the first, large gradients of a fresh flow do not throw its parameters far off.
WARMUP_STEPS = 50
#: ``"plateau"``: the ELBO is compared window by window, of this many steps each
#: (100 stopped fits whose means still drifted along a flat ridge of the ELBO: the
#: Poisson model's intercept against its random effects, 0.3 sd off)...
PLATEAU_WINDOW = 200
#: ... a window improves on the best one when its mean is higher by more than this
#: many standard errors of the difference...
PLATEAU_SIGNIFICANCE = 1.0
#: ... and after a window that does not, the learning rate is multiplied by this.
PLATEAU_DECAY = 0.3
#: A first stage of this many steps (its warm-up and three windows), where a model is
#: taken whole at every step (:data:`WHOLE_STAGES`). Until the global latents' draws
#: are in their own units, Adam moves them by about ``lr`` a step in the prior's
#: units, many of their posterior sds where the data pin them down: GRE's population
#: mean (posterior sd 0.03 at 10^3 groups) wandered by 1 to 2 sds for the 1,000 to
#: 3,000 steps a first stage took when it ran until it converged. One window (250
#: steps) was enough for GRE (q's sd of the population mean 0.6 to 1.7 of the exact one
#: there), not for the funnels' scales: radon's sigma_beta and radon_uranium's
#: sigma_alpha missed the bar at two seeds each out of five; three windows brought
#: three of those four back. GRE reached 0.1 sd in 4.5 to 9.5 s (three runs; 4.0 s
#: after one window, 18 s with a first stage run until it converged).
FIRST_STAGE_STEPS = WARMUP_STEPS + 3 * PLATEAU_WINDOW


@dataclass(frozen=True)
class Stages:
    """How a ``"plateau"`` schedule is staged.

    Attributes:
        rates: the fraction of ``lr`` each stage starts from (after a warm-up); one
            rate: a single stage. Every stage but the first draws the global latents
            in units of their q (the trainer standardises them as it starts).
        first_steps: the length of the first stage; ``None``: it ends as the others
            do, once the rule says converged.
    """

    rates: tuple[float, ...] = (1.0,)
    first_steps: int | None = None


#: Families without global latents to standardise: one stage.
ONE_STAGE = Stages()
#: A model taken whole at every step: a short first stage, then the global latents in
#: units of their q from a third of ``lr`` (which moved GRE's population mean from 1.7
#: sds off to 0.1 within 70 steps of the switch at 10^3 groups, and left the group
#: means 0.09 to 0.12 sd off, against 0.10 to 0.17 from the whole ``lr``), then again,
#: in units of the q that this stage converged to, from a tenth (with the two first
#: stages only, radon's funnel scale sigma_beta missed the bar at seeds 0 and 1, by 0.11
#: and 0.15 sd).
WHOLE_STAGES = Stages(rates=(1.0, 0.3, 0.1), first_steps=FIRST_STAGE_STEPS)
#: A model with batched plates: the first stage runs until it converges. On a batch,
#: q's global moments carry the batch's noise for longer: at 10^6 groups (2,272 a
#: step) q's sd of GRE's population mean was 8 times the exact one at step 250, and a
#: switch there left its mean 0.26 sd off when the fit converged, against 0.06 with
#: this (at 10^4 and 10^5 groups the early switch was faster: see the README).
BATCHED_STAGES = Stages(rates=(1.0, 0.1))


def warmup_factor(step: int, length: int = WARMUP_STEPS) -> float:
    """The fraction of the learning rate at step ``step`` (from 0) of a warm-up of ``length`` steps."""
    return min(1.0, (step + 1) / max(length, 1))


def lr_factor(schedule: str | None, step: int, total: int) -> float:
    """The learning rate of step ``step`` (from 0) of ``total`` of a fixed-length
    schedule, as a fraction of ``lr``.

    ``None``: constant. ``"cosine"``: after the warm-up, half a cosine from 1 down to
    :data:`FINAL_LR_FACTOR`. ``"exponential"``: after the warm-up, geometric decay
    from 1 to :data:`FINAL_LR_FACTOR`.
    """
    if schedule is None:
        return 1.0
    progress = min(step / max(total - 1, 1), 1.0)
    if schedule == "cosine":
        decay = FINAL_LR_FACTOR + (1 - FINAL_LR_FACTOR) * 0.5 * (1 + math.cos(math.pi * progress))
    elif schedule == "exponential":
        decay = FINAL_LR_FACTOR**progress
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    return warmup_factor(step, min(WARMUP_STEPS, total // 10)) * decay


@dataclass
class _Window:
    """Running sums of the ELBO estimates of one window."""

    count: int = 0
    total: float = 0.0
    squares: float = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.squares += value * value

    @property
    def mean(self) -> float:
        return self.total / self.count

    @property
    def variance_of_mean(self) -> float:
        variance = max(self.squares / self.count - self.mean**2, 0.0)
        return variance / self.count


@dataclass
class Plateau:
    """The ``"plateau"`` schedule's state: feed it each step's ELBO estimate with
    :meth:`update`; read the learning-rate fraction of the next step off
    :meth:`factor`, and :attr:`converged`.

    Attributes:
        stages: how the schedule is staged (:data:`ONE_STAGE`, :data:`WHOLE_STAGES`,
            :data:`BATCHED_STAGES`: see :meth:`Trainer.step`).
        stage: the current stage, from 0. Each starts with a warm-up up to its own
            rate and its own best window.
        decay: the current decay of the learning rate (1, then ``PLATEAU_DECAY`` to
            the power of the plateaus met so far).
        converged: whether the last stage's window failed to improve with the rate
            already below :data:`FINAL_LR_FACTOR` of the stage's own.
        steps: the ELBO estimates fed so far.
    """

    stages: Stages = ONE_STAGE
    stage: int = 0
    decay: float = 1.0
    converged: bool = False
    steps: int = 0
    _stage_start: int = 0
    _stage_rate: float = 1.0  # the decay the current stage started from
    _best: _Window | None = None
    _window: _Window = field(default_factory=_Window)

    @classmethod
    def replay(cls, elbos: Iterable[float], stages: Stages = ONE_STAGE) -> Plateau:
        """The state after the ELBO estimates ``elbos`` (a resumed run's history)."""
        plateau = cls(stages=stages)
        for value in elbos:
            plateau.update(value)
        return plateau

    def factor(self, step: int) -> float:
        """The fraction of ``lr`` of step ``step`` (from 0)."""
        return warmup_factor(step - self._stage_start) * self.decay

    def update(self, elbo: float) -> None:
        """Take one step's ELBO estimate; the warm-up's estimates are not compared."""
        self.steps += 1
        if self.converged:
            return
        if self.stage == 0 and self.stages.first_steps is not None and len(self.stages.rates) > 1:
            if self.steps >= self.stages.first_steps:
                self._next_stage()
            return
        if self.steps - self._stage_start <= WARMUP_STEPS:
            return
        self._window.add(elbo)
        if self._window.count < PLATEAU_WINDOW:
            return
        window, self._window = self._window, _Window()
        best = self._best
        if best is None:
            self._best = window
            return
        noise = math.sqrt(window.variance_of_mean + best.variance_of_mean)
        if window.mean > best.mean + PLATEAU_SIGNIFICANCE * noise:
            self._best = window
        elif self.decay < FINAL_LR_FACTOR * self._stage_rate:
            if self.stage + 1 < len(self.stages.rates):
                self._next_stage()
            else:
                self.converged = True
        else:
            self.decay *= PLATEAU_DECAY
            # Compare the next windows with this one: a smaller rate lowers the noise
            # of the estimates' mean, not necessarily the mean itself.
            self._best = window

    def _next_stage(self) -> None:
        """Start the next stage afresh: its own rate (after a warm-up), its own best window."""
        self.stage += 1
        self.decay = self._stage_rate = self.stages.rates[self.stage]
        self._best, self._window, self._stage_start = None, _Window(), self.steps


__all__ = [
    "BATCHED_STAGES",
    "FINAL_LR_FACTOR",
    "FIRST_STAGE_STEPS",
    "ONE_STAGE",
    "PLATEAU_DECAY",
    "PLATEAU_WINDOW",
    "WHOLE_STAGES",
    "Plateau",
    "Stages",
    "lr_factor",
    "warmup_factor",
]
