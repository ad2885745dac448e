"""A workshop's load on one server: sessions that each start a small run.

A real ``pavi-viz serve`` with a workshop's limits (``--max-steps``, ``--max-runs``),
browser tabs opened one after another, each starting a run, while another client asks
the server for a file again and again; then every tab closes, and the server's log
must say that every run's thread has ended.

Four sessions here, to keep the suite's time; ``benchmarks/serve_load.py`` runs twenty
and measures how long the server keeps a client waiting meanwhile (README, Workshop):
that is measured, not asserted here.
"""

from __future__ import annotations

import re
import sys
import time

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.ui, pytest.mark.timeout(900)]

SESSIONS = 4
#: A small run: the default model (GRE, 100 groups) for this many steps.
STEPS = 40


def test_sessions_start_runs_in_turn_the_server_answers_everyone_and_every_run_thread_ends(
        launch_server, open_page, poll_server, artifacts_dir):
    served = launch_server(
        lambda port: [sys.executable, "-m", "pavi_viz", "serve", "--port", str(port),
                      "--max-steps", str(STEPS), "--max-runs", "1"],
        artifacts_dir / "ui-server-load.log")
    static = f"http://localhost:{served.port}/static/js/bokeh.min.js"
    try:
        with poll_server(static) as poller:
            pages = []
            for i in range(SESSIONS):
                page = open_page(served.url, f"session{i}")
                if i == 0:  # the default 3,000 steps are over this server's limit
                    page.press("Start")
                    expect(page.page.locator("body")).to_contain_text(
                        f"over this server's limit of {STEPS} a run", timeout=60_000)
                steps = page.page.locator(".pavi-setting-steps input")
                steps.fill(str(STEPS))
                steps.press("Enter")
                page.press("Start")
                # Training, or waiting its turn (one run trains at a time here), or done.
                expect(page.page.get_by_text("Run:").first).to_contain_text(
                    re.compile("queued|running|finished"), timeout=60_000)
                pages.append(page)
            # Runs take their turns: the first ones finish while later ones wait.
            expect(pages[1].page.get_by_text("Run:").first).to_contain_text("finished", timeout=120_000)
            for page in pages:
                page.close()
            log = wait_for_log(served, SESSIONS)
        closed = re.findall(r"closed: (run-\d+) is (\w+) \((\d+) run threads left", log)
        assert len({run for run, _, _ in closed}) == SESSIONS
        assert {state for _, state, _ in closed} <= {"finished", "stopped"}
        assert "0" in {left for _, _, left in closed}, closed  # at that moment, no run thread at all
        assert poller.failures == [] and len(poller.seconds) > SESSIONS, poller.failures
    finally:
        served.stop()


def wait_for_log(served, sessions: int, timeout: float = 300) -> str:
    """The server's log once it says that ``sessions`` closed sessions' runs have ended."""
    end = time.monotonic() + timeout
    while (log := served.log()).count("closed: run-") < sessions:
        assert time.monotonic() < end, f"{log.count('closed: run-')} of {sessions} runs ended:\n{log[-3000:]}"
        time.sleep(0.5)
    return log
