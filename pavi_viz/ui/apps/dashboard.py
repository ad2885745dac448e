"""The dashboard's script: ``pavi-viz serve`` runs ``panel serve`` on this file, with
``warm_up.py`` beside it as ``--setup``.

Every browser session gets its own app (``panel serve`` runs this script per session):
its own dashboard, builder and run, the run stopped when the session ends. It opens
on the *Fit* tab with the bundled default model (press Start to fit it and watch the
ELBO); the *Build* tab assembles a model by clicks, and its Fit button brings it back
there. ``python`` on this file serves it at http://localhost:5006/dashboard instead;
importing it does nothing (see :func:`pavi_viz.ui.app.run_dashboard_script`).
"""

from pavi_viz.ui.app import run_dashboard_script

run_dashboard_script(__name__)
