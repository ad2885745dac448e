"""The README's Python examples (Quickstart to Training in the background) run as written."""

from __future__ import annotations

import re
import runpy
import textwrap
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def quickstart_blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Quickstart") : text.index("## Layout")]  # and "Fitting with PAVI"
    # A block inside a list item is indented with it.
    return [textwrap.dedent(block) for block in re.findall(r"```python\n(.*?)```", section, flags=re.S)]


def test_quickstart_has_code() -> None:
    assert len(quickstart_blocks()) >= 3


@pytest.mark.parametrize("index", range(len(quickstart_blocks())))
def test_quickstart_block_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / f"quickstart_{index}.py"
    script.write_text(quickstart_blocks()[index])
    monkeypatch.chdir(tmp_path)  # the blocks write files
    runpy.run_path(str(script), run_name="__main__")
