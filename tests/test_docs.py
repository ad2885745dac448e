"""The API reference (``make docs``: ``python docs/build_api.py``), built for real with
pdoc into a temporary folder, offline, and read back: its pages hold the docstrings,
rendered as Google style."""

from __future__ import annotations

import html
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: A reference to another object in a docstring (``:class:`~pavi_viz.model.Plate```):
#: pdoc shows its name (the last part only after a ``~``).
ROLE = re.compile(r":\w+:`(?:~[\w.]*\.)?([^`]+)`")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The folder of the built reference (the build's output checked first)."""
    output = tmp_path_factory.mktemp("api")
    built = subprocess.run([sys.executable, str(REPO_ROOT / "docs" / "build_api.py"), "-o", str(output)],
                           cwd=output, capture_output=True, text=True, timeout=240, check=False)
    log = f"exit {built.returncode}\nstdout:\n{built.stdout}\nstderr:\n{built.stderr}"
    assert built.returncode == 0, log
    # A module that fails to import would be missing from the reference, not an error of pdoc's.
    for failure in ("failed to import", "Error importing", "Error loading", "Couldn't import", "Traceback"):
        assert failure not in built.stderr, log
    return output


def rendered_docstring(page: Path, member: str | None = None) -> str:
    """The HTML of a docstring on a pdoc page: of ``member`` (``"Posterior.sample"``), or
    of the page's module."""
    text = page.read_text(encoding="utf-8")
    # A module's own members are <section>s, a class's <div>s.
    found = re.search('<section class="module-info">' if member is None else f'<(section|div) id="{member}"', text)
    assert found, f"{member or 'the module docstring'} is not on {page}"
    start = text.index('<div class="docstring">', found.end())
    return text[start:text.index("</div>", start)]


def words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text))


def assert_shows_docstring(page: Path, obj: object, member: str | None = None) -> None:
    """The page shows ``obj``'s docstring: its summary, and, Google style, its ``Args:``
    as a list of arguments and its ``Returns:``."""
    docstring = inspect.getdoc(obj)
    assert docstring, f"{obj!r} has no docstring"
    shown = rendered_docstring(page, member)
    summary = ROLE.sub(r"\1", docstring.split("\n\n")[0])
    assert words(summary) in words(html.unescape(re.sub(r"<[^>]+>", " ", shown))), shown
    if "\nArgs:\n" in docstring:
        section = docstring.split("\nArgs:\n")[1].split("\n\n")[0]
        arguments = re.findall(r"^ {4}\**(\w+)(?: \([^)]*\))?:", section, flags=re.MULTILINE)
        assert arguments and "Arguments:</h6>" in shown, shown
        for name in arguments:
            assert re.search(rf"<strong>\**{name}:</strong>", shown), f"argument {name} not shown:\n{shown}"
    if "\nReturns:\n" in docstring:
        assert "Returns:</h6>" in shown, shown


def test_reference_has_a_page_per_module_and_an_index(reference):
    for page in ("index.html", "pavi_viz.html", "pavi_viz/inference/posterior.html", "pavi_viz/model.html",
                 "pavi_viz/cli.html", "pavi_viz/ui/app.html"):
        assert (reference / page).is_file(), sorted(p.relative_to(reference).as_posix() for p in reference.rglob("*"))
    # Every page is linked from its package's, also those that the package's __all__ omits.
    inference = (reference / "pavi_viz" / "inference.html").read_text(encoding="utf-8")
    assert 'href="inference/posterior.html"' in inference, inference[:3000]


def test_pages_show_the_docstrings(reference):
    import pavi_viz
    from pavi_viz import model
    from pavi_viz.inference.posterior import Posterior

    assert_shows_docstring(reference / "pavi_viz.html", pavi_viz)
    assert_shows_docstring(reference / "pavi_viz.html", pavi_viz.fit, "fit")
    assert_shows_docstring(reference / "pavi_viz" / "inference" / "posterior.html", Posterior.sample,
                           "Posterior.sample")
    assert_shows_docstring(reference / "pavi_viz" / "model.html", model)
    assert_shows_docstring(reference / "pavi_viz" / "model.html", model.PlateModel, "PlateModel")


def test_pages_load_nothing_from_the_network(reference):
    for page in reference.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"<(script|img)[^>]*\ssrc=\"https?:|<link[^>]*\shref=\"https?:", text), page
