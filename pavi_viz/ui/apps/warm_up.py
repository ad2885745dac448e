"""Panel's ``--setup`` script of ``pavi-viz serve``: run once per server process before
it listens, it builds one app and drops it, so that the first visitor's page does not
pay for the imports and first-use caches (see :func:`pavi_viz.ui.app.warm_up_server`).
"""

from pavi_viz.ui.app import warm_up_server

# Panel's --setup executes this file in a module of its own, with no import spec; an
# import of the module (pdoc's, say) builds nothing.
if __spec__ is None:
    warm_up_server()
