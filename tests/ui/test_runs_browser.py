"""The run store in a real browser against a real ``pavi-viz serve --store``: a fit in a
terminal (a ``pavi-viz fit`` subprocess) watched live until it is killed, a finished run
still listed with its posterior after the server restarts, two runs compared: one story,
so that the suite starts the servers and the fits once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pavi_viz.runner import RunStore, StoreError

pytestmark = [pytest.mark.ui, pytest.mark.timeout(600)]

RUNS = "pavi-runs-source"
ELBO = "pavi-elbo-source"
COMPARE = "pavi-compare-elbo"
FOREST = "pavi-forest-means"
#: Seconds a condition is waited for (CI machines are shared, slow at times).
WAIT = 90


def serve(serve_http, store: Path, log_name: str):
    return serve_http(lambda port: [sys.executable, "-m", "pavi_viz", "serve", "--port", str(port),
                                    "--store", str(store)], log_name=log_name)


def terminal_fit(store: Path, folder: Path, name: str, *args: str) -> subprocess.Popen:
    """``pavi-viz fit`` in a subprocess (a terminal's), recording in ``store``."""
    log = open(folder / f"{name}.log", "w")  # noqa: SIM115 - the child holds it
    return subprocess.Popen(
        [sys.executable, "-m", "pavi_viz", "fit", *args, "--threads", "1", "--quiet", "--store", str(store),
         "--out", str(folder / f"{name}.nc"), "--draws", "200"],
        cwd=folder, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=log, stderr=subprocess.STDOUT)


def wait_for(condition, what: str, timeout: float = WAIT) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.2)


def stored_step(store: Path, run_id: int = 1) -> int:
    try:
        return RunStore(store, create=False).run(run_id).step
    except StoreError:  # not there yet
        return 0


class RunsTab:
    """The *Runs* tab of one page, driven as a user does."""

    def __init__(self, page) -> None:
        self.page, self.p = page, page.page

    def open(self, runs: int) -> None:
        """Open the tab, and wait for ``runs`` rows in its table."""
        self.p.locator(".bk-tab", has_text="Runs").click()
        self.page.wait_rows(RUNS, runs, timeout=WAIT)

    def ids(self) -> list[int]:
        """The runs' ids, in the table's order."""
        return self.p.evaluate("(name) => Array.from(Bokeh.documents[0].get_model_by_name(name).data.id)", RUNS)

    def tick(self, run_id: int) -> None:
        """Tick the run's box in the table (rows are newest first)."""
        self.p.locator(".slick-row").nth(self.ids().index(run_id)).locator("input[type=checkbox]").click()

    def watch(self) -> None:
        self.page.press("Watch")
        self.p.locator(".bk-tab.bk-active", has_text="Fit").wait_for(timeout=WAIT * 1000)


def run_line(page) -> str:
    return page.page.get_by_text("Run:").first.inner_text()


def test_terminal_fits_watched_live_kept_over_a_restart_and_compared(serve_http, open_page, tmp_path):
    store = tmp_path / "runs.db"
    RunStore(store)
    served = serve(serve_http, store, "runs-browser.log")
    live = terminal_fit(store, tmp_path, "live", "example:gre", "--option", "G=50", "--steps", "1000000")
    try:
        wait_for(lambda: stored_step(store, 1) > 0, "the long fit to record its first points as run 1")
        short = terminal_fit(store, tmp_path, "short", "example:eight_schools", "--steps", "300")
        page = open_page(served.url, "live")
        runs = RunsTab(page)
        runs.open(1)
        runs.tick(1)
        runs.watch()
        first = page.wait_rows(ELBO, 1, timeout=WAIT)
        page.wait_rows(ELBO, first + 50, timeout=WAIT)  # its rows grow as the terminal trains
        assert "running" in run_line(page) and "example:gre (stored run 1)" in run_line(page)
        page.shot("watched")
        live.send_signal(signal.SIGKILL)
        live.wait()
        wait_for(lambda: "interrupted" in run_line(page), "the page to show the run interrupted")
        assert page.errors == []
        assert short.wait(timeout=300) == 0, (tmp_path / "short.log").read_text()
    finally:
        if live.poll() is None:
            live.kill()
            live.wait()

    served.stop()  # the server restarts: the runs are in the store, not in its memory
    served = serve(serve_http, store, "runs-browser-restarted.log")
    page = open_page(served.url, "restarted")
    runs = RunsTab(page)
    runs.open(2)
    assert runs.ids() == [2, 1]
    runs.tick(1)
    runs.tick(2)
    page.wait_rows(COMPARE, 2, timeout=WAIT)  # one line per run
    assert sorted(page.shown_column(COMPARE, "run")) == [1, 2]
    page.shot("compared")
    runs.tick(1)  # one run left: watched
    runs.watch()
    stamp = page.page.get_by_text("Posterior at step").first
    wait_for(lambda: "Posterior at step 300 of example:eight_schools" in stamp.inner_text(), "the posterior's stamp")
    assert page.wait_rows(FOREST, 8, timeout=WAIT) == 8  # the eight schools' theta
    assert page.rows(ELBO) == 300 and "finished" in run_line(page)
    page.shot("finished run")
    assert page.errors == []
