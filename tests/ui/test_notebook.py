"""The dashboard notebook runs in a real Jupyter kernel: its periodic poll fires on the
kernel's event loop while a cell awaits, the streamed ELBO grows, and the run stops."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "dashboard_in_jupyter.ipynb"


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None


@pytest.mark.ui
@pytest.mark.timeout(180)
def test_notebook_runs_in_a_kernel(repo_root):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(repo_root)}},
    )
    client.execute()  # a failed assertion in a cell raises CellExecutionError
    text = "".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
    assert "polling on the kernel's loop: True" in text
    assert "stopped after" in text
