"""Variational families, by the names users pass to ``fit(family=...)``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pavi_viz.inference.families.base import Draw, NonFiniteDraw, VariationalFamily
from pavi_viz.inference.families.mean_field import MeanField
from pavi_viz.inference.families.pavi import PaviE, PaviF, PlateAmortizedFamily
from pavi_viz.inference.flows import FLOWS
from pavi_viz.model.compiled import CompiledModel

#: The family classes by name, in the order of ``pavi_viz.inference.config.FAMILY_NAMES``.
FAMILIES: dict[str, type[VariationalFamily]] = {f.name: f for f in (PaviE, PaviF, MeanField)}


#: The options each family takes, with their bounds: what a user (or an edited
#: checkpoint) may ask for, checked before any weight is allocated. The bounds are far
#: above the defaults (16, 32, 3 and (64, 64)) and keep a family within memory: an
#: encoding of 200,000 numbers and 50 flow layers asked for 7.9 GB.
WHOLE_OPTIONS: dict[str, tuple[int, int]] = {
    "encoding_size": (1, 512),
    "encoder_hidden": (1, 1024),
    "transforms": (1, 16),
}
#: The most hidden layers of a flow's conditioner, and their largest width.
MAX_HIDDEN_LAYERS, MAX_HIDDEN_WIDTH = 4, 1024
FAMILY_OPTIONS: dict[str, tuple[str, ...]] = {
    "pavi-e": ("encoding_size", "encoder_hidden", "flow", "transforms", "hidden"),
    "pavi-f": ("encoding_size", "flow", "transforms", "hidden"),
    "mean-field": ("init_scale",),
}


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """Refuse options that family ``name`` does not take or that are out of bounds.

    Raises:
        ValueError: naming the family and the option.
    """
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; choose one of {', '.join(FAMILIES)}")
    for option, value in options.items():
        if option not in FAMILY_OPTIONS[name]:
            raise ValueError(f"family {name!r} takes no option {option!r}; it takes {', '.join(FAMILY_OPTIONS[name])}")
        if option in WHOLE_OPTIONS:
            low, high = WHOLE_OPTIONS[option]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"family option {option!r} must be a whole number from {low} to {high}, got {value!r}")
        elif option == "flow" and value not in FLOWS:
            raise ValueError(f"family option 'flow' must be one of {', '.join(FLOWS)}, got {value!r}")
        elif option == "hidden":
            widths = list(value) if isinstance(value, (list, tuple)) else None
            if (not widths or len(widths) > MAX_HIDDEN_LAYERS
                    or any(isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= MAX_HIDDEN_WIDTH for w in widths)):
                raise ValueError(f"family option 'hidden' must be 1 to {MAX_HIDDEN_LAYERS} layer widths, each from 1 "
                                 f"to {MAX_HIDDEN_WIDTH}, got {value!r}")
        elif option == "init_scale" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                         or not 0 < value <= 100):
            raise ValueError(f"family option 'init_scale' must be a number in (0, 100], got {value!r}")


def make_family(name: str, model: CompiledModel, **options: Any) -> VariationalFamily:
    """The family called ``name`` for ``model``, built with ``options`` (checked first:
    :func:`check_options`)."""
    check_options(name, options)
    return FAMILIES[name](model, **options)


__all__ = ["FAMILIES", "FAMILY_OPTIONS", "Draw", "MeanField", "NonFiniteDraw", "PaviE", "PaviF", "PlateAmortizedFamily", "VariationalFamily", "check_options", "make_family"]
