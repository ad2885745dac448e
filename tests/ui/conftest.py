"""Shared set-up of the UI tests: a served dashboard, pages of a real headless browser
(``tests/conftest.py``'s ``browser``) and helpers that read them. Screenshots go to
``tests/artifacts/ui/``.
"""

from __future__ import annotations

import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pavi_viz import examples
from pavi_viz.runner import RunConfig
from pavi_viz.ui.state import DashboardState


@pytest.fixture(scope="session")
def screenshots(artifacts_dir: Path) -> Path:
    path = artifacts_dir / "ui"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def dashboard_server(request: pytest.FixtureRequest, artifacts_dir: Path, launch_server):
    """``panel serve`` of the dashboard's script that ``pavi-viz serve`` serves (the
    package's, :func:`pavi_viz.cli.dashboard_path`) in a subprocess, for the tests of one
    module (its log named after the module: modules may run at once, in parallel workers)."""
    from pavi_viz.cli import dashboard_path

    served = launch_server(
        lambda port: [sys.executable, "-m", "panel", "serve", str(dashboard_path()),
                      "--port", str(port), "--address", "127.0.0.1", "--allow-websocket-origin", f"localhost:{port}",
                      # A closed tab's session ends within about 11 s (the default: up to 32 s). Not
                      # much sooner: a session whose page has not yet opened its websocket counts
                      # as unused, and discarding it half-built breaks the page.
                      "--check-unused-sessions", "1000", "--unused-session-lifetime", "10000"],
        artifacts_dir / f"ui-server-{request.module.__name__.rsplit('.', 1)[-1]}.log",
    )
    yield served
    served.stop()


#: A JS helper: the Bokeh views shown in the page (in every root, but not in a hidden tab)
#: of the renderer whose model or whose data source carries ``name``. Shown views, not
#: ``get_model_by_name``: the app's two tabs each have a plate diagram with the same
#: names, and BokehJS keeps the models a redraw dropped (a redrawn diagram's old nodes).
FIND_VIEWS = """
const shown = (view) => {
  const el = view.plot_view ? view.plot_view.el : view.el;
  return !el || !el.checkVisibility || el.checkVisibility({visibilityProperty: true});
};
const findViews = (name) => {
  const found = [], seen = new Set(), stack = [];
  const index = Bokeh.index;
  stack.push(...(index instanceof Map ? index.values() : Object.values(index)));
  while (stack.length) {
    const view = stack.pop();
    if (!view || seen.has(view)) continue;
    seen.add(view);
    const model = view.model;
    if (model && (model.name === name || (model.data_source && model.data_source.name === name)) && shown(view)) {
      found.push(view);
    }
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
#: Every box that scrolls around it (a tall forest scrolls in its own box, the page's
#: main column in the window) is first scrolled to bring the point to its middle.
POINT_AT = "([name, i]) => {" + FIND_VIEWS + """
  const view = findViews(name).find(v => v.model.glyph);
  const data = view.model.data_source.data, glyph = view.model.glyph;
  const sx = view.coordinates.x_scale.compute(data[glyph.x.field][i]);
  const sy = view.coordinates.y_scale.compute(data[glyph.y.field][i]);
  const canvas = view.plot_view.canvas_view.el;
  for (let el = canvas; el; el = el.parentElement || (el.getRootNode() && el.getRootNode().host)) {
    const style = getComputedStyle(el);
    if (el.scrollHeight > el.clientHeight && /(auto|scroll)/.test(style.overflowY)) {
      const box = el.getBoundingClientRect();
      el.scrollTop += canvas.getBoundingClientRect().top + sy - (box.top + box.height / 2);
    }
  }
  const box = canvas.getBoundingClientRect();
  return [box.left + sx, box.top + sy];
}"""
#: A column of the data of the renderer named ``name`` that the page shows (null when none).
SHOWN_COLUMN = "([name, column]) => {" + FIND_VIEWS + """
  const view = findViews(name).find(v => v.model.data_source);
  return view ? Array.from(view.model.data_source.data[column]) : null;
}"""


#: How long a click or a wait on a page may take before the test fails.
ACTION_TIMEOUT_MS = 60_000


class Page:
    """A browser tab (its own context: its own cookies, so its own Panel session) that
    records the page's console errors and uncaught exceptions, with helpers that read
    the page's Bokeh models and press its buttons."""

    def __init__(self, browser, screenshots: Path, name: str) -> None:
        self.context = browser.new_context(viewport={"width": 1600, "height": 1800})
        # Clicks and waits get a generous minute, not Playwright's 30 s: on a shared 2-core
        # CI machine a page that renders a live fit can take that long to take a click.
        self.context.set_default_timeout(ACTION_TIMEOUT_MS)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url}"))
        #: The document patches the page received from the server so far (counted while a
        #: Playwright call runs: the synchronous API delivers the frames then).
        self.patches = 0
        self.page.on("websocket", lambda socket: socket.on("framereceived", self._count_patch))
        self.screenshots = screenshots
        self.name = name
        self.shots = 0

    def _count_patch(self, frame: str | bytes) -> None:
        # A Bokeh message is several frames: a patch's content frame holds its events.
        if isinstance(frame, str) and frame.startswith('{"events":'):
            self.patches += 1

    def shot(self, what: str) -> Path:
        """Save a screenshot ``<test>-<n>-<what>.png``; its path."""
        self.shots += 1
        path = self.screenshots / f"{self.name}-{self.shots}-{what}.png"
        self.page.screenshot(path=str(path))
        return path

    def close(self) -> None:
        self.context.close()

    def rows(self, name: str) -> int:
        """The number of rows of the data source (or renderer) named ``name``."""
        return self.page.evaluate(ROWS, name)

    def wait_rows(self, name: str, at_least: int, timeout: float = 60) -> int:
        """Wait until the data source has ``at_least`` rows; how many it has then."""
        self.page.wait_for_function(f"(n) => ({ROWS})('{name}') >= n", arg=at_least, timeout=timeout * 1000,
                                    polling=100)
        return self.rows(name)

    def press(self, label: str) -> None:
        """Click the button labelled ``label``."""
        self.page.get_by_role("button", name=label, exact=True).click()

    def point_at(self, name: str, i: int) -> tuple[float, float]:
        """The page coordinates of row ``i`` of the glyph whose data source is ``name``."""
        return tuple(self.page.evaluate(POINT_AT, [name, i]))

    def shown_column(self, name: str, column: str) -> list | None:
        """``column`` of the data of the renderer named ``name`` that the page shows."""
        return self.page.evaluate(SHOWN_COLUMN, [name, column])

    def wait_shown_column(self, name: str, column: str, expected: list, timeout: float = 60) -> None:
        """Wait until the page shows ``expected`` as ``column`` of the renderer named
        ``name`` (the views render a while after the document exists)."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        compare = f"([name, column, expected]) => JSON.stringify(({SHOWN_COLUMN})([name, column])) === " \
                  "JSON.stringify(expected)"
        try:
            self.page.wait_for_function(compare, arg=[name, column, expected], timeout=timeout * 1000, polling=100)
        except PlaywrightTimeout:
            raise AssertionError(f"{name}.{column}: the page shows {self.shown_column(name, column)}, "
                                 f"not {expected}") from None


class Poller:
    """``GET url`` over and over on a thread, recording how long each answer took: how
    long the server keeps another client waiting (a blocked event loop answers no one).

    Use as a context manager; ``seconds`` holds each request's time, ``failures`` what
    went wrong (a status other than 200, no answer within ``timeout``).
    """

    def __init__(self, url: str, every: float = 0.05, timeout: float = 30) -> None:
        self.url, self.every, self.timeout = url, every, timeout
        self.seconds: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="poller", daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=self.timeout) as response:
                    response.read()
            except OSError as err:  # an HTTPError too
                self.failures.append(f"GET {self.url}: {err}")
            self.seconds.append(time.monotonic() - start)
            self._stop.wait(self.every)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def slowest(self) -> float:
        return max(self.seconds)

    def wait_requests(self, count: int, timeout: float = 60) -> None:
        """Wait until at least ``count`` requests have been answered (or have failed)."""
        end = time.monotonic() + timeout
        while len(self.seconds) < count:
            assert time.monotonic() < end, f"{len(self.seconds)} requests in {timeout} s: {self.failures}"
            time.sleep(0.05)


@pytest.fixture
def poll_server() -> type[Poller]:
    """``with poll_server(url) as poller:``, a :class:`Poller` of ``url``."""
    return Poller


@pytest.fixture
def open_page(browser, screenshots: Path, request) -> Iterator:
    """``open_page(url)``: a new tab at ``url``, loaded and rendered (closed after the test)."""
    pages: list[Page] = []

    def open_(url: str, label: str = "") -> Page:
        page = Page(browser, screenshots, request.node.name + (f"-{label}" if label else ""))
        page.page.goto(url, wait_until="networkidle", timeout=60_000)
        # The page is there once Bokeh has built the session's document.
        page.page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0", timeout=60_000)
        pages.append(page)
        return page

    yield open_
    for page in pages:
        page.close()


# -- fitted dashboard states, for the views' tests -----------------------------------------
def _fitted(name: str, steps: int = 200, reference: bool = False, **options) -> DashboardState:
    """A state whose tiny mean-field fit has ended and been polled."""
    config = RunConfig(family="mean-field", steps=steps, threads=1, summary_every=50, seed=0)
    state = DashboardState(examples.load(name, **options), config=config,
                           reference=examples.reference(name) if reference else None)
    state.start().wait()
    state.poll()
    assert state.summary is not None
    return state


@pytest.fixture(scope="session")
def fitted():
    """``fitted(example, steps=200, reference=False, **options)``: a :class:`DashboardState`
    whose tiny mean-field fit of a bundled example has ended and been polled."""
    return _fitted


@pytest.fixture(scope="module")
def gre(fitted) -> DashboardState:
    return fitted("gre", G=20, N=10, D=2)


@pytest.fixture(scope="module")
def radon(fitted) -> DashboardState:
    return fitted("radon")
