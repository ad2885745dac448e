"""A data file on disk, read whole or one shard at a time (pavi_viz.model.datafile)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pavi_viz
from benchmarks.models import build_nested
from pavi_viz.model import ModelError
from pavi_viz.model.datafile import DataFile
from pavi_viz.model.sharding import restrict
from pavi_viz.model.tables import model_to_dataset, model_to_table

#: As in test_sharding: regular nesting, one ragged level (with a county-level
#: covariate), two ragged levels.
CASES = [
    (lambda: pavi_viz.examples.load("gre", G=10, N=3, D=2), "group", 3, 7),
    (lambda: pavi_viz.examples.load("radon").simulate(seed=0), "county", 20, 45),
    (lambda: build_nested(), "school", 5, 9),
]


def same_models(got, expected) -> None:
    assert [(p.name, p.size, p.nested_in) for p in got.plates] == [(p.name, p.size, p.nested_in) for p in expected.plates]
    for mine, theirs in zip(got.plates, expected.plates, strict=True):
        if theirs.membership is not None:
            np.testing.assert_array_equal(mine.membership, theirs.membership, err_msg=mine.name)
    assert got.data.keys() == expected.data.keys()
    for name, value in expected.data.items():
        torch.testing.assert_close(got.data[name], value, msg=name)


@pytest.mark.parametrize(("build", "plate", "start", "stop"), CASES)
def test_a_shard_read_from_a_netcdf_file_is_the_shard_cut_from_the_whole_data(tmp_path, build, plate, start, stop):
    model = build()
    model_to_dataset(model).to_netcdf(tmp_path / "data.nc", engine="h5netcdf")
    data = DataFile.open(model, tmp_path / "data.nc")
    whole = data.whole()
    same_models(whole, model.copy().with_data(model.data))
    same_models(data.part(plate, start, stop), restrict(whole, plate, start, stop))
    layout = data.layout()
    assert layout.data == {} and [p.size for p in layout.plates] == [p.size for p in model.plates]


def test_a_process_reads_its_shard_of_a_netcdf_file_alone(tmp_path):
    # Values that may not be read outside the shard: reading the whole refuses them.
    model = pavi_viz.examples.load("radon").simulate(seed=0)
    dataset = model_to_dataset(model)
    members = np.asarray(model.plate("house").membership)
    poisoned = dataset["log_radon"].values.copy()
    poisoned[(members < 20) | (members >= 45)] = np.nan
    dataset["log_radon"].values = poisoned
    dataset.to_netcdf(tmp_path / "data.nc", engine="h5netcdf")
    data = DataFile.open(model, tmp_path / "data.nc")
    with pytest.raises(ModelError, match="'log_radon' has .* NaN or infinite values"):
        data.whole()
    part = data.part("county", 20, 45)
    expected = restrict(model, "county", 20, 45)
    same_models(part, expected.copy().with_data(expected.data))


def test_a_csv_file_is_read_whole_and_its_shard_cut(tmp_path):
    model = pavi_viz.examples.load("gre", G=10, N=3, D=2)
    (tmp_path / "gre.csv").write_text(model_to_table(model).to_csv(index=False))
    data = DataFile.open(model, tmp_path / "gre.csv")
    part = data.part("group", 3, 7)
    expected = restrict(model, "group", 3, 7)
    same_models(part, expected.copy().with_data(expected.data))
    assert data.layout().data == {}


def test_bad_data_files_are_refused_naming_the_file(tmp_path):
    model = pavi_viz.examples.load("gre", G=10, N=3, D=2)
    with pytest.raises(ModelError, match="no data file") as err:
        DataFile.open(model, tmp_path / "missing.nc")
    assert err.value.culprit == "missing.nc"
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(ModelError, match="data.txt: a data file is a .csv or a .nc"):
        DataFile.open(model, tmp_path / "data.txt")
    (tmp_path / "broken.nc").write_bytes(b"not a netcdf file")
    with pytest.raises(ModelError, match="broken.nc is not a readable NetCDF-4 file"):
        DataFile.open(model, tmp_path / "broken.nc")
    model_to_dataset(model).to_netcdf(tmp_path / "data.nc", engine="h5netcdf")
    small = DataFile.open(model, tmp_path / "data.nc", room=200)  # x: 10 * 3 * 2 float32 numbers, 240 bytes
    small.part("group", 0, 2)
    with pytest.raises(ModelError, match=r"data.nc: its data \(x\) take [\d.]+ MB once read, more than the [\d.]+ MB of memory"):
        small.whole()
    other = model_to_dataset(model).rename({"x": "z"})
    other.to_netcdf(tmp_path / "other.nc", engine="h5netcdf")
    with pytest.raises(ModelError, match="other.nc has no variable 'x'"):
        DataFile.open(model, tmp_path / "other.nc").part("group", 0, 2)
