"""The plain Bokeh helpers of the dashboard's plots."""

from __future__ import annotations

from bokeh.document import Document
from bokeh.models import ColumnDataSource

from pavi_viz.ui.views.figures import as_frame, new_figure, new_source, one_recompute, replace_data


def counting_recomputes(doc: Document) -> list[int]:
    """A list that grows by one at each recompute of ``doc``'s model graph."""
    calls: list[int] = []
    recompute = doc.models.recompute

    def counted() -> None:
        calls.append(1)
        recompute()

    doc.models.recompute = counted
    return calls


def test_one_recompute_walks_the_graph_once_and_only_when_asked() -> None:
    doc = Document()
    fig = new_figure()
    doc.add_root(fig)
    calls = counting_recomputes(doc)
    source = new_source(["x", "y"], "points")
    with one_recompute(doc):
        fig.title.text = "data only"  # no model in the value: nothing to walk
    assert calls == []
    with one_recompute(doc):
        for _ in range(3):
            fig.scatter("x", "y", source=source)  # new models, each asking for a walk
    assert len(calls) == 1
    assert doc.get_model_by_name("points") is source  # found by the one walk
    fig.line([0, 1], [0, 1])  # outside: Bokeh walks at once, as usual
    assert len(calls) == 2
    with one_recompute(None):  # no document: nothing to batch
        fig.title.text = "again"


def test_replace_data_keeps_columns_and_skips_blank_redraws() -> None:
    source = ColumnDataSource({"a": [], "b": []})
    changes: list[str] = []
    source.on_change("data", lambda attr, old, new: changes.append(attr))
    replace_data(source, {})  # blank and blank again: no change sent
    assert changes == []
    replace_data(source, {"a": [1.0, 2.0], "b": ["x", "y"]})
    assert list(as_frame(source)["b"]) == ["x", "y"]
    replace_data(source, {})  # cleared: the columns stay, empty
    assert changes == ["data", "data"] and set(source.data) == {"a", "b"} and len(source.data["a"]) == 0
