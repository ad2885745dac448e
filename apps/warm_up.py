"""The ``--setup`` script of a server of the checkout's ``apps/dashboard.py``: builds one
app and drops it before the server listens (see :func:`pavi_viz.ui.app.warm_up_server`)::

    panel serve apps/dashboard.py --setup apps/warm_up.py
"""

from pavi_viz.ui.app import warm_up_server

warm_up_server()
