"""The notebooks in ``notebooks/`` run top to bottom in a real Jupyter kernel, on the
CPU, at their default sizes, and end with no training run left; they are stored
without outputs and their exercises come with hidden solutions.

Every notebook's last code cell prints ``pavi_viz run threads left: N`` (and asserts
N == 0): the test reads that line from the executed notebook. A failing cell (an
exception or a failed assertion) raises ``CellExecutionError`` and fails the test.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

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


def _ids(path: Path) -> str:
    return path.stem


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _uses_dashboard(path: Path) -> bool:
    return "pavi_viz.ui" in path.read_text()


def _text(cell) -> str:
    return "".join(output.get("text", "") for output in cell.get("outputs", []) if output.get("output_type") == "stream")


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
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "path",
    [pytest.param(path, marks=[pytest.mark.ui] if _uses_dashboard(path) else []) for path in NOTEBOOKS],
    ids=_ids,
)
def test_notebook_runs(path: Path, artifacts_dir: Path):
    notebook = _read(path)
    client = nbclient.NotebookClient(
        notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell
    elapsed = time.perf_counter() - started
    with open(artifacts_dir / "notebook_times.txt", "a") as log:
        log.write(f"{path.name}\t{elapsed:.1f} s\n")

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert NO_RUN_LEFT in _text(code[-1]), f"{path.name}: a run is left: {_text(code[-1])!r}"
    printed = "".join(_text(cell) for cell in code)
    for line in EXPECTED.get(path.name, []):
        assert line in printed, f"{path.name} did not print {line!r}"
    errors = [output for cell in code for output in cell.outputs if output.get("output_type") == "error"]
    assert not errors
