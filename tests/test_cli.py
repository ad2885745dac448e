"""The ``pavi-viz`` command line, run for real in subprocesses."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import signal
import subprocess
import sys
import urllib.request
import time
from pathlib import Path

import numpy as np
import pytest

# The UI tests' pages and their screenshots' folder, for the served pages here (a
# fixture imported into a module is that module's fixture).
from tests.ui.conftest import Page, screenshots  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "pavi-viz"
# One torch thread: the machine has two cores and the runs are small.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def env() -> dict[str, str]:
    """The children's environment: this process's as it is now (the suite's run store:
    tests/conftest.py), one thread."""
    return {**os.environ, **ONE_THREAD}


# A short fit that is accurate enough on a 20-group GRE (errors of 0.1 posterior sd).
FIT = ["--steps", "400", "--particles", "8", "--schedule", "cosine", "--threads", "1", "--quiet"]


def cli(*args: str, cwd: Path = REPO_ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pavi_viz", *args], cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout,
        check=False,
    )


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def checkpoint_step(path: Path) -> int:
    from pavi_viz.inference.checkpoints import read_checkpoint

    return int(read_checkpoint(path)["step"])


# -- the command itself ---------------------------------------------------------------
def test_module_import_is_light_and_version_from_installed_script():
    code = "import sys, pavi_viz.cli; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    loaded = ok(loaded).stdout
    for heavy in ("torch", "panel", "xarray", "numpy"):
        assert f"'{heavy}'" not in loaded, f"`import pavi_viz.cli` imported {heavy}"
    if not SCRIPT.exists():
        pytest.skip(f"the pavi-viz script is not installed next to {sys.executable} (pip install -e .)")
    import pavi_viz

    version = ok(subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True, timeout=60, check=False))
    assert version.stdout.strip() == f"pavi-viz {pavi_viz.__version__}"


def test_help_of_every_command():
    assert "fit" in ok(cli("--help")).stdout
    for command, words in [("fit", ["--family", "--batch", "--resume", "examples:"]),
                           ("examples", ["--out", "examples:"]),
                           ("serve", ["--port", "--allow-websocket-origin", "--num-procs", "examples:"])]:
        text = ok(cli(command, "--help")).stdout
        for word in words:
            assert word in text, (command, word)


def test_fit_options_are_the_fit_config_settings(workdir, gre_file):
    from pavi_viz.inference.config import FitConfig

    text = ok(cli("fit", "--help")).stdout
    for name in FitConfig.setting_names():
        option = {"batch": "--batch", "family_options": "--family-option"}.get(name, f"--{name.replace('_', '-')}")
        assert option in text, option
    assert "(default: 10000)" in text and "(default: auto)" in text  # defaults read off the declarations
    for args, culprit in [(["--steps", "-3"], "--steps"), (["--threads", "0"], "--threads"),
                          (["--clip", "0"], "--clip"), (["--lr", "fast"], "--lr")]:
        result = cli("fit", gre_file.name, *args, "--out", "never.nc", cwd=workdir)
        assert result.returncode == 2 and culprit in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_examples_are_listed():
    lines = ok(cli("examples")).stdout.splitlines()
    names = {line.split()[0]: line for line in lines if line.strip()}
    assert {"gre", "radon"} <= set(names)
    assert "Gaussian random effects" in names["gre"]
    assert "Radon" in names["radon"]


# -- examples NAME --out, fit, resume ---------------------------------------------------
@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def gre_file(workdir) -> Path:
    result = ok(cli("examples", "gre", "--option", "G=20", "--out", "gre.json", cwd=workdir))
    assert "gre.json" in result.stdout
    return workdir / "gre.json"


@pytest.fixture(scope="module")
def fitted(workdir, gre_file) -> subprocess.CompletedProcess:
    return ok(cli("fit", gre_file.name, "--family", "pavi-e", *FIT, "--checkpoint", "run.pt", "--out", "posterior.nc",
                  "--draws", "1000", cwd=workdir))


def test_example_file_is_a_model_with_its_data(gre_file):
    import pavi_viz

    model = pavi_viz.PlateModel.from_json(gre_file)
    assert {p.name: p.size for p in model.plates} == {"group": 20, "obs": 10}
    assert tuple(model.data["x"].shape) == (20, 10, 2)
    assert model.truth is not None


def test_fit_writes_a_netcdf_posterior_close_to_the_exact_one(workdir, gre_file, fitted):
    import xarray as xr

    import pavi_viz
    from pavi_viz.examples.gre import analytic_posterior

    assert "posterior.nc" in fitted.stdout
    assert "final ELBO" in fitted.stdout
    assert "Pareto k of the importance weights" in fitted.stdout  # how far to trust the draws
    with xr.open_datatree(workdir / "posterior.nc") as tree:  # ArviZ groups
        assert {"posterior", "log_likelihood", "sample_stats", "posterior_predictive", "observed_data"} <= set(
            tree.children)
        draws = tree["posterior"]
        assert draws["mu"].dims == ("chain", "draw", "mu_dim_0")
        assert draws["mu_g"].dims == ("chain", "draw", "group", "mu_g_dim_0")
        assert draws["mu"].shape == (1, 1000, 2)
        assert draws["mu_g"].shape == (1, 1000, 20, 2)
        assert tree["log_likelihood"]["x"].dims == ("chain", "draw", "group", "obs")
        # The check printed is the one the draws made.
        k = float(tree["sample_stats"].attrs["pareto_k"])
        assert f"Pareto k of the importance weights: {k:.2f}" in fitted.stdout
        mu = draws["mu"].mean(("chain", "draw")).values
    exact = analytic_posterior(pavi_viz.PlateModel.from_json(gre_file))["mu"]
    error = np.abs(mu - exact.mean.numpy()) / exact.stddev.numpy()
    assert np.all(error < 0.3), (mu, exact.mean, exact.stddev)


def test_resume_continues_from_the_checkpoint(workdir, gre_file, fitted):
    assert checkpoint_step(workdir / "run.pt") == 400
    result = ok(cli("fit", gre_file.name, "--resume", "run.pt", "--steps", "450", "--threads", "1", "--quiet",
                    "--checkpoint", "run2.pt", "--out", "resumed.nc", "--draws", "10", cwd=workdir))
    assert "trained steps 401 to 450" in result.stdout
    assert checkpoint_step(workdir / "run2.pt") == 450
    assert (workdir / "resumed.nc").is_file()


def test_ctrl_c_saves_the_checkpoint_and_says_how_to_resume(workdir, gre_file):
    checkpoint = workdir / "interrupted.pt"
    process = subprocess.Popen(
        [sys.executable, "-m", "pavi_viz", "fit", gre_file.name, "--steps", "100000", "--threads", "1", "--quiet",
         "--checkpoint", checkpoint.name, "--checkpoint-every", "10", "--out", "never.nc"],
        cwd=workdir, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert checkpoint.exists(), process.communicate(timeout=30)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "--resume interrupted.pt" in stderr
    assert checkpoint_step(checkpoint) >= 10
    assert not (workdir / "never.nc").exists()


def test_fit_takes_its_data_from_a_data_file_that_sizes_the_plates_and_labels_them(workdir, gre_file):
    import xarray as xr

    import pavi_viz
    from pavi_viz.model.tables import model_to_dataset

    pavi_viz.PlateModel.from_json(gre_file).to_json(workdir / "structure.json", include_data=False)
    study = pavi_viz.examples.load("gre", G=30, N=10)  # more groups than the model file's 20
    subjects = [f"subject-{i:02d}" for i in range(30)]
    model_to_dataset(study, labels={"group": subjects}).to_netcdf(workdir / "study.nc", engine="h5netcdf")
    result = ok(cli("fit", "structure.json", "--data", "study.nc", "--steps", "30", "--threads", "1", "--quiet",
                    "--no-store", "--draws", "10", "--out", "study-posterior.nc", cwd=workdir))
    assert "study-posterior.nc" in result.stdout
    with xr.open_datatree(workdir / "study-posterior.nc") as tree:
        assert list(tree["posterior"]["group"].values) == subjects
        observed = tree["observed_data"]["x"].values
    np.testing.assert_allclose(observed, study.data["x"].numpy(), rtol=1e-6)


# -- errors: one line naming the culprit, no traceback ------------------------------------
@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (["broken.json"], "broken.json"),
        (["missing.json"], "missing.json"),
        (["gre.json", "--family", "no-such-family"], "no-such-family"),
        (["gre.json", "--batch", "group:8"], "group:8"),
        (["gre.json", "--batch", "county=8"], "county"),
        (["gre.json", "--data", "missing.nc"], "missing.nc"),
        (["gre.json", "--data", "broken.json"], "broken.json"),
    ],
    ids=["malformed-json", "missing-file", "unknown-family", "batch-syntax", "batch-plate", "missing-data-file",
         "data-file-kind"],
)
def test_errors_are_one_line_naming_the_culprit(workdir, gre_file, args, culprit):
    (workdir / "broken.json").write_text('{"plates": [')
    result = cli("fit", *args, "--steps", "5", "--out", "never.nc", cwd=workdir)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pavi-viz fit: error:") and culprit in lines[0], lines[0]
    assert not (workdir / "never.nc").exists()


# -- serve --------------------------------------------------------------------------------
def listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on ``port`` (Linux's /proc/net)."""
    found = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                # The kernel writes each 32-bit word in host (little-endian) order.
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, width, 4))
                found.add(str(ipaddress.ip_address(words)))
    return found


@pytest.mark.ui
@pytest.mark.timeout(180)
def test_serve_answers_and_stops_with_its_server(serve_http):
    served = serve_http(lambda port: [sys.executable, "-m", "pavi_viz", "serve", "--port", str(port)],
                        log_name="pavi-viz-serve.log")
    assert served.status == 200, served.log()
    assert "<title>pavi_viz</title>" in served.html, served.log()
    # One page was built and dropped before the server listened: the first visitor's
    # page does not pay for the imports.
    log = served.log()
    assert log.index("warmed up: built and dropped one page") < log.index("Bokeh app running"), log
    # By default it listens on this machine's loopback address alone.
    assert listening_addresses(served.port) == {"127.0.0.1"}, served.log()
    assert f"http://127.0.0.1:{served.port}/dashboard" in served.log()
    # Session ids are signed: a link carrying an id someone chose opens no session.
    status, _ = served.get(query="?bokeh-session-id=chosen-by-someone")
    assert status == 403, served.log()
    # A page asked for under another host name (a site whose name resolves to this
    # machine) gets one line of refusal, not the app.
    request = urllib.request.Request(served.url, headers={"Host": f"rebound.example:{served.port}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        refused = response.read().decode()
    assert "<title>pavi_viz: not served at this address</title>" in refused, refused[:1000]
    assert "<title>pavi_viz</title>" in served.get(timeout=30)[1]  # its own host still gets the app
    served.stop()
    # SIGTERM reached panel serve too: nothing listens on the port any more.
    with pytest.raises(OSError):
        served.get(timeout=5)
    assert "Traceback" not in served.log()


@pytest.mark.ui
@pytest.mark.timeout(180)
def test_serve_with_basic_auth_asks_for_the_password_first(serve_http, monkeypatch):
    # A password and a cookie secret that start with "-" (a random secret does, one time
    # in 64) reach panel serve as values, not as flags.
    monkeypatch.setenv("BOKEH_COOKIE_SECRET", "-" + "s" * 43)
    served = serve_http(lambda port: [sys.executable, "-m", "pavi_viz", "serve", "--port", str(port),
                                      "--basic-auth=-workshop-password"], log_name="pavi-viz-serve-auth.log")
    # The dashboard's address leads to the login form, not to the dashboard.
    assert served.status == 200 and 'type="password"' in served.html, served.log()
    assert "<title>pavi_viz</title>" not in served.html


def child_processes(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc), in pid order."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):  # a process that has just ended
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (command)": state, ppid...
            if int(fields[1]) == pid:
                children.append(int(stat.parent.name))
    return sorted(children)


def wait_log(served, text: str, count: int, timeout: float = 120) -> None:
    """Wait until the server's log holds ``text`` ``count`` times."""
    end = time.monotonic() + timeout
    while served.log().count(text) < count:
        assert time.monotonic() < end and served.process.poll() is None, served.log()
        time.sleep(0.2)


def serve_two_processes(serve_http, log_name: str):
    """``pavi-viz serve --num-procs 2``, once both processes have built their warm-up page;
    the server and its two processes' ids."""
    served = serve_http(lambda port: [sys.executable, "-m", "pavi_viz", "serve", "--port", str(port),
                                      "--num-procs", "2", "--max-runs", "2"], log_name=log_name)
    wait_log(served, "warmed up: built and dropped one page", 2)
    (panel,) = child_processes(served.process.pid)
    workers = child_processes(panel)
    assert len(workers) == 2, served.log()
    return served, workers


def load_across_processes(served, workers: list[int], page: Page) -> None:
    """Load the dashboard in ``page`` as a browser whose websocket reaches another server
    process than its page: one process builds the page (the other paused), the other
    takes the websocket (the first paused once the page opens it), and has to make the
    session again from the id the page carries."""
    builder, connected = workers

    def switch_processes(websocket) -> None:
        os.kill(builder, signal.SIGSTOP)
        os.kill(connected, signal.SIGCONT)
        websocket.connect_to_server()

    page.page.route_web_socket(re.compile(r"/dashboard/ws$"), switch_processes)
    os.kill(connected, signal.SIGSTOP)
    try:
        page.page.goto(served.url, wait_until="networkidle", timeout=60_000)
        page.page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0", timeout=60_000)
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)


@pytest.mark.ui
@pytest.mark.timeout(240)
def test_serve_with_two_processes_streams_a_run_whose_websocket_reached_the_other_offline(
    serve_http, browser, screenshots  # noqa: F811
):
    from pavi_viz.ui.views.diagram import NODES_NAME
    from pavi_viz.ui.views.elbo import SOURCE_NAME as ELBO_SOURCE

    served, workers = serve_two_processes(serve_http, "pavi-viz-serve-procs.log")
    page = Page(browser, screenshots, "serve-two-processes")
    # The process that took the websocket made the session's models again: their
    # stylesheets come from this server too, never a CDN (a room may have no internet).
    outside: list[str] = []
    page.page.on("request", lambda r: outside.append(r.url) if "localhost" not in r.url else None)
    try:
        load_across_processes(served, workers, page)
        page.wait_shown_column(NODES_NAME, "name", ["mu", "mu_g", "x"])  # the default model's diagram
        page.press("Start")
        first = page.wait_rows(ELBO_SOURCE, 1, timeout=120)
        page.shot("streaming")
        assert page.wait_rows(ELBO_SOURCE, first + 1, timeout=120) > first  # points keep coming
    finally:
        page.close()
    assert outside == [], outside
    served.stop()
    # The forked processes ended with their parent: nothing serves the port any more.
    with pytest.raises(OSError):
        served.get(timeout=5)
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize(("flags", "runs"), [
    (["--max-runs", "6"], 6),
    (["--max-runs", "6", "--num-procs", "2"], 3),
    (["--max-runs", "5", "--num-procs", "2"], 2),  # rounded down: together within the limit
    (["--max-runs", "2", "--num-procs", "3"], 1),  # at least one each
])
def test_serve_shares_max_runs_between_its_processes(flags, runs):
    from pavi_viz.cli import _serve_limits, build_parser

    assert _serve_limits(build_parser().parse_args(["serve", *flags])).runs == runs


def test_serve_shares_the_default_store_on_loopback_only(tmp_path, monkeypatch):
    from pavi_viz.cli import CliError, _serve_store, build_parser
    from pavi_viz.runner.store_schema import PATH_VARIABLE

    monkeypatch.setenv(PATH_VARIABLE, str(tmp_path / "default.db"))

    def store(*flags: str, local: bool = True) -> str:
        return _serve_store(build_parser().parse_args(["serve", *flags]), local)

    assert store() == str(tmp_path / "default.db")  # one person's machine: the runs fit records
    assert store(local=False) == ""  # a room: nobody sees the others' runs unless told
    assert store("--store", str(tmp_path / "room.db"), local=False) == str(tmp_path / "room.db")
    assert store("--no-store") == ""
    (tmp_path / "not-a-store.db").write_text("hello")
    with pytest.raises(CliError, match="--store: .*not-a-store.db"):
        store("--store", str(tmp_path / "not-a-store.db"))


def test_option_is_for_examples_only(workdir, gre_file):
    result = cli("fit", gre_file.name, "--option", "G=5", "--out", "never.nc", cwd=workdir)
    assert result.returncode == 2 and "--option" in result.stderr, result


@pytest.mark.parametrize(("flags", "words"), [
    (["--max-runs", "0"], "'0' must be at least 1"),
    (["--max-steps", "20000000"], "--max-steps may be at most 10,000,000"),
    (["--max-simulated", "many"], "'many' is not a whole number"),
])
def test_serve_refuses_limits_it_cannot_keep_before_serving(flags, words):
    done = cli("serve", "--port", "1", *flags)
    assert done.returncode == 2 and words in done.stderr and "serving" not in done.stdout


def test_serve_runs_the_scripts_the_package_ships():
    import pavi_viz
    from pavi_viz.cli import dashboard_path

    # Inside the package, not a checkout's apps/: a wheel's install serves it too.
    app = dashboard_path()
    assert app.parent == Path(pavi_viz.__file__).parent / "ui" / "apps"
    assert app.is_file() and app.with_name("warm_up.py").is_file()
    # Imported as modules (pdoc's reference does), the scripts neither warm up nor serve
    # (a server would keep the process from ending).
    code = ("import logging; logging.basicConfig(level=logging.INFO)\n"
            "import pavi_viz.ui.apps.dashboard, pavi_viz.ui.apps.warm_up")
    imported = ok(subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=120,
                                 check=False))
    assert "warmed up" not in imported.stderr, imported.stderr


def test_serve_without_its_scripts_names_the_folder(monkeypatch, capsys, tmp_path):
    from pavi_viz import cli as pavi_cli

    monkeypatch.setattr(pavi_cli, "dashboard_path", lambda: tmp_path / "dashboard.py")
    assert pavi_cli.main(["serve", "--port", "1"]) == pavi_cli.EXIT_FAILURE
    error = capsys.readouterr().err.strip()
    assert error.startswith("pavi-viz serve: error:") and str(tmp_path) in error and "reinstall" in error, error


# -- the run store: fit records its runs, runs lists them -------------------------------------
def committed_points(store_file: Path) -> int:
    """The points the store's first run holds (0 while there is no store yet)."""
    from pavi_viz.runner.store import RunStore, StoreError

    try:
        return len(RunStore(store_file, create=False).points(1))
    except StoreError:
        return 0


def test_fit_records_its_run_in_the_store_of_the_working_folder_unless_told_not_to(tmp_path, gre_file, monkeypatch):
    from pavi_viz.runner.store import RunStore
    from pavi_viz.runner.store_schema import PATH_VARIABLE

    monkeypatch.delenv(PATH_VARIABLE)  # the suite's own store: the default is what is tested here

    (tmp_path / "recorded").mkdir()
    (tmp_path / "unrecorded").mkdir()
    fit = ["fit", str(gre_file), "--steps", "3", "--threads", "1", "--out", "p.nc", "--draws", "50"]
    result = ok(cli(*fit, cwd=tmp_path / "recorded"))
    assert "recording it as run 1 in .pavi_viz/runs.db ('pavi-viz runs' lists the runs)" in result.stdout
    [run] = RunStore(tmp_path / "recorded" / ".pavi_viz" / "runs.db", create=False).runs()
    assert (run.name, run.state, run.step, run.total_steps, run.checkpoint) == (str(gre_file), "finished", 3, 3, None)
    assert run.posterior == str((tmp_path / "recorded" / "p.nc").resolve())
    assert f"Pareto k of the importance weights: {run.pareto_k:.2f}" in result.stdout

    ok(cli(*fit, "--no-store", cwd=tmp_path / "unrecorded"))
    assert (tmp_path / "unrecorded" / "p.nc").is_file() and not (tmp_path / "unrecorded" / ".pavi_viz").exists()


@pytest.mark.timeout(120)
def test_a_killed_fit_reads_as_interrupted_and_resuming_it_continues_the_stored_run(tmp_path):
    from pavi_viz.runner.store import RunStore

    store_file = tmp_path / "runs.db"
    model = ["example:gre", "--option", "G=200", "--schedule", "cosine", "--threads", "1", "--quiet",
             "--checkpoint", "run.pt", "--store", str(store_file)]
    process = subprocess.Popen(
        [sys.executable, "-m", "pavi_viz", "fit", *model, "--steps", "100000", "--checkpoint-every", "50",
         "--out", "never.nc"],
        cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while committed_points(store_file) < 120 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert committed_points(store_file) >= 120, process.communicate(timeout=30)
        process.kill()  # SIGKILL: no handler runs, nothing more is written
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    store = RunStore(store_file, create=False)
    [run] = store.runs()
    assert (run.name, run.model, run.family, run.state, run.total_steps) == (
        "example:gre", "gre", "pavi-e", "interrupted", 100000)
    assert run.step >= 120 and [p.step for p in store.points(run.id)] == list(range(1, run.step + 1))
    assert run.checkpoint == str((tmp_path / "run.pt").resolve())
    listing = ok(cli("runs", "--store", str(store_file))).stdout.splitlines()
    assert listing[0].split() == ["id", "name", "model", "family", "state", "step", "final", "ELBO", "age"]
    assert listing[1].split()[:6] == [str(run.id), "example:gre", "gre", "pavi-e", "interrupted",
                                      f"{run.step}/100000"]

    saved = checkpoint_step(tmp_path / "run.pt")
    ok(cli("fit", *model, "--resume", "run.pt", "--steps", str(saved + 30), "--out", "posterior.nc",
           "--draws", "50", cwd=tmp_path))
    [run] = store.runs()
    assert (run.state, run.step, run.total_steps) == ("finished", saved + 30, saved + 30)
    assert [p.step for p in store.points(run.id)] == list(range(1, saved + 31))
    assert [t.state for t in store.transitions(run.id)] == ["running", "interrupted", "running", "finished"]
    assert run.posterior == str((tmp_path / "posterior.nc").resolve())
    assert store.summary(run.id).step == saved + 30


def test_runs_lists_and_deletes(tmp_path):
    from pavi_viz.runner.hub import Info, StateChange
    from pavi_viz.runner.store import RunStore

    store_file = tmp_path / "runs.db"
    store = RunStore(store_file)
    for name, final in (("one", "finished"), ("two", "stopped"), ("three", "finished")):
        writer = store.open_run(Info(run=name, model="gre", family="pavi-f", parameter_count=1, total_steps=10,
                                     device="cpu", torch_threads=1, settings={}, truth=None, observed=None))
        writer.put(StateChange(run=name, state=final, time=time.time(), message=""))
        writer.close()
    names = [line.split()[1] for line in ok(cli("runs", "--store", str(store_file))).stdout.splitlines()[1:]]
    assert names == ["three", "two", "one"]
    assert ok(cli("runs", "--store", str(store_file), "--delete-finished")).stdout.startswith(
        f"deleted 2 run(s) from {store_file}: 1, 3")
    assert ok(cli("runs", "--store", str(store_file), "--delete", "2")).stdout.splitlines() == [
        f"deleted 1 run(s) from {store_file}: 2", f"no runs in {store_file}"]
    assert "--delete-finished" in ok(cli("runs", "--help")).stdout


@pytest.mark.parametrize(("content", "words"), [
    (None, "no run store at"),
    (b"plain text, " * 50, "is not a pavi_viz run store"),
    ("newer", "written by a newer pavi_viz"),
    ("other", "of another application"),
], ids=["missing", "not-sqlite", "newer-schema", "other-sqlite"])
def test_runs_errors_are_one_line_naming_the_file(tmp_path, content, words):
    import sqlite3

    from pavi_viz.runner.store import RunStore

    path = tmp_path / "runs.db"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        if content == "newer":
            RunStore(path)
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA user_version = 99" if content == "newer" else "CREATE TABLE notes (text TEXT)")
    for command in (["runs"], ["runs", "--delete", "1"]):
        result = cli(*command, "--store", str(path))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result
        assert lines[0].startswith("pavi-viz runs: error:") and str(path) in lines[0] and words in lines[0], lines
