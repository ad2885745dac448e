"""The wheel, as a user gets it: built from a copy of the sources git knows of, installed
with its ``app`` and ``export`` extras (and the project's pins) into a fresh virtual
environment outside the repository, then run from a folder outside it too: its
``pavi-viz serve`` serves the dashboard and its ``pavi-viz fit`` writes a posterior,
with nothing read from this checkout.

Slow (a wheel build and an install of torch, Panel and the rest: minutes; pip's cache
and the local package index make it mostly offline), so once per module.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.conftest import free_port, http_get

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The environment of the installed commands: one torch thread (two cores here), and
#: nothing that would point Python at this checkout or the project's environment.
ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")} | {
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run ``command``, failing the test with its output when it fails."""
    done = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{command}: exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A copy of the files git knows of (tracked, or new and not ignored): not the
    project's environment, build outputs or caches, which a wheel built in place could
    pick up."""
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], REPO_ROOT, 60).stdout
    copy = tmp_path_factory.mktemp("source")
    for name in filter(None, listed.split("\0")):
        if (REPO_ROOT / name).is_file():  # not a tracked file deleted in the working tree
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, copy / name)
    return copy


@pytest.fixture(scope="module")
def wheel(source: Path) -> Path:
    """The wheel built from :func:`source`, with the build tools of the project's
    environment (no isolated build environment to download)."""
    run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(source / "dist")], source, 300)
    (built,) = (source / "dist").glob("pavi_viz-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(tmp_path_factory, source: Path, wheel: Path) -> Path:
    """A fresh virtual environment (of the interpreter the project's was made from, not
    the project's) with the wheel installed, its app and export extras too."""
    path = tmp_path_factory.mktemp("venv")
    run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(path)], path, 120)
    run([str(path / "bin" / "python"), "-m", "pip", "install", "--quiet", f"{wheel}[app,export]",
         "-c", str(source / "requirements" / "constraints.txt")], path, 600)
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """The working folder of the installed commands: outside the repository."""
    return tmp_path_factory.mktemp("work")


def test_wheel_holds_the_app_and_the_package_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("pavi_viz/ui/apps/__init__.py", "pavi_viz/ui/apps/dashboard.py", "pavi_viz/ui/apps/warm_up.py",
                 "pavi_viz/py.typed", "pavi_viz/cli.py"):
        assert name in names, sorted(names)
    assert any(n.startswith("pavi_viz/datasets/") and n.endswith(".json") for n in names), sorted(names)


def test_installed_package_is_the_wheel_not_the_checkout(venv, workdir):
    code = "import pavi_viz, pavi_viz.cli; print(pavi_viz.__file__); print(pavi_viz.cli.dashboard_path())"
    files = run([str(venv / "bin" / "python"), "-c", code], workdir, 120).stdout.split()
    assert len(files) == 2, files
    for file in map(Path, files):
        assert file.is_relative_to(venv) and not file.resolve().is_relative_to(REPO_ROOT), files
        assert file.is_file(), file


def test_installed_serve_answers_and_stops(venv, workdir):
    port = free_port()
    url = f"http://127.0.0.1:{port}/dashboard"
    log_path = workdir / "serve.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen([str(venv / "bin" / "pavi-viz"), "serve", "--port", str(port)], cwd=workdir,
                                  env=ENV, stdout=log, stderr=subprocess.STDOUT)
    try:
        # A first run in a new environment compiles every module it imports: generous.
        deadline = time.monotonic() + 240
        status, page = 0, ""
        while status != 200:
            assert server.poll() is None, f"pavi-viz serve exited with {server.returncode}:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"GET {url}: no 200 within 240 s\n{log_path.read_text()}"
            try:
                status, page = http_get(url, timeout=30)
            except OSError:  # not listening yet
                time.sleep(0.5)
        # The app's own page, rendered by Bokeh (a failing script still gets a 200 page,
        # titled "Bokeh Application").
        assert "<title>pavi_viz</title>" in page and "Bokeh" in page, log_path.read_text()
        # SIGTERM, as a service manager stops it. (SIGINT does as Ctrl-C does, but a test
        # run in a background job inherits SIGINT ignored, and serve leaves it ignored.)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    with pytest.raises(OSError):  # nothing listens any more
        http_get(url, timeout=5)
    assert "Traceback" not in log_path.read_text(), log_path.read_text()


def test_installed_fit_writes_an_arviz_datatree(venv, workdir):
    import xarray as xr

    run([str(venv / "bin" / "pavi-viz"), "fit", "example:eight_schools", "--steps", "200", "--out", "x.nc"],
        workdir, 300)
    path = workdir / "x.nc"
    assert path.is_file()
    tree = xr.open_datatree(path)
    assert {"posterior", "observed_data"} <= set(tree.children), tree
    assert {"chain", "draw"} <= set(tree["posterior"].dims), tree["posterior"]
