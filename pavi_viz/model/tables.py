"""User data files (CSV or NetCDF) attached to a :class:`PlateModel`.

**CSV**: one row per element of the model's innermost plate (one row per house in
radon, one per observation in GRE). Its columns are

* *plate ids*: a column named like a plate (``county``) gives each row's element of
  that plate. Ids may be numbers or text; they are mapped to positions 0, 1, ... in
  **sorted order** (numerically when every id is a number, else alphabetically), and
  the ids are kept as labels so that a user sees "county 3 (AITKIN)". The innermost
  plate's column may be left out: its elements are then the rows, in file order.
  Every outer plate's column is needed. Plate sizes are the numbers of distinct ids, so
  an outer element without rows (a county with no house) cannot be given in a CSV file.

  - In a *regular* nesting (``obs`` of size N in ``group``), ids are read within their
    outer element, and every outer element must hold the same number of inner ones.
  - In a *ragged* nesting (houses in counties), ids are global: a house id names one
    house, which must sit in one county; the ``membership`` comes from the pair of
    columns. ``attach_table(..., ragged={"obs": "group"})`` (or
    :func:`ragged_from_column`) makes a plate ragged in another from the data.
* *values*: a column named like an observed variable or a covariate holds its value
  for each row. A variable with event shape ``(D,)`` takes the columns ``x[0]``, ...,
  ``x[D-1]`` (``x[i,j]`` for two event dims). A value that lives in an outer plate
  (county-level uranium) is repeated over the rows of each outer element and must be
  the same in all of them.
* any other column is ignored and reported in :attr:`Attached.ignored_columns`.

**NetCDF** (``xarray.Dataset``): data variables named like the observed variables and
covariates, with dims named like their plates (any order) followed by their event
dims (any names; :func:`model_to_dataset` writes ``x_dim_0`` like the posterior's
exports). A plate's sizes come from its dim; a dim's coordinate values are its labels.
A ragged plate's membership is the variable ``f"{outer}_of_{inner}"`` (``county_of_house``,
along dim ``house``), holding labels of the outer dim's coordinate when the file has
that dim, else ids read as for CSV; without it, the model's own membership is kept
when its length matches.

:func:`read_table` turns uploaded bytes into a table (refusing large or malformed
files), :func:`attach_table` attaches a table to a *copy* of a model, and
:func:`model_to_table` / :func:`model_to_dataset` go the other way. Problems raise a
:class:`ModelError` naming the plate, variable or column at fault. A data file on disk,
read whole or one shard at a time, is :mod:`pavi_viz.model.datafile`'s, from the parts
here: :func:`open_netcdf` (lazily), :func:`attach_layout` (the plates alone) and
:func:`dataset_values` (one array, checked).
"""

from __future__ import annotations

import collections
import csv
import io
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xarray as xr

from pavi_viz.model.errors import ModelError

if TYPE_CHECKING:
    from pavi_viz.model.spec import Covariate, Plate, PlateModel, Variable

#: Uploaded files larger than this are refused before parsing.
MAX_UPLOAD_BYTES = 50 * 2**20
#: A NetCDF file may be compressed: its arrays are refused beyond this size once read.
MAX_DATA_BYTES = 8 * MAX_UPLOAD_BYTES
#: A CSV file with more columns is refused before it is parsed: pandas builds a column
#: object for each (40,000 columns took seconds), and a long-format table needs one per
#: plate id, observed variable, covariate and event coordinate.
MAX_CSV_COLUMNS = 10_000
#: A CSV file with more cells (lines times columns) is refused before it is parsed: read
#: as text, a cell takes about 24 bytes (7.3 million one-digit cells peaked at 177 MB
#: more), so this bounds one upload's parse to about 500 MB; a 14 MB upload of one-digit
#: cells holds 7.3 million.
MAX_CSV_CELLS = 20_000_000
#: File name endings read as CSV and as NetCDF.
CSV_SUFFIXES = (".csv",)
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf")
#: The NetCDF engine (HDF5-based NetCDF-4, as Posterior.to_netcdf writes); reading it never unpickles.
NETCDF_ENGINE = "h5netcdf"

Table = pd.DataFrame | xr.Dataset
_EVENT_COLUMN = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*\[\s*(\d+(?:\s*,\s*\d+)*)\s*\]\s*\Z")


@dataclass
class Attached:
    """The outcome of :func:`attach_table`.

    Attributes:
        model: a new model: plate sizes (and ragged membership) from the table, its
            ``data`` holding every observed variable and covariate, ``truth`` dropped.
        ignored_columns: the table's columns (or NetCDF variables) that were not used.
        labels: for each plate sized from the table, the label of each element: the id
            in the file (``"AITKIN"``), or its position as text when a CSV file gave
            none. For a regularly nested plate, one label per position within its outer
            element. A NetCDF dim without a coordinate, or whose coordinate is the
            positions 0, 1, ..., has no labels here: its elements are their positions.
            Ready for :class:`~pavi_viz.inference.posterior.Posterior`'s ``coords``.
    """

    model: PlateModel
    ignored_columns: list[str] = field(default_factory=list)
    labels: dict[str, list[str]] = field(default_factory=dict)

    def describe(self, plate: str, index: int) -> str:
        """``"county 3 (AITKIN)"``, or ``"county 3"`` when the label is the position."""
        return _element_text(plate, index, self.labels.get(plate))


# -- bytes in ---------------------------------------------------------------------------
def read_table(content: bytes, filename: str) -> Table:
    """The table in an uploaded file: a DataFrame for ``.csv``, a Dataset for ``.nc``.

    Nothing in the file is executed or unpickled. The file name is kept in the table's
    ``attrs["filename"]`` so that later errors can name it.

    Raises:
        ModelError: for a file over :data:`MAX_UPLOAD_BYTES`, another extension, or
            content that is not a well-formed CSV / NetCDF-4 file (culprit: the file name).
    """
    content = bytes(content)
    if len(content) > MAX_UPLOAD_BYTES:
        raise ModelError(f"{filename} is {len(content) / 2**20:.1f} MB; files up to "
                         f"{MAX_UPLOAD_BYTES // 2**20} MB are accepted", culprit=filename)
    suffix = filename.lower()
    if suffix.endswith(CSV_SUFFIXES):
        table: Table = read_csv(content, filename)
    elif suffix.endswith(NETCDF_SUFFIXES):
        table = _read_netcdf(content, filename)
    else:
        raise ModelError(f"{filename}: upload a .csv or a .nc (NetCDF) file", culprit=filename)
    table.attrs["filename"] = filename
    return table


def read_csv(content: bytes, filename: str) -> pd.DataFrame:
    """The table of a CSV file's ``content``, every cell as text (checked when attached).

    Raises:
        ModelError: content that is not UTF-8, empty, over :data:`MAX_CSV_COLUMNS` columns
            or :data:`MAX_CSV_CELLS` cells, or not a well-formed CSV table (culprit: ``filename``).
    """
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ModelError(f"{filename} is not UTF-8 text (byte {err.start}): save it as a UTF-8 CSV file",
                         culprit=filename) from None
    if not text.strip():
        raise ModelError(f"{filename} is empty: the first line should name the columns", culprit=filename)
    # Counted on the first record alone (linear), before pandas builds a column for each.
    columns = len(next(csv.reader(io.StringIO(text)), []))
    if columns > MAX_CSV_COLUMNS:
        raise ModelError(f"{filename} has {columns:,} columns: a data table may have at most {MAX_CSV_COLUMNS:,} "
                         "(one per plate id, observed variable, covariate or event coordinate)", culprit=filename)
    lines = text.count("\n") + 1  # at least the rows: a quoted cell may hold a line break
    if lines * columns > MAX_CSV_CELLS:
        raise ModelError(f"{filename} has about {lines * columns:,} cells ({lines:,} lines of {columns:,} columns): "
                         f"a file read here may have at most {MAX_CSV_CELLS:,} (about 24 bytes each once read); "
                         "attach larger data as a DataFrame or a NetCDF file", culprit=filename)
    try:
        # Without a header, so that a row longer than the first line is an error rather than a
        # silent index column; as text, so that ids keep their spelling ("007") and value
        # columns are converted, and checked, later.
        cells = pd.read_csv(io.StringIO(text), header=None, dtype=str, keep_default_na=False, na_filter=False,
                            skipinitialspace=True)
    except (pd.errors.ParserError, ValueError) as err:
        raise ModelError(f"{filename} is not a well-formed CSV file: {err}", culprit=filename) from None
    names = [str(h).strip() for h in cells.iloc[0]]
    if "" in names:
        raise ModelError(f"{filename}: column {names.index('') + 1} has no name in the first line", culprit=filename)
    repeated = sorted(name for name, count in collections.Counter(names).items() if count > 1)
    if repeated:
        raise ModelError(f"{filename}: the column {repeated[0]!r} appears twice", culprit=repeated[0])
    if len(cells) == 1:
        raise ModelError(f"{filename} has column names but no rows of data", culprit=filename)
    frame = cells.iloc[1:].reset_index(drop=True)
    frame.columns = names
    return frame


def _read_netcdf(content: bytes, filename: str) -> xr.Dataset:
    with open_netcdf(io.BytesIO(content), filename) as source:
        size = sum(v.size * v.dtype.itemsize for v in source.variables.values())
        if size > MAX_DATA_BYTES:
            raise ModelError(f"{filename} holds {size / 2**20:.0f} MB of data once uncompressed; up to "
                             f"{MAX_DATA_BYTES // 2**20} MB is accepted", culprit=filename)
        try:
            return source.load()
        except Exception as err:  # noqa: BLE001 - the HDF5 readers raise many types for a damaged file
            raise ModelError(f"{filename}: its data could not be read ({type(err).__name__}: {err})",
                             culprit=filename) from None


def open_netcdf(source: io.BytesIO | str | os.PathLike, filename: str) -> xr.Dataset:
    """A NetCDF-4 file's Dataset, opened lazily: its arrays are read when used.

    Raises:
        ModelError: h5netcdf is missing, or the content is not a readable NetCDF-4 file
            (culprit: ``filename``).
    """
    try:
        return xr.open_dataset(source, engine=NETCDF_ENGINE, decode_times=False)
    except ImportError:
        raise ModelError(f"reading {filename} needs the h5netcdf package: pip install 'pavi-viz[export]'",
                         culprit=filename) from None
    except Exception as err:  # noqa: BLE001 - the HDF5 readers raise many types for a damaged file
        raise ModelError(f"{filename} is not a readable NetCDF-4 file ({type(err).__name__}: {err})",
                         culprit=filename) from None


# -- attaching ----------------------------------------------------------------------------
def attach_table(model: PlateModel, table: Table, *, ragged: Mapping[str, str] | None = None) -> Attached:
    """A copy of ``model`` with its plates sized by ``table`` and its data taken from it.

    Args:
        model: left untouched, also when the table is refused.
        table: a DataFrame (one row per element of the innermost plate) or a Dataset;
            see the module docstring for the naming conventions.
        ragged: ``{plate: outer}``: make ``plate`` ragged-nested in ``outer``, its
            membership read from the table; variables and covariates listing both
            plates then list ``plate`` only.

    Returns:
        The new model, the ignored columns and the labels of the plates' elements.

    Raises:
        ModelError: naming the plate, variable or column at fault.
    """
    new = model.copy()
    for plate, outer in (ragged or {}).items():
        _make_ragged(new, plate, outer)
    if isinstance(table, pd.DataFrame):
        return _attach_frame(new, table, list(ragged or ()))
    if isinstance(table, xr.Dataset):
        return _attach_dataset(new, table, list(ragged or ()))
    raise TypeError(f"attach_table takes a pandas DataFrame or an xarray Dataset, not {type(table).__name__}")


def ragged_from_column(model: PlateModel, table: Table, plate: str, outer: str) -> Attached:
    """:func:`attach_table` with ``plate`` made ragged in ``outer`` (membership from the table)."""
    return attach_table(model, table, ragged={plate: outer})


def _make_ragged(model: PlateModel, name: str, outer: str) -> None:
    """Nest plate ``name`` raggedly in ``outer`` (membership set later, from the data)."""
    names = [p.name for p in model.plates]
    for which in (name, outer):
        if which not in names:
            raise ModelError(f"cannot make {name!r} ragged in {outer!r}: the model has no plate {which!r}",
                             culprit=which)
    if name == outer:
        raise ModelError(f"plate {name!r} cannot be nested in itself", culprit=name)
    plate = model.plate(name)
    plate.nested_in = outer
    plate.membership = np.zeros(plate.size, dtype=np.int64)  # a placeholder: marks the plate ragged
    # A ragged plate's members each belong to one outer element: its outer plate is no dim of theirs.
    for item in [*model.variables, *model.covariates]:
        if name in item.plates and outer in item.plates:
            item.plates = [p for p in item.plates if p != outer]
    # Outer plates come before the plates nested in them.
    depth = {p.name: len(_ancestors(model, p.name)) for p in model.plates}
    model.plates = sorted(model.plates, key=lambda p: depth[p.name])


def data_items(model: PlateModel) -> list[Covariate | Variable]:
    """What the data holds: covariates, then observed variables."""
    return [*model.covariates, *(v for v in model.variables if v.observed)]


def _ancestors(model: PlateModel, name: str) -> list[str]:
    """``[name, its outer plate, that one's outer plate, ...]``."""
    chain = [name]
    plates = {p.name: p for p in model.plates}
    while plates[chain[-1]].nested_in is not None:
        outer = plates[chain[-1]].nested_in
        if outer not in plates:
            raise ModelError(f"plate {chain[-1]!r} is nested in unknown plate {outer!r}", culprit=chain[-1])
        if outer in chain:
            raise ModelError(f"plate {name!r} is nested in itself (through {outer!r})", culprit=name)
        chain.append(outer)
    return chain


def _data_plates(model: PlateModel) -> dict[str, str]:
    """The plates the data lives in, each with an item living in it, checked to be known."""
    known = {p.name for p in model.plates}
    used: dict[str, str] = {}
    for item in data_items(model):
        for plate in item.plates:
            if plate not in known:
                raise ModelError(f"{item.name!r} is in unknown plate {plate!r}", culprit=item.name)
            _ancestors(model, plate)  # a nesting in an unknown plate, or in itself, is refused here
            used.setdefault(plate, item.name)
    return used


def _row_chain(model: PlateModel) -> list[str]:
    """The plates a one-table layout indexes, outer to inner: the innermost plate any data
    lives in (one row per element) and the plates it is nested in.

    Raises:
        ModelError: when the data lives in plates that are not nested in one another.
    """
    used = _data_plates(model)
    if not used:
        return []
    innermost = max(used, key=lambda p: len(_ancestors(model, p)))
    chain = _ancestors(model, innermost)[::-1]
    for plate, owner in used.items():
        if plate not in chain:
            raise ModelError(
                f"the data doesn't fit one table: {owner!r} lives in plate {plate!r}, which is neither "
                f"{innermost!r} (one row per {innermost}) nor a plate {innermost!r} is nested in", culprit=plate)
    return chain


def _event_columns(name: str, event_shape: Sequence[int]) -> list[str]:
    """``["x"]``, or ``["x[0]", "x[1]"]`` for event shape (2,), ``x[i,j]`` for two dims (C order)."""
    if not event_shape:
        return [name]
    return [f"{name}[{','.join(map(str, index))}]" for index in np.ndindex(*event_shape)]


# -- CSV / DataFrame ------------------------------------------------------------------------
def _attach_frame(model: PlateModel, frame: pd.DataFrame, made_ragged: Sequence[str]) -> Attached:
    source = frame.attrs.get("filename", "the table")
    frame = frame.rename(columns=lambda c: str(c).strip())
    columns = _normalise_event_columns(frame, source)
    if len(frame) == 0:
        raise ModelError(f"{source} has no rows of data", culprit=source)
    _check_event_columns(model, columns, source)
    chain = _row_chain(model)
    for plate in made_ragged:
        if plate not in chain:
            raise ModelError(f"{source} cannot give the membership of the ragged plate {plate!r}: "
                             f"no data lives in it", culprit=plate)
    index = _RowIndex(model, frame, chain, source)
    used = set(chain)
    data = {}
    for item in data_items(model):
        names = _event_columns(item.name, item.event_shape)
        present = [columns.get(n) for n in names]
        if not any(present):
            if item.event_shape and item.name in columns:
                raise ModelError(f"{source}: {item.name!r} has event shape {list(item.event_shape)}: give its "
                                 f"values in the columns {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}",
                                 culprit=item.name)
            kind = "observed variable" if item in model.variables else "covariate"
            raise ModelError(f"{source} has no column {names[0]!r} for the {kind} {item.name!r}", culprit=item.name)
        if not all(present):
            missing = names[present.index(None)]
            raise ModelError(f"{source} has no column {missing!r} (part of {item.name!r})", culprit=item.name)
        values = np.stack([_numbers(frame[c], c, source) for c in present], axis=-1)
        data[item.name] = index.gather(item, values.reshape(len(frame), *item.event_shape), present)
        used.update(present)
    for plate in chain:
        index.apply(model.plate(plate))
    model.with_data(data)
    ignored = [c for c in frame.columns if c not in used]
    return Attached(model, ignored, {p: index.labels[p] for p in chain})


def _normalise_event_columns(frame: pd.DataFrame, source: str) -> dict[str, str]:
    """Canonical column name (``x[0,1]``, without spaces) -> the table's column name."""
    out: dict[str, str] = {}
    for column in frame.columns:
        match = _EVENT_COLUMN.match(column)
        key = column if match is None else f"{match[1]}[{','.join(str(int(i)) for i in match[2].split(','))}]"
        if key in out:
            raise ModelError(f"{source}: the columns {out[key]!r} and {column!r} name the same value", culprit=column)
        out[key] = column
    return out


def _check_event_columns(model: PlateModel, columns: Mapping[str, str], source: str) -> None:
    """Refuse ``x[5]`` for an ``x`` of event shape (2,): a typo rather than a column to ignore."""
    items = {item.name: item for item in data_items(model)}
    for key, column in columns.items():
        match = _EVENT_COLUMN.match(key)
        if match is None or match[1] not in items:
            continue
        item = items[match[1]]
        if key not in _event_columns(item.name, item.event_shape):
            shape = f"event shape {list(item.event_shape)}" if item.event_shape else "one number per row"
            raise ModelError(f"{source}: column {column!r} does not fit {item.name!r}, which has {shape}",
                             culprit=column)


def _numbers(column: pd.Series, name: str, source: str) -> np.ndarray:
    """A value column as float64, refusing empty cells, text, NaN and infinities."""
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.argmax(bad))
        raw = column.iloc[row]
        what = "is empty" if _is_blank(raw) else f"holds {raw!r}, which is not a finite number"
        raise ModelError(f"{source}: column {name!r} needs a number in every row, but {_row_text(row)} {what}",
                         culprit=name)
    return values


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def _row_text(row: int) -> str:
    return f"row {row + 1} (line {row + 2} of a CSV file)"


def _element_text(plate: str, index: int, labels: Sequence[str] | None) -> str:
    label = labels[index] if labels is not None and index < len(labels) else str(index)
    return f"{plate} {index}" if label == str(index) else f"{plate} {index} ({label})"


def _codes(column: pd.Series, name: str, source: str) -> tuple[np.ndarray, list[str]]:
    """Each row's id as a position among the sorted distinct ids, and the ids as labels."""
    blank = column.map(_is_blank).to_numpy(dtype=bool)
    if blank.any():
        row = int(np.argmax(blank))
        raise ModelError(f"{source}: {_row_text(row)} has no {name} (the column {name!r} is empty there)",
                         culprit=name)
    numbers = pd.to_numeric(column, errors="coerce")
    if numbers.notna().all():
        keys: np.ndarray = numbers.to_numpy(dtype=np.float64)
    else:  # text ids, sorted alphabetically
        keys = column.astype(str).str.strip().to_numpy(dtype=str)
    _, first, codes = np.unique(keys, return_index=True, return_inverse=True)
    labels = [_label(column.iloc[i]) for i in first]
    return codes.astype(np.int64), labels


def _label(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


class _RowIndex:
    """Where each row of a table sits in each plate of the chain.

    Attributes:
        position: plate -> each row's index along that plate's dim, shape ``(rows,)``
            (within the outer element for a regularly nested plate).
        sizes / membership / labels: what the plates get from the table.
    """

    def __init__(self, model: PlateModel, frame: pd.DataFrame, chain: Sequence[str], source: str) -> None:
        self.source = source
        self.rows = len(frame)
        self.position: dict[str, np.ndarray] = {}
        self.sizes: dict[str, int] = {}
        self.membership: dict[str, np.ndarray] = {}
        self.labels: dict[str, list[str]] = {}
        element = np.zeros(self.rows, dtype=np.int64)  # each row's element of the previous plate, numbered globally
        describe: Callable[[int], str] = lambda e: "the table"
        for level, name in enumerate(chain):
            plate = model.plate(name)
            innermost = level == len(chain) - 1
            if name in frame.columns:
                codes, labels = _codes(frame[name], name, source)
            elif innermost:
                codes, labels = None, None  # one element per row, in file order
            else:
                raise ModelError(f"{source} has no column {name!r}: it should give the {name} of each row",
                                 culprit=name)
            if innermost and codes is not None:
                self._check_one_row_each(name, element * len(labels) + codes, level > 0, labels, describe)
            if level == 0 or plate.membership is not None:
                element, describe = self._global(name, codes, labels, element, describe, level > 0)
            else:
                element, describe = self._regular(name, plate.nested_in, codes, labels, element, describe)

    def _global(self, name: str, codes: np.ndarray | None, labels: list[str] | None, outer: np.ndarray,
                describe_outer: Callable[[int], str], nested: bool) -> tuple[np.ndarray, Callable[[int], str]]:
        """A top-level or ragged plate: ids name elements across the whole table."""
        if codes is None:
            codes = np.arange(self.rows)
        size = int(codes.max()) + 1
        labels = labels if labels is not None else [str(i) for i in range(size)]
        if nested:
            first = np.zeros(size, dtype=np.int64)
            first[codes[::-1]] = np.arange(self.rows)[::-1]  # the first row of each element
            members = outer[first]
            moved = members[codes] != outer
            if moved.any():
                row = int(np.argmax(moved))
                element = int(codes[row])
                raise ModelError(
                    f"{self.source}: {_element_text(name, element, labels)} is in "
                    f"{describe_outer(int(members[element]))} in {_row_text(int(first[element]))} but in "
                    f"{describe_outer(int(outer[row]))} in {_row_text(row)}: in a ragged nesting an id names one {name} "
                    f"across the whole table, so give each {name} its own id (or, for the plate of the rows, "
                    f"leave out the column {name!r}: one {name} per row)", culprit=name)
            self.membership[name] = members
        self.position[name] = codes
        self.sizes[name] = size
        self.labels[name] = labels
        return codes, lambda e: _element_text(name, e, labels)

    def _regular(self, name: str, outer_name: str, codes: np.ndarray | None, labels: list[str] | None,
                 outer: np.ndarray, describe_outer: Callable[[int], str]) -> tuple[np.ndarray, Callable[[int], str]]:
        """A regularly nested plate: ids are read within each outer element."""
        n_outer = int(outer.max()) + 1
        if codes is None:  # the rows of each outer element, in file order
            local = pd.Series(outer).groupby(outer).cumcount().to_numpy(dtype=np.int64)
            counts = np.bincount(outer, minlength=n_outer)
        else:
            pairs = outer * len(labels) + codes
            distinct = np.unique(pairs)
            counts = np.bincount(distinct // len(labels), minlength=n_outer)
        low, high = int(np.argmin(counts)), int(np.argmax(counts))
        if counts[low] != counts[high]:
            raise ModelError(
                f"{self.source}: {name!r} is nested regularly in {outer_name!r}, so every {outer_name} needs the "
                f"same number of {name} elements, but {describe_outer(low)} has {counts[low]} and "
                f"{describe_outer(high)} has {counts[high]}. If the numbers differ on purpose, make {name!r} "
                f"ragged in {outer_name!r}.", culprit=name)
        size = int(counts[0])
        if codes is None:
            position_labels = [str(i) for i in range(size)]
        else:
            # ``distinct`` is sorted by (outer, id) and each outer holds ``size`` ids: rank within the outer.
            local = (np.searchsorted(distinct, pairs) % size).astype(np.int64)
            grid = (distinct % len(labels)).reshape(n_outer, size)
            same_ids = bool((grid == grid[0]).all())
            position_labels = [labels[c] for c in grid[0]] if same_ids else [str(i) for i in range(size)]
        self.position[name] = local
        self.sizes[name] = size
        self.labels[name] = position_labels

        def describe(e: int) -> str:
            return f"{_element_text(name, e % size, position_labels)} of {describe_outer(e // size)}"

        return outer * size + local, describe

    def _check_one_row_each(self, name: str, keys: np.ndarray, nested: bool, labels: list[str],
                            describe_outer: Callable[[int], str]) -> None:
        """Refuse two rows for one element of the rows' plate (``keys``: outer element and id)."""
        distinct, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        if len(distinct) == self.rows:
            return
        repeated = np.arange(self.rows) != first[inverse]
        row = int(np.argmax(repeated))
        key = int(keys[row])
        where = f" in {describe_outer(key // len(labels))}" if nested else ""
        raise ModelError(f"{self.source}: {_row_text(int(first[inverse[row]]))} and {_row_text(row)} both give "
                         f"{name} {labels[key % len(labels)]}{where}; each row must be a different {name}",
                         culprit=name)

    def gather(self, item: Covariate | Variable, values: np.ndarray, columns: Sequence[str]) -> np.ndarray:
        """The item's full array ``(*plate sizes, *event_shape)`` from one value per row
        ``values`` (shape ``(rows, *event_shape)``), checking that an item living in outer
        plates has one value per outer element."""
        shape = tuple(self.sizes[p] for p in item.plates)
        cell = (np.ravel_multi_index([self.position[p] for p in item.plates], shape) if shape
                else np.zeros(self.rows, dtype=np.int64))
        distinct, first, inverse = np.unique(cell, return_index=True, return_inverse=True)
        if len(distinct) != math.prod(shape):
            raise ModelError(f"{self.source}: no row gives {item.name!r} for some elements of its plates "
                             f"{list(item.plates)}", culprit=item.name)
        differ = (values != values[first][inverse]).reshape(self.rows, -1)
        if differ.any():
            row, entry = (int(i) for i in np.argwhere(differ)[0])
            where = ", ".join(_element_text(p, int(self.position[p][row]), self.labels[p]) for p in item.plates)
            column = columns[entry]
            one_per = f"one value per {' and '.join(item.plates)}" if shape else "the same value in every row"
            raise ModelError(
                f"{self.source}: column {column!r} should hold {one_per} (that is where {item.name!r} lives), "
                f"but {where or 'the table'} has {values[first[inverse[row]]].flat[entry]:g} in "
                f"{_row_text(int(first[inverse[row]]))} and {values[row].flat[entry]:g} in {_row_text(row)}",
                culprit=column)
        return values[first].reshape(*shape, *item.event_shape)

    def apply(self, plate: Plate) -> None:
        """Give ``plate`` its size (and membership) from the table."""
        plate.size = self.sizes[plate.name]
        if plate.membership is not None:
            plate.membership = self.membership[plate.name]


# -- NetCDF / Dataset ---------------------------------------------------------------------
def _attach_dataset(model: PlateModel, dataset: xr.Dataset, made_ragged: Sequence[str]) -> Attached:
    data = {item.name: dataset_values(dataset, item, model) for item in data_items(model)}
    attached = attach_layout(model, dataset, made_ragged)
    attached.model.with_data(data)
    return attached


def attach_layout(model: PlateModel, dataset: xr.Dataset, made_ragged: Sequence[str] = ()) -> Attached:
    """``model`` (changed in place) with the sizes of its data's plates and the memberships of
    the ragged ones among them (and of their outer plates) read from ``dataset``'s dims and
    membership variables, none of its data arrays read: what :func:`attach_table` does
    but for the data (``model``'s own data are dropped). The variables of the dataset
    that are neither data nor memberships are reported as ignored.

    Raises:
        ModelError: a ragged plate whose membership the file does not give.
    """
    source = dataset.attrs.get("filename", "the dataset")
    plates = {p.name: p for p in model.plates}
    pending = list(_data_plates(model))
    used = {item.name for item in data_items(model)}
    sizes: dict[str, int] = {}
    labels: dict[str, list[str]] = {}
    membership: dict[str, np.ndarray] = {}
    done: set[str] = set()
    while pending:  # the data's plates, then the outer plates of the ragged ones among them
        name = pending.pop(0)
        if name in done:
            continue
        done.add(name)
        if name in dataset.dims:
            sizes[name] = int(dataset.sizes[name])
            named = _dim_labels(dataset, name)
            if named is not None:
                labels[name] = named
        plate = plates[name]
        if plate.membership is None:
            continue
        outer = plate.nested_in
        key = f"{outer}_of_{name}"
        if key in dataset.variables:
            used.add(key)
            membership[name], outer_labels = _dataset_membership(dataset, key, name, outer, source)
            if outer_labels is not None:
                labels.setdefault(outer, outer_labels)
            sizes.setdefault(outer, int(dataset.sizes[outer]) if outer in dataset.dims else len(outer_labels))
        elif name in made_ragged or len(plate.membership) != sizes.get(name, plate.size):
            raise ModelError(f"{source}: {name!r} is ragged in {outer!r}, so the file needs a variable "
                             f"{key!r} along dim {name!r} giving the {outer} of each {name}", culprit=name)
        pending.append(outer)
    for name in made_ragged:
        if name not in membership:
            raise ModelError(f"{source} cannot give the membership of the ragged plate {name!r}: "
                             f"no data lives in it", culprit=name)
    for name, size in sizes.items():
        plates[name].size = size
    for name, members in membership.items():
        plates[name].membership = members
    model.with_data({})
    ignored = [str(n) for n in [*dataset.data_vars, *dataset.coords] if n not in used and n not in dataset.indexes]
    return Attached(model, ignored, labels)


def dataset_values(dataset: xr.Dataset, item: Covariate | Variable, model: PlateModel) -> np.ndarray:
    """The array of ``item`` (an observed variable or a covariate of ``model``) in
    ``dataset``, transposed to ``(*plates, *event dims)``, read and checked: floats as
    the file stores them, integers and booleans as float64.

    Raises:
        ModelError: the dataset lacks it, or it has the wrong dims, non-numbers or
            non-finite values (naming the first).
    """
    source = dataset.attrs.get("filename", "the dataset")
    name = item.name
    if name not in dataset.variables:
        kind = "observed variable" if item in model.variables else "covariate"
        raise ModelError(f"{source} has no variable {name!r} for the {kind} {name!r}", culprit=name)
    array = dataset[name]
    event_dims = [d for d in array.dims if d not in item.plates]
    expected = (*item.plates, *(f"{name}_dim_{i}" for i in range(len(item.event_shape))))
    if any(p not in array.dims for p in item.plates) or len(event_dims) != len(item.event_shape):
        raise ModelError(f"{source}: {name!r} has dims {tuple(map(str, array.dims))}, but it lives in plates "
                         f"{list(item.plates)} with event shape {list(item.event_shape)}: expected dims like "
                         f"{expected}", culprit=name)
    array = array.transpose(*item.plates, *event_dims)
    if tuple(array.shape[len(item.plates):]) != tuple(item.event_shape):
        raise ModelError(f"{source}: {name!r} has event dims of sizes {array.shape[len(item.plates):]}, but "
                         f"its event shape is {list(item.event_shape)}", culprit=name)
    if array.dtype.kind not in "biuf":
        raise ModelError(f"{source}: {name!r} holds {array.dtype} values, not numbers", culprit=name)
    values = array.values
    if values.dtype.kind != "f":  # floats keep their precision (no float64 copy of float32 data)
        values = values.astype(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        where = ", ".join(f"{d} {i}" for d, i in zip(array.dims, np.argwhere(bad)[0], strict=True))
        raise ModelError(f"{source}: {name!r} has {int(bad.sum())} NaN or infinite values (the first at "
                         f"{where}); every value must be a finite number", culprit=name)
    return values


def _dim_labels(dataset: xr.Dataset, dim: str) -> list[str] | None:
    """The labels of a dim's elements, its coordinate's values as text; ``None`` where it
    has no coordinate or its values are the positions 0, 1, ... (labels that say nothing,
    and would take a string per element: 600 MB for 10^7 groups)."""
    index = dataset.indexes.get(dim)
    if index is None or (index.dtype.kind in "iu" and np.array_equal(index.to_numpy(), np.arange(len(index)))):
        return None
    return [_label(v) for v in index]


def _dataset_membership(dataset: xr.Dataset, key: str, inner: str, outer: str,
                        source: str) -> tuple[np.ndarray, list[str] | None]:
    """The outer element of each inner one, and the outer plate's labels (``None``: its positions)."""
    ids = dataset[key]
    if ids.dims != (inner,):
        raise ModelError(f"{source}: {key!r} should have the one dim {inner!r}, not {ids.dims}", culprit=key)
    column = pd.Series(ids.values)
    if outer not in dataset.dims:
        return _codes(column, key, source)
    outer_labels = _dim_labels(dataset, outer)
    index = dataset.indexes.get(outer)
    exact = index is not None and index.is_unique
    codes = np.asarray(index.get_indexer(column) if exact else np.full(len(column), -1), dtype=np.int64)
    missing = codes < 0
    if missing.any():  # ids written otherwise than the coordinate (3.0 for 3, or no coordinate): as text
        names = outer_labels if outer_labels is not None else [str(i) for i in range(int(dataset.sizes[outer]))]
        lookup = {label: i for i, label in enumerate(names)}
        codes[missing] = [lookup.get(_label(v), -1) for v in column[missing]]
    unknown = codes < 0
    if unknown.any():
        i = int(np.argmax(unknown))
        raise ModelError(f"{source}: {key!r} gives {_label(column[i])!r} for {inner} {i}, which is not an "
                         f"element of the dim {outer!r}", culprit=key)
    return codes, outer_labels


# -- export ---------------------------------------------------------------------------------
def model_to_table(model: PlateModel, labels: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """The model's data as one table, the inverse of :func:`attach_table`.

    One row per element of the innermost plate the data lives in (in element order; for
    regular nesting, outer elements first), an id column per plate of its chain (the
    position, or ``labels[plate][position]``), then the covariates and observed
    variables that have data (``x[0]``, ``x[1]``, ... for event shapes).

    Raises:
        ModelError: when the data doesn't fit one table, or an array has the wrong shape.
    """
    chain = _row_chain(model)
    positions: dict[str, np.ndarray] = {}
    rows = 1
    for name in chain:
        plate = model.plate(name)
        if not positions:
            rows = plate.size
            positions[name] = np.arange(rows)
        elif plate.membership is not None:
            # Rows so far are the outer plate's elements in order: the members pick theirs.
            members = np.asarray(plate.membership, dtype=np.int64)
            positions = {p: where[members] for p, where in positions.items()}
            rows = len(members)
            positions[name] = np.arange(rows)
        else:
            positions = {p: np.repeat(where, plate.size) for p, where in positions.items()}
            positions[name] = np.tile(np.arange(plate.size), rows)
            rows *= plate.size
    columns: dict[str, Any] = {}
    for name in chain:
        names = (labels or {}).get(name)
        columns[name] = positions[name] if names is None else np.asarray(names, dtype=object)[positions[name]]
    for item in data_items(model):
        if item.name not in model.data:
            continue
        array = model.data[item.name].detach().cpu().numpy().astype(np.float64)
        shape = tuple(model.plate(p).size for p in item.plates) + tuple(item.event_shape)
        if array.shape != shape:
            raise ModelError(f"data for {item.name!r} has shape {array.shape}, but its plates call for {shape}",
                             culprit=item.name)
        values = array[tuple(positions[p] for p in item.plates)] if item.plates else np.broadcast_to(
            array, (rows, *array.shape))
        for k, column in enumerate(_event_columns(item.name, item.event_shape)):
            columns[column] = values.reshape(rows, -1)[:, k]
    return pd.DataFrame(columns)


def model_to_dataset(model: PlateModel, labels: Mapping[str, Sequence[str]] | None = None) -> xr.Dataset:
    """The model's data as a Dataset, the inverse of :func:`attach_table` for NetCDF.

    One data variable per covariate and observed variable with data, dims
    ``(*plates, *f"{name}_dim_{i}")``; a coordinate per plate (``labels`` or positions);
    for each ragged plate, the coordinate ``f"{outer}_of_{inner}"`` along the inner dim.
    """
    labels = labels or {}
    variables = {}
    plates: list[str] = []
    for item in data_items(model):
        if item.name in model.data:
            dims = (*item.plates, *(f"{item.name}_dim_{i}" for i in range(len(item.event_shape))))
            variables[item.name] = (dims, model.data[item.name].detach().cpu().numpy())
            plates += [p for p in item.plates if p not in plates]
    coords: dict[str, Any] = {}
    for name in plates:  # grows as the outer plates of ragged ones are added
        plate = model.plate(name)
        coords[name] = np.asarray(labels.get(name, np.arange(plate.size)))
        if plate.membership is not None:
            members = np.asarray(plate.membership, dtype=np.int64)
            outer = labels.get(plate.nested_in)
            coords[f"{plate.nested_in}_of_{name}"] = (name, members if outer is None
                                                      else np.asarray(outer)[members])
            if plate.nested_in not in plates:
                plates.append(plate.nested_in)
    return xr.Dataset(variables, coords=coords, attrs={"model": model.name, "created_by": "pavi_viz"})


def write_table(table: Table) -> bytes:
    """A table as the bytes of a file: CSV text for a DataFrame, NetCDF-4 for a Dataset."""
    if isinstance(table, pd.DataFrame):
        return table.to_csv(index=False).encode()
    return bytes(table.to_netcdf(engine=NETCDF_ENGINE))
