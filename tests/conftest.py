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

    def get(self, timeout: float = 10) -> tuple[int, str]:
        """``GET`` the server's URL again (OSError when nothing answers)."""
        return http_get(self.url, timeout=timeout)

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


@pytest.fixture
def serve_http(artifacts_dir: Path) -> Iterator[Callable[..., Served]]:
    """Start a server in a subprocess and wait for its first HTTP answer.

    ``serve_http(command, path="/dashboard", log_name="server.log", timeout=60)``:
    ``command(port)`` gives the command line for a free port; the server's output goes
    to ``tests/artifacts/<log_name>``. Fails the test when the server exits or does not
    answer in time. Servers still running at teardown are terminated.
    """
    started: list[Served] = []
    logs = []

    def start(command: Callable[[int], Sequence[str]], path: str = "/dashboard", log_name: str = "server.log",
              timeout: float = 60) -> Served:
        port = free_port()
        url = f"http://localhost:{port}{path}"
        log_path = artifacts_dir / log_name
        log = open(log_path, "w")  # noqa: SIM115 - closed at teardown
        logs.append(log)
        process = subprocess.Popen(list(command(port)), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        served = Served(process, port, url, 0, "", log_path)
        started.append(served)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"{command(port)} exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                served.status, served.html = http_get(url)
                return served
            except OSError:  # not listening yet
                time.sleep(0.5)
        pytest.fail(f"GET {url}: no answer within {timeout} s\n{log_path.read_text()}")

    yield start
    for served in started:
        served.stop()
    for log in logs:
        log.close()
