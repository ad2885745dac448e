"""Public names that a package's ``__init__`` imports on first use (PEP 562), so that
importing the package stays cheap: :mod:`pavi_viz.inference` without torch's
submodules it does not need yet, :mod:`pavi_viz.runner` without torch at all."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(
    package: str, public: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package``.

    Args:
        package: the package's ``__name__``.
        public: each public name's submodule (``{"Posterior": "posterior"}``).
        namespace: the package's ``globals()``, where a name is kept once imported
            (later lookups skip ``__getattr__``).
    """

    def __getattr__(name: str) -> Any:
        if name not in public:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{public[name]}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(public))

    return __getattr__, __dir__
