"""Shared fixtures for the whole suite."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def default_run_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every run that the tests record in the default run store (``pavi-viz fit``,
    ``pavi-viz serve``, in this process or a child) goes to a file of the test session's,
    not to ``.pavi_viz/runs.db`` of the repository: ``PAVI_VIZ_STORE`` names it."""
    from pavi_viz.runner.store_schema import PATH_VARIABLE

    path = tmp_path_factory.mktemp("store") / "runs.db"
    mp = pytest.MonkeyPatch()
    mp.setenv(PATH_VARIABLE, str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (where pyproject.toml lives)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """``tests/artifacts/``: a git-ignored folder for logs and files worth
    keeping after a run (server logs, rendered pages, plots)."""
    path = REPO_ROOT / "tests" / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- a real browser ---------------------------------------------------------------------
CHROMIUM = Path("/usr/bin/chromium")
#: Flags that work in this project's sandboxed machines (no network, no GPU, root).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    """A headless chromium (Debian's: ``make system-deps`` installs it; Playwright
    downloads nothing) shared by one module's tests. Not the session's: Playwright's
    synchronous API runs an event loop in the main thread while it is open, which the
    other modules' dashboards would take for a notebook's."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make system-deps` (installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


# -- servers in subprocesses -----------------------------------------------------------
def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 10) -> tuple[int, str]:
    """The status and body of ``GET url`` (raises OSError when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")


@dataclass
class Served:
    """A server started by the ``serve_http`` fixture, and its first answer."""

    process: subprocess.Popen
    port: int
    url: str
    status: int
    html: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()

    def get(self, timeout: float = 10, query: str = "") -> tuple[int, str]:
        """``GET`` the server's URL again, with ``query`` (OSError when nothing answers)."""
        return http_get(self.url + query, timeout=timeout)

    def stop(self, timeout: float = 15) -> int:
        """Terminate the server (SIGTERM, then SIGKILL after ``timeout``); its exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(
    command: Callable[[int], Sequence[str]],
    log_path: Path,
    path: str = "/dashboard",
    timeout: float = 120,
) -> Served:
    """Start a server in a subprocess and wait for its first HTTP answer.

    ``command(port)`` gives the command line for a free port; the server's output goes
    to ``log_path``. Fails the test when the server exits or does not answer in time
    (the server is stopped then). The caller stops it (:meth:`Served.stop`).
    """
    port = free_port()
    url = f"http://localhost:{port}{path}"
    with open(log_path, "w") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(list(command(port)), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    served = Served(process, port, url, 0, "", log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{command(port)} exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            served.status, served.html = http_get(url)
            return served
        except OSError:  # not listening yet
            time.sleep(0.5)
    served.stop()
    pytest.fail(f"GET {url}: no answer within {timeout} s\n{log_path.read_text()}")


@pytest.fixture(scope="session")
def launch_server() -> Callable[..., Served]:
    """:func:`start_server`, for fixtures of a wider scope than ``serve_http``'s."""
    return start_server


@pytest.fixture
def serve_http(artifacts_dir: Path) -> Iterator[Callable[..., Served]]:
    """:func:`start_server` for one test: ``serve_http(command, path="/dashboard",
    log_name="server.log", timeout=60)`` logs to ``tests/artifacts/<log_name>``; servers
    still running at teardown are terminated."""
    started: list[Served] = []

    def start(command: Callable[[int], Sequence[str]], path: str = "/dashboard", log_name: str = "server.log",
              timeout: float = 60) -> Served:
        served = start_server(command, artifacts_dir / log_name, path, timeout)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


# -- order ---------------------------------------------------------------------------------
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long tests first: the ``slow`` ones, then the ``ui`` ones (servers and browsers),
    then the rest, each kind in collection order. The workers of ``-n auto --dist
    loadfile`` take whole files in the order their first test comes; a long file taken
    last kept one worker busy for minutes after the other had finished (the suite's
    tail), while short files taken last fill the gaps."""
    def rank(item: pytest.Item) -> int:
        return 0 if item.get_closest_marker("slow") else 1 if item.get_closest_marker("ui") else 2

    items.sort(key=rank)  # stable: a kind keeps its order
