"""The served app: the training dashboard, the visual builder and the stored runs, in tabs.

:class:`App` holds one :class:`~pavi_viz.ui.dashboard.Dashboard` (tab *Fit*, shown
first: a first visitor sees the default example and can press Start at once) and one
:class:`~pavi_viz.ui.builder.Builder` (tab *Build*), which starts from a copy of the
dashboard's model. The builder's Fit button hands a copy of its model to the
dashboard (which stops the run of the previous model) and opens the *Fit* tab. When the
dashboard has a run store (``pavi-viz serve`` names one: :func:`~pavi_viz.ui.limits.served_store`),
a third tab, *Runs*, lists its runs (:class:`~pavi_viz.ui.views.runs.RunsView`, read
again every :data:`RUNS_REFRESH_MS` ms while it is shown): *Watch* shows one in the
*Fit* tab, live while another process trains it; ticking several compares them.

``pavi-viz serve`` runs Panel's server on the scripts of :mod:`pavi_viz.ui.apps`, which
call :func:`serve_session` (one App per session, built by :meth:`App.page_for`, under
the limits whoever serves it set: :mod:`pavi_viz.ui.limits`) and :func:`warm_up_server`.

The builder is made the first time its tab opens, not with the page: a page is built
on the server's event loop, which every session shares, and the builder is a third of
its cost (0.5 of 1.6 s). Both tabs are otherwise in the page from the start (not
*dynamic* tabs): a view that makes new Panel objects while its tab is hidden (the
dashboard's, on a new model or a first summary) would make them outside the page's
document, where Panel links their stylesheets to its CDN, and the app must work
offline. The builder is made while its tab is shown, inside the document.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import panel as pn
from bokeh.document import Document
from panel.io.resources import LOCAL_DIST, patch_model_css
from panel.io.state import set_curdoc
from panel.viewable import Viewer

from pavi_viz import __version__
from pavi_viz.model.spec import PlateModel
from pavi_viz.ui.builder import Builder
from pavi_viz.ui.builder_state import BuilderState
from pavi_viz.ui.dashboard import TITLE, Dashboard
from pavi_viz.ui.limits import ServeLimits, allowed_host, served_store, shared_slots
from pavi_viz.ui.runs import RunsList
from pavi_viz.ui.state import DashboardState
from pavi_viz.ui.views.runs import RunsView
from pavi_viz.ui.views.text import markdown

log = logging.getLogger(__name__)


def serve_stylesheets_here(document: Document) -> None:
    """Point the stylesheets of ``document``'s models at this server, not Panel's CDN.

    Panel does it when it renders a session's HTML page. With ``panel serve
    --num-procs N``, the websocket of a page rendered by one process may reach another,
    which builds the session again without rendering a page: its models kept the links
    to cdn.holoviz.org, which a room without internet cannot load.
    """
    document.template_variables["dist_url"] = LOCAL_DIST
    for root in document.roots:
        patch_model_css(root, dist_url=LOCAL_DIST)

#: The title of the page that :meth:`App.page_for` gives a request for another host.
REFUSED_TITLE = "pavi_viz: not served at this address"
#: The tabs, in order.
FIT_TAB, BUILD_TAB, RUNS_TAB = 0, 1, 2
#: Milliseconds between two reads of the run store while the *Runs* tab is shown.
RUNS_REFRESH_MS = 2000


class App(Viewer):
    """A dashboard and a builder whose Fit feeds it.

    Args:
        dashboard: the training dashboard (default: a new one on the default example).

    Attributes:
        dashboard: the training dashboard.
        builder: the builder (None until the *Build* tab first opens).
        runs: the *Runs* tab's view (None when the dashboard has no run store).
        tabs: *Fit* (the dashboard), *Build* (the builder) and *Runs*.
    """

    def __init__(self, dashboard: Dashboard | None = None, **params: Any) -> None:
        super().__init__(**params)
        self.dashboard = dashboard if dashboard is not None else Dashboard()
        self.builder: Builder | None = None
        self._build_tab = pn.Column(sizing_mode="stretch_width")
        store = self.dashboard.state.store
        self.runs = None if store is None else RunsView(RunsList(store=store), on_watch=self.watch)
        self._runs_tab = pn.Column(sizing_mode="stretch_width")
        self.tabs = pn.Tabs(("Fit", self.dashboard.beside()), ("Build", self._build_tab),
                            *([("Runs", self._runs_tab)] if self.runs is not None else []),
                            sizing_mode="stretch_width", css_classes=["pavi-app-tabs"])
        self.tabs.param.watch(self._tab_opened, "active")

    def _tab_opened(self, event: Any) -> None:
        """Make the builder, on a copy of the dashboard's model, when its tab first opens;
        read the store, and put its table in the page, when the *Runs* tab opens."""
        if event.new == BUILD_TAB and self.builder is None:
            state = self.dashboard.state
            self.builder = Builder(BuilderState(state.model.copy(), limits=state.limits), on_fit=self.fit)
            self._build_tab.objects = [self.builder]
        elif event.new == RUNS_TAB and self.runs is not None:
            self.runs.refresh()
            # Shown from its first opening on: a Bokeh DataTable laid out in a hidden tab
            # fails to render (BokehJS sizes its grid's canvas at once), blanking the page.
            if not self._runs_tab.objects:
                self._runs_tab.objects = [self.runs]

    def _refresh_runs(self) -> None:
        """The periodic read of the store, while the *Runs* tab is shown."""
        if self.tabs.active == RUNS_TAB and self.runs is not None:
            self.runs.refresh()

    @classmethod
    def served(cls) -> App:
        """One session's app in a server: with the limits that ``pavi-viz serve`` set
        (:meth:`ServeLimits.from_environment`), its runs taking turns with every other
        session's in the process's :func:`shared_slots`, recorded in the run store it
        named (:func:`served_store`)."""
        limits = ServeLimits.from_environment()
        return cls(Dashboard(DashboardState(limits=limits, slots=shared_slots(limits.runs), store=served_store())))

    def fit(self, model: PlateModel) -> None:
        """Give ``model`` to the dashboard (its run, if any, stops) and open the *Fit* tab."""
        self.dashboard.state.param.update(model=model, reference=None)
        self.tabs.active = FIT_TAB

    def watch(self, run_id: int) -> None:
        """Show the stored run ``run_id`` in the dashboard (its run, if any, stops) and
        open the *Fit* tab (see :meth:`DashboardState.attach`, and what it raises)."""
        self.dashboard.state.attach(run_id)
        self.tabs.active = FIT_TAB

    def __panel__(self) -> pn.viewable.Viewable:
        return self.tabs

    @classmethod
    def page_for(cls, host: str | None) -> pn.viewable.Viewable:
        """One served session's page: the app's :meth:`template`, or, when the request
        named a host that the server does not answer to (:func:`allowed_host`), one line
        that says so, with no app built."""
        if not allowed_host(host):
            return pn.template.BootstrapTemplate(title=REFUSED_TITLE, main=[markdown(
                f"This dashboard is not served at {host}: open it at the address that `pavi-viz serve` printed."
            )])
        return cls.served().template()

    @classmethod
    def warm_up(cls) -> None:
        """Build one app's models into a document of its own, and drop them.

        ``panel serve`` runs the app's script per session, so the first session of a
        fresh server paid for every import and first-use cache (torch, HoloViews'
        plotting, Bokeh's model classes): its page took 2.4 s to build, the event loop
        held all the while. ``pavi-viz serve`` calls this before it listens
        (:func:`warm_up_server`, run by Panel's ``--setup``). No polling starts and no run: the
        app is never shown.
        """
        started = time.perf_counter()
        document = Document()
        with set_curdoc(document):
            cls().tabs.get_root(document)
        document.clear()
        log.info("warmed up: built and dropped one page in %.1f s", time.perf_counter() - started)

    def template(self) -> pn.template.BootstrapTemplate:
        """A page for serving (a new template per call: one per session), Bootstrap like
        :meth:`Dashboard.template` (Fast's theme fetches its font from Google; the app
        works offline). The tabs hold everything: no sidebar."""
        self.dashboard.start_polling()  # and a closed session stops its run
        if self.runs is not None:  # stopped with the session
            pn.state.add_periodic_callback(self._refresh_runs, period=RUNS_REFRESH_MS)
        return pn.template.BootstrapTemplate(
            title=TITLE, main=[self.tabs, markdown(f"pavi_viz {__version__}", margin=(20, 10, 0, 10))],
        )


def configure_panel() -> None:
    """What the served scripts set before they build anything: Panel's extension, every
    component stretched to the page's width, and the pavi_viz log at INFO, so that the
    server's log (which shows INFO) says when a closed tab's run was stopped."""
    pn.extension(sizing_mode="stretch_width")
    logging.getLogger("pavi_viz").setLevel(logging.INFO)


def serve_session() -> None:
    """Build the page of the session that ``panel serve`` runs the dashboard's script for,
    into its document (``pn.state.curdoc``), for the host the browser asked for."""
    configure_panel()
    document = pn.state.curdoc
    # The page's roots are added one by one, and Bokeh walks the whole model graph after
    # each: frozen, it walks it once (0.15 of the 0.75 s a page takes to build, on the
    # server's one event loop).
    with document.models.freeze():
        App.page_for(document.session_context.request.headers.get("Host")).servable()
    serve_stylesheets_here(document)


def run_dashboard_script(name: str) -> None:
    """The body of the dashboard's script (:mod:`pavi_viz.ui.apps.dashboard`, and
    ``apps/dashboard.py`` of a source checkout), by the script's ``__name__``.

    Run by ``panel serve`` (a ``bokeh_app_...`` module, once per browser session): builds
    that session's page (:func:`serve_session`). Run with ``python FILE``: serves the app
    on port 5006 in this process, until Ctrl-C. Imported (by pdoc, say): nothing.
    """
    if name.startswith("bokeh"):
        serve_session()
    elif name == "__main__":
        configure_panel()
        pn.serve({"dashboard": lambda: App.served().template()}, port=5006, show=False)


def warm_up_server() -> None:
    """The body of Panel's ``--setup`` script (:mod:`pavi_viz.ui.apps.warm_up`): run once
    per server process before it listens, it builds one app and drops it
    (:meth:`App.warm_up`), so that the first visitor's page does not pay for the imports."""
    configure_panel()
    App.warm_up()
