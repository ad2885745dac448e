"""The UI layer: Panel and HoloViews dashboards over the runner's training runs.

The only layer that imports panel, holoviews and bokeh. :mod:`pavi_viz.ui.state`
holds the dashboard state as ``param.Parameterized`` objects and imports none of them.
"""
