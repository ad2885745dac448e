"""The README's Quickstart runs as written."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def quickstart_blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Quickstart") : text.index("## Layout")]  # and "Fitting with PAVI"
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_quickstart_has_code() -> None:
    assert len(quickstart_blocks()) >= 3


@pytest.mark.parametrize("index", range(3))
def test_quickstart_block_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / f"quickstart_{index}.py"
    script.write_text(quickstart_blocks()[index])
    monkeypatch.chdir(tmp_path)  # the blocks write files
    runpy.run_path(str(script), run_name="__main__")
