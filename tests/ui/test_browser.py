"""The served dashboard in a real headless browser: what a visitor sees and does.

Everything is read from the page (the Bokeh models in the browser, the text of the
panes), never from the server's Python objects. Screenshots of each step go to
``tests/artifacts/ui/``.
"""

from __future__ import annotations

import time

import pytest

pytestmark = [pytest.mark.ui, pytest.mark.timeout(240)]

#: A JS helper: the Bokeh views (in every root of the page) of the renderer whose model
#: or whose data source carries ``name``.
FIND_VIEWS = """
const findViews = (name) => {
  const found = [], seen = new Set(), stack = [];
  const index = Bokeh.index;
  stack.push(...(index instanceof Map ? index.values() : Object.values(index)));
  while (stack.length) {
    const view = stack.pop();
    if (!view || seen.has(view)) continue;
    seen.add(view);
    const model = view.model;
    if (model && (model.name === name || (model.data_source && model.data_source.name === name))) found.push(view);
    for (const child of (view.children ? view.children() : [])) stack.push(child);
  }
  return found;
};
"""
#: The number of rows of a named data source, or of a named renderer's (0 while there is none).
ROWS = "(name) => { const m = Bokeh.documents[0].get_model_by_name(name);" \
       " if (!m) return 0; const d = (m.data_source || m).data; const k = Object.keys(d)[0];" \
       " return k ? d[k].length : 0; }"
#: The page coordinates of row ``i`` of a renderer's glyph (its data source named ``name``).
POINT_AT = "([name, i]) => {" + FIND_VIEWS + """
  const view = findViews(name).find(v => v.model.glyph);
  const data = view.model.data_source.data, glyph = view.model.glyph;
  const sx = view.coordinates.x_scale.compute(data[glyph.x.field][i]);
  const sy = view.coordinates.y_scale.compute(data[glyph.y.field][i]);
  const box = view.plot_view.canvas_view.el.getBoundingClientRect();
  return [box.left + sx, box.top + sy];
}"""
ELBO = "pavi-elbo-source"
FOREST = "pavi-forest-means"
DENSITY = "pavi-density"
NODES = "pavi-diagram-nodes"


def rows(page, name: str) -> int:
    return page.page.evaluate(ROWS, name)


def wait_rows(page, name: str, at_least: int, timeout: float = 60) -> int:
    """Wait until the data source has ``at_least`` rows; how many it has then."""
    page.page.wait_for_function(f"(n) => ({ROWS})('{name}') >= n", arg=at_least, timeout=timeout * 1000,
                                polling=100)
    return rows(page, name)


def press(page, label: str) -> None:
    page.page.get_by_role("button", name=label, exact=True).click()


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
    assert rows(page, NODES) == 3  # the default model's diagram: mu, mu_g, x
    assert run_state(page) == "idle"
    page.shot("loaded")
    assert page.errors == []
    assert outside == []  # nothing fetched from the network: the app works offline


def test_start_streams_the_elbo_and_stop_ends_the_run(dashboard_server, open_page):
    page = open_page(dashboard_server.url)
    assert rows(page, ELBO) == 0
    press(page, "Start")
    first = wait_rows(page, ELBO, 1)
    page.shot("started")
    time.sleep(2)
    later = rows(page, ELBO)
    assert later > first  # the plot gains points while training goes on
    press(page, "Stop")
    wait_state(page, "stopped")
    stopped = rows(page, ELBO)
    time.sleep(1.5)
    assert rows(page, ELBO) == stopped  # no more points once stopped
    page.shot("stopped")
    assert page.errors == []


def test_clicking_a_plate_element_updates_the_detail_plot(dashboard_server, open_page):
    page = open_page(dashboard_server.url)
    press(page, "Start")
    wait_rows(page, FOREST, 10)  # the first posterior summary arrived: the forest has rows
    title = page.page.locator(".pavi-detail-title h3").first
    before = title.inner_text()
    assert "select" in before  # nothing selected yet
    press(page, "Pause")  # hold the summary still while clicking
    wait_state(page, "paused")
    x, y = page.page.evaluate(POINT_AT, [FOREST, 7])
    page.page.mouse.click(x, y)
    end = time.monotonic() + 10
    while title.inner_text() == before:
        assert time.monotonic() < end, "the detail plot's title did not change after the click"
        time.sleep(0.05)
    assert "mu_g" in title.inner_text() and "group 7" in title.inner_text()
    wait_rows(page, DENSITY, 1, timeout=10)  # the element's density is drawn
    page.shot("element-7")
    press(page, "Stop")
    wait_state(page, "stopped")
    assert page.errors == []


def test_two_sessions_train_their_own_runs(dashboard_server, open_page):
    first = open_page(dashboard_server.url, "first")
    second = open_page(dashboard_server.url, "second")
    press(first, "Start")
    wait_rows(first, ELBO, 20)
    assert rows(second, ELBO) == 0 and run_state(second) == "idle"  # the other session sees nothing
    press(second, "Start")
    wait_rows(second, ELBO, 5)
    press(first, "Stop")
    wait_state(first, "stopped")
    going = rows(second, ELBO)
    time.sleep(1.5)
    assert rows(second, ELBO) > going and run_state(second) == "running"  # stopping one leaves the other
    first.shot("stopped")
    second.shot("running")
    press(second, "Stop")
    wait_state(second, "stopped")
    assert first.errors == [] and second.errors == []


def test_closing_a_tab_stops_its_run(dashboard_server, open_page):
    page = open_page(dashboard_server.url)
    press(page, "Start")
    wait_rows(page, ELBO, 5)
    name = run_status(page)[-1]
    assert name.startswith("run-")
    page.close()  # the tab goes: its session ends, and with it the run
    end = time.monotonic() + 30
    while f"closed: {name} is stopped" not in dashboard_server.log():
        assert time.monotonic() < end, f"no sign in the server's log that {name} stopped:\n{dashboard_server.log()[-2000:]}"
        time.sleep(0.2)
