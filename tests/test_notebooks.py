"""The notebooks in ``notebooks/`` run top to bottom in a real Jupyter kernel, on the
CPU, at their default sizes, and end with no training run left; they are stored
without outputs and their exercises come with hidden solutions.

Every notebook's last code cell prints ``pavi_viz run threads left: N`` (and asserts
N == 0): the test reads that line from the executed notebook. A failing cell (an
exception or a failed assertion) raises ``CellExecutionError`` and fails the test.

The Panel outputs of the notebooks that show the dashboard's views are then opened in
headless chromium with the network cut off, as in a workshop room without one: BokehJS
and Panel's JavaScript must come with the outputs (``pn.extension(inline=True)``), and
the views must fit a JupyterLab cell without overlapping. Each notebook is executed
once for all the tests that read it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pavi_viz.ui.views.diagram import NODES_NAME
from pavi_viz.ui.views.elbo import SOURCE_NAME as ELBO_SOURCE_NAME
from pavi_viz.ui.views.marginals import FOREST_MEANS_NAME

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))

#: The workshop's teaching notebooks (docs/workshop.md), in order.
TEACHING = [
    "01_plate_graphs.ipynb",
    "02_variational_inference.ipynb",
    "03_plate_amortization.ipynb",
    "04_radon.ipynb",
    "05_spike_counts.ipynb",
]
#: The line each notebook's last code cell prints once its runs are stopped.
NO_RUN_LEFT = "pavi_viz run threads left: 0"
#: More lines some notebooks must print (what they show worked, not only ran).
EXPECTED = {
    "dashboard_in_jupyter.ipynb": ["polling on the kernel's loop: True", "stopped after"],
    "03_plate_amortization.ipynb": ["ELBO points streamed to the plot:"],
    "04_radon.ipynb": ["finished after 600 steps"],
}
#: What each notebook's Panel outputs show: names of Bokeh renderers, or of their data sources.
SHOWN = {
    "01_plate_graphs.ipynb": [NODES_NAME],
    "03_plate_amortization.ipynb": [NODES_NAME, ELBO_SOURCE_NAME],
    "04_radon.ipynb": [FOREST_MEANS_NAME],
    "dashboard_in_jupyter.ipynb": [NODES_NAME, ELBO_SOURCE_NAME],
}
#: Pixels across the output area of a JupyterLab cell in a 1280-px window with the file
#: browser open, and that window's size; the id of the box that stands for the cell.
CELL_WIDTH = 900
WINDOW = {"width": 1280, "height": 900}
CELL_ID = "cell"

#: A JS helper: the views of the Bokeh roots that Panel's outputs show, in page order
#: (undefined for one not rendered yet). Not every root: the extension's output has
#: comm managers too, which wait for a kernel the page does not have.
SHOWN_ROOTS = """
const shownRoots = () => {
  const views = Bokeh.index instanceof Map ? [...Bokeh.index.values()] : Object.values(Bokeh.index);
  const byId = new Map(views.map(view => [view.model.id, view]));
  return [...document.querySelectorAll('[data-root-id]')].map(el => byId.get(el.dataset.rootId));
};"""
#: Whether BokehJS has drawn every Panel output of the page.
RENDERED = "() => {" + SHOWN_ROOTS + """
  if (!window.Bokeh) return false;
  const roots = shownRoots();
  return roots.length > 0 && roots.every(view => view && view.has_finished());
}"""
#: The names in the argument that no view of the page has (a renderer or its data source).
UNSHOWN = "(names) => {" + SHOWN_ROOTS + """
  const shown = new Set(), stack = shownRoots();
  while (stack.length) {
    const view = stack.pop();
    shown.add(view.model.name);
    if (view.model.data_source) shown.add(view.model.data_source.name);
    stack.push(...view.children());
  }
  return names.filter(name => !shown.has(name));
}"""
#: The page's leaf layout views (widgets, plots, text) that overlap another one or
#: cross the right edge of the element with the id in the argument: "a / b" or "a".
MISPLACED = "(cellId) => {" + SHOWN_ROOTS + """
  const leaves = [], walk = (view) => {  // views without an element draw nothing (the browser info)
    const children = (view.child_views || []).filter(child => child.el && child.el.isConnected);
    if (children.length) children.forEach(walk); else if (view.el) leaves.push(view);
  };
  shownRoots().forEach(walk);
  const boxes = leaves.map(view => {
    const model = view.model, box = view.el.getBoundingClientRect();
    const title = typeof model.title === "string" ? model.title : model.title && model.title.text;  // a widget's, a plot's
    return {name: [model.type, model.name, model.label, title].filter(Boolean).join(" "), box};
  }).filter(({box}) => box.width > 0 && box.height > 0);
  const right = document.getElementById(cellId).getBoundingClientRect().right;
  const misplaced = boxes.filter(({box}) => box.right > right + 1).map(({name}) => name);
  boxes.forEach((a, i) => boxes.slice(i + 1).forEach(b => {
    const across = Math.min(a.box.right, b.box.right) - Math.max(a.box.left, b.box.left);
    const down = Math.min(a.box.bottom, b.box.bottom) - Math.max(a.box.top, b.box.top);
    if (across > 1 && down > 1) misplaced.push(`${a.name} / ${b.name}`);  // by more than where edges meet
  }));
  return misplaced;
}"""


def _ids(path: Path) -> str:
    return path.stem


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _uses_dashboard(path: Path) -> bool:
    return "pavi_viz.ui" in path.read_text()


def _text(cell) -> str:
    return "".join(output.get("text", "") for output in cell.get("outputs", []) if output.get("output_type") == "stream")


DASHBOARD_NOTEBOOKS = [path for path in NOTEBOOKS if _uses_dashboard(path)]


@dataclass
class Executed:
    """A notebook executed top to bottom, with its outputs."""

    path: Path
    notebook: nbformat.NotebookNode

    def code(self) -> list:
        return [cell for cell in self.notebook.cells if cell.cell_type == "code"]


@pytest.fixture(scope="module")
def executed(request: pytest.FixtureRequest, artifacts_dir: Path) -> Executed:
    """The notebook ``request.param`` executed in a Jupyter kernel, once for all the tests
    that read it (pytest runs them together, then drops it). A failing cell fails them all."""
    path = request.param
    notebook = _read(path)
    client = nbclient.NotebookClient(
        notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell
    elapsed = time.perf_counter() - started
    with open(artifacts_dir / "notebook_times.txt", "a") as log:
        log.write(f"{path.name}\t{elapsed:.1f} s\n")
    return Executed(path, notebook)


def outputs_page(notebook) -> str:
    """A page with the notebook's rich outputs in order, in a box as wide as a JupyterLab
    cell's output area: HTML as it is, JavaScript in a script element (as nbconvert's
    HTML export writes them; no output of these notebooks has both)."""
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "application/javascript" in data:
                parts.append(f"<script>{data['application/javascript']}</script>")
            elif "text/html" in data:
                parts.append(data["text/html"])
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'></head><body>"
            f"<div id='{CELL_ID}' style='width: {CELL_WIDTH}px'>\n" + "\n".join(parts) + "\n</div></body></html>")


@dataclass
class OfflinePage:
    """A chromium tab whose requests are served only from files: every other request is
    aborted, and its URL kept in ``network``."""

    page: Page
    network: list[str]

    def wait_rendered(self, timeout: float = 60) -> None:
        """Wait until BokehJS has rendered every Panel output; fail as soon as the page
        asks the network for anything (the JavaScript of a ``pn.extension()`` without
        ``inline=True`` is on a CDN)."""
        deadline = time.monotonic() + timeout
        while not self.page.evaluate(RENDERED):
            assert not self.network, f"the page asked the network for {self.network}"
            assert time.monotonic() < deadline, f"BokehJS did not render the outputs within {timeout} s"
            self.page.wait_for_timeout(100)  # the route handler runs meanwhile


@pytest.fixture
def offline_page(executed: Executed, browser: Browser, tmp_path: Path) -> Iterator[OfflinePage]:
    """The executed notebook's outputs (:func:`outputs_page`) opened offline in a new tab."""
    path = tmp_path / f"{executed.path.stem}.html"
    path.write_text(outputs_page(executed.notebook))
    network: list[str] = []

    def serve_files_only(route) -> None:
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            network.append(route.request.url)
            route.abort()

    page = browser.new_page(viewport=WINDOW)
    page.route("**/*", serve_files_only)
    page.goto(path.as_uri())
    yield OfflinePage(page, network)
    page.close()


def test_the_workshop_notebooks_are_there():
    names = {path.name for path in NOTEBOOKS}
    assert set(TEACHING) <= names
    assert "dashboard_in_jupyter.ipynb" in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_is_stored_without_outputs(path: Path):
    notebook = _read(path)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, f"{path.name} has no code"
    for cell in code:
        assert not cell.outputs, f"{path.name}: a cell is stored with outputs:\n{cell.source[:200]}"
        assert cell.execution_count is None, f"{path.name}: a cell is stored with an execution count"
    assert "threading.enumerate()" in code[-1].source, f"{path.name}: the last cell must check the run threads"


@pytest.mark.parametrize("name", TEACHING)
def test_exercises_have_hidden_solutions(name: str):
    notebook = _read(NOTEBOOKS_DIR / name)
    markdown = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    assert "## Exercises" in markdown
    hidden = [cell for cell in notebook.cells
              if cell.cell_type == "code" and cell.metadata.get("jupyter", {}).get("source_hidden")]
    folded = markdown.count("<summary>Solution</summary>")
    assert len(hidden) + folded >= 2, f"{name}: fewer than two exercises with a hidden solution"
    for cell in hidden:
        assert cell.source.startswith("# Solution"), cell.source[:80]


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "executed",
    [pytest.param(path, marks=[pytest.mark.ui] if _uses_dashboard(path) else []) for path in NOTEBOOKS],
    ids=_ids, indirect=True,
)
def test_notebook_runs(executed: Executed):
    name, code = executed.path.name, executed.code()
    assert NO_RUN_LEFT in _text(code[-1]), f"{name}: a run is left: {_text(code[-1])!r}"
    printed = "".join(_text(cell) for cell in code)
    for line in EXPECTED.get(name, []):
        assert line in printed, f"{name} did not print {line!r}"
    errors = [output for cell in code for output in cell.outputs if output.get("output_type") == "error"]
    assert not errors


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.ui
@pytest.mark.timeout(300)
@pytest.mark.parametrize("executed", DASHBOARD_NOTEBOOKS, ids=_ids, indirect=True)
def test_dashboard_outputs_render_offline(executed: Executed, offline_page: OfflinePage):
    """A workshop room may have no network: the outputs must carry their JavaScript."""
    offline_page.wait_rendered()
    assert executed.path.name in SHOWN, f"{executed.path.name} shows the dashboard's views: list them in SHOWN"
    assert offline_page.page.evaluate(UNSHOWN, SHOWN[executed.path.name]) == []
    assert not offline_page.network, f"the page asked the network for {offline_page.network}"


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.ui
@pytest.mark.timeout(300)
@pytest.mark.parametrize("executed", DASHBOARD_NOTEBOOKS, ids=_ids, indirect=True)
def test_dashboard_outputs_fit_a_notebook_cell(executed: Executed, offline_page: OfflinePage, artifacts_dir: Path):
    """No widget or plot hides another or sticks out of the cell (a 360-px column of
    controls beside the dashboard's views once ran under them); screenshots in
    ``tests/artifacts/notebooks/``."""
    offline_page.wait_rendered()
    screenshots = artifacts_dir / "notebooks"
    screenshots.mkdir(exist_ok=True)
    offline_page.page.screenshot(path=str(screenshots / f"{executed.path.stem}.png"), full_page=True)
    assert offline_page.page.evaluate(MISPLACED, CELL_ID) == []
