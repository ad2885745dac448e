"""Build the API reference of pavi_viz: HTML pages generated from its docstrings by pdoc
(the ``docs`` extra), offline, one page per module::

    python docs/build_api.py              # writes docs/api/ (open docs/api/index.html)
    python docs/build_api.py -o DIR

Every public module gets a page, not only those that the packages' ``__all__`` lists
(where pdoc's own walk stops): :mod:`pavi_viz.inference.posterior` has its own page
as well as :mod:`pavi_viz.inference`'s summary. Docstrings are Google style (``Args:``,
``Returns:``).

A module that fails to import fails the build, naming it: pdoc itself only warns and
leaves its page out, and a reference that silently lacks a module is worse than none.
pdoc's other warnings (an annotation it cannot resolve, say) are printed, and the
build goes on.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from types import ModuleType

import pdoc
import pdoc.doc
import pdoc.render

PACKAGE = "pavi_viz"
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "api"
#: How pdoc's warnings about a module it could not import begin (a package's list of
#: submodules imports them).
IMPORT_FAILURES = ("Error importing", "Error loading", "Couldn't import")


def public_modules(package: str = PACKAGE) -> list[str]:
    """``package`` and all its modules but private ones (a ``_name`` anywhere in the
    dotted name, ``__main__`` included).

    Raises:
        ImportError: a subpackage failed to import (``pkgutil`` would skip it quietly).
    """

    def failed(name: str) -> None:
        raise ImportError(f"cannot import {name} to list its modules") from sys.exc_info()[1]

    root = importlib.import_module(package)
    found = pkgutil.walk_packages(root.__path__, f"{package}.", onerror=failed)
    return [package] + [info.name for info in found if not any(p.startswith("_") for p in info.name.split("."))]


def _load(name: str) -> ModuleType:
    """Import module ``name``, with the public names that it loads on first access
    resolved (PEP 562: :mod:`pavi_viz.inference`'s): pdoc documents what is in a
    module's ``__dict__``, and warns of the ``__all__`` names that are not there yet."""
    module = importlib.import_module(name)
    for public in getattr(module, "__all__", ()):
        getattr(module, public, None)  # a submodule not imported yet: pdoc imports it
    return module


class _Module(pdoc.doc.Module):
    """pdoc's module, whose page lists as its submodules all those documented, not only
    those that its ``__all__`` names (pdoc's choice): each page is linked from its
    package's (:mod:`pavi_viz.inference.posterior` from :mod:`pavi_viz.inference`)."""

    def __init__(self, module: ModuleType, documented: dict[str, pdoc.doc.Module]) -> None:
        super().__init__(module)
        self._documented = documented  # filled in by build, read once the pages render

    @cached_property
    def submodules(self) -> list[pdoc.doc.Module]:
        return [m for name, m in self._documented.items() if name.rpartition(".")[0] == self.fullname]


def build(output: Path, modules: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """Write the pages of ``modules`` (default: :func:`public_modules`), an index and a
    search index to ``output``, as ``pdoc.pdoc`` does for the modules that its own walk
    finds; the modules that failed to import (each with its error, their pages left
    out), and the messages of pdoc's warnings."""
    pdoc.render.configure(docformat="google")
    pdoc_files = Path(pdoc.__file__).parent
    documented: dict[str, pdoc.doc.Module] = {}
    failed = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in modules or public_modules():
            try:
                documented[name] = _Module(_load(name), documented)
            except Exception as err:  # whatever the module's import raised
                failed.append(f"{name} ({type(err).__name__}: {err})")
        for module in documented.values():
            page = output / f"{module.fullname.replace('.', '/')}.html"
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text(pdoc.render.html_module(module, documented), encoding="utf-8")
        (output / "index.html").write_text(pdoc.render.html_index(documented), encoding="utf-8")
        (output / "search.js").write_text(pdoc.render.search_index(documented), encoding="utf-8")
    # pdoc's own warnings, not those of the libraries that the modules import.
    messages = [str(w.message) for w in caught if Path(w.filename).is_relative_to(pdoc_files)]
    failed += [m.splitlines()[0] for m in messages if m.startswith(IMPORT_FAILURES)]
    return failed, messages


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build pavi_viz's API reference (HTML) with pdoc.")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT,
                        help="the folder of the HTML pages (default: docs/api)")
    output = parser.parse_args(argv).output
    failed, messages = build(output)
    for message in messages:
        print(f"warning: {message}", file=sys.stderr)
    if failed:
        print(f"error: the reference lacks modules that failed to import: {'; '.join(failed)}", file=sys.stderr)
        return 1
    print(f"wrote the API reference of {PACKAGE} to {output / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
