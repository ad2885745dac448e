"""Plain Bokeh figures and data sources, the way every live plot of the dashboard uses them.

Each view makes its own figures (one per view, so never shared between sessions) and
redraws by giving a ``ColumnDataSource`` new columns: the server sends those columns to
the browser and nothing else. No model is created or replaced on a redraw, so the
Bokeh document's model graph is not walked again (a HoloViews ``DynamicMap`` rebuilt
glyphs and walked the page's graph on each redraw, 0.1 to 0.9 s for the posterior
views of one summary, taken from the training thread through the GIL).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from bokeh.document import Document
from bokeh.models import ColumnDataSource
from bokeh.plotting import figure
from panel.io import unlocked

#: The toolbar of every plot (the wheel zooms only once activated: a page must scroll).
TOOLS = "pan,wheel_zoom,box_zoom,reset,save"


def new_figure(**options: Any) -> figure:
    """A figure that stretches to its container's width, with :data:`TOOLS`, no logo;
    ``options`` go to ``bokeh.plotting.figure``."""
    options = {"tools": TOOLS, "active_scroll": None, "sizing_mode": "stretch_width", "output_backend": "canvas",
               **options}
    fig = figure(**options)
    fig.toolbar.logo = None
    return fig


def new_source(columns: Sequence[str], name: str | None = None) -> ColumnDataSource:
    """An empty source with ``columns`` (and ``name``, for tests and page scripts)."""
    return ColumnDataSource({c: [] for c in columns}, name=name)


def replace_data(source: ColumnDataSource, data: pd.DataFrame | Mapping[str, Any]) -> None:
    """Give ``source`` new columns (those of ``data``; lists are kept as lists, for
    glyphs of several points per row; no columns: empty ones), unless it is empty and
    stays so: a blank plot again is no message to the browser."""
    columns = {c: data[c] for c in data} or {c: [] for c in source.data}
    if not row_count(columns) and not row_count(source.data):
        return
    # A Panel widget's callback runs without the document's lock, where a plain Bokeh
    # change raises "_pending_writes should be non-None"; Panel's unlocked() sends it
    # the way Panel sends its own (and does nothing more under the lock, or unserved).
    with unlocked():
        source.data = {c: v if isinstance(v, list) else np.asarray(v) for c, v in columns.items()}


def row_count(columns: Mapping[str, Any]) -> int:
    """The number of rows of ``columns`` (a source's data): the length of any column."""
    return len(next(iter(columns.values()), []))


def as_frame(source: ColumnDataSource) -> pd.DataFrame:
    """The rows of ``source`` now (a copy)."""
    return pd.DataFrame({c: list(v) if isinstance(v, list) else np.array(v) for c, v in source.data.items()})


@contextlib.contextmanager
def one_recompute(doc: Document | None) -> Iterator[None]:
    """Changes inside recompute ``doc``'s model graph once at the end, and only if one
    of them asked to (None: no document, nothing to batch).

    Plain data changes never ask; but the first text change of a Panel HTML or Markdown
    pane in a served template also replaces its stylesheets, and each such change walks
    the page's whole graph (0.1 s on the served app; five of them held the first summary
    of a run, and the ELBO points behind it, for 0.5 s). Bokeh's own ``freeze()`` would
    batch them too, but recomputes on leaving even when nothing asked.
    """
    if doc is None:
        yield
        return
    models = doc.models
    asked = False

    def defer() -> None:
        nonlocal asked
        asked = True

    models.invalidate = defer  # an instance attribute: shadows the method for this batch
    try:
        yield
    finally:
        del models.invalidate
        if asked:
            models.recompute()
