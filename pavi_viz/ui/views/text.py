"""Text panes whose content is never markup: Markdown without raw HTML.

Model files travel between people, and their strings (the model's name and
description, plate and variable names, data labels, the messages that quote them)
reach the page. Every Markdown and alert pane of the app is made here, with
markdown-it's raw HTML turned off: ``<img src=x onerror=...>`` in a name shows as
those characters, while the app's own Markdown (bold, lists, code) still renders.
Markdown links are checked by markdown-it's link validation (no ``javascript:``).
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

import panel as pn

#: markdown-it's options for every pane: raw HTML is shown as text, never rendered.
NO_HTML = {"html": False}


def markdown(text: str = "", **params: Any) -> pn.pane.Markdown:
    """A Markdown pane that renders no raw HTML from ``text``."""
    return pn.pane.Markdown(text, renderer_options=dict(NO_HTML), **params)


def alert(text: str = "", **params: Any) -> pn.pane.Alert:
    """An alert (a Markdown pane in a coloured box) that renders no raw HTML from ``text``."""
    return pn.pane.Alert(text, renderer_options=dict(NO_HTML), **params)


def labelled(names: Iterable[str]) -> dict[str, str]:
    """Widget options ``{label: name}`` whose labels are HTML-escaped: Bokeh's
    MultiChoice shows its labels as HTML."""
    return {html.escape(name): name for name in names}
