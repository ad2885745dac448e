"""A data file on disk for a model: read whole, or one process's shard of it alone.

``pavi-viz fit MODEL --data FILE`` fits MODEL (a model file or a bundled example) to the
data in FILE, a CSV or a NetCDF-4 file named as :mod:`pavi_viz.model.tables` describes;
the file sizes the model's plates, and its data replace the model's own.

A NetCDF file is opened lazily. Its plates' sizes and its ragged plates' memberships
(one number per element) are read first (:meth:`DataFile.layout`), and a process of a
data-parallel run that trains on a shard of a top-level plate reads only that shard's
slice of each array (:meth:`DataFile.part`): its memory for the data falls with the
number of processes. A CSV file is read whole, and a shard is cut from it.

Nothing in a file is executed or unpickled. What a read would hold (floats as stored,
other numbers as float64) is checked, before it is read, against the memory the machine
has available.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import xarray as xr

from pavi_viz.model.errors import ModelError
from pavi_viz.model.sharding import kept_elements, restrict
from pavi_viz.model.spec import PlateModel
from pavi_viz.model.tables import (
    CSV_SUFFIXES,
    MAX_DATA_BYTES,
    NETCDF_SUFFIXES,
    Attached,
    Table,
    attach_layout,
    attach_table,
    data_items,
    dataset_values,
    open_netcdf,
    read_csv,
)


@dataclass(frozen=True)
class DataFile:
    """A model's data file, opened (see the module's notes): a
    :class:`~pavi_viz.model.sharding.ModelSource` of the model with the file's data.

    Attributes:
        model: the model (its own data, if any, are replaced by the file's).
        path: the file.
        table: its table: a Dataset opened lazily (NetCDF), or a DataFrame (CSV).
        room: the most bytes one read may hold; ``None``: the memory available when it reads.
    """

    model: PlateModel
    path: Path
    table: Table
    room: int | None = None

    @classmethod
    def open(cls, model: PlateModel, path: str | Path, room: int | None = None) -> DataFile:
        """Open the data file at ``path`` for ``model``: a ``.csv`` file is read and parsed
        (up to :data:`~pavi_viz.model.tables.MAX_DATA_BYTES`), a ``.nc`` file's arrays are
        left on disk.

        Raises:
            ModelError: no such file, another extension, or content that is not a
                well-formed CSV / NetCDF-4 file (culprit: the file's name).
        """
        path = Path(path)
        name = path.name
        if not path.is_file():
            raise ModelError(f"no data file {str(path)!r}", culprit=name)
        suffix = name.lower()
        if suffix.endswith(CSV_SUFFIXES):
            size = path.stat().st_size
            if size > MAX_DATA_BYTES:
                raise ModelError(f"{name} is {size / 2**20:.0f} MB: a CSV data file may have up to "
                                 f"{MAX_DATA_BYTES // 2**20} MB; write larger data as NetCDF (.nc)", culprit=name)
            table: Table = read_csv(path.read_bytes(), name)
        elif suffix.endswith(NETCDF_SUFFIXES):
            table = open_netcdf(path, name)
        else:
            raise ModelError(f"{name}: a data file is a .csv or a .nc (NetCDF) file", culprit=name)
        table.attrs["filename"] = name
        return cls(model, path, table, room)

    def attach(self) -> Attached:
        """The model with all the file's data, and the labels of its plates' elements
        (:func:`~pavi_viz.model.tables.attach_table`).

        Raises:
            ModelError: as ``attach_table``; or the data would not fit the memory available.
        """
        if isinstance(self.table, xr.Dataset):
            self._check_room(self.table, self.model)
        return attach_table(self.model, self.table)

    def whole(self) -> PlateModel:
        """The model with all the file's data (:meth:`attach`)."""
        return self.attach().model

    def layout(self) -> PlateModel:
        """The model with its plates sized by the file and the memberships of its ragged
        plates read from it, and no data: what a process needs to know of the whole to
        take its shard. A CSV file gives it from its data, read whole.

        Raises:
            ModelError: the file does not give a ragged plate's membership.
        """
        return self._layout.copy()

    @cached_property
    def _layout(self) -> PlateModel:
        """:meth:`layout`, read once (the memberships of large ragged plates are long)."""
        if isinstance(self.table, pd.DataFrame):
            return self.whole().with_data({})
        return attach_layout(self.model.copy(), self.table).model

    def part(self, plate: str, start: int, stop: int) -> PlateModel:
        """The model with the file's data of elements ``start`` to ``stop - 1`` of top-level
        ``plate`` alone, and everything nested in them: the model that
        :func:`~pavi_viz.model.sharding.restrict` cuts from the whole data, read from a
        NetCDF file slice by slice (the data outside ``plate``, whole).

        Raises:
            ValueError: as ``restrict`` (a model that cannot be cut to the shard).
            ModelError: as :meth:`attach`, for the slices read.
        """
        if isinstance(self.table, pd.DataFrame):
            return restrict(self.whole(), plate, start, stop)
        layout = self._layout  # read only here: restrict copies what it keeps
        kept = kept_elements(layout, plate, start, stop)
        part = restrict(layout, plate, start, stop)
        # The indices of a ragged plate's kept members are increasing, as HDF5 reads them.
        rows = {p: slice(start, stop) if p == plate else elements.numpy()
                for p, elements in kept.items() if elements is not None and p in self.table.dims}
        subset = self.table.isel(rows)
        self._check_room(subset, part)
        return part.with_data({item.name: dataset_values(subset, item, part) for item in data_items(part)})

    def _check_room(self, dataset: xr.Dataset, model: PlateModel) -> None:
        """Refuse a read of ``model``'s arrays in ``dataset`` that would not fit in memory."""
        names = [item.name for item in data_items(model) if item.name in dataset.variables]
        needed = sum(_read_bytes(dataset[name]) for name in names)
        room = self.room if self.room is not None else psutil.virtual_memory().available
        if needed > room:
            raise ModelError(f"{self.path.name}: its data ({', '.join(names)}) take {needed / 2**20:,.1f} MB once read, "
                             f"more than the {room / 2**20:,.1f} MB of memory available; on several processes "
                             f"(pavi-viz fit --nproc N) each reads a shard", culprit=self.path.name)


def _read_bytes(array: xr.DataArray) -> int:
    """The bytes an array takes once read (:func:`~pavi_viz.model.tables.dataset_values`:
    floats as stored, other numbers as float64)."""
    itemsize = array.dtype.itemsize if array.dtype.kind == "f" else 8
    return itemsize * int(np.prod(array.shape))


__all__ = ["DataFile"]
