"""The pavi_viz app from a source checkout: the training dashboard and the visual model builder.

Serve it with ``make app`` or ``pavi-viz serve`` (which serve the package's own copy,
:mod:`pavi_viz.ui.apps.dashboard`), or directly::

    panel serve apps/dashboard.py --port 5006 --setup apps/warm_up.py    # http://localhost:5006/dashboard

(``--setup apps/warm_up.py`` builds one page before the server listens, so that the
first visitor's does not wait for the imports.) ``python apps/dashboard.py`` serves it
on port 5006 too. The app itself is built in :mod:`pavi_viz.ui.app`.
"""

from pavi_viz.ui.app import run_dashboard_script

run_dashboard_script(__name__)
