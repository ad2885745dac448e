"""Comparing stored runs: the records of :class:`RunComparison` against the store they
read, runs without a summary or deleted meanwhile, and :class:`CompareView` rendered
into a Bokeh document (no browser)."""

from __future__ import annotations

import contextlib
import html
import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np
import panel as pn
import pytest
from bokeh.document import Document
from bokeh.models import DataTable, HoverTool, StringFormatter

import pavi_viz
from pavi_viz import examples
from pavi_viz.runner.hub import Info, Point, StateChange
from pavi_viz.runner.store import RunStore, StoredRun
from pavi_viz.ui.compare import RunComparison, label
from pavi_viz.ui.views.compare import (
    ELBO_SOURCE_NAME,
    EMPTY_HINT,
    GLOBAL_SOURCE_PREFIX,
    RAW_SOURCE_NAME,
    TABLE_SOURCE_NAME,
    CompareView,
)

PAYLOAD = "<script>alert(1)</script>"

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def fitted_store(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """A store of four short real fits: eight schools at two learning rates, and GRE
    twice (one with a batch size: a setting the others leave at its default); the
    file and the runs' ids by role."""
    path = tmp_path_factory.mktemp("compare") / "runs.db"
    store = RunStore(path)
    options = {"steps": 150, "threads": 1, "progress": False, "store": store}
    pavi_viz.fit(examples.load("eight_schools"), lr=0.01, **options)
    pavi_viz.fit(examples.load("eight_schools"), lr=0.03, **options)
    gre = examples.load("gre", G=20, N=10, D=2)
    pavi_viz.fit(gre, **options)
    pavi_viz.fit(gre, batch={"group": 8}, **options)
    ids = [run.id for run in reversed(store.runs())]  # oldest first
    return path, dict(zip(("schools_a", "schools_b", "gre_a", "gre_b"), ids, strict=True))


@pytest.fixture
def store(fitted_store, tmp_path) -> RunStore:
    """A copy of the fitted store, for each test to change as it likes."""
    path, _ = fitted_store
    shutil.copy(path, tmp_path / "runs.db")
    return RunStore(tmp_path / "runs.db", create=False)


@pytest.fixture
def ids(fitted_store) -> dict[str, int]:
    return fitted_store[1]


def sql(store: RunStore, statement: str, *parameters: object) -> None:
    """Change the store's file behind its back (as another program would)."""
    with contextlib.closing(sqlite3.connect(store.path)) as db, db:
        db.execute(statement, parameters)


def add_run_without_summary(store: RunStore, state: str) -> StoredRun:
    """A GRE run with a few points and no summary, in ``state``."""
    info = Info(run="bare", model="gre", family="pavi-e", parameter_count=10, total_steps=100, device="cpu",
                torch_threads=1, settings={"lr": 0.01, "seed": 3}, truth=None, observed=None)
    writer = store.open_run(info)
    put_points(writer, range(1, 11))
    writer.put(StateChange(run="bare", state=state, time=time.time(), message=""))
    writer.close()
    return store.runs()[0]


def rendered_panes(component) -> list[str]:
    """The HTML each Markdown (and alert) pane of ``component`` sends to the page."""
    panes = list(pn.panel(component).select(pn.pane.Markdown))
    assert panes and all(pane.renderer_options.get("html") is False for pane in panes)
    return [html.unescape(pane._transform_object(pane.object)["object"]) for pane in panes if pane.object]


def render(view: CompareView) -> Document:
    doc = Document()
    doc.add_root(view.__panel__().get_root(doc))
    return doc


# -- the records -----------------------------------------------------------------------------
def test_curves_hold_each_runs_points_by_step_or_by_training_time(store, ids):
    chosen = [ids["schools_b"], ids["gre_a"], ids["schools_a"]]
    comparison = RunComparison(store=store, run_ids=chosen)
    curves = comparison.curves()
    assert [c.run_id for c in curves] == chosen
    assert curves[0].label == f"{ids['schools_b']} · eight_schools · pavi-e"
    for curve in curves:
        points = store.points(curve.run_id)
        assert len(points) == 150
        np.testing.assert_array_equal(curve.x, [p.step for p in points])
        np.testing.assert_array_equal(curve.steps, [p.step for p in points])
        np.testing.assert_array_equal(curve.smoothed_elbo, [p.smoothed_elbo for p in points])
        np.testing.assert_array_equal(curve.elbo, [p.elbo for p in points])
    comparison.align = "time"
    for curve in comparison.curves():
        np.testing.assert_array_equal(curve.x, [p.elapsed for p in store.points(curve.run_id)])
        assert np.all(np.diff(curve.x) > 0)


def test_the_table_shows_differing_settings_and_ranks_elbos_only_within_a_model(store, ids):
    chosen = [ids["schools_a"], ids["schools_b"], ids["gre_a"]]
    rows = RunComparison(store=store, run_ids=chosen).table()
    assert [r.id for r in rows] == chosen
    assert [r.lr for r in rows] == [0.01, 0.03, 0.01]
    assert [(r.model, r.family, r.state, r.step, r.total_steps, r.seed) for r in rows] == [
        (model, "pavi-e", "finished", 150, 150, 0) for model in ("eight_schools", "eight_schools", "gre")]
    assert all(r.other_settings == () for r in rows)  # lr has its own column; the rest is alike
    runs = {run.id: run for run in store.runs()}
    assert [r.final_elbo for r in rows] == [runs[i].smoothed_elbo for i in chosen]
    assert [r.pareto_k for r in rows] == [runs[i].pareto_k for i in chosen]
    schools = rows[:2]
    winner, loser = sorted(schools, key=lambda r: -r.final_elbo)
    assert winner.best and not loser.best
    assert "best final ELBO of the 2 runs" in winner.note and f"below run {winner.id}" in loser.note
    gre = rows[2]  # the better ELBO of all three, and still not ranked against eight schools
    assert gre.final_elbo is not None and not gre.best and "not ranked" in gre.note and "not comparable" in gre.note

    both = RunComparison(store=store, run_ids=[ids["gre_a"], ids["gre_b"], ids["schools_a"]]).table()
    assert [dict(r.other_settings) for r in both] == [{"batch": {}}, {"batch": {"group": 8}}, {"batch": {}}]
    assert sum(r.best for r in both[:2]) == 1 and not both[2].best


def test_globals_are_the_shared_unplated_latents_with_each_runs_summary(store, ids):
    chosen = [ids["schools_a"], ids["schools_b"]]
    marginals = RunComparison(store=store, run_ids=chosen).globals()
    assert [m.title for m in marginals] == ["mu", "tau"]  # theta lies in the school plate
    for marginal in marginals:
        assert [e.run_id for e in marginal.estimates] == chosen
        for estimate in marginal.estimates:
            stats = store.summary(estimate.run_id).summary[marginal.variable]
            assert estimate.mean == float(stats.sel(stat="mean")) and estimate.sd == float(stats.sel(stat="sd"))
            assert (estimate.low, estimate.high) == (float(stats.sel(stat="5%")), float(stats.sel(stat="95%")))
            assert estimate.interval == "5%–95%" and estimate.low < estimate.mean < estimate.high

    vector = RunComparison(store=store, run_ids=[ids["gre_a"], ids["gre_b"]]).globals()
    assert [m.title for m in vector] == ["mu[0]", "mu[1]"]
    means = store.summary(ids["gre_b"]).summary["mu"].sel(stat="mean").values
    assert [m.estimates[1].mean for m in vector] == list(means)
    # eight schools' mu is a scalar, GRE's a vector: they share no global variable
    assert RunComparison(store=store, run_ids=[ids["schools_a"], ids["gre_a"]]).globals() == []


@pytest.mark.parametrize("state", ["running", "failed"])
def test_a_run_without_a_summary_is_listed_with_none(store, ids, state):
    bare = add_run_without_summary(store, state)
    comparison = RunComparison(store=store, run_ids=[ids["schools_a"], bare.id])
    [mu, tau] = comparison.globals()
    for marginal in (mu, tau):
        assert marginal.estimates[1].run_id == bare.id
        assert (marginal.estimates[1].mean, marginal.estimates[1].interval) == (None, None)
        assert marginal.estimates[0].mean is not None
    assert [len(c.x) for c in comparison.curves()] == [150, 10]
    assert comparison.table()[1].state == state


def test_a_deleted_run_is_dropped_by_refresh_with_a_message(store, ids):
    chosen = [ids["schools_a"], ids["gre_a"], ids["schools_b"]]
    comparison = RunComparison(store=store, run_ids=chosen)
    gone = label(store.run(ids["gre_a"]))
    store.delete([ids["gre_a"]])
    # Read before the next refresh: the run reads as empty, nothing raises.
    assert [len(c.x) for c in comparison.curves()] == [150, 0, 150]
    assert len(comparison.table()) == 3
    [mu, tau] = comparison.globals()  # its summary reads as missing: eight schools' globals, it without
    assert [e.mean is None for e in mu.estimates] == [False, True, False]
    comparison.refresh()
    assert comparison.run_ids == [ids["schools_a"], ids["schools_b"]]
    assert f"Run {gone} is no longer in the store" in comparison.message
    comparison.refresh()
    assert gone in comparison.message  # it stays until the selection changes
    comparison.run_ids = [ids["schools_a"], ids["schools_b"], 999]
    assert comparison.run_ids == [ids["schools_a"], ids["schools_b"]] and "Run 999 " in comparison.message
    comparison.run_ids = [ids["schools_b"], ids["schools_a"]]
    assert comparison.message == ""


def test_no_store_compares_nothing():
    comparison = RunComparison(run_ids=[1, 2])
    assert (comparison.runs, comparison.curves(), comparison.table(), comparison.globals()) == ([], [], [], [])
    assert comparison.message == "" and comparison.run_ids == [1, 2]
    assert CompareView(comparison)._empty.visible


def test_an_unreadable_store_is_a_message(store, ids):
    comparison = RunComparison(store=store, run_ids=[ids["schools_a"], ids["schools_b"]])
    store.path.unlink()
    comparison.refresh()
    assert comparison.message.startswith("The run store cannot be read: no run store at")
    assert comparison.run_ids == [ids["schools_a"], ids["schools_b"]]
    assert [len(c.x) for c in comparison.curves()] == [0, 0]


# -- the view --------------------------------------------------------------------------------
def test_the_view_draws_one_line_row_and_mark_per_run(store, ids):
    comparison = RunComparison(store=store, run_ids=[ids["schools_a"], ids["schools_b"]])
    view = CompareView(comparison)
    doc = render(view)
    smoothed = doc.select_one({"name": ELBO_SOURCE_NAME})
    assert list(smoothed.data["run"]) == [ids["schools_a"], ids["schools_b"]]
    assert len(set(smoothed.data["color"])) == 2
    assert [len(ys) for ys in smoothed.data["ys"]] == [150, 150]
    assert len(doc.select_one({"name": RAW_SOURCE_NAME}).data["xs"]) == 2
    table = doc.select_one({"name": TABLE_SOURCE_NAME})
    assert table.data["lr"] == ["0.01", "0.03"] and table.data["color"] == smoothed.data["color"]
    assert sorted(table.data["weight"]) == ["bold", "normal"]
    for title in ("mu", "tau"):
        marks = doc.select_one({"name": GLOBAL_SOURCE_PREFIX + title})
        assert marks.data["color"] == smoothed.data["color"]
        assert marks.data["row"] == [f"run {ids['schools_a']}", f"run {ids['schools_b']}"]
    assert view.elbo_figure.xaxis[0].axis_label == "step"

    comparison.align = "time"
    assert view.elbo_figure.xaxis[0].axis_label == "training seconds"
    np.testing.assert_array_equal(smoothed.data["xs"][0], [p.elapsed for p in store.points(ids["schools_a"])])

    comparison.run_ids = [ids["schools_a"], ids["schools_b"], ids["gre_a"]]  # a new selection redraws
    assert len(smoothed.data["xs"]) == 3 and len(table.data["run"]) == 3
    assert list(view.global_plots) == []  # scalar mu and vector mu: nothing shared

    comparison.run_ids = [ids["gre_a"]]
    assert view._empty.visible and view._empty.object == EMPTY_HINT and not view._content.visible


def test_the_view_shows_hostile_names_as_text(store, ids):
    sql(store, "UPDATE runs SET name = ? WHERE id = ?", PAYLOAD, ids["schools_b"])
    comparison = RunComparison(store=store, run_ids=[ids["schools_a"], ids["schools_b"], ids["gre_a"]])
    view = CompareView(comparison)
    doc = render(view)
    # The table's cells are text (Bokeh's StringFormatter sets a cell's text, never HTML).
    table = doc.select_one({"type": DataTable})
    assert all(type(column.formatter) is StringFormatter for column in table.columns)
    assert PAYLOAD in table.source.data["name"]
    assert not any("{safe}" in str(tool.tooltips) for tool in doc.select({"type": HoverTool}))

    store.delete([ids["schools_b"]])
    view.refresh()
    shown = rendered_panes(view)
    assert any("&lt;script&gt;alert(1)&lt;/script&gt;" in text and "no longer in the store" in text for text in shown)
    assert not any("<script" in text for text in shown)
    assert len(view.elbo_source.data["run"]) == 2 and not view._empty.visible


def test_refresh_follows_a_run_that_trains(store, ids):
    info = Info(run="live", model="gre", family="pavi-e", parameter_count=10, total_steps=100, device="cpu",
                torch_threads=1, settings={}, truth=None, observed=None)
    writer = store.open_run(info)  # a run this process is training: its writer stays open
    try:
        put_points(writer, range(1, 11))
        wait_points(store, writer.run_id, 10)
        comparison = RunComparison(store=store, run_ids=[ids["schools_a"], writer.run_id])
        view = CompareView(comparison)
        assert [len(x) for x in view.elbo_source.data["xs"]] == [150, 10]
        assert f"run {writer.run_id} (live)" in view._missing.object  # no summary yet
        put_points(writer, range(11, 16))
        wait_points(store, writer.run_id, 15)
        view.refresh()
        assert [len(x) for x in view.elbo_source.data["xs"]] == [150, 15]
        assert view.table_source.data["steps"][1] == "15 / 100"
    finally:
        writer.close()


def put_points(writer, steps) -> None:
    for step in steps:
        writer.put(Point(step=step, elbo=-100.0 + step, smoothed_elbo=-100.0 + step, spike=False,
                         steps_per_second=10.0, elapsed=0.1 * step, lr=0.01, time=time.time()))


def wait_points(store: RunStore, run_id: int, count: int, timeout: float = 20) -> None:
    """Wait until the run's writer has committed ``count`` points (it commits in batches)."""
    end = time.monotonic() + timeout
    while len(store.points(run_id)) < count:
        assert time.monotonic() < end, f"run {run_id}: {len(store.points(run_id))} points after {timeout} s"
        time.sleep(0.05)
