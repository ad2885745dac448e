"""A fit's curves in TensorBoard: ``fit(..., tensorboard=DIR)`` and ``pavi-viz fit --tensorboard DIR``,
read back with TensorBoard's own reader."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import pavi_viz
from pavi_viz.inference import fit
from pavi_viz.inference.tensorboard import MISSING, TAGS


@pytest.fixture(scope="module")
def eight_schools():
    return pavi_viz.examples.load("eight_schools")


def read_run(log_dir: Path) -> tuple[Path, EventAccumulator]:
    """The one run folder in ``log_dir``, and its events (every one: no sampling)."""
    [folder] = log_dir.iterdir()
    return folder, EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0}).Reload()


def scalars(events: EventAccumulator, tag: str) -> tuple[list[int], list[float]]:
    points = events.Scalars(tag)
    return [p.step for p in points], [p.value for p in points]


def text(events: EventAccumulator, tag: str) -> str:
    [event] = events.Tensors(f"{tag}/text_summary")  # where torch's add_text puts it
    return event.tensor_proto.string_val[0].decode()


def test_fit_writes_its_history_as_scalars(tmp_path, eight_schools):
    result = fit(eight_schools, steps=60, threads=1, progress=False, tensorboard=tmp_path)

    folder, events = read_run(tmp_path)
    assert re.fullmatch(r"eight_schools-pavi-e-\d{8}-\d{6}", folder.name), folder.name
    assert sorted(events.Tags()["scalars"]) == sorted(TAGS.values())
    history = result.history
    for column, tag in TAGS.items():
        steps, values = scalars(events, tag)
        assert steps == history.step == list(range(1, 61)), tag
        # TensorBoard's scalars are float32.
        assert values == [float(np.float32(v)) for v in getattr(history, column)], tag
    settings = text(events, "settings")
    assert '"steps": 60' in settings and '"family": "pavi-e"' in settings
    assert text(events, "end") == f"completed at step 60 of 60. Final smoothed ELBO: {result.elbo:.6g}"


def test_every_sink_hears_the_steps_and_how_the_run_ended(tmp_path, eight_schools):
    from pavi_viz.runner import RunStore

    def fail(state):
        if state.step == 20:
            raise RuntimeError("a callback failed")

    store = RunStore(tmp_path / "runs.db")
    with pytest.raises(RuntimeError, match="a callback failed"):
        fit(eight_schools, steps=60, threads=1, progress=False, callbacks=[fail], store=store,
            tensorboard=tmp_path / "tb")

    [run] = store.runs()
    assert (run.state, run.step) == ("failed", 20)
    _, events = read_run(tmp_path / "tb")
    assert scalars(events, "elbo/smoothed")[0] == list(range(1, 21))
    assert text(events, "end").startswith("RuntimeError: a callback failed. Final smoothed ELBO: ")


def test_the_command_line_writes_the_same_scalars(tmp_path, eight_schools):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pavi_viz", "fit", "example:eight_schools", "--steps", "40", "--threads", "1",
               "--no-store", "--tensorboard", str(tmp_path / "tb"), "--quiet", "--out", "posterior.nc",
               "--draws", "50"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr

    history = fit(eight_schools, steps=40, threads=1, progress=False).history  # the same settings, seed 0
    _, events = read_run(tmp_path / "tb")
    for column, tag in TAGS.items():
        steps, values = scalars(events, tag)
        assert steps == history.step, tag
        if column != "steps_per_second":  # a speed, different at each run
            assert values == [float(np.float32(v)) for v in getattr(history, column)], tag
    assert text(events, "end").startswith("completed at step 40 of 40.")


def test_a_missing_tensorboard_package_names_the_extra(tmp_path, eight_schools, monkeypatch, capsys):
    from pavi_viz import cli

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` fails
    with pytest.raises(ImportError, match=re.escape("pip install 'pavi-viz[tensorboard]'")):
        fit(eight_schools, steps=5, progress=False, tensorboard=tmp_path / "tb")
    assert not (tmp_path / "tb").exists()

    monkeypatch.chdir(tmp_path)
    status = cli.main(["fit", "example:eight_schools", "--steps", "5", "--no-store", "--quiet",
                       "--tensorboard", "tb"])
    assert status == cli.EXIT_FAILURE
    assert capsys.readouterr().err == f"pavi-viz fit: error: --tensorboard: {MISSING}\n"
    assert not (tmp_path / "tb").exists()
