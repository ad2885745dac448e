"""The live training dashboard: pick a model, train it, watch it, export it.

:class:`Dashboard` composes the views of one :class:`~pavi_viz.ui.state.DashboardState`:
a model selector over the bundled examples, the training controls, the plate diagram,
the ELBO plot, the downloads, and the posterior views (global marginals, the forest of
a plated variable, the selected element's density and posterior predictive check). In a
notebook, display it (``pn.extension(inline=True)``, then ``Dashboard()`` as a cell's
last line; ``inline`` sends Bokeh's and Panel's JavaScript with the output, so it shows
offline); to serve it, ``Dashboard().template().servable()`` (as
``pavi_viz/ui/apps/dashboard.py`` does, which ``pavi-viz serve`` serves).

Polling: once the dashboard is shown in a served session or a notebook, an ``async``
periodic callback (every :data:`POLL_PERIOD_MS` ms, on the session's event loop) calls
:meth:`Dashboard.poll`, which reads what the run published (``state.poll()``) and
streams the new ELBO points. The training thread never touches a Bokeh object. A
served session's run is stopped when the session is destroyed (the tab closed).

The page's cost: everything one poll changes (the ELBO's two sources and its range
guide, the progress bar and its text, a summary's views) goes to the page in one
message (Panel's ``unlocked()``), which the page applies in one task, with one
repaint of the ELBO plot; one message per change cost the page a task, a layout or a
repaint each, up to three repaints of the ELBO plot a poll. The page itself skips
BokehJS's rewrites of unchanged stylesheets
(:class:`~pavi_viz.ui.views.steady_styles.SteadyStyles`), which made each repaint
recompute the page's styles about ten times. What is left: BokehJS lays the page out
again at once for each change that may resize a view, and a run's first summary
brings a dozen (first texts of the posterior views' panes, the forest's height):
their task holds the page for about 3 s on this project's 2-core machine, once a run.

Pacing: the dashboard runs in the training process, so every millisecond its views
spend redrawing is taken from training (the GIL). ELBO points are cheap (a
``ColumnDataSource.stream`` of a few rows); a posterior summary redraws every
posterior view. :meth:`Dashboard.poll` therefore times each summary it applies and
sets ``state.summary_interval`` so that applying summaries takes at most
:data:`SUMMARY_SHARE` of wall-clock time, and never comes more often than every
:data:`MIN_SUMMARY_INTERVAL` seconds: a summary arriving sooner waits, and a newer one
replaces it (see :class:`~pavi_viz.ui.state.DashboardState`). The first summary of a
run and the last one of a run that stopped going are shown at once. The posterior views
redraw by giving new columns to the data sources of plain Bokeh figures (see
:mod:`pavi_viz.ui.views.figures`): no model is made or replaced.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import panel as pn
import param
from panel.io import unlocked
from panel.viewable import Viewer

from pavi_viz import __version__, examples
from pavi_viz.runner import THREAD_PREFIX, TrainingRun
from pavi_viz.ui.state import DEFAULT_EXAMPLE, DEFAULT_OPTIONS, DashboardState, Polled
from pavi_viz.ui.views import (
    DetailView,
    ElboView,
    Exports,
    ForestView,
    GlobalMarginals,
    PlateDiagram,
    PosteriorStamp,
    PredictiveCheck,
    TrainingControls,
)
from pavi_viz.ui.views.figures import one_recompute
from pavi_viz.ui.views.steady_styles import SteadyStyles
from pavi_viz.ui.views.text import markdown

LOG = logging.getLogger(__name__)
#: Milliseconds between two polls of the run (5 Hz), whatever the training rate.
POLL_PERIOD_MS = 200
#: The share of wall-clock time applying posterior summaries may take at most.
SUMMARY_SHARE = 0.05
#: Seconds at least between two posterior summaries applied while a run goes.
MIN_SUMMARY_INTERVAL = 1.0
#: Options of the examples the selector loads (the others use their defaults).
EXAMPLE_OPTIONS: dict[str, dict[str, Any]] = {DEFAULT_EXAMPLE: DEFAULT_OPTIONS}
#: The page's title (the browser tab's too).
TITLE = "pavi_viz"
#: The model selector's choice for a model that is no bundled example (from the builder).
OWN_MODEL = "{name} (your model)"
#: Pixels across the notebook view's controls: their rows of two settings, each a widget
#: of Panel's default 300 px plus 10 px margins either side (a notebook's ``pn.extension()``
#: does not stretch widgets the way the served app's ``sizing_mode`` does).
NOTEBOOK_CONTROLS_WIDTH = 640
#: Pixels across the served app's column of controls, beside the views.
CONTROLS_WIDTH = 360
#: The served app's column of controls stays in view while the views scroll past it
#: (Start, Pause and Stop at hand while reading a long forest), and scrolls on its own
#: when taller than the window (under the page's 56-px header).
STICKY = {"position": "sticky", "top": "0", "align-self": "flex-start",
          "max-height": "calc(100vh - 70px)", "overflow-y": "auto"}


class Dashboard(Viewer):
    """One dashboard: its state, its views and its polling.

    Args:
        state: what the dashboard shows and drives (default: a new state on the
            bundled default model). A state belongs to one dashboard.
        poll_period_ms: milliseconds between two polls (default :data:`POLL_PERIOD_MS`).

    Attributes:
        state: the :class:`DashboardState`.
        model_select: the bundled example to fit (replacing it stops the current run); a
            model given otherwise (the builder's, say) shows as one more choice,
            :data:`OWN_MODEL` with its name.
        controls, elbo, exports, diagram, global_marginals, forest, detail, predictive:
            the views (:mod:`pavi_viz.ui.views`).
    """

    poll_period_ms = param.Integer(default=POLL_PERIOD_MS, bounds=(50, None), constant=True,
                                   doc="Milliseconds between two polls of the run.")

    def __init__(self, state: DashboardState | None = None, **params: Any) -> None:
        super().__init__(**params)
        self.state = state if state is not None else DashboardState()
        names = examples.list()
        self.model_select = pn.widgets.Select(
            label="Model", options=names, value=self.state.model.name if self.state.model.name in names else None,
        )
        #: The selector's choice for a model it did not load (None while it shows a bundled one).
        self._own_choice: str | None = None
        # Whether the model coming in is a bundled example (the selector loads it, or the
        # state's own model is one).
        self._loading = self.state.model.name in names
        self.model_select.param.watch(self._select_model, "value")
        self.model_info = markdown("", margin=(0, 10))
        self.state.param.watch(self._model_changed, "model")
        self._model_changed()
        self._loading = False
        self.controls = TrainingControls(self.state)
        self.elbo = ElboView(self.state)
        self.exports = Exports(self.state)
        self.diagram = PlateDiagram(self.state)
        self.global_marginals = GlobalMarginals(self.state)
        self.forest = ForestView(self.state)
        self.detail = DetailView(self.state)
        self.predictive = PredictiveCheck(self.state)
        self.stamp = PosteriorStamp(self.state)
        self.steady_styles = SteadyStyles()
        self._callback: pn.io.callbacks.PeriodicCallback | None = None
        #: Seconds the last summaries took to apply (a moving average; None before the first).
        self.summary_cost: float | None = None

    # -- layouts ------------------------------------------------------------------------
    def sidebar(self) -> list[Any]:
        """The model selector, the controls and the downloads."""
        return [self.model_select, self.model_info, self.controls, self.exports]

    def main(self) -> list[Any]:
        """The diagram and the ELBO side by side, the posterior views below: the global
        variables and the selected element's density, the forest of a plated variable,
        and the selected element's posterior predictive check (and, unseen, the page's
        :class:`~pavi_viz.ui.views.steady_styles.SteadyStyles`)."""
        return [
            pn.Row(self.diagram, self.elbo, sizing_mode="stretch_width"),
            self.stamp,
            pn.Row(self.global_marginals, self.detail, sizing_mode="stretch_width"),
            self.forest,
            self.predictive,
            self.steady_styles,
        ]

    def __panel__(self) -> pn.viewable.Viewable:
        """A plain layout for a notebook cell (polling starts where it can run): the
        controls in a column of :data:`NOTEBOOK_CONTROLS_WIDTH`, the views as wide as the
        cell below them. A column beside the views would leave them too little of a
        JupyterLab cell (about 900 px), or squeeze the controls until they overlap them."""
        self.start_polling()
        return pn.Column(
            pn.Column(*self.sidebar(), width=NOTEBOOK_CONTROLS_WIDTH),
            *self.main(),
            sizing_mode="stretch_width",
        )

    def beside(self) -> pn.Row:
        """The served app's layout (its *Fit* tab): the controls in a column of
        :data:`CONTROLS_WIDTH` beside the views, kept in view (:data:`STICKY`)."""
        return pn.Row(
            pn.Column(*self.sidebar(), width=CONTROLS_WIDTH, styles=STICKY),
            pn.Column(*self.main(), sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )

    def template(self) -> pn.template.BootstrapTemplate:
        """A page for serving, titled :data:`TITLE` (a new template per call: one per session).

        Bootstrap rather than Fast: the Fast theme imports its font from Google's servers,
        and the dashboard must work offline (a workshop room, a cluster node).
        """
        self.start_polling()
        return pn.template.BootstrapTemplate(
            title=TITLE,
            sidebar=[*self.sidebar(), markdown(f"pavi_viz {__version__}", margin=(20, 10, 0, 10))],
            main=self.main(),
            sidebar_width=380,
        )

    # -- polling ------------------------------------------------------------------------
    def poll(self) -> Polled:
        """Read the run's new records and stream its new ELBO points (the session's loop
        only); apply a posterior summary when its time has come, and pace the next one
        from what this one cost (see the module's docstring)."""
        with unlocked():  # what the poll changes, in one message to the page
            started = time.perf_counter()
            with one_recompute(self.elbo.figure.document):  # the page it is shown in, if any
                polled = self.state.poll()
            if polled.new_summary:
                cost = time.perf_counter() - started
                self.summary_cost = cost if self.summary_cost is None else 0.5 * (self.summary_cost + cost)
                self.state.summary_interval = max(MIN_SUMMARY_INTERVAL, self.summary_cost / SUMMARY_SHARE)
            self.elbo.push(polled)
        return polled

    async def _poll(self) -> None:
        self.poll()

    @property
    def polling(self) -> bool:
        """Whether the periodic poll is scheduled."""
        return self._callback is not None

    def start_polling(self) -> None:
        """Poll every ``poll_period_ms`` ms on this session's event loop: a served
        session's, or a notebook kernel's running loop. Elsewhere (a script, a test)
        nothing would run the callback: call :meth:`poll` instead. Idempotent."""
        if self._callback is not None:
            return
        doc = pn.state.curdoc
        served = doc is not None and doc.session_context is not None
        if not served and not _loop_running():
            return
        self._callback = pn.state.add_periodic_callback(self._poll, period=self.poll_period_ms)
        if served:
            pn.state.on_session_destroyed(self._session_destroyed)

    def _session_destroyed(self, session_context: Any) -> None:
        run = self.state.run
        # Never wait here: the server's event loop serves every session, and a step may
        # take seconds. The run stops after its current step; a thread of its own writes
        # in the server's log what the closed tab freed once it has.
        self.close(wait=False)
        if run is not None:
            threading.Thread(target=_log_when_ended, args=(session_context.id, run), daemon=True,
                             name=f"pavi_viz-close {run.name}").start()

    def close(self, wait: bool = True) -> None:
        """Stop polling, and stop the run (``wait``: until its thread has ended)."""
        if self._callback is not None:
            self._callback.stop()
            self._callback = None
        self.state.close(wait)

    # -- the model ------------------------------------------------------------------------
    def _select_model(self, event: Any) -> None:
        if event.new is None or event.new == self._own_choice:
            return
        if event.new != self.state.model.name or self._own_choice is not None:
            self._loading = True
            try:
                self.state.param.update(
                    model=examples.load(event.new, **EXAMPLE_OPTIONS.get(event.new, {})),
                    reference=examples.reference(event.new),
                )
            finally:
                self._loading = False

    def _model_changed(self, *_: Any) -> None:
        model = self.state.model
        names = examples.list()
        # A model the selector did not load may share a bundled example's name (an
        # edited "gre"): it gets a choice of its own, and picking "gre" loads the example.
        if self._loading:
            self._own_choice = None
            self.model_select.param.update(options=names, value=model.name)
        else:
            self._own_choice = OWN_MODEL.format(name=model.name)
            self.model_select.param.update(options=[*names, self._own_choice], value=self._own_choice)
        plates = ", ".join(f"{p.name} ({p.size})" for p in model.plates) or "none"
        latent = sum(not v.observed for v in model.variables)
        self.model_info.object = f"**{model.name}**: plates {plates}; {latent} latent variable(s)"


def _loop_running() -> bool:
    """Whether this thread runs an asyncio event loop (a notebook kernel's, say)."""
    try:
        return asyncio.get_running_loop().is_running()
    except RuntimeError:
        return False


def _log_when_ended(session_id: str, run: TrainingRun) -> None:
    """Wait for a closed session's run to end, then say so in the server's log, with
    the run threads this process still has (every session's)."""
    run.wait()
    left = sum(thread.name.startswith(THREAD_PREFIX) for thread in threading.enumerate())
    LOG.info("session %s closed: %s is %s (%d run threads left in this server)", session_id, run.name, run.state,
             left)
