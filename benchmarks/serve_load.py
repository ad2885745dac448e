"""A workshop's load on one ``pavi-viz serve``: how long the server keeps a client waiting.

Starts the real command (``pavi-viz serve --max-steps S --max-runs R``), opens
``--sessions`` headless chromium tabs one after another, each starting a run of ``S``
steps of the default model (runs beyond ``R`` wait their turn), keeps them open for
``--hold`` seconds, then closes them all. Meanwhile another client GETs a static file of
the server every 50 ms and times each answer: the server's event loop answers it
between two pieces of work, so its waits are the longest stretches the loop was busy
with something else (building a new session's page, applying a summary to a
session's views, a run's thread holding the interpreter lock).

The server runs with ``PYTHONASYNCIODEBUG=1``, so asyncio logs every callback of the
loop that took over 100 ms; they are counted by kind (page builds, websocket
messages, the sessions' callbacks) and summed.

Run ``python benchmarks/serve_load.py [--sessions 20] [--out benchmarks/results]``;
writes ``serve_load.json`` and ``serve_load.png`` (each answer's time against the time
it was asked, with the moments tabs opened). Needs chromium at /usr/bin/chromium
(``make system-deps``), Playwright (the test extra) and matplotlib (the bench extra).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]
#: asyncio's debug log line for a slow callback, and what ran.
SLOW = re.compile(r"Executing <(?:Task|Handle|TimerHandle)[^>]*?(?:coro=<(?P<coro>[\w.<>]+)\(\)|(?P<handle>[\w.<>]+)\()"
                  r".*? took (?P<seconds>[\d.]+) seconds")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(url: str, t0: float, stop: threading.Event, answers: list[tuple[float, float]], failures: list[str]) -> None:
    """GET ``url`` every 50 ms until ``stop``; (asked at, since ``t0``; seconds) of each answer."""
    while not stop.is_set():
        asked = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=120) as response:
                response.read()
        except OSError as err:
            failures.append(str(err))
        answers.append((asked - t0, time.monotonic() - asked))
        stop.wait(0.05)


def slow_callbacks(log: str) -> dict[str, dict[str, float]]:
    """The loop's callbacks over 100 ms, by what ran: how many, total and longest seconds."""
    kinds: dict[str, list[float]] = {}
    for match in SLOW.finditer(log):
        name = match["coro"] or match["handle"]
        kinds.setdefault(name, []).append(float(match["seconds"]))
    return {name: {"count": len(s), "total_s": round(sum(s), 2), "max_s": round(max(s), 2)}
            for name, s in sorted(kinds.items(), key=lambda kv: -sum(kv[1]))}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--steps", type=int, default=40, help="each run's steps (and the server's --max-steps)")
    parser.add_argument("--max-runs", type=int, default=1, help="the server's --max-runs")
    parser.add_argument("--hold", type=float, default=20.0, help="seconds all tabs stay open")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    from playwright.sync_api import expect, sync_playwright

    port = free_port()
    root = Path(__file__).resolve().parents[1]
    log_path = Path(tempfile.gettempdir()) / "pavi_viz-serve_load-server.log"
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONASYNCIODEBUG": "1"}
    command = [sys.executable, "-m", "pavi_viz", "serve", "--port", str(port),
               "--max-steps", str(args.steps), "--max-runs", str(args.max_runs)]
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, cwd=root, stdout=log, stderr=subprocess.STDOUT, env=env)
    static = f"http://localhost:{port}/static/js/bokeh.min.js"
    start = time.monotonic()
    while True:
        try:
            urllib.request.urlopen(static, timeout=5).read()
            break
        except OSError:
            if time.monotonic() - start > 120 or server.poll() is not None:
                raise SystemExit(f"the server did not answer:\n{log_path.read_text()}")
            time.sleep(0.5)

    answers: list[tuple[float, float]] = []
    failures: list[str] = []
    stop = threading.Event()
    t0 = time.monotonic()
    poller = threading.Thread(target=poll, args=(static, t0, stop, answers, failures), daemon=True)
    poller.start()
    opened: list[tuple[float, float]] = []  # (opened at, seconds until its run had started)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            contexts = []
            for i in range(args.sessions):
                asked = time.monotonic()
                context = browser.new_context(viewport={"width": 1600, "height": 1000})
                page = context.new_page()
                page.goto(f"http://localhost:{port}/dashboard", wait_until="networkidle", timeout=300_000)
                steps = page.locator(".pavi-setting-steps input")
                steps.fill(str(args.steps))
                steps.press("Enter")
                page.get_by_role("button", name="Start", exact=True).click()
                expect(page.get_by_text("Run:").first).to_contain_text(
                    re.compile("queued|running|finished"), timeout=300_000)
                opened.append((asked - t0, time.monotonic() - asked))
                print(f"session {i + 1}: open and started in {opened[-1][1]:.1f} s", flush=True)
                contexts.append(context)
            time.sleep(args.hold)  # a measurement window with every tab open (not a test's wait)
            closed_at = time.monotonic() - t0
            for context in contexts:
                context.close()
            browser.close()
        deadline = time.monotonic() + 300
        while log_path.read_text().count(" run threads left") < args.sessions and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        stop.set()
        poller.join()
        server.terminate()
        server.wait(30)
    log = log_path.read_text()
    ended = re.findall(r"closed: (run-\d+) is (\w+) \((\d+) run threads left", log)
    waits = [seconds for _, seconds in answers]
    report = {
        "command": " ".join(["python", "benchmarks/serve_load.py", *(argv if argv is not None else sys.argv[1:])]),
        "server": " ".join(command[1:]),
        "server_log": str(log_path),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "sessions": args.sessions,
        "requests": len(waits),
        "failed_requests": len(failures),
        "answer_s": {"median": round(statistics.median(waits), 3),
                     "p95": round(sorted(waits)[int(0.95 * (len(waits) - 1))], 3),
                     "max": round(max(waits), 3),
                     "over_2_s": sum(w > 2 for w in waits)},
        "session_open_and_start_s": {"median": round(statistics.median(s for _, s in opened), 1),
                                      "max": round(max(s for _, s in opened), 1)},
        "runs_ended": len({run for run, _, _ in ended}),
        "run_states": sorted({state for _, state, _ in ended}),
        "run_threads_left_at_the_end": min((int(left) for _, _, left in ended), default=None),
        "slow_loop_callbacks": slow_callbacks(log),
        "answers": [(round(a, 2), round(s, 3)) for a, s in answers],
        "opened": opened,
        "closed_at": closed_at,
    }
    (args.out / "serve_load.json").write_text(json.dumps(report, indent=1))
    plot(report, args.out / "serve_load.png")
    print(json.dumps({k: v for k, v in report.items() if k not in ("answers", "opened")}, indent=1))
    return report


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    asked, seconds = zip(*report["answers"], strict=True)
    ax.plot(asked, seconds, ".", markersize=3, label="a static file's GET: seconds to answer")
    for i, (at, _) in enumerate(report["opened"]):
        ax.axvline(at, color="grey", lw=0.5, label="a tab opens and starts a run" if i == 0 else None)
    ax.axvline(report["closed_at"], color="red", lw=1, label="every tab closes")
    ax.axhline(2.0, color="orange", ls="--", lw=1, label="2 s")
    ax.set(xlabel="seconds since the first tab", ylabel="answer (s)",
           title=f"{report['sessions']} sessions on `{report['server']}` ({report['cpus']} CPUs)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
