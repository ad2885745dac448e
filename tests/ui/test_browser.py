"""The served dashboard in a real headless browser: what a visitor sees and does.

Everything is read from the page (the Bokeh models in the browser, the text of the
panes), never from the server's Python objects. Screenshots of each step go to
``tests/artifacts/ui/``.
"""

from __future__ import annotations

import re
import sys
import time

import pytest

from pavi_viz.ui.views.steady_styles import INSTALLED

pytestmark = [pytest.mark.ui, pytest.mark.timeout(240)]

ELBO = "pavi-elbo-source"
FOREST = "pavi-forest-means"
DENSITY = "pavi-density"
NODES = "pavi-diagram-nodes"
SELECTED = "pavi-diagram-selected"


def run_status(page) -> list[str]:
    """The controls' run line, "Run: **running** · parameters: 40,632 · run-3", in parts."""
    text = page.page.get_by_text("Run:").first.inner_text()
    return [part.strip() for part in text.split("Run:")[1].splitlines()[0].split("·")]


def run_state(page) -> str:
    return run_status(page)[0]


def wait_state(page, state: str, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while run_state(page) != state:
        assert time.monotonic() < end, f"the page shows {run_state(page)!r}, not {state!r}"
        time.sleep(0.1)


def test_the_page_loads_offline_without_errors(dashboard_server, open_page):
    outside: list[str] = []
    page = open_page(dashboard_server.url)
    page.page.on("request", lambda r: outside.append(r.url) if "localhost" not in r.url else None)
    page.page.reload(wait_until="networkidle")
    page.page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0", timeout=60_000)
    assert page.page.title() == "pavi_viz"
    page.wait_shown_column(NODES, "name", ["mu", "mu_g", "x"])  # the default model's diagram
    assert run_state(page) == "idle"
    page.shot("loaded")
    assert page.errors == []
    assert outside == []  # nothing fetched from the network: the app works offline


def test_start_streams_the_elbo_and_stop_ends_the_run(dashboard_server, open_page):
    page = open_page(dashboard_server.url)
    assert page.rows(ELBO) == 0
    page.press("Start")
    first = page.wait_rows(ELBO, 1)
    page.shot("started")
    later = page.wait_rows(ELBO, first + 1, timeout=120)  # the plot gains points while training goes on
    assert later > first
    page.press("Stop")
    wait_state(page, "stopped")
    # The poll that reads "stopped" may also stream the run's last points, in a message
    # of its own that the page applies a moment after the state's text.
    time.sleep(0.5)
    stopped = page.rows(ELBO)
    time.sleep(1.5)
    assert page.rows(ELBO) == stopped  # no more points once stopped
    page.shot("stopped")
    assert page.errors == []


#: In the page: count the ELBO source's streams (one per poll that brought points).
COUNT_STREAMS = """(name) => {
  window.streams = 0;
  const source = Bokeh.documents[0].get_model_by_name(name);
  source.connect(source.streaming, () => { window.streams += 1; });
}"""


def test_each_poll_of_a_live_fit_reaches_the_page_as_one_patch(dashboard_server, open_page):
    # A poll changes the ELBO's two sources and its range guide, the progress bar and
    # its text: sent one by one, each is a message, a task and a layout or a repaint.
    page = open_page(dashboard_server.url)
    page.page.evaluate(COUNT_STREAMS, ELBO)
    page.press("Start")
    page.page.wait_for_function("() => window.streams >= 3", timeout=120_000)
    patches, streams = page.patches, page.page.evaluate("() => window.streams")
    page.page.wait_for_function("(n) => window.streams >= n", arg=streams + 15, timeout=120_000)
    patches, streams = page.patches - patches, page.page.evaluate("() => window.streams") - streams
    page.press("Stop")
    wait_state(page, "stopped")
    # Besides one patch a poll: a poll that brought a summary but no point, the Stop's.
    assert patches <= streams + 3, f"{patches} patches for {streams} polls that streamed points"
    assert page.errors == []


def test_a_stylesheet_rewritten_with_the_text_it_holds_is_left_alone(dashboard_server, open_page):
    # BokehJS rewrites each renderer's position stylesheet at every paint; each rewrite
    # makes the browser recompute the page's styles at BokehJS's next colour lookup.
    page = open_page(dashboard_server.url)
    page.page.wait_for_function(INSTALLED, timeout=60_000)
    mutations = page.page.evaluate("""() => {
      const sheet = new (Bokeh.require("core/dom").InlineStyleSheet)(":host { width: 10px; }");
      const observer = new MutationObserver(() => {});
      observer.observe(sheet.el, {childList: true, characterData: true, subtree: true});
      sheet.replace(":host { width: 10px; }");
      const unchanged = observer.takeRecords().length;
      sheet.replace(":host { width: 20px; }");
      return [unchanged, observer.takeRecords().length > 0, sheet.css];
    }""")
    assert mutations == [0, True, ":host { width: 20px; }"]


def test_clicking_a_plate_element_updates_the_detail_plot(dashboard_server, open_page):
    page = open_page(dashboard_server.url)
    page.press("Start")
    page.wait_rows(FOREST, 10)  # the first posterior summary arrived: the forest has rows
    title = page.page.locator(".pavi-detail-title h3").first
    before = title.inner_text()
    assert "select" in before  # nothing selected yet
    page.press("Pause")  # hold the summary still while clicking
    wait_state(page, "paused")
    x, y = page.point_at(FOREST, 7)
    page.page.mouse.click(x, y)
    end = time.monotonic() + 10
    while title.inner_text() == before:
        assert time.monotonic() < end, "the detail plot's title did not change after the click"
        time.sleep(0.05)
    assert "mu_g" in title.inner_text() and "group 7" in title.inner_text()
    page.wait_rows(DENSITY, 1, timeout=10)  # the element's density is drawn
    page.shot("element-7")
    page.press("Stop")
    wait_state(page, "stopped")
    assert page.errors == []


def test_clicking_a_variable_in_the_diagram_selects_it_and_moves_the_ring(dashboard_server, open_page):
    page = open_page(dashboard_server.url)
    page.wait_shown_column(NODES, "name", ["mu", "mu_g", "x"])
    page.press("Start")
    page.wait_rows(FOREST, 10)  # a posterior summary arrived: the detail view has densities to draw
    page.press("Pause")
    wait_state(page, "paused")
    title = page.page.locator(".pavi-detail-title h3").first
    logged = len(dashboard_server.log())
    for i, name in [(0, "mu"), (2, "x"), (1, "mu_g"), (0, "mu")]:
        x, y = page.point_at(NODES, i)
        page.page.mouse.click(x, y)
        page.wait_shown_column(SELECTED, "x", page.shown_column(NODES, "x")[i : i + 1], timeout=10)
        end = time.monotonic() + 10
        while not re.match(rf"{name}\b", title.inner_text()):  # "mu", "x: select an element of group, obs"
            assert time.monotonic() < end, f"the detail title shows {title.inner_text()!r} after a click on {name}"
            time.sleep(0.05)
    page.wait_rows(DENSITY, 1, timeout=10)  # mu's density
    page.shot("diagram-selected")
    page.press("Stop")
    wait_state(page, "stopped")
    assert page.errors == []
    assert "Traceback" not in dashboard_server.log()[logged:]  # no error on the server either


def test_two_sessions_train_their_own_runs(dashboard_server, open_page):
    first = open_page(dashboard_server.url, "first")
    second = open_page(dashboard_server.url, "second")
    first.press("Start")
    first.wait_rows(ELBO, 20)
    assert second.rows(ELBO) == 0 and run_state(second) == "idle"  # the other session sees nothing
    second.press("Start")
    second.wait_rows(ELBO, 5)
    first.press("Stop")
    wait_state(first, "stopped")
    going = second.rows(ELBO)
    # Stopping one leaves the other going (its points keep coming: waited for, since a
    # posterior summary between two points can take seconds on a busy machine).
    second.wait_rows(ELBO, going + 1, timeout=120)
    assert run_state(second) == "running"
    first.shot("stopped")
    second.shot("running")
    second.press("Stop")
    wait_state(second, "stopped")
    assert first.errors == [] and second.errors == []


def test_closing_a_tab_stops_its_run(dashboard_server, open_page):
    page = open_page(dashboard_server.url)
    page.press("Start")
    page.wait_rows(ELBO, 5)
    name = run_status(page)[-1]
    assert name.startswith("run-")
    page.close()  # the tab goes: its session ends, and with it the run
    end = time.monotonic() + 30
    while f"closed: {name} is stopped" not in dashboard_server.log():
        assert time.monotonic() < end, f"no sign in the server's log that {name} stopped:\n{dashboard_server.log()[-2000:]}"
        time.sleep(0.2)


def test_pavi_viz_serve_opens_in_a_browser_at_the_address_it_prints(launch_server, open_page, artifacts_dir):
    """What `make app` runs: loopback only, signed session ids, the local origins allowed."""
    served = launch_server(lambda port: [sys.executable, "-m", "pavi_viz", "serve", "--port", str(port)],
                           artifacts_dir / "pavi-viz-serve-browser.log")
    try:
        # The address it prints; localhost, the README's, is Bokeh's default origin.
        page = open_page(f"http://127.0.0.1:{served.port}/dashboard")
        page.page.get_by_role("button", name="Start", exact=True).wait_for(timeout=60_000)
        assert page.errors == [], page.errors
    finally:
        served.stop()

