"""The dashboard's cost to training, and how fast it shows what happens, in a real browser.

One process, three measurements on the same model and settings:

1. **Throughput, headless**: a :class:`~pavi_viz.runner.TrainingRun` with the
   dashboard's default settings, no page; steps per second of wall-clock time over a
   window after a warm-up. Headless and watched windows alternate (``--rounds``), and
   the ratio compares their medians.
2. **Throughput, watched**: the same run started from the served app (the page
   ``pavi-viz serve`` serves, on its *Fit* tab; ``pn.serve(..., threaded=True)`` in
   this process, as ``panel serve`` would serve it) with one headless chromium tab
   watching; steps per second over the same window, read from the run. The ratio
   watched / headless is the dashboard's cost.
3. **The browser's load** while it watches: the CPU seconds its processes take per
   second of the window (the page's drawing), and the page's long tasks (those of
   50 ms or more, reported by the page's ``PerformanceObserver``): the share of the
   window when the page answers no click, and its longest freeze.
4. **Latency**: a new ELBO point's wall-clock time from its publication by the
   training thread (the hub record's ``time``) to its arrival in the page's data
   source (recorded in the page by a ``ColumnDataSource`` change listener,
   ``Date.now()`` on the same machine); and from a click on a forest element of a
   1,000-element plate to the detail plot's new title and data in the page.

Watched windows are measured for each poll period of ``--poll-ms`` (the dashboard's
default, :data:`~pavi_viz.ui.dashboard.POLL_PERIOD_MS`, unless given), in turn with the
headless windows.

Run ``python benchmarks/dashboard.py [--seconds 20] [--groups 1000] [--poll-ms 200 500] [--pin] [--out benchmarks/results]``;
writes ``dashboard.json`` (``dashboard_pinned.json`` with ``--pin``: this process on CPU 0,
the browser on CPU 1, as when the visitor's browser runs on their own machine) and
prints a summary. Needs chromium at /usr/bin/chromium
(``make system-deps``) and Playwright (the test extra).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import panel as pn
import psutil

from pavi_viz import examples
from pavi_viz.runner import Point, RunState, TrainingRun
from pavi_viz.ui.app import App
from pavi_viz.ui.dashboard import POLL_PERIOD_MS, Dashboard
from pavi_viz.ui.state import DEFAULT_CONFIG, DEFAULT_EXAMPLE, DEFAULT_OPTIONS, DashboardState

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]
ELBO_SOURCE = "pavi-elbo-source"
FOREST_SOURCE = "pavi-forest-means"

#: In the page: record (Date.now(), last step) each time the ELBO source changes.
LISTEN = """(name) => {
  window.arrivals = [];
  const source = Bokeh.documents[0].get_model_by_name(name);
  const record = () => { const s = source.data.step; if (s.length) window.arrivals.push([Date.now(), s[s.length - 1]]); };
  source.connect(source.streaming, record);
  source.connect(source.change, record);
}"""
#: In the page: record the duration of each long task (50 ms or more of the main thread).
OBSERVE_LONG_TASKS = """() => {
  window.longTasks = [];
  new PerformanceObserver((list) => { for (const e of list.getEntries()) window.longTasks.push(e.duration); })
    .observe({type: "longtask"});
}"""
#: In the page: the screen position of row i of the renderer drawing a named source.
POINT_AT = """([name, i]) => {
  const seen = new Set(), stack = [...(Bokeh.index instanceof Map ? Bokeh.index.values() : Object.values(Bokeh.index))];
  while (stack.length) {
    const v = stack.pop();
    if (!v || seen.has(v)) continue; seen.add(v);
    if (v.model && v.model.glyph && v.model.data_source && v.model.data_source.name === name) {
      const d = v.model.data_source.data, g = v.model.glyph;
      const box = v.plot_view.canvas_view.el.getBoundingClientRect();
      return [box.left + v.coordinates.x_scale.compute(d[g.x.field][i]),
              box.top + v.coordinates.y_scale.compute(d[g.y.field][i])];
    }
    for (const c of (v.children ? v.children() : [])) stack.push(c);
  }
  return null;
}"""
#: In the page: the detail view's title text (its heading sits in nested shadow roots).
TITLE = """
const findTitle = (root) => {
  const found = root.querySelector('.pavi-detail-title');
  if (found) return found;
  for (const el of root.querySelectorAll('*')) {
    if (el.shadowRoot) { const inner = findTitle(el.shadowRoot); if (inner) return inner; }
  }
  return null;
};
const title = () => {
  const pane = findTitle(document);
  const heading = pane && (pane.shadowRoot || pane).querySelector('h3');
  return heading ? heading.innerText : '';
};"""
CURRENT_TITLE = "() => {" + TITLE + " return title(); }"
#: In the page: wait for the detail title to change from ``before``; the ms since the
#: click's pointerdown (``window.clicked``).
WAIT_TITLE = "async (before) => {" + TITLE + """
  const start = performance.now();
  while (title() === before) {
    if (performance.now() - start > 10000) return null;  // the click missed
    await new Promise(r => requestAnimationFrame(r));
  }
  return performance.now() - window.clicked;
}"""


def pin_process(cpus: set[int]) -> None:
    """Run every thread of this process, and the threads they start later, on ``cpus``."""
    for task in os.listdir("/proc/self/task"):
        os.sched_setaffinity(int(task), cpus)


def steps_per_second(run: TrainingRun, warm_up: float, window: float) -> float:
    """Steps per wall-clock second of a running run, over ``window`` s after ``warm_up`` s."""
    time.sleep(warm_up)
    s0, t0 = run.progress.step, time.perf_counter()
    time.sleep(window)
    return (run.progress.step - s0) / (time.perf_counter() - t0)


def browser_cpu_seconds() -> float:
    """CPU seconds (user and system) taken so far by this process's chromium processes."""
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            if "chrom" in child.name():
                times = child.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:  # a renderer that ended meanwhile
            pass
    return total


def headless(model, seconds: float) -> float:
    run = TrainingRun(model, **{**DEFAULT_CONFIG, "steps": 1_000_000}).start()
    try:
        return steps_per_second(run, 3.0, seconds)
    finally:
        run.stop(wait=True)


def watched(
    model_factory, seconds: float, groups: int, browser_cpus: set[int] | None = None, clicks: bool = True,
    poll_ms: int = POLL_PERIOD_MS,
) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    dashboards: list[Dashboard] = []

    def app():
        state = DashboardState(model_factory())
        state.config.steps = 1_000_000
        dashboard = Dashboard(state, poll_period_ms=poll_ms)
        dashboards.append(dashboard)
        return App(dashboard).template()  # the page pavi-viz serve serves

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = pn.serve({"dashboard": app}, port=port, threaded=True, show=False, address="127.0.0.1",
                      websocket_origin=[f"localhost:{port}"])
    out: dict[str, Any] = {}
    try:
        python_cpus = os.sched_getaffinity(0)
        if browser_cpus is not None:  # the driver and the browser inherit the launching thread's CPUs
            os.sched_setaffinity(0, browser_cpus)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            os.sched_setaffinity(0, python_cpus)
            # Tall enough that the forest's rows are on screen, where a click lands.
            page = browser.new_page(viewport={"width": 1600, "height": 3000})
            page.goto(f"http://localhost:{port}/dashboard", wait_until="networkidle", timeout=60_000)
            page.wait_for_function(
                "(name) => window.Bokeh && Bokeh.documents.length && Bokeh.documents[0].get_model_by_name(name)",
                arg=ELBO_SOURCE, timeout=60_000,
            )
            page.evaluate(LISTEN, ELBO_SOURCE)
            page.get_by_role("button", name="Start", exact=True).click()
            time.sleep(3.0)  # past the run's start-up; the window sees its first summary drawn
            run = dashboards[-1].state.run
            page.evaluate(OBSERVE_LONG_TASKS)
            cpu = browser_cpu_seconds()
            out["steps_per_second"] = steps_per_second(run, 0.0, seconds)
            out["browser_cpu_share"] = (browser_cpu_seconds() - cpu) / seconds
            long_tasks = page.evaluate("() => window.longTasks")
            out["blocked_share"] = sum(long_tasks) / 1000 / seconds
            out["longest_freeze_s"] = max(long_tasks, default=0.0) / 1000
            arrivals = page.evaluate("() => window.arrivals")
            published = {r.step: r.time for r in run.hub.since(0).records if isinstance(r, Point)}
            out["point_latency"] = [at / 1000 - published[step] for at, step in arrivals if step in published]

            if clicks:
                out.update(click_latency(page, groups))
            browser.close()
        for dashboard in dashboards:
            dashboard.close()
        assert all(d.state.run is None or d.state.run.state in (RunState.STOPPED, RunState.FINISHED)
                   for d in dashboards)
    finally:
        server.stop()
    return out


def click_latency(page, groups: int, count: int = 15) -> dict[str, Any]:
    """Pause (the forest holds still), click ``count`` forest rows, time each redraw of
    the detail view in the page."""
    page.get_by_role("button", name="Pause", exact=True).click()
    # The paused run's summary drawn: the forest has its rows.
    page.wait_for_function("([name, n]) => { const s = Bokeh.documents[0].get_model_by_name(name); "
                           "return s && s.data.mean && s.data.mean.length >= n; }",
                           arg=[FOREST_SOURCE, 5 + count], timeout=60_000)
    page.wait_for_timeout(1000)
    page.evaluate("() => document.addEventListener('pointerdown', () => { window.clicked = performance.now(); }, true)")
    times = []
    for row in range(5, 5 + count):
        before = page.evaluate(CURRENT_TITLE)
        x, y = page.evaluate(POINT_AT, [FOREST_SOURCE, row])
        page.mouse.click(x, y)
        took = page.evaluate(WAIT_TITLE, before)
        if took is not None:
            times.append(took / 1000)
    return {"click_to_detail_s": _stats(times), "clicks_missed": count - len(times), "plate_elements": groups}


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "median": statistics.median(ordered) if ordered else float("nan"),
        "p90": ordered[int(0.9 * (len(ordered) - 1))] if ordered else float("nan"),
        "max": ordered[-1] if ordered else float("nan"),
    }


def watched_summary(windows: list[dict[str, Any]], headless_median: float) -> dict[str, Any]:
    """The watched windows of one poll period: their throughputs and its ratio to the
    headless median, the browser's load (medians; the longest freeze of all) and the
    ELBO points' latencies."""
    steps = [w["steps_per_second"] for w in windows]
    return {
        "steps_per_second": [round(x, 2) for x in steps],
        "throughput_ratio": statistics.median(steps) / headless_median,
        "browser_cpu_share": statistics.median(w["browser_cpu_share"] for w in windows),
        "blocked_share": statistics.median(w["blocked_share"] for w in windows),
        "longest_freeze_s": max(w["longest_freeze_s"] for w in windows),
        "point_latency_s": _stats([d for w in windows for d in w["point_latency"]]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window per throughput (s)")
    parser.add_argument("--groups", type=int, default=1000, help="G of the GRE model watched for click latency")
    parser.add_argument("--rounds", type=int, default=3, help="alternating headless / watched windows")
    parser.add_argument("--poll-ms", type=int, nargs="+", default=[POLL_PERIOD_MS],
                        help="the dashboard's poll periods to watch with (ms), each in turn")
    parser.add_argument("--pin", action="store_true",
                        help="run this process (server and training) on CPU 0 and the browser on CPU 1, as when "
                             "the browser runs on the visitor's machine; by default they share every CPU")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)

    # The dashboard's default model for throughput; the same family and settings both ways.
    model = examples.load(DEFAULT_EXAMPLE, **DEFAULT_OPTIONS)
    report: dict[str, Any] = {"model": f"{DEFAULT_EXAMPLE} {DEFAULT_OPTIONS}", "settings": DEFAULT_CONFIG,
                              "cpu_count": os.cpu_count(), "load_average_before": os.getloadavg()}
    browser_cpus = None
    if args.pin:
        pin_process({0})
        browser_cpus = {1}
    report["pinned"] = args.pin
    # Headless and watched windows alternate, so that a change of the machine's speed
    # (other work, a shared host) weighs on both alike; ratios compare medians.
    heads: list[float] = []
    watches: dict[int, list[dict[str, Any]]] = {ms: [] for ms in args.poll_ms}
    for _ in range(args.rounds):
        heads.append(headless(model, args.seconds))
        for ms in args.poll_ms:
            watches[ms].append(watched(lambda: examples.load(DEFAULT_EXAMPLE, **DEFAULT_OPTIONS), args.seconds,
                                       DEFAULT_OPTIONS["G"], browser_cpus, clicks=False, poll_ms=ms))
    report["headless_steps_per_second"] = [round(h, 2) for h in heads]
    report["watched"] = {str(ms): watched_summary(windows, statistics.median(heads)) for ms, windows in watches.items()}
    options = {**DEFAULT_OPTIONS, "G": args.groups}
    large = watched(lambda: examples.load(DEFAULT_EXAMPLE, **options), 5.0, args.groups, browser_cpus,
                    poll_ms=args.poll_ms[0])
    large.pop("point_latency")
    report["large_plate"] = large
    report["load_average_after"] = os.getloadavg()
    report["threads_alive_after"] = sorted(t.name for t in threading.enumerate() if t.name.startswith("pavi_viz "))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / ("dashboard_pinned.json" if args.pin else "dashboard.json")
    path.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    for ms, summary in report["watched"].items():
        print(f"poll every {ms} ms: throughput watched / headless {summary['throughput_ratio']:.2f}; browser CPU "
              f"{summary['browser_cpu_share']:.2f} s/s; page blocked {summary['blocked_share']:.0%} of the time, "
              f"longest freeze {summary['longest_freeze_s']:.2f} s; point latency median "
              f"{summary['point_latency_s']['median']:.3f} s (max {summary['point_latency_s']['max']:.3f})")
    print(f"click to detail on {args.groups} elements: "
          f"median {report['large_plate']['click_to_detail_s']['median'] * 1000:.0f} ms "
          f"(max {report['large_plate']['click_to_detail_s']['max'] * 1000:.0f}); wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
