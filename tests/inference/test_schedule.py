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
    WHOLE_STAGES,
    BATCHED_STAGES,
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


@pytest.mark.parametrize("stages", [WHOLE_STAGES, BATCHED_STAGES], ids=["whole", "batched"])
def test_a_staged_plateau_starts_each_stage_afresh_and_replays(stages) -> None:
    rng = random.Random(2)
    elbos = _noisy(-50.0, WARMUP_STEPS + 120 * PLATEAU_WINDOW, rng)
    plateau = Plateau(stages=stages)
    started = [0]  # the step each stage started at
    converged_at = None
    for step, value in enumerate(elbos, start=1):
        plateau.update(value)
        if plateau.stage == len(started):
            started.append(step)
            # A warm-up from the switch, up to the stage's own rate.
            rate = stages.rates[plateau.stage]
            assert plateau.decay == rate and not plateau.converged
            assert plateau.factor(step) == pytest.approx(rate / WARMUP_STEPS)
            assert plateau.factor(step + WARMUP_STEPS) == rate
        if plateau.converged:
            converged_at = step
            break
    # A first stage of a fixed length lasts that long; every other one goes down as a
    # one-stage plateau does, from its own rate.
    assert len(started) == len(stages.rates)
    ruled = list(zip(started, [*started[1:], converged_at]))
    if stages.first_steps is not None:
        assert started[1] == stages.first_steps
        ruled = ruled[1:]
    for start, end in ruled:
        one_stage = Plateau.replay(elbos[start : end - 1])
        assert not one_stage.converged
        one_stage.update(elbos[end - 1])
        assert one_stage.converged
    assert plateau.decay == pytest.approx(one_stage.decay * stages.rates[-1])
    replayed = Plateau.replay(elbos[:converged_at], stages=stages)
    assert (replayed.stage, replayed.decay, replayed.converged) == (len(stages.rates) - 1, plateau.decay, True)


def test_default_fit_standardises_its_globals_between_stages_and_resumes_across() -> None:
    model = pavi_viz.examples.load("gre", G=20, N=5, D=1)
    trainer = Trainer.create(model, FitConfig(seed=0))  # pavi-e, fit's defaults
    family = trainer.state.family
    centre = family.global_centre.clone()
    frame = trainer.state.model.frame()

    def global_moments() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            draws = family.sample(frame, 4000, generator=torch.Generator().manual_seed(5)).unconstrained["mu"]
        return draws.mean(0), draws.std(0)

    while trainer.state.step < WHOLE_STAGES.first_steps - 1:
        trainer.step()
    # The switch itself keeps q's mean and sd of the global draws: the fresh global flow
    # starts as the identity.
    trained = {name: t.clone() for name, t in family.state_dict().items()}
    before = global_moments()
    family.standardise_globals(torch.Generator().manual_seed(1))
    after = global_moments()
    assert torch.allclose(after[0], before[0], atol=float(0.1 * before[1].max()))
    assert torch.allclose(after[1], before[1], rtol=0.1)
    family.load_state_dict(trained)
    # The trainer switches at the end of the first stage, and only then.
    trainer.step()
    assert trainer.state.step == WHOLE_STAGES.first_steps and not torch.equal(family.global_centre, centre)
    mean, sd = global_moments()
    assert torch.allclose(mean, family.global_centre, atol=float(0.1 * sd)) and torch.allclose(sd, family.global_scale, rtol=0.1)
    # The switch redrew the global flow and set its centre and scale: the last good
    # state is the switched one, not the old flow beside the new centre and scale.
    switched = {name: t.clone() for name, t in family.state_dict().items()}
    assert trainer.restore_last_good() == trainer.state.step
    assert all(torch.equal(t, switched[name]) for name, t in family.state_dict().items())
    while not trainer.done:
        trainer.step()
    assert trainer.stop_reason == "converged" and family.standardisable
    # Each later stage's warm-up starts at its own rate / WARMUP_STEPS of lr.
    for rate in WHOLE_STAGES.rates[1:]:
        first = trainer.config.lr * rate / WARMUP_STEPS
        assert any(lr == pytest.approx(first) for lr in trainer.state.history.lr[WARMUP_STEPS:])
    # In those units the second stage brought q to the exact posterior.
    exact = pavi_viz.examples.gre.analytic_posterior(model)["mu"]
    mean, sd = global_moments()
    assert abs(float(mean - exact.mean)) < 0.2 * float(exact.stddev) and 0.8 < float(sd / exact.stddev) < 1.25
    # Resumed from a checkpoint taken after the switch, the run replays both stages: nothing to do.
    again = fit(model, resume=trainer.state, progress=False)
    assert again.steps_done == trainer.state.step and again.stop_reason == "converged"


def test_a_batched_fit_keeps_its_first_stage_until_it_converges() -> None:
    # Batched, q's global moments carry the batch's noise for longer: no switch at the
    # whole model's first_steps (BATCHED_STAGES).
    model = pavi_viz.examples.load("gre", G=40, N=5, D=1)
    trainer = Trainer.create(model, FitConfig(seed=0, batch={"group": 8}))
    for _ in range(WHOLE_STAGES.first_steps + 1):
        trainer.step()
    assert float(trainer.state.family.global_scale) == 1.0 and float(trainer.state.family.global_centre) == 0.0
