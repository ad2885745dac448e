"""The training loop: fit, reproducibility, callbacks, early stopping, divergence,
checkpoints, batch sizes and devices. Small models, a few hundred steps at most."""

from __future__ import annotations

import itertools
import math
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

import pavi_viz
from pavi_viz.inference import make_family
from pavi_viz.inference.checkpoints import (
    CHECKPOINT_VERSION,
    CheckpointError,
    load_checkpoint,
    model_fingerprint,
    read_checkpoint,
    save_checkpoint,
)
from pavi_viz.inference.config import WHOLE_STEP_NUMBERS
from pavi_viz.inference.resolve import (
    accumulation_dtype,
    batch_sizes,
    data_numbers,
    default_batch_sizes,
    resolve_device,
    unsupported_operator,
)
from pavi_viz.inference.state import DivergenceError, TrainingState
from pavi_viz.inference.schedule import lr_factor
from pavi_viz.inference import FitResult, StopTraining, fit


@pytest.fixture(scope="module")
def gre():
    return pavi_viz.examples.load("gre", G=10, N=5, D=1)


@pytest.fixture(scope="module")
def gre_compiled(gre):
    return gre.compile(device="cpu")


def params_of(family) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in family.state_dict().items()}


def assert_same_params(a, b) -> None:
    a, b = params_of(a), params_of(b)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# -- fitting ---------------------------------------------------------------------------
@pytest.mark.parametrize(("family", "steps"), [("mean-field", 300), ("pavi-f", 150), ("pavi-e", 150)])
def test_fit_improves_the_elbo(gre, family, steps):
    result = fit(gre, family, steps=steps, lr=1e-2, progress=False)
    assert isinstance(result, FitResult)
    assert result.steps_done == steps and not result.stopped_early and result.stop_reason == "completed"
    assert result.family.name == family and result.model.device.type == "cpu"
    history = result.history
    assert len(history) == steps and history.step == list(range(1, steps + 1))
    for column in ("elbo", "smoothed_elbo", "time", "steps_per_second", "lr", "grad_norm"):
        values = getattr(history, column)
        assert len(values) == steps and all(math.isfinite(v) for v in values)
    assert history.time == sorted(history.time) and all(r > 0 for r in history.steps_per_second)
    first, last = sum(history.elbo[:20]) / 20, sum(history.elbo[-20:]) / 20
    assert last > first + 5, (first, last)
    assert result.state.step == steps and result.state.finished
    assert result.state.smoothed_elbo == history.smoothed_elbo[-1] == result.elbo
    assert result.elapsed > 0


def test_fit_takes_a_compiled_model_and_a_built_family(gre_compiled):
    torch.manual_seed(3)
    family = make_family("mean-field", gre_compiled, init_scale=0.5)
    result = fit(gre_compiled, family, steps=5, progress=False)
    assert result.family is family and result.model is gre_compiled
    assert result.state.family_name == "mean-field"


def test_fit_takes_a_data_file_whose_data_size_the_plates(tmp_path):
    from pavi_viz.model.datafile import DataFile
    from pavi_viz.model.tables import model_to_dataset

    study = pavi_viz.examples.load("gre", G=12, N=4)
    model_to_dataset(study).to_netcdf(tmp_path / "study.nc", engine="h5netcdf")
    structure = pavi_viz.examples.load("gre", G=3, N=2)  # its sizes and data give way to the file's
    result = fit(DataFile.open(structure, tmp_path / "study.nc"), steps=3, seed=0, threads=1)
    assert result.model.plates["group"].size == 12 and result.steps_done == 3
    torch.testing.assert_close(result.model.data["x"], study.data["x"])


@pytest.mark.parametrize("schedule", ["cosine", "exponential"])
def test_schedules_warm_up_then_decay_the_learning_rate(gre, schedule):
    lrs = fit(gre, "mean-field", steps=20, lr=0.1, schedule=schedule, progress=False).history.lr
    # A warm-up of a tenth of the steps (2 here), then down to lr / 100.
    assert lrs[0] == pytest.approx(0.05) and lrs[-1] == pytest.approx(0.001)
    assert all(a >= b for a, b in itertools.pairwise(lrs[1:]))
    assert lr_factor(None, 5, 10) == 1.0
    with pytest.raises(ValueError, match="schedule"):
        fit(gre, "mean-field", steps=2, schedule="linear", progress=False)


def test_bad_settings_are_refused(gre):
    with pytest.raises(ValueError, match="FitConfig.family.*'advi'"):
        fit(gre, "advi", steps=2, progress=False)
    with pytest.raises(ValueError, match="steps"):
        fit(gre, "mean-field", steps=-1, progress=False)
    with pytest.raises(ValueError, match="checkpoint_every needs a checkpoint"):
        fit(gre, "mean-field", steps=2, checkpoint_every=1, progress=False)


def test_posterior_of_a_result(gre):
    posterior_module = pytest.importorskip("pavi_viz.inference.posterior")
    result = fit(gre, "mean-field", steps=3, progress=False)
    posterior = result.posterior
    assert isinstance(posterior, posterior_module.Posterior)


def test_progress_bar_shows_the_smoothed_elbo(gre, capsys):
    fit(gre, "mean-field", steps=20, progress=True)
    err = capsys.readouterr().err
    assert "elbo=" in err and "step/s" in err


def test_public_names():
    from pavi_viz import inference

    assert pavi_viz.fit is fit and pavi_viz.FitResult is FitResult
    for name in ("fit", "FitResult", "TrainingState", "StopTraining", "DivergenceError", "save_checkpoint",
                 "load_checkpoint"):
        assert hasattr(inference, name), name


# -- reproducibility ---------------------------------------------------------------------
@pytest.mark.parametrize("family", ["mean-field", "pavi-f"])
def test_same_seed_same_history(gre, family):
    before = torch.get_rng_state()
    a = fit(gre, family, steps=25, seed=7, progress=False)
    b = fit(gre, family, steps=25, seed=7, progress=False)
    c = fit(gre, family, steps=25, seed=8, progress=False)
    assert a.history.elbo == b.history.elbo and a.history.smoothed_elbo == b.history.smoothed_elbo
    assert_same_params(a.family, b.family)
    assert a.history.elbo != c.history.elbo
    # The caller's random state is left alone.
    assert torch.equal(torch.get_rng_state(), before)


def test_training_never_draws_from_the_global_generator(gre):
    def scramble(state):
        torch.manual_seed(1000 + state.step)
        torch.randn(100)

    a = fit(gre, "pavi-f", steps=20, seed=2, progress=False)
    with torch.random.fork_rng():
        b = fit(gre, "pavi-f", steps=20, seed=2, callbacks=[scramble], callback_every=1, progress=False)
    assert a.history.elbo == b.history.elbo
    assert_same_params(a.family, b.family)


@pytest.mark.parametrize("family", ["pavi-e", "mean-field"])
def test_concurrent_fits_with_one_seed_match_a_fit_alone(family, in_threads):
    """Fits in threads of one process draw their noise and batches from generators of
    their own, and build their families one at a time: the same seed gives the same
    run, also alongside seeded draws from the global generator in a third thread."""
    model = pavi_viz.examples.load("gre", G=20)
    compiled = model.compile(device="cpu")
    alone = fit(model, family, steps=100, seed=4, progress=False)
    together = in_threads(
        lambda: fit(model, family, steps=100, seed=4, progress=False),
        lambda: fit(model, family, steps=100, seed=4, progress=False),
        lambda: [compiled.sample_prior((2,), seed=i) for i in range(100)],
    )
    for result in together[:2]:
        assert result.history.elbo == alone.history.elbo
        assert result.history.grad_norm == alone.history.grad_norm
        assert_same_params(result.family, alone.family)


def test_seed_none_draws_a_fresh_seed_that_is_kept(gre):
    a = fit(gre, "mean-field", steps=5, seed=None, progress=False)
    b = fit(gre, "mean-field", steps=5, seed=None, progress=False)
    assert a.history.elbo != b.history.elbo
    again = fit(gre, "mean-field", steps=5, seed=a.state.settings["seed"], progress=False)
    assert again.history.elbo == a.history.elbo


# -- callbacks -------------------------------------------------------------------------
def test_time_in_callbacks_is_not_training_time(gre):
    def slow(state):
        time.sleep(0.3)

    result = fit(gre, "mean-field", steps=20, callbacks=[slow], callback_every=10, seed=0)
    clock = result.history.time
    assert clock[10] - clock[9] < 0.2  # the sleep after step 10 is left out
    assert result.elapsed < 0.5


def test_callbacks_are_called_every_k_steps_and_at_the_end(gre):
    seen: list[tuple[int, bool, int]] = []

    def record(state: TrainingState) -> None:
        assert isinstance(state, TrainingState)
        assert state.family is not None and state.optimizer is not None and state.model is not None
        assert len(state.history) == state.step and state.total_steps in (20, 50)
        seen.append((state.step, state.finished, len(state.history)))

    fit(gre, "mean-field", steps=50, callbacks=[record], callback_every=7, progress=False)
    assert [s for s, _, _ in seen] == [7, 14, 21, 28, 35, 42, 49, 50]
    assert [f for _, f, _ in seen] == [False] * 7 + [True]

    seen.clear()
    fit(gre, "mean-field", steps=20, callbacks=[record], callback_every=10, progress=False)
    assert [s for s, _, _ in seen] == [10, 20]  # the end falls on a period: one call
    assert seen[-1][1]


def test_a_callback_can_stop_training(gre):
    calls = []

    def stop_at_20(state: TrainingState) -> None:
        calls.append((state.step, state.finished))
        if state.step >= 20:
            raise StopTraining

    result = fit(gre, "mean-field", steps=100, callbacks=[stop_at_20], callback_every=5, progress=False)
    assert result.steps_done == 20 and len(result.history) == 20
    assert result.stopped_early and result.stop_reason == "callback"
    # The last call of a run always sees state.finished.
    assert calls == [(5, False), (10, False), (15, False), (20, False), (20, True)]



# -- early stopping ------------------------------------------------------------------------
def test_early_stopping_on_a_plateau(gre):
    # With lr=0 the family never changes: the smoothed ELBO only wanders with the
    # Monte Carlo noise, a plateau by construction.
    result = fit(gre, "mean-field", steps=3000, lr=0.0, early_stopping=40, progress=False)
    assert result.stopped_early and result.stop_reason == "early_stopping"
    assert 40 <= result.steps_done < 3000
    assert result.state.steps_since_best == 40

    plateau = fit(gre, "mean-field", steps=300, lr=0.0, early_stopping=None, progress=False)
    assert plateau.steps_done == 300 and not plateau.stopped_early


def test_no_early_stop_while_the_elbo_climbs(gre):
    result = fit(gre, "mean-field", steps=150, lr=2e-2, early_stopping=40, progress=False)
    assert result.steps_done == 150 and not result.stopped_early


# -- divergence ------------------------------------------------------------------------------
def test_a_huge_learning_rate_diverges(gre):
    initial = fit(gre, "mean-field", steps=0, progress=False).family
    with pytest.raises(DivergenceError, match=r"step 2 of 50.*variable 'mu'") as info:
        fit(gre, "mean-field", steps=50, lr=1e6, clip=None, progress=False)
    err = info.value
    assert isinstance(err, RuntimeError) and err.step == 2 and err.variable == "mu"
    result = err.result
    assert isinstance(result, FitResult) and result.stop_reason == "diverged" and result.stopped_early
    # Step 1's update made the parameters that blew up at step 2: back to before it.
    assert result.steps_done == 0 and len(result.history) == 0
    assert_same_params(result.family, initial)


def test_overflowing_data_diverges_naming_the_observed_variable(gre):
    huge = gre.copy()
    huge.data = {"x": gre.data["x"] * 1e30}
    with pytest.raises(DivergenceError, match=r"step 1 of 10.*variable 'x'") as info:
        fit(huge, "pavi-f", steps=10, progress=False)
    assert info.value.variable == "x"
    result = info.value.result
    assert all(torch.isfinite(p).all() for p in result.family.parameters())


def test_divergence_restores_the_last_good_state(gre):
    """A parameter corrupted after step 10 makes step 11 diverge; the result holds the
    state after step 9, the last one whose ELBO and gradients were finite."""
    snapshots = {}

    def corrupt(state: TrainingState) -> None:
        snapshots[state.step] = params_of(state.family)
        if state.step == 10:
            with torch.no_grad():
                state.family.loc["mu"].fill_(float("nan"))

    with pytest.raises(DivergenceError, match="step 11 of 30") as info:
        fit(gre, "mean-field", steps=30, callbacks=[corrupt], callback_every=1, progress=False)
    err = info.value
    assert err.variable == "mu" and err.parameter == "loc.mu"
    assert "'loc.mu'" in str(err) and "after step 9" in str(err)
    result = err.result
    assert result.steps_done == 9 and len(result.history) == 9
    assert result.history.step[-1] == 9
    restored = params_of(result.family)
    assert all(torch.isfinite(v).all() for v in restored.values())
    for k, v in snapshots[9].items():
        assert torch.equal(restored[k], v), k
    # The restored state trains on.
    again = fit(gre, resume=result.state, family="mean-field", steps=15, progress=False)
    assert again.steps_done == 15


def test_a_non_finite_gradient_names_the_parameter(gre_compiled):
    torch.manual_seed(0)
    family = make_family("mean-field", gre_compiled)
    family.loc["mu_g"].register_hook(lambda grad: grad * float("nan"))
    with pytest.raises(DivergenceError, match=r"step 1 of 5.*gradient of family parameter 'loc.mu_g'") as info:
        fit(gre_compiled, family, steps=5, progress=False)
    assert info.value.parameter == "loc.mu_g" and info.value.variable == "mu_g"
    assert "latent 'mu_g'" in str(info.value)


# -- checkpoints -----------------------------------------------------------------------------
def test_checkpoint_loads_with_weights_only(gre, tmp_path):
    path = tmp_path / "run.pt"
    result = fit(gre, "pavi-f", steps=5, checkpoint=path, progress=False,
                 family_options={"encoding_size": 8, "hidden": (16, 16)})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "pavi_viz.checkpoint" and raw["step"] == 5
    assert raw["family"]["name"] == "pavi-f" and raw["family"]["options"]["encoding_size"] == 8
    assert raw["model"]["name"] == "gre" and raw["model"]["fingerprint"] == model_fingerprint(gre)
    assert raw["history"]["elbo"] == result.history.elbo
    assert raw["version"] == CHECKPOINT_VERSION == 3
    assert set(raw["rng"]) == {"generator", "noise_generator", "generator_device"}
    assert isinstance(raw["rng"]["generator"], torch.Tensor) and isinstance(raw["rng"]["noise_generator"], torch.Tensor)
    assert set(raw["optimizer"]["state"]) == {"state", "param_groups"}
    state = load_checkpoint(path, gre)
    assert state.step == 5 and state.family_name == "pavi-f"
    assert_same_params(state.family, result.family)


def test_resume_continues_exactly(gre, tmp_path):
    whole = fit(gre, "pavi-f", steps=40, seed=3, progress=False)
    path = tmp_path / "half.pt"
    half = fit(gre, "pavi-f", steps=20, seed=3, checkpoint=path, progress=False)
    assert half.history.elbo == whole.history.elbo[:20]
    before = torch.get_rng_state()
    resumed = fit(gre, "pavi-f", steps=40, resume=path, progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    assert resumed.steps_done == 40 and resumed.history.step == list(range(1, 41))
    assert resumed.history.elbo == whole.history.elbo
    assert resumed.history.smoothed_elbo == whole.history.smoothed_elbo
    assert_same_params(resumed.family, whole.family)


def test_resume_from_a_state_continues_exactly(gre):
    whole = fit(gre, "mean-field", steps=40, progress=False)
    half = fit(gre, "mean-field", steps=20, progress=False)
    resumed = fit(gre, "mean-field", steps=40, resume=half.state, progress=False)
    assert resumed.history.elbo == whole.history.elbo
    assert_same_params(resumed.family, whole.family)


def test_periodic_checkpoints_and_scheduled_resume(gre, tmp_path):
    """A run stopped at step 20 of 40 and resumed follows a 40-step cosine schedule."""
    whole = fit(gre, "mean-field", steps=40, schedule="cosine", lr=0.05, progress=False)
    path = tmp_path / "periodic.pt"
    steps_on_file = {}

    def watch(state: TrainingState) -> None:
        if path.exists():
            steps_on_file[state.step] = read_checkpoint(path)["step"]
        if state.step == 20:
            shutil.copy(path, tmp_path / "at15.pt")
            raise StopTraining

    fit(gre, "mean-field", steps=40, schedule="cosine", lr=0.05, checkpoint=path, checkpoint_every=5,
        callbacks=[watch], callback_every=1, progress=False)
    assert steps_on_file[6] == 5 and steps_on_file[16] == 15 and read_checkpoint(path)["step"] == 20
    resumed = fit(gre, "mean-field", steps=40, schedule="cosine", lr=0.05, resume=path, progress=False)
    assert resumed.history.elbo == whole.history.elbo and resumed.history.lr == whole.history.lr
    from15 = fit(gre, "mean-field", steps=40, schedule="cosine", lr=0.05, resume=tmp_path / "at15.pt",
                 progress=False)
    assert from15.history.elbo == whole.history.elbo


def test_checkpoint_for_another_model_is_refused(gre, tmp_path):
    path = tmp_path / "gre.pt"
    fit(gre, "mean-field", steps=3, checkpoint=path, progress=False)
    schools = pavi_viz.examples.load("eight_schools")
    with pytest.raises(CheckpointError, match=r"made for model 'gre', not for model 'eight_schools'"):
        load_checkpoint(path, schools)
    with pytest.raises(ValueError, match=r"'gre'.*'eight_schools'"):
        fit(schools, "mean-field", steps=5, resume=path, progress=False)
    bigger = pavi_viz.examples.load("gre", G=12, N=5, D=1)
    with pytest.raises(CheckpointError, match=r"plate 'group' has size 12 here, 10 in the checkpoint"):
        load_checkpoint(path, bigger)
    # Same structure, other data values: accepted (the fingerprint ignores values).
    other_data = pavi_viz.examples.load("gre", G=10, N=5, D=1, seed=1)
    assert load_checkpoint(path, other_data).step == 3


def test_resume_from_a_state_refuses_another_family(gre_compiled):
    half = fit(gre_compiled, "mean-field", steps=3, progress=False)
    other = make_family("mean-field", gre_compiled)
    with pytest.raises(ValueError, match="leave family out"):
        fit(gre_compiled, other, steps=5, resume=half.state, progress=False)


def test_resume_refuses_another_family(gre, tmp_path):
    path = tmp_path / "mf.pt"
    fit(gre, "mean-field", steps=3, checkpoint=path, progress=False)
    with pytest.raises(ValueError, match="'mean-field' family, not a 'pavi-f'"):
        fit(gre, "pavi-f", steps=5, resume=path, progress=False)
    # Leaving the family out takes the checkpoint's.
    assert fit(gre, steps=5, resume=path, progress=False).family.name == "mean-field"


@pytest.mark.parametrize(("version", "changes"), [
    (1, r"older pavi_viz: its runs drew their noise from torch.s global random state.*; its pavi-e families embedded each datum"),
    (2, r"older pavi_viz: its pavi-e families embedded each datum, not the moments"),
])
def test_a_checkpoint_of_an_older_format_is_refused_with_what_changed(gre, tmp_path, version, changes):
    path = tmp_path / "run.pt"
    fit(gre, "mean-field", steps=2, checkpoint=path, progress=False)
    raw = torch.load(path, weights_only=True)
    raw["version"] = version
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=rf"format version {version}; this pavi_viz reads version 3 \(written by an {changes}"):
        fit(gre, "mean-field", steps=4, resume=path, progress=False)


@pytest.mark.parametrize(("edit", "words"), [
    (lambda raw: raw.pop("optimizer"), "'optimizer' entry is missing"),
    (lambda raw: raw.update(step="5"), "'step' entry is missing or not a int"),
    (lambda raw: raw["family"]["options"].update(encoding_size=200_000, transforms=50),
     "'encoding_size' must be a whole number from 1 to 512"),
    (lambda raw: raw["family"]["options"].update(width=3), "family 'pavi-f' takes no option 'width'"),
    (lambda raw: raw["family"].update(name="pavi-x"), "unknown family 'pavi-x'"),
    (lambda raw: raw["history"]["elbo"].pop(), "of unequal lengths"),
    (lambda raw: raw.update(step=1), "step 1 of 3 with 3 history records"),
])
def test_an_edited_or_damaged_checkpoint_is_refused_before_anything_is_built(gre, tmp_path, edit, words):
    path = tmp_path / "run.pt"
    fit(gre, "pavi-f", steps=3, checkpoint=path, progress=False, family_options={"encoding_size": 4, "hidden": (8,)})
    raw = torch.load(path, weights_only=True)
    edit(raw)
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="is damaged") as info:
        fit(gre, steps=6, resume=path, progress=False)
    assert words in str(info.value)


def test_a_cut_short_checkpoint_says_so(gre, tmp_path):
    path = tmp_path / "run.pt"
    fit(gre, "mean-field", steps=2, checkpoint=path, progress=False)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError, match=r"damaged \(cut short\?\) or not a checkpoint"):
        load_checkpoint(path, gre)


def test_steps_and_particles_are_bounded_with_a_remedy(gre):
    with pytest.raises(ValueError, match="100,000 particles of a step of 61 numbers .* at most 65,573 particles"):
        fit(gre, "mean-field", steps=1, particles=100_000, progress=False)
    with pytest.raises(ValueError, match="'FitConfig.steps' must be at most 10000000"):
        fit(gre, "mean-field", steps=10**9, progress=False)


def test_family_options_are_checked_before_a_family_is_built(gre):
    with pytest.raises(ValueError, match="'transforms' must be a whole number from 1 to 16, got 50"):
        fit(gre, "pavi-e", steps=1, family_options={"transforms": 50}, progress=False)
    with pytest.raises(ValueError, match="'hidden' must be 1 to 4 layer widths"):
        fit(gre, "pavi-e", steps=1, family_options={"hidden": [64] * 9}, progress=False)


def test_save_and_read_a_bad_file(gre, tmp_path):
    result = fit(gre, "mean-field", steps=2, progress=False)
    path = save_checkpoint(tmp_path / "sub" / "state.pt", result.state)
    assert read_checkpoint(path)["step"] == 2
    junk = tmp_path / "junk.pt"
    torch.save({"hello": 1}, junk)
    with pytest.raises(CheckpointError, match="not a pavi_viz training checkpoint"):
        read_checkpoint(junk)
    text = tmp_path / "text.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(text, gre)


# -- batch sizes ----------------------------------------------------------------------------
def test_default_batch_sizes(gre_compiled):
    assert default_batch_sizes(gre_compiled) == {}  # small plates are taken whole
    # A model of at most WHOLE_STEP_NUMBERS numbers is taken whole, however many groups...
    thousand = pavi_viz.examples.load("gre", G=1000, N=10, D=2).compile()
    assert data_numbers(thousand) == 22_002 <= WHOLE_STEP_NUMBERS and default_batch_sizes(thousand) == {}
    radon = pavi_viz.examples.load("radon").compile()
    assert default_batch_sizes(radon) == {}  # 85 counties, 919 houses: 1,094 numbers
    # ... a larger one has its outer plate batched to fit the budget, a group's data whole.
    large = pavi_viz.examples.load("gre", G=1000, N=80, D=1).compile()
    assert data_numbers(large) == 81_001 > WHOLE_STEP_NUMBERS
    assert default_batch_sizes(large) == {"group": 617}  # 617 groups of 81 numbers, and mu
    assert data_numbers(large, {"group": 617}) == 49_978
    # One group over the budget by itself: its observations are batched too.
    wide = pavi_viz.examples.load("gre", G=2, N=60_000, D=1).compile()
    assert default_batch_sizes(wide) == {"group": 1, "obs": 49_998}
    assert data_numbers(wide, default_batch_sizes(wide)) <= WHOLE_STEP_NUMBERS
    assert batch_sizes(radon, {"county": 10, "house": None}) == {"county": 10}
    assert batch_sizes(radon, {"county": 500}) == {}


def test_batch_overrides_and_unknown_plates(gre):
    with pytest.raises(ValueError, match=r"unknown plate\(s\) \['subject', 'trial'\]"):
        fit(gre, "mean-field", steps=2, batch={"subject": 4, "trial": 2, "group": 3}, progress=False)
    with pytest.raises(ValueError, match="at least 1"):
        fit(gre, "mean-field", steps=2, batch={"group": 0}, progress=False)
    result = fit(gre, "mean-field", steps=20, batch={"group": 3}, progress=False)
    assert result.state.settings["batch"] == {"group": 3}


def test_a_large_plate_trains_on_bounded_batches():
    large = pavi_viz.examples.load("gre", G=10_000, N=5, D=1)  # 60,001 numbers: batched
    sizes = []
    compiled = large.compile()
    original = compiled.sample_batch

    def spy(request, generator=None, shard=None):
        batch = original(request, generator, shard)
        sizes.append(len(batch["group"]))
        return batch

    compiled.sample_batch = spy
    result = fit(compiled, "mean-field", steps=3, progress=False)
    # (The family's set-up draws one batch of size 1.)
    assert result.steps_done == 3 and sizes[-3:] == [8333] * 3  # 8,333 groups of 6 numbers, and mu


# -- devices ---------------------------------------------------------------------------------
def test_devices(gre, gre_compiled):
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert fit(gre, "mean-field", steps=1, device="auto", progress=False).model.device.type == expected
    assert fit(gre, "mean-field", steps=1, device=torch.device("cpu"), progress=False).model.device.type == "cpu"
    # A compiled model stays where it is.
    assert fit(gre_compiled, "mean-field", steps=1, progress=False).model is gre_compiled
    with pytest.raises(ValueError, match="unknown device 'gpu-please'"):
        fit(gre, "mean-field", steps=1, device="gpu-please", progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            fit(gre, "mean-field", steps=1, device="cuda", progress=False)


def test_mps_is_named_and_its_limits_explained(gre):
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match="MPS is not available here"):
            fit(gre, "mean-field", steps=1, device="mps", progress=False)
    with pytest.raises(ValueError, match="MPS device has no float64"):
        gre.compile(device="mps", dtype=torch.float64)
    # Sums that need float64 elsewhere take float32 there.
    assert accumulation_dtype(torch.device("mps")) == torch.float32
    assert accumulation_dtype(torch.device("cpu")) == torch.float64
    # torch's own wording for an operator MPS lacks becomes advice; other errors pass.
    missing = NotImplementedError("The operator 'aten::_standard_gamma' is not currently implemented for the MPS "
                                  "device. If you want this op to be added in priority...")
    clear = unsupported_operator(missing, torch.device("mps"))
    assert "aten::_standard_gamma" in str(clear) and "device='cpu'" in str(clear)
    assert "PYTORCH_ENABLE_MPS_FALLBACK=1" in str(clear)
    assert unsupported_operator(missing, torch.device("cpu")) is None
    assert unsupported_operator(NotImplementedError("abstract method"), torch.device("mps")) is None


@pytest.mark.skipif(os.name != "posix", reason="orphans are told by their writer's process id (POSIX)")
def test_saving_removes_the_temporary_files_of_killed_writers(gre, tmp_path):
    result = fit(gre, "mean-field", steps=2, progress=False)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f".run.pt.{int(gone.stdout)}.x1y2.tmp"  # its writer was killed mid-write
    live = tmp_path / f".run.pt.{os.getpid()}.z3w4.tmp"  # a write still going on
    orphan.write_bytes(b"half a checkpoint")
    live.write_bytes(b"half a checkpoint")
    save_checkpoint(tmp_path / "run.pt", result.state)
    assert not orphan.exists() and live.exists() and read_checkpoint(tmp_path / "run.pt")["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["run.pt", live.name])
