"""The scripts that ``pavi-viz serve`` gives Panel's server, shipped inside the package
so that a ``pip install`` of the wheel serves the app without a source checkout.

- ``dashboard.py``: run by ``panel serve`` once per browser session (its file name
  gives the page's address, ``/dashboard``).
- ``warm_up.py``: Panel's ``--setup`` script, run once per server process before it
  listens.

Both are a line that calls :mod:`pavi_viz.ui.app`, where the app is built; importing
them does nothing. ``pavi-viz serve`` finds them with :func:`pavi_viz.cli.dashboard_path`.
"""
