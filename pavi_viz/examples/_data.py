"""Reading the data sets shipped as package data in ``pavi_viz/datasets/``."""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib import resources
from typing import Any


@lru_cache(maxsize=None)
def _parsed(filename: str) -> dict[str, Any]:
    # importlib.resources, not a path relative to __file__: works from zips and wheels.
    text = (resources.files("pavi_viz") / "datasets" / filename).read_text(encoding="utf-8")
    return json.loads(text)


def read_dataset(filename: str) -> dict[str, Any]:
    """The JSON data set ``filename`` as plain Python values (a fresh copy, safe to edit)."""
    return copy.deepcopy(_parsed(filename))
