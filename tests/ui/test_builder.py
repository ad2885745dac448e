"""The visual builder without a browser: its widgets rendered to a Bokeh document, each
widget edit mapped to a state change and each state change (undo, a refused edit) shown
back in the widgets, Fit following validity, the model handed to the dashboard, uploads."""

from __future__ import annotations

import asyncio
import json
import threading

import panel as pn
import pytest
from bokeh.document import Document
from bokeh.events import Tap

from pavi_viz import examples
from pavi_viz.model import PlateModel
from pavi_viz.model.tables import MAX_UPLOAD_BYTES, model_to_table, write_table
from pavi_viz.ui.app import BUILD_TAB, FIT_TAB, App
from pavi_viz.ui.builder import Builder, _read_data
from pavi_viz.ui.builder_state import BuilderState, read_model_file
from pavi_viz.ui.dashboard import OWN_MODEL, Dashboard
from pavi_viz.ui.state import DashboardState
from pavi_viz.ui.views.diagram import NODES_NAME
from pavi_viz.ui.views.editors import parse_shape

pytestmark = pytest.mark.timeout(120)


def render(component) -> Document:
    doc = Document()
    doc.add_root(pn.panel(component).get_root(doc))
    return doc


def small_gre() -> PlateModel:
    return examples.load("gre", G=6, N=4, D=2)


@pytest.fixture
def builder() -> Builder:
    return Builder(BuilderState(small_gre()))


def press(button: pn.widgets.Button) -> None:
    button.clicks += 1


def spec(builder: Builder) -> dict:
    return builder.state.model.to_dict(include_data=False)


def test_the_builder_renders_with_its_diagram_and_named_widgets(builder) -> None:
    doc = render(builder)
    assert list(doc.select_one({"name": NODES_NAME}).data_source.data["name"]) == ["mu", "mu_g", "x"]
    classes = {c for model in doc.models for c in getattr(model, "css_classes", [])}
    for css in ("pavi-builder-fit", "pavi-builder-new", "pavi-builder-undo", "pavi-builder-json-upload",
                "pavi-builder-data-upload", "pavi-builder-simulate", "pavi-variable-distribution",
                "pavi-variable-param", "pavi-plate-name", "pavi-plate-size", "pavi-covariate-add"):
        assert css in classes, css
    assert not builder.fit.disabled  # the example comes with its data


def test_variable_widgets_edit_the_model_and_undo_shows_the_old_values(builder) -> None:
    editor, state = builder.variable_editor, builder.state
    assert (editor.select.value, editor.name_input.value, editor.distribution.value) == ("mu", "mu", "Normal")
    assert editor.param_inputs["scale"].value == "1.0" and editor.event_shape.value == "2"

    editor.distribution.value = "StudentT"
    assert state.model.variable("mu").distribution == "StudentT"
    assert list(editor.param_inputs) == ["df", "loc", "scale"]  # the rows follow the distribution
    press(builder.undo)
    assert state.model.variable("mu").distribution == "Normal"
    assert editor.distribution.value == "Normal" and list(editor.param_inputs) == ["loc", "scale"]
    assert not state.can_undo  # showing the undone state was no new edit
    press(builder.redo)
    assert editor.distribution.value == "StudentT"
    press(builder.undo)

    state.variable = "mu_g"  # as a click on the diagram does
    assert editor.name_input.value == "mu_g" and editor.param_inputs["loc"].value == "mu"
    assert editor.parent_pickers["loc"].value == "mu"
    assert "x" not in editor.parent_pickers["loc"].options.values()  # x depends on mu_g: a cycle
    editor.param_inputs["scale"].value = "exp(mu) + 1"
    assert state.model.variable("mu_g").params["scale"] == "exp(mu) + 1"
    editor.param_inputs["loc"].value = "2.5"
    assert state.model.variable("mu_g").params["loc"] == 2.5 and editor.parent_pickers["loc"].value == ""
    editor.parent_pickers["loc"].value = "mu"
    assert state.model.variable("mu_g").params["loc"] == "mu" and editor.param_inputs["loc"].value == "mu"
    editor.event_shape.value = "[3]"
    assert state.model.variable("mu_g").event_shape == [3]
    editor.kind.value = "observed"
    assert state.model.variable("mu_g").observed
    editor.name_input.value = "theta"
    assert [v.name for v in state.model.variables] == ["mu", "theta", "x"]
    assert state.model.variable("x").params["loc"] == "theta"  # renamed in the expressions too
    assert editor.select.value == "theta" and editor.select.options == ["mu", "theta", "x"]
    press(editor.remove)
    assert [v.name for v in state.model.variables] == ["mu", "x"] and editor.select.value == "mu"


def test_plates_are_listed_outer_first_whatever_the_click_order(builder) -> None:
    editor, state = builder.variable_editor, builder.state
    state.variable = "x"
    editor.plates.value = ["obs", "group"]  # the order of the clicks
    assert state.model.variable("x").plates == ["group", "obs"]
    assert editor.plates.value == ["group", "obs"]
    editor.plates.value = ["obs"]  # obs sits in group: a problem, shown under the variable
    assert editor.problems.visible and "list 'group' before 'obs'" in editor.problems.object
    assert builder.fit.disabled


def test_plate_widgets_edit_the_plates(builder) -> None:
    editor, state = builder.plates_editor, builder.state
    group, obs = editor.rows
    assert (group["name"].value, group["size"].value, obs["nested_in"].value) == ("group", 6, "group")
    group["name"].value = "school"
    assert [p.name for p in state.model.plates] == ["school", "obs"]
    assert state.model.variable("mu_g").plates == ["school"] and obs["nested_in"].value == "school"
    group["size"].value = 8  # the data no longer fits: a problem until simulated again
    assert state.model.plate("school").size == 8 and builder.fit.disabled
    assert "problem(s)" in builder.status.object and "school" in builder.problems.object
    press(builder.simulate)
    assert tuple(state.model.data["x"].shape) == (8, 4, 2) and not builder.fit.disabled
    obs["nested_in"].value = ""
    assert state.model.plate("obs").nested_in is None
    press(builder.add_plate)
    assert len(editor.rows) == 3 and editor.rows[2]["name"].value == "plate1"
    press(editor.rows[2]["remove"])
    assert [p.name for p in state.model.plates] == ["school", "obs"] and len(editor.rows) == 2


def test_a_covariate_added_and_edited_by_widgets_and_undone(builder) -> None:
    editor, state = builder.covariates_editor, builder.state
    assert editor.empty.visible and editor.rows == []
    press(editor.add)
    assert [c.name for c in state.model.covariates] == ["cov1"] and not editor.empty.visible
    row = editor.rows[0]
    assert (row["name"].value, row["plates"].value, row["event_shape"].value) == ("cov1", [], "")
    assert row["plates"].options == {"group": "group", "obs": "obs"}
    row["name"].value = "age"
    row["plates"].value = ["obs", "group"]  # the order of the clicks
    row["event_shape"].value = "3"
    covariate = state.model.covariates[0]
    assert (covariate.name, covariate.plates, covariate.event_shape) == ("age", ["group", "obs"], [3])
    assert row["plates"].value == ["group", "obs"]
    assert "age" in builder.variable_editor.parent_pickers["loc"].options.values()  # offered as a parent

    press(builder.undo)  # the event shape
    press(builder.undo)  # the plates
    assert state.model.covariates[0].plates == [] and row["plates"].value == []
    assert row["event_shape"].value == "" and row["name"].value == "age"
    press(builder.undo)  # the name
    assert state.model.covariates[0].name == "cov1" and row["name"].value == "cov1"
    press(builder.undo)  # the covariate itself
    assert state.model.covariates == [] and editor.rows == [] and editor.empty.visible
    assert not state.can_undo  # showing the undone states made no edit
    press(builder.redo)
    assert editor.rows[0]["name"].value == "cov1"

    editor.rows[0]["name"].value = "mu"  # taken: refused, shown, and the widget shows the model again
    assert editor.rows[0]["name"].value == "cov1" and "already used" in builder.message.object
    editor.rows[0]["plates"].value = ["obs"]  # obs sits in group: a problem, next to the covariate
    assert editor.rows[0]["problems"].visible and "list 'group' before 'obs'" in editor.rows[0]["problems"].object


def radon_by_widgets(builder: Builder) -> None:
    """Radon from an empty model, built by widgets: ``log_radon`` in houses has the mean
    ``mu + beta * floor`` with the covariate ``floor`` (no county effects, for brevity)."""
    plates, covariates, variables = builder.plates_editor, builder.covariates_editor, builder.variable_editor
    press(builder.new)
    press(builder.add_plate)
    press(builder.add_plate)
    plates.rows[0]["name"].value = "county"
    plates.rows[1]["name"].value = "house"
    plates.rows[1]["nested_in"].value = "county"
    press(covariates.add)
    covariates.rows[0]["name"].value = "floor"
    covariates.rows[0]["plates"].value = ["house"]
    for name in ("mu", "beta", "log_radon"):
        press(builder.add_variable)
        variables.name_input.value = name
    variables.plates.value = ["house"]
    variables.kind.value = "observed"
    variables.param_inputs["loc"].value = "mu + beta * floor"


def attach_radon_csv(builder: Builder) -> None:
    """Upload radon's data as a CSV file, houses in counties read from its columns."""
    builder.ragged.value = ["house"]
    csv = write_table(model_to_table(examples.load("radon")))
    builder.data_upload.param.update(value=csv, filename="radon.csv")


def test_a_covariate_in_an_expression_takes_its_data_from_the_csv_and_the_model_is_valid(builder) -> None:
    radon_by_widgets(builder)
    state, row = builder.state, builder.covariates_editor.rows[0]
    # A regularly nested house must list county first; the file makes it ragged instead.
    assert builder.fit.disabled and "list 'county' before 'house'" in row["problems"].object
    attach_radon_csv(builder)
    assert state.problems == [] and state.valid and not builder.fit.disabled
    assert set(state.model.data) == {"floor", "log_radon"} and state.model.plate("house").size == 919
    assert "floor (919)" in builder.data_info.object
    assert not row["problems"].visible


def test_renaming_a_covariate_in_its_editor_renames_it_in_expressions(builder) -> None:
    radon_by_widgets(builder)
    attach_radon_csv(builder)
    state, row = builder.state, builder.covariates_editor.rows[0]
    row["name"].value = "basement"
    assert [c.name for c in state.model.covariates] == ["basement"]
    assert state.model.variable("log_radon").params["loc"] == "mu + beta * basement"
    assert builder.variable_editor.param_inputs["loc"].value == "mu + beta * basement"
    assert "basement" in state.model.data and state.valid  # its data follows the name


def test_removing_a_covariate_shows_the_problem_next_to_the_variable_that_used_it(builder) -> None:
    radon_by_widgets(builder)
    attach_radon_csv(builder)
    variables, covariates = builder.variable_editor, builder.covariates_editor
    assert builder.state.variable == "log_radon" and not variables.problems.visible
    press(covariates.rows[0]["remove"])
    assert builder.state.model.covariates == [] and covariates.rows == []
    assert variables.problems.visible and "unknown name 'floor'" in variables.problems.object
    assert builder.fit.disabled and "floor" not in builder.state.model.data
    press(builder.undo)
    assert covariates.rows[0]["name"].value == "floor" and not variables.problems.visible


def test_a_refused_edit_shows_why_and_the_widget_shows_the_model_again(builder) -> None:
    editor = builder.variable_editor
    before = spec(builder)
    editor.name_input.value = "x"  # taken
    assert spec(builder) == before and editor.name_input.value == "mu"
    assert builder.message.visible and "already used" in builder.message.object
    editor.event_shape.value = "2, two"
    assert builder.message.visible and "whole numbers" in builder.message.object
    assert editor.event_shape.value == "2" and spec(builder) == before
    editor.name_input.value = "m"  # the next edit that works clears the message
    assert not builder.message.visible


def test_a_cycle_and_a_negative_scale_are_shown_next_to_their_variable(builder) -> None:
    editor, state = builder.variable_editor, builder.state
    editor.param_inputs["loc"].value = "mu_g"  # mu's loc from mu_g: mu -> mu_g -> mu
    assert builder.fit.disabled and state.variable == "mu"
    assert editor.problems.visible and "cycle" in editor.problems.object
    assert "cycle" in builder.problems.object and "problem(s)" in builder.status.object
    press(builder.undo)
    editor.param_inputs["scale"].value = "-1"
    assert editor.problems.visible and "must be positive" in editor.problems.object
    assert builder.fit.disabled
    editor.param_inputs["scale"].value = "0.5"
    assert not editor.problems.visible and not builder.fit.disabled


def test_building_gre_from_scratch_by_widgets_then_simulating_enables_fit(builder) -> None:
    state, plates, variables = builder.state, builder.plates_editor, builder.variable_editor
    press(builder.new)
    assert state.model.plates == [] and builder.fit.disabled and variables.empty.visible
    press(builder.add_plate)
    press(builder.add_plate)
    plates.rows[0]["name"].value = "group"
    plates.rows[1]["name"].value = "obs"
    plates.rows[1]["nested_in"].value = "group"
    for name, loc, plate_list, observed in (("mu", None, [], False), ("mu_g", "mu", ["group"], False),
                                            ("x", "mu_g", ["group", "obs"], True)):
        press(builder.add_variable)
        variables.name_input.value = name
        if loc:
            variables.parent_pickers["loc"].value = loc
        variables.plates.value = plate_list
        if observed:
            variables.kind.value = "observed"
    assert builder.fit.disabled and "No data yet" in builder.status.object  # valid, but no data
    assert state.problems == []
    builder.seed.value = 3
    press(builder.simulate)
    assert not builder.fit.disabled and set(state.model.truth) == {"mu", "mu_g"}
    assert tuple(state.model.data["x"].shape) == (10, 10)
    assert "Truth kept: mu, mu_g" in builder.data_info.object


def test_loading_an_example_and_the_download(builder) -> None:
    builder.example.value = "eight_schools"
    press(builder.load_example)
    assert builder.state.model.name == "eight_schools" and builder.json_download.filename == "eight_schools.json"
    saved = json.loads(builder._model_file().getvalue())
    assert saved["name"] == "eight_schools" and "data" in saved


def test_the_model_is_named_in_the_builder_and_fitted_under_that_name(builder) -> None:
    assert builder.model_name.value == "gre"
    builder.model_name.value = "visual cortex study"
    assert builder.state.model.name == "visual cortex study"
    assert builder.json_download.filename == "visual cortex study.json"
    builder.model_name.value = "   "  # refused: the widget shows the name again
    assert builder.message.visible and "model name" in builder.message.object
    assert builder.model_name.value == "visual cortex study"
    press(builder.undo)
    assert builder.state.model.name == "gre" and builder.model_name.value == "gre"
    press(builder.redo)
    app = App(Dashboard(DashboardState(examples.load("gre", G=6, N=4))))
    app.fit(builder.state.model.copy())
    assert app.dashboard.model_select.value == OWN_MODEL.format(name="visual cortex study")
    assert app.dashboard.model_info.object.startswith("**visual cortex study**")


def test_uploading_a_model_file_and_a_data_file(builder) -> None:
    radon = examples.load("radon")
    builder.json_upload.param.update(value=radon.to_json().encode(), filename="radon.json")
    assert builder.state.model.to_dict() == radon.to_dict()
    assert builder.json_upload.value is None  # read and forgotten: the same file again is read again
    gre = small_gre()
    builder.json_upload.param.update(value=gre.to_json().encode(), filename="gre.json")
    csv = write_table(model_to_table(examples.load("gre", G=9, N=3, D=2)))
    builder.data_upload.param.update(value=csv, filename="gre.csv")
    assert (builder.state.model.plate("group").size, builder.state.model.plate("obs").size) == (9, 3)
    assert not builder.fit.disabled and builder.state.model.truth is None
    assert "x (9 × 3 × 2)" in builder.data_info.object


def test_a_file_is_read_on_a_worker_thread_and_applied_on_the_callers(builder) -> None:
    """What keeps a large upload from holding up the server's event loop (every other
    session's): the reading runs on another thread, the edit on the loop's own."""
    threads: dict[str, threading.Thread] = {}

    def read(text: str) -> PlateModel:
        threads["read"] = threading.current_thread()
        return read_model_file(text)

    def apply(model: PlateModel) -> None:
        threads["apply"] = threading.current_thread()
        builder.state.load_model(model)

    asyncio.run(builder.edit_after_reading(read, examples.load("eight_schools").to_json(), then=apply))
    assert threads["read"] is not threading.current_thread() and threads["apply"] is threading.current_thread()
    assert builder.state.model.name == "eight_schools"
    asyncio.run(builder.edit_after_reading(read_model_file, b"not a model", then=apply))
    assert builder.state.model.name == "eight_schools" and "not a model file" in builder.message.object


def test_a_data_file_read_while_the_model_changed_is_attached_to_the_changed_model(builder) -> None:
    """Uploads are read and attached on a worker thread while the session may go on
    editing: an edit made meanwhile is kept, not overwritten by the model the file was
    attached to."""
    builder.json_upload.param.update(value=small_gre().to_json().encode(), filename="gre.json")
    revision = builder.state.revision
    read = _read_data(builder.state.model.copy(), write_table(model_to_table(examples.load("gre", G=9, N=3, D=2))),
                      "gre.csv", None)
    builder.state.rename_variable("mu", "population_mean")  # an edit while the file was being read
    builder._attach_read(read, revision, ragged=None)
    model = builder.state.model
    assert "population_mean" in [v.name for v in model.variables] and model.plate("group").size == 9
    assert builder.state.valid
    builder.state.undo()  # one step each: the attachment, then the rename
    assert "population_mean" in [v.name for v in builder.state.model.variables]
    assert builder.state.model.plate("group").size != 9


def test_a_ragged_nesting_from_the_data_file(builder) -> None:
    table = model_to_table(examples.load("gre", G=4, N=3, D=2)).iloc[:-2]  # the last group holds 1 point
    table["obs"] = range(len(table))  # ids of the points, global
    builder.ragged.value = ["obs"]
    builder.data_upload.param.update(value=write_table(table), filename="ragged.csv")
    obs = builder.state.model.plate("obs")
    assert obs.ragged and obs.size == 10 and list(obs.membership) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]
    row = builder.plates_editor.rows[1]
    assert row["ragged"].value and not row["ragged"].disabled and row["size"].disabled
    row["ragged"].value = False  # back to a regular nesting
    assert not builder.state.model.plate("obs").ragged and not row["ragged"].value


@pytest.mark.parametrize(("upload", "filename", "words"), [
    ("json_upload", "model.json", "not a model file"),
    ("json_upload", "model.json", "JSON"),
    ("data_upload", "data.csv", "MB"),
    ("data_upload", "data.nc", "NetCDF"),
    ("data_upload", "data.csv", "no rows"),
])
def test_a_malformed_or_oversized_upload_changes_nothing_and_says_why(builder, upload, filename, words) -> None:
    content = {
        "not a model file": b"plates: [group]",
        "JSON": b'{"plates": [',
        "MB": b"x\n" + b"1\n" * (MAX_UPLOAD_BYTES // 2 + 1),
        "NetCDF": b"\x89HDF\r\n\x1a\n" + b"\0" * 100,
        "no rows": b"group,obs,x[0],x[1]\n",
    }[words]
    before = spec(builder)
    getattr(builder, upload).param.update(value=content, filename=filename)
    assert spec(builder) == before and not builder.fit.disabled
    assert builder.message.visible and words in builder.message.object


def test_a_file_too_large_to_send_is_refused_by_the_browser(builder) -> None:
    before = spec(builder)
    builder.data_guard._handle_msg({"name": "huge.csv", "size": 30 * 2**20})  # what the browser sends instead
    assert spec(builder) == before and builder.message.visible
    assert "huge.csv is 30.0 MB; files up to 14 MB" in builder.message.object
    builder.variable_editor.name_input.value = "m"  # the next change shows the state's message again
    assert not builder.message.visible


def test_a_click_on_the_diagram_opens_the_variable(builder) -> None:
    render(builder)
    node = builder.diagram.layout.node("x")
    builder.diagram.figure._trigger_event(Tap(builder.diagram.figure, x=node.x, y=node.y))
    assert builder.variable_editor.name_input.value == "x" and builder.variable_editor.kind.value == "observed"


def test_parse_shape() -> None:
    assert parse_shape("") == [] and parse_shape("2") == [2] and parse_shape("[2, 3]") == [2, 3]
    assert parse_shape("2x3") == [2, 3] and parse_shape("2 × 3") == [2, 3] and parse_shape("2, a") == [2, "a"]


# -- the app: Fit hands the model to the dashboard --------------------------------------------
@pytest.fixture
def app():
    state = DashboardState(small_gre())
    state.config.param.update(family="mean-field", steps=30, threads=1, summary_every=10)
    app = App(Dashboard(state))
    yield app
    app.dashboard.close()


def test_fit_hands_a_copy_of_the_model_to_the_dashboard_which_trains_it(app) -> None:
    render(app)
    dashboard = app.dashboard
    assert app.tabs.active == FIT_TAB and dashboard.model_select.value == "gre" and app.builder is None
    app.tabs.active = BUILD_TAB  # the builder is made as its tab first opens
    builder = app.builder
    assert builder is not None and len(app.tabs[BUILD_TAB].objects) == 1
    builder.variable_editor.param_inputs["scale"].value = "2.0"  # mu's prior scale
    builder.plates_editor.rows[0]["size"].value = 5
    press(builder.simulate)
    press(builder.fit)
    model = dashboard.state.model
    assert model.to_dict() == builder.state.model.to_dict() and model is not builder.state.model
    assert app.tabs.active == FIT_TAB
    assert dashboard.model_select.value == OWN_MODEL.format(name="gre")  # not the bundled gre
    run = dashboard.state.start()
    run.wait()
    assert run.state.value == "finished" and dashboard.state.poll().step  # it trained
    builder.variable_editor.param_inputs["scale"].value = "3.0"
    assert model.variable("mu").params["scale"] == 2.0  # a copy: later edits stay in the builder
    dashboard.model_select.value = "gre"  # the bundled example, loaded again
    assert dashboard.state.model.plate("group").size == 100 and dashboard.model_select.options == examples.list()


def test_fit_does_nothing_while_the_model_is_invalid(app) -> None:
    app.tabs.active = BUILD_TAB
    builder, before = app.builder, app.dashboard.state.model
    builder.variable_editor.param_inputs["scale"].value = "-1"
    assert builder.fit.disabled
    builder._fit()  # even if a click got through
    assert app.dashboard.state.model is before
