"""What a workshop room gets from one ``pavi-viz serve``: how soon a page is drawn, and
how many steps a second each session's run trains when several train at once.

With the real command and real headless chromium tabs, one fresh server per setting:

1. **Time to the drawn page**: for each tab, from navigation start to the moment the
   plate diagram's nodes are drawn (their Bokeh view has finished painting, read with
   the UI tests' ``FIND_VIEWS``), and the browser's own ``first-contentful-paint``.
   Every tab opens before any run starts: the first is the first session of a fresh
   server, the others are later ones.
2. **Steps per second per session**: every tab then sets Steps to :data:`RUN_STEPS`
   and Schedule to :data:`RUN_SCHEDULE` and presses Start on the default model; once
   every running session has trained :data:`WARM_STEPS` steps, each one's last step is
   read from its page's ELBO source every :data:`SAMPLE_EVERY` s over a ``--window`` of
   wall-clock seconds, and its rate is the slope of those readings against time. With
   ``--max-runs`` high enough that all train at once, for each count of ``--sessions``
   and each ``--num-procs`` of ``--procs``; then with the default ``--max-runs``,
   where runs queue (those are counted).
3. **The notebook view's build time**: in a fresh process, ``Dashboard()`` and the
   Bokeh document of its ``__panel__()`` (``get_root``): the server-side part of
   showing the widget in a notebook, the first time and later ones.

Run ``python benchmarks/sessions.py [--sessions 1 3 10] [--procs 1 2] [--window 12]
[--out benchmarks/results/sessions]``; writes ``sessions.json`` and ``sessions.png``.
Needs chromium at /usr/bin/chromium (``make system-deps``), Playwright (the test extra)
and matplotlib (the bench extra).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).resolve().parent), str(ROOT)]  # harness, and the UI tests' helpers
from harness import emit, launch, load_average, machine_info, write_report  # noqa: E402
from serve_load import CHROMIUM, FLAGS, free_port  # noqa: E402

#: Versions recorded with the machine.
PACKAGES = ("torch", "panel", "bokeh", "holoviews", "playwright")
#: Each session's Steps: more than any session trains here, so that no run ends inside
#: a window.
RUN_STEPS = 1_000_000
#: Each session's Schedule: not the default ``plateau``, which ends a run once converged
#: (4,750 steps of the default model): runs would end, and queued ones start, inside
#: the measurement. A step costs the same.
RUN_SCHEDULE = "cosine"
#: Steps every running session trains before its window opens: the first steps pay
#: for torch's first-use costs.
WARM_STEPS = 20
#: Seconds between two readings of every page's progress in a window.
SAMPLE_EVERY = 1.0
#: /proc's unit of CPU time, per second.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: Seconds the harness gives the notebook measurement's process.
NOTEBOOK_TIMEOUT = 300
#: Seconds to wait for a server, a page or a run before giving up.
PATIENCE = 300
#: In the page, after the UI tests' ``FIND_VIEWS``: the ms since navigation start once
#: the named renderer is drawn (false before).
DRAWN = """
  if (!window.Bokeh || !Bokeh.index) return false;
  const views = findViews(name);
  return views.length > 0 && views.every(v => v.plot_view.has_finished()) && performance.now();
}"""
#: In the page: the browser's first-contentful-paint, in ms since navigation start.
FIRST_CONTENTFUL_PAINT = """() => {
  const entry = performance.getEntriesByType('paint').find(e => e.name === 'first-contentful-paint');
  return entry ? entry.startTime : null;
}"""
#: In the page: [Date.now(), the last step of the named ELBO source] (step 0 before any).
LAST_STEP = """(name) => {
  const source = Bokeh.documents[0].get_model_by_name(name);
  const steps = source ? source.data.step : [];
  return [Date.now(), steps.length ? steps[steps.length - 1] : 0];
}"""
#: What the numbers do not say, written into the JSON.
NOTES = [
    "The notebook view's build time is the server-side part of showing the dashboard in a notebook "
    "(Dashboard() and get_root into a Bokeh document) measured in a plain Python process: JupyterLab "
    "is not installed here, so the front end's share is not measured.",
    "The browser's tabs run on the same CPUs as the server: in a room each student's browser runs on "
    "their own machine, so these steps per second are a lower bound.",
    "With --num-procs N each process gets max(1, --max-runs // N) run slots; a session is served by "
    "whichever process accepts its websocket, so sessions need not spread evenly.",
    "With --num-procs 2 a page is often built by one process and its websocket accepted by the other, "
    "which builds the session again (two page builds for one tab), and whose page then asks "
    "cdn.holoviz.org for Panel's stylesheets (failing offline; see tests/test_cli.py's xfail).",
    "This machine is shared with other work: the load average after each setting is recorded with it, "
    "and the CPUs the server and the browser used in each window (cpus_used_in_window).",
]


# -- the server ---------------------------------------------------------------------------
def serve(procs: int, max_runs: int | None, log_path: Path) -> tuple[subprocess.Popen, str, list[str]]:
    """Start ``pavi-viz serve`` and wait until every process has built its warm-up page;
    the process, the dashboard's URL and the command."""
    port = free_port()
    command = [sys.executable, "-m", "pavi_viz", "serve", "--port", str(port), "--num-procs", str(procs)]
    command += [] if max_runs is None else ["--max-runs", str(max_runs)]
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    static = f"http://localhost:{port}/static/js/bokeh.min.js"  # a file: asking for it builds no page
    deadline = time.monotonic() + PATIENCE
    while not (answers(static) and log_path.read_text().count("warmed up:") >= procs):
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise SystemExit(f"the server did not start:\n{log_path.read_text()}")
        time.sleep(0.2)
    return server, f"http://localhost:{port}/dashboard", command


def answers(url: str) -> bool:
    """Whether ``GET url`` answers."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
        return True
    except OSError:
        return False


def stop(server: subprocess.Popen) -> None:
    """Stop the server (SIGTERM: ``pavi-viz serve`` passes it to all its processes)."""
    server.terminate()
    server.wait(60)


def cpu_seconds(root: int, leave_out: int | None = None) -> float:
    """CPU seconds (user and system) used so far by process ``root`` and the processes
    below it, those below ``leave_out`` (and it) left out; from /proc."""
    children: dict[int, list[int]] = {}
    used: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (command)": state, ppid...
        except OSError:  # a process that has just ended
            continue
        pid = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(pid)
        used[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        if pid != leave_out:
            total += used.get(pid, 0.0)
            stack += children.get(pid, [])
    return total


# -- the pages ----------------------------------------------------------------------------
def open_tab(browser: Any, url: str) -> tuple[Any, dict[str, float | None]]:
    """A new tab (its own context: its own session) at ``url``; the tab and the seconds
    from navigation start to the diagram drawn and to the first contentful paint."""
    from pavi_viz.ui.views.diagram import NODES_NAME
    from tests.ui.conftest import FIND_VIEWS

    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.goto(url, wait_until="commit", timeout=PATIENCE * 1000)
    drawn = page.wait_for_function("(name) => {" + FIND_VIEWS + DRAWN, arg=NODES_NAME, polling="raf",
                                   timeout=PATIENCE * 1000).json_value()
    contentful = page.evaluate(FIRST_CONTENTFUL_PAINT)
    return page, {"drawn_s": drawn / 1000, "first_contentful_paint_s": None if contentful is None else contentful / 1000}


def start_runs(pages: Sequence[Any]) -> list[str]:
    """Set Steps to :data:`RUN_STEPS` and Schedule to :data:`RUN_SCHEDULE` in every page,
    press Start in each, one right after the other; each run's state once settled:
    ``running`` once it has trained :data:`WARM_STEPS` steps, or ``queued``."""
    for page in pages:  # the websocket keeps the order: each Start comes after its settings
        steps = page.locator(".pavi-setting-steps input")
        steps.fill(str(RUN_STEPS))
        steps.press("Enter")
        page.locator(".pavi-setting-schedule select").select_option(RUN_SCHEDULE)
    for page in pages:
        page.get_by_role("button", name="Start", exact=True).click()
    return [settled_state(page) for page in pages]


def settled_state(page: Any) -> str:
    """``running`` once the page's run has trained :data:`WARM_STEPS` steps, ``queued``
    once it says so. (A run waiting for a slot reads ``running`` for a moment first.)"""
    status = page.get_by_text("Run:").first
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        if last_step(page)[1] >= WARM_STEPS:
            return "running"
        if "queued" in status.inner_text():
            return "queued"
        time.sleep(0.2)
    raise TimeoutError(f"a run neither trained {WARM_STEPS} steps nor queued in {PATIENCE} s")


def last_step(page: Any) -> tuple[float, int]:
    """The page's clock (s) and its ELBO source's last step."""
    from pavi_viz.ui.views.elbo import SOURCE_NAME

    now, step = page.evaluate(LAST_STEP, SOURCE_NAME)
    return now / 1000, step


def steps_per_second(pages: Sequence[Any], window: float) -> list[float]:
    """Each page's steps per wall-clock second over ``window`` seconds: the slope of its
    ELBO source's last step against time, read every :data:`SAMPLE_EVERY` s. A busy
    server streams the points in bursts seconds apart; the slope over many readings
    spans them, where the difference of two readings would not."""
    readings: list[list[tuple[float, int]]] = [[] for _ in pages]
    end = time.monotonic() + window
    while time.monotonic() < end:
        for page, mine in zip(pages, readings, strict=True):
            mine.append(last_step(page))
        time.sleep(SAMPLE_EVERY)  # the sampling period of the measurement
    return [statistics.linear_regression(*zip(*mine)).slope for mine in readings]


# -- one setting --------------------------------------------------------------------------
def measure(browser: Any, procs: int, max_runs: int | None, sessions: int, window: float,
            log_path: Path) -> dict[str, Any]:
    """One fresh server, ``sessions`` tabs opened one by one, then a run started in each:
    the tabs' draw times, the runs' states and the running ones' steps per second."""
    server, url, command = serve(procs, max_runs, log_path)
    pages: list[Any] = []
    paints = []
    try:
        for _ in range(sessions):
            page, paint = open_tab(browser, url)
            pages.append(page)
            paints.append(paint)
            print(f"  tab {len(pages)}: drawn in {paint['drawn_s']:.2f} s", flush=True)
        training = train(pages, window, server.pid)
    finally:
        for page in pages:
            page.context.close()
        stop(server)
    print(f"  {training['running']} running, {training['queued']} queued: {training['steps_per_second']} steps/s",
          flush=True)
    return {"server": " ".join(command[1:]), "num_procs": procs, "max_runs": max_runs, "sessions": sessions,
            "paint": paints, **training, "server_log": str(log_path),
            "load_average_after": load_average()}  # the machine is shared: other work slows the runs


def train(pages: Sequence[Any], window: float, server: int) -> dict[str, Any]:
    """Start a run in every page; the runs' states, the running ones' steps per second
    over ``window`` seconds, and the CPUs used meanwhile (CPU seconds per second)."""
    pressed = time.perf_counter()
    states = start_runs(pages)
    started = time.perf_counter() - pressed
    running = [page for page, state in zip(pages, states, strict=True) if state == "running"]
    cpu_before, began = cpu_split(server), time.perf_counter()
    rates = steps_per_second(running, window)
    elapsed = time.perf_counter() - began
    return {
        "running": len(running), "queued": states.count("queued"),
        "start_all_s": round(started, 1),  # from the first Start pressed to every run trained or queued
        "steps_per_second": [round(rate, 1) for rate in rates],
        "steps_per_second_mean": round(statistics.mean(rates), 1),
        "steps_per_second_total": round(sum(rates), 1),
        "cpus_used_in_window": {side: round((used - cpu_before[side]) / elapsed, 2)
                                for side, used in cpu_split(server).items()},
    }


def cpu_split(server: int) -> dict[str, float]:
    """CPU seconds used so far by the server's processes, and by this process with the
    browser it drives (its other children)."""
    return {"server": cpu_seconds(server), "browser_and_this_driver": cpu_seconds(os.getpid(), leave_out=server)}


# -- the notebook view --------------------------------------------------------------------
def notebook_build(repeats: int) -> dict[str, Any]:
    """Seconds to import the dashboard, then for each of ``repeats`` dashboards: to make
    it (``Dashboard()``) and to build its view into a Bokeh document (``get_root``)."""
    began = time.perf_counter()
    import panel as pn
    from bokeh.document import Document

    from pavi_viz.ui.dashboard import Dashboard

    pn.extension()  # a notebook's first cell
    imported = time.perf_counter() - began
    builds = []
    for _ in range(repeats):
        began = time.perf_counter()
        dashboard = Dashboard()
        made = time.perf_counter()
        dashboard.__panel__().get_root(Document())
        builds.append({"dashboard_s": made - began, "get_root_s": time.perf_counter() - made,
                       "total_s": time.perf_counter() - began})
        dashboard.close()
    return {"import_s": imported, "builds": builds}


# -- the report ---------------------------------------------------------------------------
def paint_summary(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per ``--num-procs``: the medians of the first tab's times on each fresh server, and
    of every later tab's."""
    summary: dict[str, dict[str, Any]] = {}
    for procs in sorted({r["num_procs"] for r in results}):
        mine = [r["paint"] for r in results if r["num_procs"] == procs]
        groups = {"first": [tabs[0] for tabs in mine], "later": [tab for tabs in mine for tab in tabs[1:]]}
        summary[str(procs)] = {f"{which}_tabs": len(tabs) for which, tabs in groups.items()}
        for which, tabs in groups.items():
            for key in ("drawn_s", "first_contentful_paint_s"):
                values = [tab[key] for tab in tabs if tab[key] is not None]
                summary[str(procs)][f"{which}_{key}_median"] = round(statistics.median(values), 2) if values else None
    return summary


def plot(report: dict[str, Any], path: Path) -> None:
    """Steps per second per session and in all against the sessions, one line per
    ``--num-procs``; and the time to the drawn page, first and later tabs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (per_session, total, paint) = plt.subplots(1, 3, figsize=(14, 4))
    for procs in report["settings"]["procs"]:
        mine = [r for r in report["all_train"] if r["num_procs"] == procs]
        counts = [r["sessions"] for r in mine]
        low = [min(r["steps_per_second"]) for r in mine]
        high = [max(r["steps_per_second"]) for r in mine]
        per_session.plot(counts, [r["steps_per_second_mean"] for r in mine], "o-", label=f"--num-procs {procs}")
        per_session.fill_between(counts, low, high, alpha=0.2)
        (line,) = total.plot(counts, [r["steps_per_second_total"] for r in mine], "o-", label=f"--num-procs {procs}")
        for queue in (r for r in report["queue"] if r["num_procs"] == procs):
            total.plot([queue["sessions"]], [queue["steps_per_second_total"]], "x", color=line.get_color(),
                       label=f"--num-procs {procs}, default --max-runs: {queue['running']} train, "
                             f"{queue['queued']} queued")
    counts = sorted({r["sessions"] for r in report["all_train"] + report["queue"]})
    for ax, title, ylabel in ((per_session, "each session", "steps/s per session (mean, min-max)"),
                              (total, "the server", "steps/s, all sessions")):
        ax.set(xlabel="sessions open", ylabel=ylabel, xscale="log", title=title)
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.legend(fontsize=7)
    labels, values = [], []
    for procs, times in report["paint"].items():
        for which in ("first", "later"):
            if times.get(f"{which}_drawn_s_median") is not None:
                labels.append(f"{which}\n{procs} proc")
                values.append(times[f"{which}_drawn_s_median"])
    paint.bar(labels, values)
    paint.set(ylabel="s from navigation to the drawn diagram (median)", title="a tab's page")
    fig.suptitle(f"pavi-viz serve, default model, {report['machine']['affinity_cpus']} CPUs (browser included)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 3, 10],
                        help="counts of sessions training at once (--max-runs as many)")
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="the servers' --num-procs")
    parser.add_argument("--queued-sessions", type=int, default=10,
                        help="sessions on a server with the default --max-runs, where runs queue (0: none)")
    parser.add_argument("--window", type=float, default=12.0, help="seconds of each steps-per-second window")
    parser.add_argument("--notebook-repeats", type=int, default=3, help="notebook views built in a row")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sessions")
    parser.add_argument("--single", default=None, help=argparse.SUPPRESS)  # the notebook measurement's process
    args = parser.parse_args(argv)
    if args.single is not None:
        emit(notebook_build(**json.loads(args.single)))
        return None
    from playwright.sync_api import sync_playwright

    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="pavi_viz-sessions-"))
    report: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/sessions.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(PACKAGES), "notes": NOTES,
        "settings": {**{k: v for k, v in vars(args).items() if k != "single"}, "out": str(args.out),
                     "run_steps": RUN_STEPS, "run_schedule": RUN_SCHEDULE, "warm_steps": WARM_STEPS,
                     "sample_every_s": SAMPLE_EVERY, "model": "the dashboard's default"},
    }
    print("notebook view", flush=True)
    report["notebook"] = launch(__file__, {"repeats": args.notebook_repeats}, NOTEBOOK_TIMEOUT)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        report["all_train"], report["queue"] = [], []
        for procs in args.procs:
            for sessions in args.sessions:
                print(f"--num-procs {procs}, {sessions} sessions, --max-runs {sessions * procs}", flush=True)
                log = logs / f"procs{procs}-sessions{sessions}.log"
                # Slots for every session in each process: the sessions need not spread evenly.
                report["all_train"].append(measure(browser, procs, sessions * procs, sessions, args.window, log))
            if args.queued_sessions:
                print(f"--num-procs {procs}, {args.queued_sessions} sessions, the default --max-runs", flush=True)
                log = logs / f"procs{procs}-queued.log"
                report["queue"].append(measure(browser, procs, None, args.queued_sessions, args.window, log))
        browser.close()
    report["paint"] = paint_summary(report["all_train"] + report["queue"])
    write_report(report, args.out / "sessions.json", started)
    plot(report, args.out / "sessions.png")
    print(json.dumps({k: report[k] for k in ("notebook", "paint")}, indent=1))
    return report


if __name__ == "__main__":
    main()
