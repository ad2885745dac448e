"""Marginal views (global densities, forests, detail) rendered to a Bokeh document, no browser."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from bokeh.document import Document
from bokeh.events import DoubleTap, Tap

from pavi_viz import examples
from pavi_viz.ui.state import DashboardState
from pavi_viz.ui.views.marginals import (
    DENSITY_NAME,
    FOREST_MEANS_NAME,
    FOREST_REFERENCE_ROW_HEIGHT,
    FOREST_ROW_HEIGHT,
    PAGE_SIZE,
    SELECTED_MARK,
    DetailView,
    ForestView,
    GlobalMarginals,
    ancestor_index,
    element_label,
    kde,
)


def render(view) -> tuple[Document, object]:
    """``view`` rendered into a new Bokeh document: the document and the root model."""
    doc = Document()
    root = view.__panel__().get_root(doc)
    doc.add_root(root)
    return doc, root


def source(root, name: str):
    (found,) = root.select({"name": name})
    return found


def click(view: ForestView, y: float, event: type = Tap) -> None:
    """A click on a forest's plot at height ``y`` (data coordinates), as Bokeh's server
    delivers the browser's tap event (``DoubleTap``: the second of two quick clicks)."""
    view.figure._trigger_event(event(view.figure, x=0.0, y=y))


@pytest.fixture(scope="module")
def big(fitted) -> DashboardState:
    """5000 groups: no draws are published for a model this size."""
    return fitted("gre", steps=50, G=5000, N=10, D=2)


@pytest.fixture(scope="module")
def schools(fitted) -> DashboardState:
    return fitted("eight_schools", reference=True)


@pytest.fixture(autouse=True)
def clear_selection(gre, radon, big, schools):
    for state in (gre, radon, big, schools):
        state.selection = {}
    yield


# -- forests ------------------------------------------------------------------------------------------
def test_forest_rows_equal_the_summary(gre: DashboardState) -> None:
    view = ForestView(gre, variable="mu_g")
    _, root = render(view)
    means = source(root, FOREST_MEANS_NAME).data
    summary = gre.summary["mu_g"]
    np.testing.assert_allclose(means["mean"], summary.sel(stat="mean", mu_g_dim_0=0).values, rtol=1e-6)
    np.testing.assert_allclose(means["low"], summary.sel(stat="5%", mu_g_dim_0=0).values, rtol=1e-6)
    np.testing.assert_allclose(means["high"], summary.sel(stat="95%", mu_g_dim_0=0).values, rtol=1e-6)
    assert list(means["label"][:2]) == ["group 0", "group 1"]
    view.component = "1"
    means = source(root, FOREST_MEANS_NAME).data
    np.testing.assert_allclose(means["mean"], summary.sel(stat="mean", mu_g_dim_0=1).values, rtol=1e-6)


def test_forest_sorted_by_mean(gre: DashboardState) -> None:
    view = ForestView(gre, variable="mu_g", order="mean")
    render(view)
    rows = view.rows
    assert np.all(np.diff(rows["mean"].values) >= 0)
    assert sorted(rows["element"]) == list(range(20))
    expected = gre.summary["mu_g"].sel(stat="mean", mu_g_dim_0=0).values[rows["element"].values.astype(int)]
    np.testing.assert_allclose(rows["mean"], expected, rtol=1e-6)


def test_truth_shown_for_simulated_data_only(gre: DashboardState, radon: DashboardState) -> None:
    view = ForestView(gre, variable="mu_g")
    render(view)
    marker = view.sources["marker"].data
    np.testing.assert_allclose(marker["mean"], gre.truth["mu_g"].values[:, 0], rtol=1e-6)
    assert "truth" in view._status.object
    county = ForestView(radon, variable="alpha")
    render(county)
    assert radon.truth is None and len(county.sources["marker"].data["mean"]) == 0
    assert "truth" not in county._status.object


def test_a_5000_element_plate_renders_one_page(big: DashboardState) -> None:
    view = ForestView(big, variable="mu_g")
    _, root = render(view)
    assert len(source(root, FOREST_MEANS_NAME).data["mean"]) == PAGE_SIZE
    assert "of 5000" in view._status.object
    view.page = 25
    assert list(view.rows["element"]) == list(range(4800, 5000))
    np.testing.assert_allclose(source(root, FOREST_MEANS_NAME).data["mean"],
                               big.summary["mu_g"].sel(stat="mean", mu_g_dim_0=0).values[4800:], rtol=1e-6)
    big.selection = {"group": 4321}  # selected elsewhere: the forest turns to its page and highlights it
    assert view.page == 4321 // PAGE_SIZE + 1
    row = 4321 % PAGE_SIZE
    assert list(view.sources["highlight"].data["y0"]) == [row - 0.5]


def test_a_click_selects_and_every_forest_of_the_plate_highlights(gre: DashboardState) -> None:
    first, second = ForestView(gre, variable="mu_g", order="mean"), ForestView(gre, variable="mu_g")
    render(first)
    render(second)
    click(first, y=3.2)  # a click on the fourth row from the top
    element = int(first.rows["element"][3])
    assert gre.selection == {"group": element}
    assert list(first.sources["highlight"].data["y0"]) == [3 - 0.5]
    assert list(second.sources["highlight"].data["y0"]) == [element - 0.5]
    click(first, y=5.9, event=DoubleTap)  # a quick second click, elsewhere
    assert gre.selection == {"group": int(first.rows["element"][6])}


def test_an_outer_selection_restricts_the_inner_forest(radon: DashboardState) -> None:
    houses = ForestView(radon, variable="log_radon")
    _, root = render(houses)
    assert len(houses.rows) == PAGE_SIZE and "of 919" in houses._status.object
    counties = ForestView(radon, variable="alpha")
    render(counties)
    click(counties, y=12)
    assert radon.selection == {"county": 12}
    members = np.flatnonzero(radon.model.plate("house").membership == 12)
    assert list(houses.rows["element"]) == list(members)
    np.testing.assert_allclose(source(root, FOREST_MEANS_NAME).data["mean"],
                               radon.draws["log_radon"].mean("sample").values[members], rtol=1e-5)
    assert houses._widgets["restrict"].visible and "members of county 12" in houses._status.object
    houses.restrict = False  # lift the restriction
    assert len(houses.rows) == PAGE_SIZE
    houses.restrict = True
    radon.selection = {}
    assert len(houses.rows) == PAGE_SIZE and not houses._widgets["restrict"].visible


def test_regular_nesting_restricts_to_the_group(gre: DashboardState) -> None:
    points = ForestView(gre, variable="x")
    render(points)
    assert len(points.rows) == PAGE_SIZE  # 200 of 20 x 10
    gre.selection = {"group": 7}
    assert list(points.rows["element"]) == list(range(70, 80))
    assert list(points.rows["label"][:2]) == ["group 7, obs 0", "group 7, obs 1"]


def test_the_forest_follows_new_summaries(gre: DashboardState) -> None:
    view = ForestView(gre, variable="mu_g")
    _, root = render(view)
    gre.summary = gre.summary.copy(data={**{k: v.values for k, v in gre.summary.data_vars.items()},
                                         "mu_g": gre.summary["mu_g"].values + 10})
    try:
        assert np.all(source(root, FOREST_MEANS_NAME).data["mean"] > 9)
    finally:
        gre.summary = gre.summary.copy(data={**{k: v.values for k, v in gre.summary.data_vars.items()},
                                             "mu_g": gre.summary["mu_g"].values - 10})



def axis_labels(view: ForestView) -> dict[float, str]:
    """The forest's y-axis labels by row, as the page draws them (one tick per label)."""
    axis = view.figure.yaxis[0]
    assert sorted(axis.ticker.ticks) == sorted(axis.major_label_overrides)
    return dict(axis.major_label_overrides)


def test_the_forest_grows_with_its_rows(gre: DashboardState, big: DashboardState, schools: DashboardState) -> None:
    few = ForestView(gre, variable="mu_g", page_size=4)
    render(few)
    assert len(few.rows) == 4 and few.figure.frame_height == 4 * FOREST_ROW_HEIGHT
    assert (few.figure.y_range.start, few.figure.y_range.end) == (3.5, -0.5)  # row 0 on top, each row one band
    many = ForestView(big, variable="mu_g")
    render(many)
    assert len(many.rows) == PAGE_SIZE and many.figure.frame_height == PAGE_SIZE * FOREST_ROW_HEIGHT
    with_reference = ForestView(schools, variable="theta")  # a grey reference bar under each row
    render(with_reference)
    assert with_reference.figure.frame_height == 8 * FOREST_REFERENCE_ROW_HEIGHT


def test_every_row_is_labelled(big: DashboardState) -> None:
    view = ForestView(big, variable="mu_g")
    render(view)
    view.page = 3
    labels = axis_labels(view)
    assert list(labels) == list(range(PAGE_SIZE))
    assert list(labels.values()) == [f"group {i}" for i in range(400, 600)] == list(view.rows["label"])


def test_coordinate_labels_name_the_rows(radon: DashboardState) -> None:
    # The bundled radon data (posteriordb's radon_mn) numbers its counties and names none:
    # given names, as a Posterior built with coords={"county": ...} gives them, they show.
    names = [f"COUNTY <b>{i}</b>" for i in range(85)]  # tick labels are plain text: markup stays text
    numbered = radon.summary
    radon.summary = numbered.assign_coords(county=names)
    try:
        view = ForestView(radon, variable="alpha")
        render(view)
        labels = axis_labels(view)
        assert labels[0.0] == "county 0 (COUNTY <b>0</b>)" and labels[84.0] == "county 84 (COUNTY <b>84</b>)"
        assert len(labels) == 85
    finally:
        radon.summary = numbered


def test_the_bundled_radon_data_names_no_county(radon: DashboardState) -> None:
    # What the forest shows for radon today: positions (see the test above for names).
    view = ForestView(radon, variable="alpha")
    render(view)
    assert list(radon.summary["county"].values) == list(range(85))
    assert axis_labels(view)[0.0] == "county 0"


def test_the_reading_matches_a_hand_count() -> None:
    state = DashboardState(examples.load("eight_schools"))
    low = np.array([-1.0, 0, 2, 3, 4, 6, 7, 10])
    high = low + np.array([2.0, 4, 6, 8, 3, 5, 7, 9])  # widths 2 to 9, median 5.5
    stats = ["mean", "sd", "5%", "50%", "95%"]
    theta = np.stack([(low + high) / 2, np.ones(8), low, (low + high) / 2, high])
    state.summary = xr.Dataset({"theta": (("stat", "school"), theta), "mu": (("stat",), [5.0, 1, 3, 5, 7]),
                                "tau": (("stat",), [2.0, 1, 1, 2, 3])}, coords={"stat": stats, "school": np.arange(8)})
    # mu's mean 5 lies in [2, 8], [3, 11] and [4, 7] only; the truth lies inside rows 0, 1, 2 and 7.
    state.truth = xr.Dataset({"theta": (("school",), [0.0, 3, 5, 20, 20, 20, 20, 15])}, coords={"school": np.arange(8)})
    view = ForestView(state, variable="theta")
    render(view)
    assert view.reading == ("8 school elements · 90% intervals 2 to 9 wide (median 5.5) · "
                            "5 of 8 exclude mu's posterior mean (5) · 4 of 8 truth values inside their interval")
    assert view._reading.object == view.reading


def test_the_reading_counts_every_page_and_only_the_members(radon: DashboardState, big: DashboardState) -> None:
    view = ForestView(big, variable="mu_g")
    render(view)
    assert view.reading.startswith("5000 group elements")  # every page, not the 200 rows shown
    houses = ForestView(radon, variable="log_radon")  # observed: predictive intervals, data as markers
    render(houses)
    assert houses.reading.startswith("919 house elements") and "exclude" not in houses.reading
    assert "of 919 observed values inside their interval" in houses.reading
    radon.selection = {"county": 12}
    members = int(np.sum(radon.model.plate("house").membership == 12))
    assert houses.reading.startswith(f"{members} house elements")


def test_the_highlight_follows_the_selection(gre: DashboardState) -> None:
    view = ForestView(gre, variable="mu_g")
    render(view)
    assert not any(label.startswith(SELECTED_MARK) for label in axis_labels(view).values())
    for element in (5, 12):
        gre.selection = {"group": element}
        assert list(view.sources["highlight"].data["y0"]) == [element - 0.5]
        marked = {row: label for row, label in axis_labels(view).items() if label.startswith(SELECTED_MARK)}
        assert marked == {float(element): f"{SELECTED_MARK}group {element}"}
    gre.selection = {}
    assert list(view.sources["highlight"].data["y0"]) == []
    assert not any(label.startswith(SELECTED_MARK) for label in axis_labels(view).values())

# -- detail ------------------------------------------------------------------------------------------------
def test_the_detail_follows_the_selection(gre: DashboardState) -> None:
    gre.variable = "mu_g"
    view = DetailView(gre)
    _, root = render(view)
    assert view.title == "mu_g: select an element of group"
    gre.selection = {"group": 3}
    assert view.title == "mu_g · group 3"
    assert "mu_g · group 3" in view._title.object
    density = source(root, DENSITY_NAME).data
    draws = gre.draws["mu_g"].isel(group=3).values  # (sample, 2)
    assert list(density["component"]) == ["0", "1"]  # one curve per component
    for c, xs in enumerate(density["xs"]):
        assert xs.min() < draws[:, c].min() and xs.max() > draws[:, c].max()
    truth_lines = view.density.sources["marker"].data
    np.testing.assert_allclose(truth_lines["x"], gre.truth["mu_g"].values[3], rtol=1e-6)
    gre.selection = {"group": 11}
    assert view.title == "mu_g · group 11"
    assert view.density.series[0].marker == pytest.approx(float(gre.truth["mu_g"].values[11, 0]))


def test_the_detail_falls_back_to_the_normal_approximation(big: DashboardState) -> None:
    assert big.draws is None
    big.variable = "mu_g"
    view = DetailView(big)
    render(view)
    big.selection = {"group": 4000}
    (series, _) = view.density.series
    mean, sd = big.summary["mu_g"].sel(stat=["mean", "sd"], group=4000, mu_g_dim_0=0).values
    assert series.approximate and series.x[np.argmax(series.y)] == pytest.approx(float(mean), abs=float(sd) / 20)
    assert "Normal approximation" in view._caption.object


def test_element_labels_use_coordinates() -> None:
    import xarray as xr

    named = xr.Dataset(coords={"county": ["AITKIN", "ANOKA"]})
    assert element_label(named, ["county"], [1]) == "county 1 (ANOKA)"
    assert element_label(xr.Dataset(coords={"county": [0, 1]}), ["county"], [1]) == "county 1"


# -- globals -------------------------------------------------------------------------------------------------
def test_global_marginals_show_truth_and_reference(gre: DashboardState, schools: DashboardState) -> None:
    view = GlobalMarginals(gre)
    render(view)
    assert list(view.plots) == ["mu"]
    (first, _) = view.plots["mu"].series
    assert first.marker == pytest.approx(float(gre.truth["mu"].values[0]))
    assert not first.approximate and len(first.ref_x) == 0
    ref_view = GlobalMarginals(schools)
    render(ref_view)
    assert list(ref_view.plots) == ["mu", "tau"]
    (tau,) = ref_view.plots["tau"].series
    assert len(tau.ref_x) and not np.isfinite(tau.marker)
    reference_median = float(schools.reference["tau"].median())
    assert tau.ref_x.min() < reference_median < tau.ref_x.max()
    assert "reference" in ref_view._captions["tau"].object


def test_forest_shows_reference_intervals(schools: DashboardState) -> None:
    view = ForestView(schools, variable="theta")
    render(view)
    reference = view.sources["reference"].data
    np.testing.assert_allclose(reference["mean"], schools.reference["theta"].mean("sample").values, rtol=1e-6)


def test_views_survive_a_new_model(fitted) -> None:
    from pavi_viz.ui.views.predictive import PredictiveCheck

    state = fitted("radon", steps=50)
    views = [ForestView(state), ForestView(state, variable="log_radon"), DetailView(state), GlobalMarginals(state),
             PredictiveCheck(state)]
    for view in views:
        render(view)
    state.variable = "alpha"
    state.selection = {"county": 3, "house": 40}
    state.model = examples.load("gre", G=30, N=4)
    state.start().wait()
    state.poll()
    state.selection = {"group": 2}
    assert views[0].variable == views[1].variable == "mu_g" and len(views[0].rows) == 30
    assert views[2].title == "mu_g · group 2" and list(views[3].plots) == ["mu"]
    assert views[4].plate == "group" and "group 2" in views[4]._message.object


# -- helpers -------------------------------------------------------------------------------------------------
def test_ancestor_index() -> None:
    radon = examples.load("radon")
    membership = np.asarray(radon.plate("house").membership)
    np.testing.assert_array_equal(ancestor_index(radon, ["house"], "county"), membership)
    assert ancestor_index(radon, ["county"], "county") is None
    gre = examples.load("gre", G=3, N=2)
    np.testing.assert_array_equal(ancestor_index(gre, ["group", "obs"], "group"), [[0, 0], [1, 1], [2, 2]])


def test_kde_integrates_to_one() -> None:
    x, y = kde(np.random.default_rng(0).normal(size=500))
    assert np.trapezoid(y, x) == pytest.approx(1, abs=0.01)
