"""The training core: FitConfig (one declaration of every setting), the Trainer's
step and state, typed divergence errors, reproducibility alone and beside other
runs, threads that stay in their thread, and an inference layer without import cycles."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest
import torch

import pavi_viz
from pavi_viz.inference import FAMILIES, DivergenceError, FitConfig, StepRecord, Trainer, fit
from pavi_viz.inference.config import FAMILY_NAMES, MIN_REFRESH_EVERY, NUMBERS_PER_THREAD
from pavi_viz.inference.resolve import data_numbers, resolve_refresh_every, resolve_threads, usable_cpus
from pavi_viz.inference.threads import use_threads
from pavi_viz.runner import RunConfig, RunState, TrainingRun


@pytest.fixture(scope="module")
def gre():
    return pavi_viz.examples.load("gre", G=10, N=5, D=1)


# -- FitConfig -------------------------------------------------------------------------------
def test_every_setting_is_checked_where_it_is_declared():
    config = FitConfig()
    assert (config.family, config.steps, config.lr, config.threads, config.refresh_every) == (
        "pavi-e", 10_000, 0.01, "auto", "auto")
    for name, bad in [("steps", -1), ("steps", True), ("steps", 2.5), ("particles", 0), ("lr", float("inf")),
                      ("lr", -0.1), ("clip", 0.0), ("family", "advi"), ("schedule", "linear"), ("threads", 0),
                      ("threads", "many"), ("refresh_every", 0), ("early_stopping", 0), ("redraws", -1)]:
        with pytest.raises(ValueError, match=f"FitConfig.{name}"):
            FitConfig(**{name: bad})
    assert FitConfig(clip=None, seed=None, early_stopping=None, threads=3).threads == 3


def test_the_config_copies_and_lists_its_settings():
    config = FitConfig(steps=10, batch={"group": 4})
    copy = config.copy(lr=0.5)
    assert (copy.steps, copy.lr, copy.batch) == (10, 0.5, {"group": 4}) and config.lr == 0.01
    copy.batch["group"] = 8
    assert config.batch == {"group": 4}  # no dict shared between copies
    run = RunConfig(summary_every=5).copy(steps=3)
    assert isinstance(run, RunConfig) and (run.summary_every, run.steps) == (5, 3)
    assert FitConfig.setting_names() == RunConfig.setting_names()  # a run adds publishing settings only
    assert set(RunConfig.param) - set(FitConfig.param) == {"summary_every", "summary_draws", "detail_draws"}
    assert list(FAMILIES) == list(FAMILY_NAMES) == list(FitConfig.param.family.objects)


def test_fit_takes_a_config_and_keywords_that_override_it(gre):
    config = FitConfig(family="mean-field", steps=7, lr=0.05, seed=3)
    result = fit(gre, config=config, steps=9, progress=False)
    assert result.steps_done == 9 and result.family.name == "mean-field"
    assert (result.config.lr, result.config.seed) == (0.05, 3) and config.steps == 7
    assert result.state.settings["steps"] == 9 and result.state.settings["lr"] == 0.05
    with pytest.raises(TypeError, match=r"unknown setting\(s\) \['learning_rate'\]"):
        fit(gre, "mean-field", steps=2, learning_rate=0.1)


# -- the Trainer -----------------------------------------------------------------------------
def test_a_loop_over_the_trainer_is_fit(gre):
    config = FitConfig(family="pavi-f", steps=30, seed=5)
    trainer = Trainer.create(gre, config)
    records = []
    while not trainer.done:
        records.append(trainer.step())
    assert all(isinstance(r, StepRecord) for r in records) and [r.step for r in records] == list(range(1, 31))
    assert trainer.state.step == 30 and len(trainer.state.history) == 30
    with pytest.raises(Exception):  # noqa: B017 - records are frozen values
        records[0].elbo = 0.0
    fitted = fit(gre, config=config, progress=False)
    assert [r.elbo for r in records] == fitted.history.elbo
    assert [r.grad_norm for r in records] == fitted.history.grad_norm


def test_the_schedule_is_a_torch_lr_scheduler_that_resumes(gre):
    config = FitConfig(family="mean-field", steps=20, lr=0.1, schedule="cosine")
    trainer = Trainer.create(gre, config)
    assert isinstance(trainer._scheduler, torch.optim.lr_scheduler.LRScheduler)
    for _ in range(8):
        trainer.step()
    # A trainer made anew on the same state (a resumed run) goes on with the same rates.
    again = Trainer(trainer.state, config)
    while not again.done:
        again.step()
    whole = fit(gre, config=config, progress=False)
    assert again.state.history.lr == whole.history.lr and again.state.history.elbo == whole.history.elbo


def test_divergence_errors_carry_typed_fields(gre):
    with pytest.raises(DivergenceError) as info:
        fit(gre, "mean-field", steps=50, lr=1e6, clip=None, progress=False)
    err = info.value
    assert (err.step, err.total, err.cause, err.variable, err.restored_step) == (2, 50, "draw", "mu", 0)
    assert "restored" not in err.reason and str(err).startswith(err.reason)
    assert "before training" in str(err)

    huge = gre.copy()
    huge.data = {"x": gre.data["x"] * 1e30}
    with pytest.raises(DivergenceError) as info:
        fit(huge, "mean-field", steps=10, progress=False)
    err = info.value
    assert (err.cause, err.variable) == ("elbo", "x") and not err.term > -float("inf")


def test_a_non_finite_draw_is_drawn_again_before_it_counts_as_divergence(gre):
    """Redraws take fresh noise: a family whose draws are non-finite one time in two
    trains on; with no redraws allowed the same run stops."""
    compiled = gre.compile(device="cpu")
    torch.manual_seed(0)
    family = pavi_viz.inference.make_family("mean-field", compiled)
    original = family.draw_unconstrained
    calls = []

    def every_other_draw_of_mu_is_nan(block, frame, particles, drawn, generator=None, values=None, spread=1.0):
        z, log_q = original(block, frame, particles, drawn, generator, values, spread)
        if block == ("mu",):
            calls.append(1)
            if len(calls) % 2 == 1:
                z = z * float("nan")
        return z, log_q

    family.draw_unconstrained = every_other_draw_of_mu_is_nan
    result = fit(compiled, family, steps=5, progress=False)
    assert result.steps_done == 5 and result.history.redraws == [1] * 5
    with pytest.raises(DivergenceError, match="step 6 of 8.*variable 'mu'"):
        fit(compiled, family, steps=8, redraws=0, resume=result.state, progress=False)


def test_a_history_without_the_newer_columns_reads_as_zeros():
    from pavi_viz.inference import History

    older = {"step": [1, 2], "elbo": [-3.0, -2.0], "smoothed_elbo": [-3.0, -2.9], "time": [0.1, 0.2],
             "steps_per_second": [10.0, 10.0], "lr": [0.01, 0.01], "grad_norm": [1.0, 2.0]}
    history = History.from_dict(older)
    assert history.redraws == [0, 0] and history.to_dict() == {**older, "redraws": [0, 0], "spike": [0, 0]}


# -- reproducibility ---------------------------------------------------------------------------
def _busy_fit(model, stop: threading.Event) -> None:
    """Another training thread: fits over and over until told to stop."""
    while not stop.is_set():
        fit(model, "mean-field", steps=20, seed=1, progress=False)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize(("name", "options", "batch"), [
    ("radon", {}, {}),  # 85 counties, 64 a step: the whole-data summaries are refreshed
    ("gre", {"G": 200, "N": 10, "D": 2}, {"group": 32}),
])
def test_a_seeded_pavi_e_fit_on_a_batched_plate_is_reproducible_beside_another_run(name, options, batch):
    model = pavi_viz.examples.load(name, **options)
    settings = dict(family="pavi-e", steps=120, seed=11, batch=batch, progress=False)  # refresh_every "auto": 10
    alone = fit(model, **settings)
    stop = threading.Event()
    other = threading.Thread(target=_busy_fit, args=(pavi_viz.examples.load("gre", G=10, N=5, D=1), stop))
    other.start()
    try:
        beside = fit(model, **settings)
    finally:
        stop.set()
        other.join()
    assert beside.history.elbo == alone.history.elbo
    assert beside.history.grad_norm == alone.history.grad_norm
    for (key, a), b in zip(alone.family.state_dict().items(), beside.family.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_pavi_e_refreshes_its_summaries_on_a_cadence_of_steps():
    model = pavi_viz.examples.load("gre", G=100, N=5, D=1)
    trainer = Trainer.create(model, FitConfig(family="pavi-e", steps=30, batch={"group": 10}, refresh_every=7))
    family = trainer.state.family
    made = []
    original = family.encoder.full_summaries

    def counted(*args, **kwargs):
        made.append(trainer.state.step)
        return original(*args, **kwargs)

    family.encoder.full_summaries = counted
    while not trainer.done:
        trainer.step()
    assert made == [0, 7, 14, 21, 28]
    # A posterior summary makes its own, from the current weights, and leaves training's alone.
    trainer.state.family.eval()
    with torch.no_grad():
        family.sample(trainer.state.model.frame(trainer.state.model.sample_batch({"group": 10})))
    assert made == [0, 7, 14, 21, 28, 30] and family._training_summaries is not None


def test_auto_refresh_spacing_follows_the_data_a_step_sees():
    assert resolve_refresh_every(5, 10**9, 1) == 5
    assert resolve_refresh_every("auto", 1000, 900) == MIN_REFRESH_EVERY  # small data: the minimum
    gre = pavi_viz.examples.load("gre", G=10_000, N=10, D=2).compile()
    whole, step = data_numbers(gre), data_numbers(gre, {"group": 64})
    assert whole == 10_000 * (2 + 20) + 2 and step == 64 * (2 + 20) + 2
    assert resolve_refresh_every("auto", whole, step) == 157  # about whole / step: refreshes ~10% of the time


# -- threads -----------------------------------------------------------------------------------
def test_auto_threads_grow_with_the_work_of_a_step():
    assert resolve_threads(3, 10) == 3
    assert resolve_threads("auto", 10) == 1
    assert resolve_threads("auto", NUMBERS_PER_THREAD - 1) == 1
    assert resolve_threads("auto", 2 * NUMBERS_PER_THREAD) == max(1, min(2, usable_cpus() - 1))
    assert resolve_threads("auto", 10**12) == max(1, usable_cpus() - 1)  # one CPU left for the rest
    assert Trainer.create(pavi_viz.examples.load("eight_schools"), FitConfig()).threads == 1


def _in_new_thread(function):
    out = []
    thread = threading.Thread(target=lambda: out.append(function()))
    thread.start()
    thread.join()
    return out[0]


def test_thread_settings_stay_in_their_thread(gre):
    mine = torch.get_num_threads()
    newcomer = _in_new_thread(torch.get_num_threads)  # what a thread started now gets
    other = 2 if mine == 1 else 1
    seen = []
    fit(gre, "mean-field", steps=3, threads=other, callbacks=[lambda s: seen.append(torch.get_num_threads())],
        callback_every=1, progress=False)
    assert seen == [other] * 3
    assert torch.get_num_threads() == mine  # fit gives the caller its own setting back
    assert _in_new_thread(torch.get_num_threads) == newcomer
    with use_threads(other):
        assert torch.get_num_threads() == other
        assert _in_new_thread(torch.get_num_threads) == newcomer
    # A run with one setting leaves nothing behind for the next run or for later threads.
    first = TrainingRun(gre, family="mean-field", steps=5, threads=other).start()
    assert first.wait(60) is RunState.FINISHED
    second = TrainingRun(gre, family="mean-field", steps=5).start()
    assert second.wait(60) is RunState.FINISHED
    from pavi_viz.runner import Info

    assert first.hub.latest(Info).torch_threads == other
    assert second.hub.latest(Info).torch_threads == 1  # "auto" on a small model, not the first run's
    assert _in_new_thread(torch.get_num_threads) == newcomer and torch.get_num_threads() == mine


# -- layers --------------------------------------------------------------------------------------
def _imports_of(path: Path, package: str) -> set[str]:
    """The modules of ``package`` that a file imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(package))
    return found


def test_the_inference_layer_has_no_import_cycle():
    root = Path(pavi_viz.__file__).parent / "inference"
    package = "pavi_viz.inference"
    modules = {}
    for path in root.rglob("*.py"):
        name = ".".join([package, *path.relative_to(root).with_suffix("").parts]).removesuffix(".__init__")
        modules[name] = path
    graph = {
        name: {m for m in _imports_of(path, package) if m in modules and m != package}
        for name, path in modules.items() if name != package
    }
    # Depth-first search for a cycle among the modules (the package's lazy __init__ aside).
    done, active = set(), []

    def visit(name):
        if name in active:
            raise AssertionError(f"import cycle: {' -> '.join(active[active.index(name):] + [name])}")
        if name in done:
            return
        active.append(name)
        for other in graph.get(name, ()):
            visit(other)
        active.pop()
        done.add(name)

    for name in graph:
        visit(name)
    assert "pavi_viz.inference.training" not in graph["pavi_viz.inference.checkpoints"]
    assert graph["pavi_viz.inference.config"] == set()  # param alone: the command line builds its options at once


def test_public_names_are_not_shadowed_by_submodules():
    """Importing a submodule sets it as an attribute of the package: no submodule may be
    named like a public name of the lazy package (a module ``elbo`` hid the function)."""
    import importlib
    import types

    from pavi_viz import inference

    root = Path(inference.__file__).parent
    for path in root.rglob("*.py"):
        importlib.import_module(".".join(["pavi_viz.inference", *path.relative_to(root).with_suffix("").parts])
                                .removesuffix(".__init__"))
    for name in inference.__all__:
        assert not isinstance(getattr(inference, name), types.ModuleType), name
