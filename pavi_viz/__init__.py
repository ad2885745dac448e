"""pavi_viz: plate-amortized variational inference (PAVI) for large
hierarchical models in PyTorch, with live Panel dashboards.

``import pavi_viz`` is cheap and headless: it imports neither torch nor any
dashboard library (panel, holoviews, bokeh). The public names below are loaded
on first access (PEP 562)::

    import pavi_viz
    model = pavi_viz.examples.load("gre")      # imports pavi_viz.examples
    pavi_viz.PlateModel                        # imports pavi_viz.model
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> submodule that defines it
_LAZY_ATTRS: dict[str, str] = {
    "Plate": "pavi_viz.model",
    "Variable": "pavi_viz.model",
    "Covariate": "pavi_viz.model",
    "PlateModel": "pavi_viz.model",
    "ModelError": "pavi_viz.model",
    "fit": "pavi_viz.inference",
    "FitConfig": "pavi_viz.inference",
    "FitResult": "pavi_viz.inference",
}
# subpackages reachable as attributes without an explicit import
_LAZY_SUBMODULES: frozenset[str] = frozenset({"model", "inference", "examples"})

__all__ = ["__version__", *_LAZY_ATTRS, *sorted(_LAZY_SUBMODULES)]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from pavi_viz import examples, model
    from pavi_viz.inference import FitConfig, FitResult, fit
    from pavi_viz.model import Covariate, ModelError, Plate, PlateModel, Variable


def __getattr__(name: str) -> Any:
    if name in _LAZY_ATTRS:
        value = getattr(importlib.import_module(_LAZY_ATTRS[name]), name)
    elif name in _LAZY_SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
