"""The learning-rate schedules and the plateau test (pavi_viz.inference.schedule)."""

from __future__ import annotations

import random

import pytest
import torch

import pavi_viz
from pavi_viz.inference import FitConfig, Trainer, fit
from pavi_viz.inference.schedule import (
    FINAL_LR_FACTOR,
    PLATEAU_DECAY,
    PLATEAU_WINDOW,
    SECOND_STAGE_LR_FACTOR,
    WARMUP_STEPS,
    Plateau,
    warmup_factor,
)


def _noisy(level: float, steps: int, rng: random.Random) -> list[float]:
    return [level + rng.gauss(0.0, 1.0) for _ in range(steps)]


def test_plateau_keeps_the_rate_while_the_elbo_improves_and_decays_on_plateaus() -> None:
    rng = random.Random(0)
    plateau = Plateau()
    rising = [-1000.0 + i for i in range(WARMUP_STEPS + 5 * PLATEAU_WINDOW)]  # a steady climb
    for value in rising:
        plateau.update(value)
    assert plateau.decay == 1.0 and not plateau.converged
    for value in _noisy(rising[-1], 2 * PLATEAU_WINDOW, rng):  # flat, noisy: one plateau at least
        plateau.update(value)
    assert plateau.decay <= PLATEAU_DECAY and not plateau.converged


def test_plateau_converges_below_the_floor_and_replays_identically() -> None:
    rng = random.Random(1)
    elbos = _noisy(-50.0, WARMUP_STEPS + 40 * PLATEAU_WINDOW, rng)
    plateau = Plateau()
    converged_at = None
    for step, value in enumerate(elbos, start=1):
        plateau.update(value)
        if plateau.converged and converged_at is None:
            converged_at = step
    assert converged_at is not None and plateau.decay < FINAL_LR_FACTOR
    assert converged_at % PLATEAU_WINDOW == WARMUP_STEPS % PLATEAU_WINDOW
    replayed = Plateau.replay(elbos)
    assert (replayed.decay, replayed.converged, replayed.steps) == (plateau.decay, True, len(elbos))
    # The warm-up ramps linearly, then the factor is the decay.
    assert plateau.factor(0) == pytest.approx(plateau.decay / WARMUP_STEPS)
    assert plateau.factor(10 * WARMUP_STEPS) == plateau.decay
    assert warmup_factor(4, 10) == pytest.approx(0.5)


def test_default_fit_ends_when_converged_and_says_so() -> None:
    model = pavi_viz.examples.load("gre", G=5, N=4, D=1)
    result = fit(model, "mean-field", seed=0, progress=False)
    assert result.stop_reason == "converged" and not result.stopped_early
    assert result.steps_done < result.config.steps
    lrs = result.history.lr
    assert lrs[-1] < FINAL_LR_FACTOR * result.config.lr
    # A resumed run replays the schedule from its history: already converged, it takes no step.
    again = fit(model, resume=result.state, progress=False)
    assert again.steps_done == result.steps_done and again.stop_reason == "converged"


def test_a_two_stage_plateau_starts_its_second_stage_afresh_and_replays() -> None:
    rng = random.Random(2)
    elbos = _noisy(-50.0, WARMUP_STEPS + 80 * PLATEAU_WINDOW, rng)
    plateau = Plateau(stages=2)
    switched_at = converged_at = None
    for step, value in enumerate(elbos, start=1):
        plateau.update(value)
        if plateau.stage == 1 and switched_at is None:
            switched_at = step
            # A warm-up from the switch, up to the second stage's rate.
            assert plateau.decay == SECOND_STAGE_LR_FACTOR and not plateau.converged
            assert plateau.factor(step) == pytest.approx(SECOND_STAGE_LR_FACTOR / WARMUP_STEPS)
            assert plateau.factor(step + WARMUP_STEPS) == SECOND_STAGE_LR_FACTOR
        if plateau.converged and converged_at is None:
            converged_at = step
    # The first stage ends as a one-stage plateau converges; the second goes down as far again.
    one_stage = Plateau()
    for step, value in enumerate(elbos, start=1):
        one_stage.update(value)
        if one_stage.converged:
            break
    assert switched_at == step
    assert converged_at is not None and converged_at > switched_at + WARMUP_STEPS
    assert plateau.decay < FINAL_LR_FACTOR * SECOND_STAGE_LR_FACTOR
    replayed = Plateau.replay(elbos, stages=2)
    assert (replayed.stage, replayed.decay, replayed.converged) == (1, plateau.decay, True)


def test_default_fit_standardises_its_globals_between_stages_and_resumes_across() -> None:
    model = pavi_viz.examples.load("gre", G=20, N=5, D=1)
    trainer = Trainer.create(model, FitConfig(seed=0))  # pavi-e, fit's defaults
    family = trainer.state.family
    centre = family.global_centre.clone()
    while torch.equal(family.global_centre, centre):
        last = {name: t.clone() for name, t in family.state_dict().items()}
        trainer.step()
    # At the switch the fresh global flow starts as the identity: q's global draws keep
    # their mean and sd.
    frame = trainer.state.model.frame()

    def global_moments() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            draws = family.sample(frame, 4000, generator=torch.Generator().manual_seed(5)).unconstrained["mu"]
        return draws.mean(0), draws.std(0)

    after = global_moments()
    switched = {name: t.clone() for name, t in family.state_dict().items()}
    family.load_state_dict(last)  # q a step before the switch (at 1e-4 of lr)
    before = global_moments()
    family.load_state_dict(switched)
    assert torch.allclose(after[0], before[0], atol=float(0.1 * before[1].max()))
    assert torch.allclose(after[1], before[1], rtol=0.1)
    # The switch redrew the global flow and set its centre and scale: the last good
    # state is the switched one, not the old flow beside the new centre and scale.
    switched = {name: t.clone() for name, t in family.state_dict().items()}
    assert trainer.restore_last_good() == trainer.state.step
    assert all(torch.equal(t, switched[name]) for name, t in family.state_dict().items())
    while not trainer.done:
        trainer.step()
    assert trainer.stop_reason == "converged" and family.standardisable
    # The second stage's warm-up starts at SECOND_STAGE_LR_FACTOR / WARMUP_STEPS of lr.
    first = trainer.config.lr * SECOND_STAGE_LR_FACTOR / WARMUP_STEPS
    assert any(lr == pytest.approx(first) for lr in trainer.state.history.lr[WARMUP_STEPS:])
    # The global block is drawn in units of q: its centre and scale were q's mean and sd.
    exact = pavi_viz.examples.gre.analytic_posterior(model)["mu"]
    assert float(family.global_scale) < 0.5 and abs(float(family.global_centre) - float(exact.mean)) < 0.5
    # Resumed from a checkpoint taken after the switch, the run replays both stages: nothing to do.
    again = fit(model, resume=trainer.state, progress=False)
    assert again.steps_done == trainer.state.step and again.stop_reason == "converged"
