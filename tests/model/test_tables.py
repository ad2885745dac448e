"""Tests for user data tables: CSV and NetCDF files attached to a model, and back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from pavi_viz.examples import gre, radon
from pavi_viz.model import ModelError, PlateModel, tables
from pavi_viz.model.tables import (
    attach_table,
    model_to_dataset,
    model_to_table,
    ragged_from_column,
    read_table,
    write_table,
)

MODELS = {
    "radon": radon.build_radon,
    "radon_uranium": radon.build_radon_uranium,
    "gre": lambda: gre.build(G=6, N=5, D=2),
}

RADON_CSV = b"""county,floor,log_radon
BLUE EARTH,0,1.2
AITKIN,1,0.5
CASS,0,2.0
AITKIN,0,0.25
CASS,1,1.5
"""


def without_data(model: PlateModel) -> PlateModel:
    bare = model.copy()
    bare.data = {}
    return bare


def membership(model: PlateModel, plate: str) -> list[int] | None:
    members = model.plate(plate).membership
    return None if members is None else np.asarray(members).tolist()


def assert_same_data(got: PlateModel, want: PlateModel) -> None:
    assert [(p.name, p.size, p.nested_in) for p in got.plates] == [(p.name, p.size, p.nested_in) for p in want.plates]
    for plate in want.plates:
        assert membership(got, plate.name) == membership(want, plate.name)
    assert sorted(got.data) == sorted(want.data)
    for name, value in want.data.items():
        assert torch.equal(got.data[name], value), name


def snapshot(model: PlateModel) -> tuple[str, dict[str, torch.Tensor]]:
    return model.to_json(include_data=False), dict(model.data)


def error(call, *args, **kwargs) -> ModelError:
    with pytest.raises(ModelError) as info:
        call(*args, **kwargs)
    return info.value


# -- round trips ------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("form", ["frame", "csv", "dataset", "netcdf"])
def test_round_trip_reproduces_the_data(name: str, form: str) -> None:
    model = MODELS[name]()
    if form in ("frame", "csv"):
        table = model_to_table(model)
    else:
        table = model_to_dataset(model)
    if form in ("csv", "netcdf"):
        table = read_table(write_table(table), f"data.{'csv' if form == 'csv' else 'nc'}")
    bare = without_data(model)
    attached = attach_table(bare, table)
    assert_same_data(attached.model, model)
    assert attached.ignored_columns == []
    assert bare.data == {}  # the input is untouched
    attached.model.validate()


def test_table_layouts() -> None:
    radon_table = model_to_table(radon.build_radon_uranium())
    assert list(radon_table.columns) == ["county", "house", "floor", "log_uppm", "log_radon"]
    assert len(radon_table) == 919
    gre_table = model_to_table(gre.build(G=3, N=4, D=2))
    assert list(gre_table.columns) == ["group", "obs", "x[0]", "x[1]"]
    assert gre_table["group"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert gre_table["obs"].tolist() == [0, 1, 2, 3] * 3


def test_reads_a_netcdf_file_written_to_disk(tmp_path) -> None:
    model = gre.build(G=3, N=4, D=2)
    path = tmp_path / "gre.nc"
    model_to_dataset(model).to_netcdf(path, engine=tables.NETCDF_ENGINE)  # as Posterior.to_netcdf writes
    table = read_table(path.read_bytes(), "gre.nc")
    assert table.attrs["filename"] == "gre.nc"
    assert_same_data(attach_table(without_data(model), table).model, model)


# -- CSV: ids, labels, nesting --------------------------------------------------------------
def test_text_ids_are_sorted_and_kept_as_labels() -> None:
    model = radon.build_radon()
    attached = attach_table(model, read_table(RADON_CSV, "radon.csv"))
    new = attached.model
    assert attached.labels["county"] == ["AITKIN", "BLUE EARTH", "CASS"]
    assert attached.describe("county", 0) == "county 0 (AITKIN)"
    assert attached.describe("house", 2) == "house 2"  # rows in file order, no ids given
    assert new.plate("county").size == 3
    assert new.plate("house").size == 5
    assert membership(new, "house") == [1, 0, 2, 0, 2]
    assert torch.equal(new.data["log_radon"], torch.tensor([1.2, 0.5, 2.0, 0.25, 1.5]))
    assert new.data["floor"].tolist() == [0, 1, 0, 0, 1]
    new.validate()
    assert model.plate("county").size == 85  # the input keeps its own plates


def test_numeric_ids_sort_as_numbers_and_labels_round_trip() -> None:
    csv = b"county,house,floor,log_radon\n10,h3,0,1.0\n9,h1,1,2.0\n10,h2,0,3.0\n"
    attached = attach_table(radon.build_radon(), read_table(csv, "r.csv"))
    assert attached.labels == {"county": ["9", "10"], "house": ["h1", "h2", "h3"]}
    assert membership(attached.model, "house") == [0, 1, 1]
    assert attached.model.data["log_radon"].tolist() == [2.0, 3.0, 1.0]  # houses in id order
    again = attach_table(attached.model, model_to_table(attached.model, attached.labels))
    assert again.labels == attached.labels
    assert_same_data(again.model, attached.model)


def test_county_level_covariate_is_taken_once_per_county() -> None:
    model = radon.build_radon_uranium()
    houses = np.asarray(model.plate("house").membership)
    per_county = np.zeros(85)
    per_county[houses] = model.data["log_uppm"].numpy()  # constant within each county in the real data
    model.covariates[1].plates = ["county"]
    model.with_data({**model.data, "log_uppm": per_county})
    model.validate()
    table = model_to_table(model)
    assert table["log_uppm"].tolist() == per_county[houses].tolist()  # repeated over each county's rows
    assert_same_data(attach_table(without_data(model), table).model, model)

    row = int(np.flatnonzero(houses == 1)[-1])
    table.loc[row, "log_uppm"] = 0.25
    err = error(attach_table, model, table)
    assert err.culprit == "log_uppm"
    assert "one value per county" in err.message and "county 1" in err.message
    assert f"row {row + 1}" in err.message


def test_uneven_regular_nesting_suggests_ragged_then_ragged_works() -> None:
    model = gre.build(G=3, N=4, D=2)
    table = model_to_table(model).drop(index=[5]).reset_index(drop=True)  # group 1 loses a point
    err = error(attach_table, model, table)
    assert err.culprit == "obs"
    assert "same number" in err.message and "ragged" in err.message
    # Ids of a ragged plate are global: leave the per-group obs numbers out, one obs per row.
    attached = ragged_from_column(model, table.drop(columns="obs"), "obs", "group")
    new = attached.model
    assert new.plate("obs").size == 11
    assert membership(new, "obs") == [0] * 4 + [1] * 3 + [2] * 4
    assert new.variable("x").plates == ["obs"]
    assert new.data["x"].shape == (11, 2)
    assert torch.equal(new.data["x"], model.data["x"].reshape(12, 2)[[i for i in range(12) if i != 5]])
    new.validate()
    assert model.variable("x").plates == ["group", "obs"]  # the input is untouched
    assert model.plate("obs").membership is None


def test_ragged_ids_must_not_span_two_outer_elements() -> None:
    csv = b"county,house,floor,log_radon\nA,1,0,1.0\nB,2,1,2\nC,1,0,0.5\n"
    err = error(attach_table, radon.build_radon(), read_table(csv, "r.csv"))
    assert err.culprit == "house"
    assert "county 0 (A)" in err.message and "county 2 (C)" in err.message


@pytest.mark.parametrize(("csv", "culprit", "words"), [
    (b"county,house,floor,log_radon\nA,1,0,1.0\nA,1,1,2\n", "house", "row 1 (line 2 of a CSV file) and row 2"),
    (b"county,floor,log_radon\nA,0,1.0\n,1,2\n", "county", "row 2 (line 3 of a CSV file) has no county"),
    (b"floor,log_radon\n0,1.0\n", "county", "no column 'county'"),
    (b"county,floor\nA,0\n", "log_radon", "no column 'log_radon' for the observed variable"),
    (b"county,log_radon\nA,0\n", "floor", "no column 'floor' for the covariate"),
])
def test_missing_and_repeated_ids_and_columns(csv: bytes, culprit: str, words: str) -> None:
    err = error(attach_table, radon.build_radon(), read_table(csv, "radon.csv"))
    assert err.culprit == culprit
    assert words in err.message and "radon.csv" in err.message


@pytest.mark.parametrize(("cell", "words"), [("nan", "'nan'"), ("abc", "'abc'"), ("", "is empty"), ("inf", "'inf'")])
def test_value_columns_need_finite_numbers(cell: str, words: str) -> None:
    csv = RADON_CSV.replace(b"CASS,0,2.0", b"CASS,0," + cell.encode())
    model = radon.build_radon()
    before = snapshot(model)
    err = error(attach_table, model, read_table(csv, "radon.csv"))
    assert err.culprit == "log_radon"
    assert "row 3 (line 4 of a CSV file)" in err.message and words in err.message
    assert snapshot(model) == before  # a failed upload leaves the model intact


def test_unknown_columns_are_ignored_and_reported() -> None:
    csv = b"county,note,floor,log_radon,alpha\nA,hello,0,1.0,3\nB,,1,2,4\n"
    attached = attach_table(radon.build_radon(), read_table(csv, "r.csv"))
    assert attached.ignored_columns == ["note", "alpha"]
    assert attached.model.data["log_radon"].tolist() == [1.0, 2.0]


def test_event_columns() -> None:
    model = gre.build(G=2, N=2, D=2)
    table = model_to_table(model)
    spaced = table.rename(columns={"x[0]": "x[ 0 ]"})
    assert torch.equal(attach_table(model, spaced).model.data["x"], model.data["x"])
    for broken, culprit, words in [
        (table.drop(columns="x[1]"), "x", "no column 'x[1]'"),
        (table.drop(columns="x[1]").rename(columns={"x[0]": "x"}), "x", "columns x[0], x[1]"),
        (table.assign(**{"x[2]": 1.0}), "x[2]", "event shape [2]"),
    ]:
        err = error(attach_table, model, broken)
        assert err.culprit == culprit and words in err.message


def test_data_in_unrelated_plates_does_not_fit_one_table(build) -> None:
    model = build("full")
    err = error(model_to_table, model)
    assert "one table" in err.message
    assert error(attach_table, model, pd.DataFrame({"a": [1]})).message == err.message


# -- NetCDF ----------------------------------------------------------------------------------
def test_netcdf_dims_in_any_order_and_checks() -> None:
    model = gre.build(G=3, N=4, D=2)
    dataset = model_to_dataset(model)
    assert dataset["x"].dims == ("group", "obs", "x_dim_0")
    shuffled = dataset.transpose("obs", "x_dim_0", "group")
    assert torch.equal(attach_table(model, shuffled).model.data["x"], model.data["x"])

    broken = dataset.copy(deep=True)
    broken["x"][1, 2, 0] = np.nan
    err = error(attach_table, model, broken)
    assert err.culprit == "x" and "group 1, obs 2, x_dim_0 0" in err.message
    err = error(attach_table, model, dataset.isel(x_dim_0=[0]))
    assert err.culprit == "x" and "event shape" in err.message
    err = error(attach_table, model, dataset.rename(x="y"))
    assert err.culprit == "x" and "no variable 'x'" in err.message


def test_netcdf_ragged_membership_and_labels() -> None:
    labelled = attach_table(radon.build_radon(), read_table(RADON_CSV, "radon.csv"))
    dataset = model_to_dataset(labelled.model, labelled.labels)
    assert dataset["county_of_house"].values.tolist() == ["BLUE EARTH", "AITKIN", "CASS", "AITKIN", "CASS"]
    again = attach_table(radon.build_radon(), read_table(write_table(dataset), "r.nc"))
    assert again.labels["county"] == labelled.labels["county"]
    assert_same_data(again.model, labelled.model)
    # Without the membership variable, the model's own is kept only when it fits.
    model = radon.build_radon()
    assert_same_data(attach_table(model, model_to_dataset(model).drop_vars("county_of_house")).model, model)
    err = error(attach_table, model, model_to_dataset(labelled.model).drop_vars("county_of_house"))
    assert err.culprit == "house" and "county_of_house" in err.message


# -- bytes in ------------------------------------------------------------------------------
def test_oversized_files_are_refused(monkeypatch) -> None:
    monkeypatch.setattr(tables, "MAX_UPLOAD_BYTES", 100)
    err = error(read_table, RADON_CSV * 2, "big.csv")
    assert err.culprit == "big.csv" and "files up to" in err.message
    assert isinstance(read_table(RADON_CSV, "small.csv"), pd.DataFrame)


@pytest.mark.parametrize(("content", "filename", "words"), [
    (b"county,floor,log_radon\nA,0,1.0\nB,1,2,7\n", "r.csv", "not a well-formed CSV file"),
    (b"county,floor,log_radon\nA,0,1.0,7\n", "r.csv", "not a well-formed CSV file"),
    (b'county,floor\n"A,0\n', "r.csv", "not a well-formed CSV file"),
    (b"\xff\xfe\x00c", "r.csv", "not UTF-8"),
    (b"", "r.csv", "empty"),
    (b"county,floor,county\nA,1,A\n", "r.csv", "appears twice"),
    (b"county,floor\n", "r.csv", "no rows"),
    (b"CDF\x01 not really", "r.nc", "not a readable NetCDF-4 file"),
    (b"county\n", "r.xlsx", "upload a .csv or a .nc"),
])
def test_malformed_files_are_refused(content: bytes, filename: str, words: str) -> None:
    err = error(read_table, content, filename)
    assert words in err.message and filename in err.message


def test_wide_files_are_refused_before_parsing_and_repeated_names_found() -> None:
    wide = (",".join(f"c{i}" for i in range(40_000)) + "\n" + ",".join(["1"] * 40_000) + "\n").encode()
    err = error(read_table, wide, "wide.csv")
    assert "40,000 columns" in err.message and err.culprit == "wide.csv"
    names = [f"c{i}" for i in range(tables.MAX_CSV_COLUMNS - 1)] + ["c5"]
    repeated = (",".join(names) + "\n" + ",".join(["1"] * len(names)) + "\n").encode()
    err = error(read_table, repeated, "r.csv")
    assert err.culprit == "c5" and "appears twice" in err.message
    # Many small cells: counted before pandas makes a text object of each.
    many = b"a,b,c,d\n" + b"1,2,3,4\n" * (tables.MAX_CSV_CELLS // 4)
    err = error(read_table, many, "long.csv")
    assert f"at most {tables.MAX_CSV_CELLS:,}" in err.message and err.culprit == "long.csv"
    assert read_table(b"a,b,c,d\n" + b"1,2,3,4\n" * 1000, "short.csv").shape == (1000, 4)


def test_read_table_types() -> None:
    frame = read_table(b"county, floor ,log_radon\n 007 ,1,2.5\n", "r.CSV")
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == ["county", "floor", "log_radon"]
    assert attach_table(radon.build_radon(), frame).labels["county"] == ["007"]  # ids keep their spelling
    dataset = read_table(write_table(model_to_dataset(gre.build(G=2, N=2, D=2))), "g.nc")
    assert isinstance(dataset, xr.Dataset) and dataset["x"].shape == (2, 2, 2)
