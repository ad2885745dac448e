"""A page component that stops BokehJS from restyling the page when nothing changed.

On every paint, each renderer of a Bokeh plot (a line, an axis, a grid, the legend)
writes its position into a ``<style>`` element of its own (``InlineStyleSheet._update``),
even when the text is what it was. Each write marks the page's styles dirty, and the
next read of a computed style, which BokehJS makes for every line, fill and text colour
it draws (``getComputedStyle(el).getPropertyValue``), makes the browser recompute them:
about ten recomputations per repaint of the ELBO plot. Each costs 1 to 3 ms on this
project's 2-core machine (more with more of the page's ~2,500 stylesheets), up to 10 ms
with training on the same cores, and the ELBO repaints at every poll. Measured in a
real page (``benchmarks/dashboard.py``), the browser then spent most of its time in those
recomputations: a page with a live fit answered a click after seconds.

:class:`SteadyStyles` renders nothing; in the page, it makes a write of the text an
inline stylesheet already holds a no-op (any other write goes through), once per page.
Where BokehJS no longer has that class or method (another version), it changes nothing.
"""

from __future__ import annotations

from panel.custom import JSComponent

#: In the page: whether the guard is installed (``Bokeh.require("core/dom")`` holds the class).
INSTALLED = """() => { const dom = window.Bokeh && Bokeh.require && Bokeh.require("core/dom");
  return Boolean(dom && dom.InlineStyleSheet && dom.InlineStyleSheet.prototype._update.keepsSameText); }"""


class SteadyStyles(JSComponent):
    """Renders nothing; in the page, BokehJS's rewrites of an unchanged stylesheet
    are skipped (see the module's docstring)."""

    _esm = """
export function render() {
  const dom = window.Bokeh && window.Bokeh.require && window.Bokeh.require("core/dom")
  const sheet = dom && dom.InlineStyleSheet && dom.InlineStyleSheet.prototype
  if (sheet && typeof sheet._update === "function" && !sheet._update.keepsSameText) {
    const write = sheet._update
    const keepSameText = function (css) {
      if (this.el.textContent !== css) {
        write.call(this, css)
      }
    }
    keepSameText.keepsSameText = true
    sheet._update = keepSameText
  }
  return document.createElement("span")
}
"""

    def __init__(self, **params: object) -> None:
        super().__init__(**{"width": 0, "height": 0, "margin": 0, **params})
