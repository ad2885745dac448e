"""Variational families, by the names users pass to ``fit(family=...)``."""

from __future__ import annotations

from typing import Any

from pavi_viz.inference.families.base import Draw, NonFiniteDraw, VariationalFamily
from pavi_viz.inference.families.mean_field import MeanField
from pavi_viz.inference.families.pavi import PaviE, PaviF, PlateAmortizedFamily
from pavi_viz.model.compiled import CompiledModel

#: The family classes by name, in the order of ``pavi_viz.inference.config.FAMILY_NAMES``.
FAMILIES: dict[str, type[VariationalFamily]] = {f.name: f for f in (PaviE, PaviF, MeanField)}


def make_family(name: str, model: CompiledModel, **options: Any) -> VariationalFamily:
    """The family called ``name`` for ``model``, built with ``options``."""
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name](model, **options)


__all__ = ["FAMILIES", "Draw", "MeanField", "NonFiniteDraw", "PaviE", "PaviF", "PlateAmortizedFamily", "VariationalFamily", "make_family"]
