"""The dashboard shell without a browser: components rendered to Bokeh documents, a real
(tiny) run polled and streamed, buttons following the run's state, model changes,
failed runs, exports and clean-up."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import panel as pn
import pytest
from bokeh.document import Document
from bokeh.document.events import ColumnsStreamedEvent

import pavi_viz
from pavi_viz.inference import load_netcdf
from pavi_viz.runner import THREAD_PREFIX
from pavi_viz.ui.dashboard import TITLE, Dashboard
from pavi_viz.ui.state import DashboardState, Polled
from pavi_viz.ui.views import ElboView, Exports, TrainingControls
from pavi_viz.ui.views.controls import enabled_buttons, format_seconds
from pavi_viz.ui.views.diagram import FIGURE_NAME as DIAGRAM_FIGURE_NAME
from pavi_viz.ui.views.elbo import (
    FAILURE_NAME,
    FIGURE_NAME,
    GUIDE_NAME,
    SMOOTHED_SOURCE_NAME,
    SOURCE_NAME,
    SPIKE_SOURCE_NAME,
    default_range,
)
from pavi_viz.ui.views.marginals import FOREST_MEANS_NAME

pytestmark = pytest.mark.timeout(120)


def tiny_state(**settings) -> DashboardState:
    """A state on GRE with 20 groups, fitted mean-field on one thread."""
    state = DashboardState(pavi_viz.examples.load("gre", G=20, N=10))
    state.config.param.update(**{"family": "mean-field", "steps": 200, "threads": 1, "summary_every": 50, **settings})
    return state


def render(component) -> Document:
    """A Bokeh document holding the component's models."""
    doc = Document()
    doc.add_root(pn.panel(component).get_root(doc))
    return doc


def poll_until(dashboard: Dashboard, condition: Callable[[], bool], timeout: float = 60) -> None:
    """Poll as the periodic callback does until ``condition()`` holds."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        dashboard.poll()
        time.sleep(0.02)


def run_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


@pytest.fixture
def dashboard():
    dash = Dashboard(tiny_state())
    yield dash
    dash.close()


def test_components_render_to_bokeh_documents():
    state = tiny_state()
    for component in (ElboView(state), TrainingControls(state), Exports(state)):
        doc = render(component)
        assert doc.roots
    doc = render(ElboView(state))
    assert doc.select_one({"name": SOURCE_NAME}) is not None
    assert doc.select_one({"name": SMOOTHED_SOURCE_NAME}) is not None
    assert doc.select_one({"name": FIGURE_NAME}) is not None


def test_dashboard_layouts(dashboard):
    doc = render(dashboard)
    assert doc.select_one({"name": SOURCE_NAME}) is not None
    assert doc.select_one({"name": DIAGRAM_FIGURE_NAME}) is not None
    controls = dashboard.controls
    assert controls.setting_widgets["family"].value == "mean-field"
    assert controls.setting_widgets["family"].options == ["pavi-e", "pavi-f", "mean-field"]
    assert {"auto", "cpu"} <= set(controls.setting_widgets["device"].options)
    assert list(controls._batch_inputs) == ["group", "obs"]
    assert dashboard.model_select.value == "gre"
    assert dashboard.model_select.options == pavi_viz.examples.list()
    assert not dashboard.polling  # no session, no running loop: nothing would run the callback
    template = dashboard.template()
    assert isinstance(template, pn.template.BootstrapTemplate)
    assert template.title == TITLE == "pavi_viz"


def test_settings_widgets_edit_the_config(dashboard):
    controls, config = dashboard.controls, dashboard.state.config
    controls.setting_widgets["steps"].value = 321
    controls.setting_widgets["lr"].value = 0.05
    controls.setting_widgets["family"].value = "pavi-f"
    controls._batch_inputs["group"].value = 5
    assert (config.steps, config.lr, config.family, config.batch) == (321, 0.05, "pavi-f", {"group": 5})
    controls._batch_inputs["group"].value = None
    assert config.batch == {}


def test_a_run_streams_elbo_points_to_the_data_source(dashboard):
    doc = render(dashboard)
    source = doc.select_one({"name": SOURCE_NAME})
    streamed = []
    doc.on_change(lambda event: streamed.append(event) if isinstance(event, ColumnsStreamedEvent) else None)
    dashboard.controls.buttons["start"].clicks += 1
    poll_until(dashboard, lambda: len(source.data["step"]) >= 20)
    assert streamed, "new points go to the browser as ColumnDataSource.stream"
    first = len(source.data["step"])
    poll_until(dashboard, lambda: dashboard.state.run_state == "finished")
    assert len(source.data["step"]) > first
    assert list(source.data["step"]) == list(range(1, 201))
    assert len(doc.select_one({"name": SMOOTHED_SOURCE_NAME}).data["step"]) == 200
    assert dashboard.elbo.data["elbo"].notna().all()
    assert "200 / 200" in dashboard.controls.progress_text.object
    assert dashboard.controls.progress.value == 200


def test_a_new_run_clears_the_plot(dashboard):
    assert dashboard.elbo.empty_hint.visible and "press Start" in dashboard.elbo.empty_hint.text
    dashboard.elbo.push(Polled(step=[7, 8], elbo=[-3.0, -2.0], smoothed_elbo=[-3.0, -2.5], spike=[False, False]))
    assert dashboard.elbo.data["step"].tolist() == [7, 8] and not dashboard.elbo.empty_hint.visible
    dashboard.state.start()
    dashboard.poll()
    steps = dashboard.elbo.data["step"].tolist()
    assert steps == list(range(1, len(steps) + 1))  # the new run's points only


def test_buttons_follow_the_run_state(dashboard):
    buttons = dashboard.controls.buttons

    def enabled() -> set[str]:
        return {name for name, button in buttons.items() if not button.disabled}

    assert enabled() == {"start"}
    dashboard.state.config.steps = 100_000
    buttons["start"].clicks += 1
    poll_until(dashboard, lambda: dashboard.state.step > 0)
    assert enabled() == {"pause", "stop"}
    buttons["pause"].clicks += 1
    poll_until(dashboard, lambda: dashboard.state.run_state == "paused")
    assert enabled() == {"resume", "stop"}
    buttons["resume"].clicks += 1
    poll_until(dashboard, lambda: dashboard.state.run_state == "running")
    assert enabled() == {"pause", "stop"}
    buttons["stop"].clicks += 1
    poll_until(dashboard, lambda: dashboard.state.run_state == "stopped")
    assert enabled() == {"start", "resume"}
    buttons["resume"].clicks += 1  # a stopped run goes on, towards the steps setting
    assert dashboard.state.run_state == "running"
    assert enabled() == {"pause", "stop"}


def test_enabled_buttons_table():
    assert enabled_buttons("idle") == {"start"}
    assert enabled_buttons("queued") == {"stop"}  # waiting for a training slot
    assert enabled_buttons("failed") == {"start"}
    assert enabled_buttons("finished", step=200, steps=200) == {"start"}
    assert enabled_buttons("finished", step=200, steps=300) == {"start", "resume"}
    assert format_seconds(float("nan")) == "–"
    assert format_seconds(3725) == "1 h 02 min"
    assert format_seconds(65) == "1 min 05 s"


def test_model_selector_replaces_the_model_and_stops_the_run(dashboard):
    dashboard.state.config.steps = 100_000
    run = dashboard.state.start()
    poll_until(dashboard, lambda: dashboard.state.step > 0)
    dashboard.model_select.value = "eight_schools"
    assert dashboard.state.model.name == "eight_schools"
    assert dashboard.state.run is None
    assert run.wait(30) == "stopped"
    dashboard.poll()
    assert dashboard.elbo.data.empty
    assert list(dashboard.controls._batch_inputs) == ["school"]
    assert "eight_schools" in dashboard.model_info.object
    assert {n for n, b in dashboard.controls.buttons.items() if not b.disabled} == {"start"}


def test_a_failed_run_shows_its_error():
    dash = Dashboard(tiny_state(lr=1e6, clip=None, steps=2000))
    try:
        dash.controls.buttons["start"].clicks += 1
        poll_until(dash, lambda: dash.state.run_state == "failed")
        controls = dash.controls
        assert controls.error.visible and "DivergenceError" in controls.error.object
        assert "restored to" in controls.error.object and "error.result" not in controls.error.object
        assert "can still be downloaded" in controls.error.object
        assert dash.elbo.failure.visible and dash.elbo.failure.location == dash.state.step
        assert controls.traceback_card.visible and controls.traceback_card.collapsed
        assert "Traceback" in controls.traceback.object
        assert {n for n, b in controls.buttons.items() if not b.disabled} == {"start"}
    finally:
        dash.close()


def test_a_refused_action_shows_a_notice(dashboard):
    controls = dashboard.controls
    dashboard.state.start()
    poll_until(dashboard, lambda: dashboard.state.run_state == "finished")
    dashboard.state.config.steps = 300
    assert not controls.buttons["resume"].disabled
    dashboard.state.config.steps = 100  # fewer steps than done: the run refuses to resume
    controls._resume()
    assert controls.notice.visible and "ValueError" in controls.notice.object
    assert dashboard.state.run_state == "finished"
    dashboard.state.config.steps = 250
    controls._resume()
    assert not controls.notice.visible and dashboard.state.run_state == "running"


def test_exports(dashboard):
    exports = dashboard.exports
    model = pavi_viz.PlateModel.from_dict(__import__("json").loads(exports._model_json().getvalue()))
    assert model.to_dict() == dashboard.state.model.to_dict()
    assert exports.posterior_netcdf.disabled and exports.elbo_csv.disabled
    dashboard.state.start()
    poll_until(dashboard, lambda: dashboard.state.run_state == "finished")
    assert not exports.posterior_netcdf.disabled and not exports.elbo_csv.disabled
    history = pd.read_csv(exports._elbo_csv())
    assert history["step"].tolist() == list(range(1, 201))
    assert list(history.columns) == ["step", "elbo", "smoothed_elbo", "steps_per_second", "elapsed", "lr"]
    data = exports._posterior_netcdf().getvalue()
    path = dashboard.state.run.checkpoint.with_suffix(".nc")
    path.write_bytes(data)
    try:
        draws = load_netcdf(path)
    finally:
        path.unlink()
    posterior = draws["posterior"]  # ArviZ groups
    assert posterior.sizes["draw"] == 1000 and posterior["mu_g"].dims == ("chain", "draw", "group", "mu_g_dim_0")
    assert {"log_likelihood", "sample_stats", "posterior_predictive", "observed_data"} <= set(draws.children)
    assert exports.model_json.filename == "gre.json"


def test_close_leaves_no_run_thread_and_no_checkpoint():
    dash = Dashboard(tiny_state(steps=100_000))
    first = dash.state.start()
    poll_until(dash, lambda: dash.state.step > 0)
    second = dash.state.start()  # the first run is replaced: stopped, its checkpoint deleted
    poll_until(dash, lambda: dash.state.step > 0)
    assert run_threads()
    dash.close()
    assert not any(name == THREAD_PREFIX + dash.state.run.name for name in run_threads())
    assert dash.state.run.state == "stopped"
    assert first.wait(60) == "stopped" and not first.checkpoint.exists() and not second.checkpoint.exists()


def test_log_scale_plots_the_loss_and_says_what_it_hides():
    view = ElboView(tiny_state())
    doc = render(view)
    view.push(Polled(step=[1, 2, 3], elbo=[-100.0, -10.0, 5.0], smoothed_elbo=[-100.0, -55.0, -35.0],
                     spike=[False, False, False]))
    assert not view._note.visible
    view.scale = "log"
    source = doc.select_one({"name": SOURCE_NAME})
    assert doc.select_one({"name": FIGURE_NAME}).y_scale.__class__.__name__ == "LogScale"
    assert source.data["loss"][:2].tolist() == [100.0, 10.0]
    assert view._note.visible and view._note.object.startswith("1 point(s)")
    view.scale = "linear"
    assert not view._note.visible
    view.clear()
    assert view.data.empty


def test_spikes_are_marked_off_the_raw_curve_and_said_in_the_note():
    view = ElboView(tiny_state())
    doc = render(view)
    view.push(Polled(step=[1, 2, 3, 4], elbo=[-30.0, -29.0, -2.5e13, -28.0], smoothed_elbo=[-30.0, -29.5, -29.6, -29.0],
                     spike=[False, False, True, False]))
    source = doc.select_one({"name": SOURCE_NAME})
    assert source.data["elbo"][2] == -2.5e13  # kept (hover, exports)...
    assert np.isnan(source.data["drawn_elbo"]).tolist() == [False, False, True, False]  # ...but not drawn
    spikes = doc.select_one({"name": SPIKE_SOURCE_NAME})
    assert list(spikes.data["step"]) == [3] and list(spikes.data["smoothed_elbo"]) == [-29.6]
    assert view._note.visible and "1 spike(s)" in view._note.object and "-2.5e+13" in view._note.object
    view.scale = "log"  # a new figure keeps the spikes
    assert list(doc.select_one({"name": SPIKE_SOURCE_NAME}).data["step"]) == [3]
    view.clear()
    assert not len(view.spike_source.data["step"]) and not view._note.visible


def test_the_default_range_leaves_out_the_first_climb_and_the_spikes():
    view = ElboView(tiny_state())
    doc = render(view)
    steps = np.arange(1, 1001)
    elbo = -3000.0 - 2.5e6 * np.exp(-steps / 5.0) + np.random.default_rng(0).normal(0.0, 5.0, size=1000)
    spike = steps == 900
    elbo[spike] = -2.5e13
    smoothed = elbo.copy()  # near enough for the range: the spike's smoothed value stays on the curve
    smoothed[spike] = -3000.0
    view.push(Polled(step=steps.tolist(), elbo=elbo.tolist(), smoothed_elbo=smoothed.tolist(), spike=spike.tolist()))
    guide = doc.select_one({"name": GUIDE_NAME}).data
    assert list(guide["step"]) == [1, 1000]
    low, high = guide["y"]
    assert -3030.0 < low < -3000.0 and -3000.0 < high < -2970.0  # the noise band after the climb
    assert default_range(steps, elbo, smoothed) == (low, high)
    view.scale = "log"
    low, high = doc.select_one({"name": GUIDE_NAME}).data["y"]
    assert 2970.0 < low < 3000.0 and 3000.0 < high < 3030.0  # the same, as a loss
    view.clear()
    assert list(doc.select_one({"name": GUIDE_NAME}).data["step"]) == []
    assert default_range(np.array([]), np.array([]), np.array([])) is None


def test_a_failed_run_is_marked_at_its_last_step():
    state = tiny_state()
    view = ElboView(state)
    doc = render(view)
    failure = doc.select_one({"name": FAILURE_NAME})
    assert not failure.visible
    state.param.update(step=830, run_state="failed")
    assert failure.visible and failure.location == 830
    assert view.failure_label.text == "run failed after step 830"
    view.clear()  # a new run
    assert not view.failure.visible


def test_the_dashboard_paces_summaries_by_their_cost(dashboard):
    from pavi_viz.ui import dashboard as module

    render(dashboard)
    dashboard.state.config.param.update(steps=100_000, summary_every=5)
    dashboard.state.start()
    poll_until(dashboard, lambda: dashboard.state.summary is not None)
    cost = dashboard.summary_cost
    assert cost is not None and cost > 0
    assert dashboard.state.summary_interval == max(module.MIN_SUMMARY_INTERVAL, cost / module.SUMMARY_SHARE)
    assert dashboard.forest.rows["mean"].notna().all() and len(dashboard.forest.rows) == 20


def test_a_summary_and_a_selection_redraw_without_new_bokeh_models(dashboard):
    """The posterior views redraw by giving their sources new columns: the document's
    models stay the same objects, so nothing but those columns goes to the browser."""
    doc = render(dashboard)
    dashboard.state.start().wait()
    poll_until(dashboard, lambda: dashboard.state.summary is not None and dashboard.state.run_state == "finished")
    models = {m.id for m in doc.models}
    forest = doc.select_one({"name": FOREST_MEANS_NAME})
    before = list(forest.data["mean"])
    summary = dashboard.state.summary
    dashboard.state.summary = summary.copy(data={**{k: v.values for k, v in summary.data_vars.items()},
                                                 "mu_g": summary["mu_g"].values + 1})
    dashboard.state.selection = {"group": 4}
    assert list(forest.data["mean"]) == pytest.approx([m + 1 for m in before])
    assert dashboard.detail.title == "mu_g · group 4"
    assert {m.id for m in doc.models} == models


def test_the_dashboard_is_an_ipywidget_where_jupyter_bokeh_is_installed(dashboard):
    from jupyter_bokeh import BokehModel

    widget = pn.ipywidget(dashboard)
    assert isinstance(widget, BokehModel)
    # The Bokeh model the widget displays (jupyter_bokeh keeps it as _model), in its own document.
    source = widget._model.document.select_one({"name": SOURCE_NAME})
    dashboard.controls.buttons["start"].clicks += 1
    poll_until(dashboard, lambda: dashboard.state.run_state == "finished")
    assert list(source.data["step"]) == list(range(1, 201))  # streamed into the widget's plot
