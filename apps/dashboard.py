"""The pavi_viz app: the live training dashboard and the visual model builder.

Serve it with ``make app`` or ``pavi-viz serve``, or directly::

    panel serve apps/dashboard.py --port 5006 --setup apps/warm_up.py    # http://localhost:5006/dashboard

(``--setup apps/warm_up.py`` builds one page before the server listens, so that the
first visitor's does not wait for the imports.)

Every browser session gets its own app (``panel serve`` runs this script per
session): its own dashboard, builder and run, the run stopped when the session ends.
It opens on the *Fit* tab with the bundled default model (press Start to fit it and
watch the ELBO); the *Build* tab assembles a model by clicks, and its Fit button
brings it back here.
"""

from __future__ import annotations

import logging

import panel as pn

from pavi_viz.ui.app import App, serve_stylesheets_here

pn.extension(sizing_mode="stretch_width")
# The server's log says when a closed tab's run was stopped (the server logs at INFO).
logging.getLogger("pavi_viz").setLevel(logging.INFO)

if __name__.startswith("bokeh"):  # run by `panel serve`
    # The page's roots are added one by one, and Bokeh walks the whole model graph after
    # each: frozen, it walks it once (0.15 of the 0.75 s a page takes to build, on the
    # server's one event loop).
    with pn.state.curdoc.models.freeze():
        App.page_for(pn.state.curdoc.session_context.request.headers.get("Host")).servable()
    serve_stylesheets_here(pn.state.curdoc)
elif __name__ == "__main__":  # `python apps/dashboard.py`
    pn.serve({"dashboard": lambda: App.served().template()}, port=5006, show=False)
