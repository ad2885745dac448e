"""Training runs in background threads: control, concurrency, failure, resume, streaming."""

from __future__ import annotations

import threading
import time

import pytest
import torch

import pavi_viz
from pavi_viz.inference import fit
from pavi_viz.model import ModelError
from pavi_viz.runner import THREAD_PREFIX, Info, Point, RunConfig, RunState, StateChange, Summary, TrainingRun


@pytest.fixture(scope="module")
def gre():
    return pavi_viz.examples.load("gre", G=20, N=10)


def wait_for(condition, timeout: float = 60.0, every: float = 0.005) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting")
        time.sleep(every)


def run_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


def points(run: TrainingRun) -> list[Point]:
    return [r for r in run.hub.since(0).records if isinstance(r, Point)]


def test_start_pause_resume_stop(gre, tmp_path):
    run = TrainingRun(gre, family="mean-field", steps=1_000_000, threads=1, checkpoint=tmp_path / "run.pt")
    assert run.state is RunState.IDLE
    assert run.start() is run
    wait_for(lambda: run.progress.step >= 20)

    run.pause()
    wait_for(lambda: run.state is RunState.PAUSED)
    paused_at = run.progress.step
    time.sleep(0.3)
    assert run.progress.step == paused_at  # no step while paused
    assert len(points(run)) == paused_at

    run.resume()
    wait_for(lambda: run.progress.step >= paused_at + 20)
    assert run.state is RunState.RUNNING

    asked = time.perf_counter()
    run.stop()
    wait_for(lambda: run.state is RunState.STOPPED, timeout=5.0, every=0.001)
    latency = time.perf_counter() - asked
    assert latency < 1.0, f"stop took {latency:.3f} s"
    run.wait(5)
    assert not run.alive
    assert [s for s, _ in run.transitions] == [
        RunState.IDLE, RunState.RUNNING, RunState.PAUSED, RunState.RUNNING, RunState.STOPPED
    ]
    times = [t for _, t in run.transitions]
    assert times == sorted(times)
    assert (tmp_path / "run.pt").is_file()  # stopping saved a checkpoint
    assert run.result.steps_done == run.progress.step == points(run)[-1].step
    states = [r.state for r in run.hub.since(0).records if isinstance(r, StateChange)]
    assert states == ["running", "paused", "running", "stopped"]


def test_stop_while_paused_and_control_errors(gre):
    run = TrainingRun(gre, family="mean-field", steps=1_000_000, threads=1)
    with pytest.raises(RuntimeError, match="only a paused, stopped or finished run resumes"):
        run.resume()
    run.start()
    with pytest.raises(RuntimeError, match="start\\(\\) starts an idle run"):
        run.start()
    wait_for(lambda: run.progress.step >= 5)
    run.pause()
    wait_for(lambda: run.state is RunState.PAUSED)
    run.stop(wait=True, timeout=10)
    assert run.state is RunState.STOPPED
    assert RunState.RUNNING not in [s for s, _ in run.transitions[3:]]  # no "resumed" on the way out


def test_ten_runs_at_once_each_train_as_if_alone(gre):
    settings = [dict(family=("pavi-e", "pavi-f", "mean-field")[i % 3], seed=i, steps=60 + 10 * i) for i in range(10)]
    runs = [TrainingRun(gre, threads=1, summary_every=25, **s) for s in settings]
    for run in runs:
        run.start()
    for run in runs:
        assert run.wait(120) is RunState.FINISHED, (run, run.traceback)
    assert run_threads() == []
    for run, s in zip(runs, settings):
        streamed = points(run)
        assert [p.step for p in streamed] == list(range(1, s["steps"] + 1))
        # The same fit alone, in this thread, gives the same ELBO at every step: each
        # run draws its own noise and batches.
        alone = fit(gre, s["family"], steps=s["steps"], seed=s["seed"], threads=1, progress=False)
        assert [p.elbo for p in streamed] == alone.history.elbo
        summaries = [r for r in run.hub.since(0).records if isinstance(r, Summary)]
        assert summaries[-1].step == s["steps"]  # the final summary is kept


def test_a_failing_run_ends_failed_and_its_neighbour_finishes(gre):
    # Adam at lr 1e6 without clipping: the ELBO goes infinite within a few steps.
    bad = TrainingRun(gre, family="mean-field", lr=1e6, clip=None, steps=10_000, threads=1, name="bad")
    good = TrainingRun(gre, family="mean-field", steps=300, threads=1, name="good")
    bad.start()
    good.start()
    assert bad.wait(60) is RunState.FAILED
    assert good.wait(60) is RunState.FINISHED
    assert "DivergenceError" in bad.hub.latest(StateChange).message
    assert "step" in str(bad.error)
    assert "Traceback" in bad.traceback and "DivergenceError" in bad.traceback
    assert bad.result is not None and bad.result.stop_reason == "diverged"  # the last good state
    with pytest.raises(RuntimeError, match="failed"):
        bad.resume()
    assert len(points(good)) == 300


def test_bad_settings_fail_the_run_with_a_message_naming_the_culprit(gre):
    run = TrainingRun(gre, family="mean-field", batch={"nonexistent": 4}, threads=1).start()
    assert run.wait(30) is RunState.FAILED
    assert "nonexistent" in str(run.error)
    with pytest.raises(ValueError):
        TrainingRun(gre, steps=0)  # param checks the bounds at once
    broken = pavi_viz.examples.load("gre", G=5)
    broken.variable("mu_g").params["scale"] = "no_such_variable"
    with pytest.raises(ModelError, match="no_such_variable"):
        TrainingRun(broken)


def test_stop_then_resume_in_a_fresh_run_continues_exactly(gre, tmp_path):
    path = tmp_path / "resume.pt"
    first = TrainingRun(gre, family="pavi-e", steps=1_000_000, seed=3, threads=1, checkpoint=path).start()
    wait_for(lambda: first.progress.step >= 50)
    first.stop(wait=True, timeout=30)
    done = first.progress.step
    assert first.state is RunState.STOPPED

    second = TrainingRun(gre, steps=done + 40, seed=3, threads=1, resume_from=path)
    assert second.config.family == "pavi-e"  # taken from the checkpoint
    second.start()
    assert second.wait(60) is RunState.FINISHED
    streamed = points(second)
    # The new run streams the saved history, then goes on from the saved step.
    assert [p.step for p in streamed] == list(range(1, done + 41))
    assert [p.elbo for p in streamed[:done]] == [p.elbo for p in points(first)]
    # ... exactly as an uninterrupted run would have.
    straight = fit(gre, "pavi-e", steps=done + 40, seed=3, threads=1, progress=False)
    assert [p.elbo for p in streamed] == straight.history.elbo

    with pytest.raises(ValueError, match="holds a 'pavi-e' family"):
        TrainingRun(gre, family="mean-field", resume_from=path)
    with pytest.raises(FileNotFoundError):
        TrainingRun(gre, resume_from=tmp_path / "missing.pt")


def test_a_finished_run_resumes_in_place_with_more_steps(gre):
    run = TrainingRun(gre, family="mean-field", steps=100, threads=1).start()
    assert run.wait(60) is RunState.FINISHED
    with pytest.raises(ValueError, match="with more than 100"):
        run.resume()
    run.resume(steps=150)
    assert run.wait(60) is RunState.FINISHED
    assert [p.step for p in points(run)] == list(range(1, 151))
    infos = [r for r in run.hub.since(0).records if isinstance(r, Info)]
    assert [i.total_steps for i in infos] == [100, 150]


def test_wait_from_another_thread_never_races_a_resume(gre):
    """``wait()`` at any moment of a ``resume()`` joins a started thread (it used to
    raise "cannot join thread before it is started" in 224 of 300 tries: ten in a row
    pass by chance one time in a million)."""
    run = TrainingRun(gre, family="mean-field", steps=1, threads=1).start()
    assert run.wait(60) is RunState.FINISHED
    errors: list[BaseException] = []
    done = threading.Event()

    def waiter() -> None:
        while not done.is_set():
            try:
                run.wait(0.001)
            except RuntimeError as err:
                errors.append(err)
                return

    thread = threading.Thread(target=waiter)
    thread.start()
    for total in range(2, 12):
        run.resume(steps=total)
        assert run.wait(60) is RunState.FINISHED
    done.set()
    thread.join()
    assert errors == [] and run.progress.step == 11


def test_readers_on_a_live_run_each_see_every_point_once(gre):
    run = TrainingRun(gre, family="mean-field", steps=400, threads=1)
    early = run.hub.reader()
    run.start()
    seen_early, seen_late, late = [], [], None
    while run.alive:
        seen_early += early.read()
        if late is None and run.progress.step >= 100:
            late = run.hub.reader()  # joins late: gets the history
        if late is not None:
            seen_late += late.read()
        time.sleep(0.01)
    seen_early += early.read()
    seen_late += late.read()
    for seen in (seen_early, seen_late):
        assert [r.step for r in seen if isinstance(r, Point)] == list(range(1, 401))
        assert len({r.seq for r in seen}) == len(seen)


def test_info_reports_the_family_threads_and_truth(gre):
    threads_before = torch.get_num_threads()
    wanted = 2 if threads_before == 1 else 1
    run = TrainingRun(gre, family="pavi-f", steps=30, threads=wanted, summary_every=10).start()
    assert run.wait(60) is RunState.FINISHED
    info = run.hub.latest(Info)
    assert info.family == "pavi-f" and info.torch_threads == wanted
    assert info.parameter_count == run.parameter_count == run.result.family.parameter_count()
    assert info.truth["mu_g"].dims == ("group", "mu_g_dim_0")
    assert torch.get_num_threads() == threads_before  # the setting stayed in the run's thread
    assert info.observed["x"].dims == ("group", "obs", "x_dim_0")
    summary = run.hub.latest(Summary)
    assert summary.step == 30
    assert set(summary.summary.data_vars) == {"mu", "mu_g"}
    assert list(summary.summary.stat.values) == ["mean", "sd", "5%", "50%", "95%"]
    # Joint draws of the latents and predictive draws of x, for densities and checks.
    assert set(summary.draws.data_vars) == {"mu", "mu_g", "x"}
    assert summary.draws["x"].dims == ("sample", "group", "obs", "x_dim_0")
    assert summary.draws.sizes["sample"] == 100


def test_large_models_publish_summaries_without_draws(gre):
    # 5000 draws of 442 numbers (mu, mu_g and x of G=20 groups) pass the limit.
    run = TrainingRun(gre, family="mean-field", steps=5, threads=1, detail_draws=5000).start()
    assert run.wait(60) is RunState.FINISHED
    summary = run.hub.latest(Summary)
    assert summary.draws is None and summary.summary is not None


def test_summaries_take_a_bounded_share_of_the_time(gre):
    # A summary every step is asked for, but one costs more than a mean-field step:
    # the run publishes one only once training has had 9 times its cost.
    run = TrainingRun(gre, family="mean-field", steps=300, threads=1, summary_every=1, summary_draws=500).start()
    assert run.wait(60) is RunState.FINISHED
    kept = run.hub.since(0).records
    published_summaries = run.hub.cursor - sum(not isinstance(r, Summary) for r in kept)
    assert 2 <= published_summaries < 100
    assert run.hub.latest(Summary).step == 300


def test_a_run_keeps_its_own_copy_of_the_config(gre):
    config = RunConfig(family="mean-field", steps=50, threads=1)
    run = TrainingRun(gre, config, lr=0.05)
    config.steps = 10  # later edits (a dashboard's widgets) do not reach the run
    assert (run.config.steps, run.config.lr, run.config.family) == (50, 0.05, "mean-field")
    assert config.lr == 0.01


def test_a_discarded_run_deletes_its_own_checkpoint_and_keeps_a_given_one(gre, tmp_path):
    finished = TrainingRun(gre, family="mean-field", steps=5, threads=1).start()
    assert finished.wait(60) is RunState.FINISHED and finished.checkpoint.is_file() and finished.owns_checkpoint
    finished.discard()
    assert not finished.checkpoint.exists()
    # Discarded while running: the thread deletes the file once it has saved it.
    running = TrainingRun(gre, family="mean-field", steps=1_000_000, threads=1).start()
    wait_for(lambda: running.progress.step > 0)
    running.discard()
    assert running.wait(60) is RunState.STOPPED and not running.checkpoint.exists()
    given = TrainingRun(gre, family="mean-field", steps=5, threads=1, checkpoint=tmp_path / "mine.pt").start()
    given.wait(60)
    given.discard()
    assert (tmp_path / "mine.pt").is_file() and not given.owns_checkpoint
