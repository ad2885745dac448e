"""Run once by ``pavi-viz serve`` before the server listens (Panel's ``--setup``):
builds one app and drops it, so that the first visitor's page does not pay for the
imports and first-use caches (see :meth:`pavi_viz.ui.app.App.warm_up`)::

    panel serve apps/dashboard.py --setup apps/warm_up.py
"""

import logging

import panel as pn

from pavi_viz.ui.app import App

pn.extension(sizing_mode="stretch_width")
logging.getLogger("pavi_viz").setLevel(logging.INFO)  # as the app's script does
App.warm_up()
