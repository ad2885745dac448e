"""The UI layer: Panel and HoloViews dashboards over the runner's training runs.

The only layer that imports panel, holoviews and bokeh. :mod:`pavi_viz.ui.state` and
:mod:`pavi_viz.ui.builder_state` hold the state of the training dashboard and of the
visual model builder as ``param.Parameterized`` objects and import none of them;
:mod:`pavi_viz.ui.runs` and :mod:`pavi_viz.ui.compare` those of a run store's list and
of a comparison of its runs. :mod:`pavi_viz.ui.dashboard` and :mod:`pavi_viz.ui.builder`
show the first two, and :mod:`pavi_viz.ui.app` serves them, with the stored runs, in tabs.
"""
