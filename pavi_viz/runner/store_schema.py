"""The run store's file: where it lies, how it is opened, and what it holds.

One SQLite file (standard library :mod:`sqlite3`) holds every run of a project. It is
opened in WAL mode, so that readers (``pavi-viz runs``, a dashboard attached to a run)
never wait for a writer and a writer never waits for them, and with a busy timeout, so
that writers in several processes (each writing its own runs) take turns at the file's
write lock instead of failing.

The file says what it is before anything is read from it: SQLite's header holds an
application id (:data:`APPLICATION_ID`, pavi_viz's) and a user version (the schema
version, :data:`SCHEMA_VERSION`), and the tables, indexes and triggers it declares must
be exactly those of :data:`SCHEMA`. A file that is not SQLite, an SQLite file of another
application, a store of a newer schema, and one whose schema was tampered with (a
trigger added...) are refused with a :class:`StoreError` naming the file. Nothing read
from the file is ever executed: no pickle; the summaries are float64 arrays with their
shapes and dims in JSON (:mod:`pavi_viz.runner.store_summary`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

#: The store's file when none is named: ``.pavi_viz/runs.db`` in the current working
#: directory, so that a project's runs lie beside it (as ``.git`` does), unless the
#: environment variable :data:`PATH_VARIABLE` names another file.
DEFAULT_PATH = Path(".pavi_viz") / "runs.db"
#: The environment variable naming the store's file (one store for every folder). It
#: must lie on a local disk: WAL mode shares memory between the processes, which a
#: network file system (NFS...) does not.
PATH_VARIABLE = "PAVI_VIZ_STORE"
#: The version of :data:`SCHEMA`, in the file's header (``PRAGMA user_version``).
SCHEMA_VERSION = 1
#: pavi_viz's mark in the file's header (``PRAGMA application_id``): "PAVI" in ASCII.
APPLICATION_ID = 0x50415649
#: Seconds a connection waits for another's write lock before it gives up (SQLite's
#: busy timeout): a writer's batches take milliseconds; VACUUM after a deletion, longer.
BUSY_TIMEOUT_SECONDS = 30.0

#: The tables. ``runs.updated`` is the writer's heartbeat (see
#: :data:`pavi_viz.runner.store_writer.HEARTBEAT_SECONDS`); models are kept once per
#: distinct JSON (by its SHA-256), however many runs fit them; a run's points are keyed
#: by step; ``summaries`` holds a run's latest posterior summary, one row of
#: ``summary_variables`` per latent variable (a rowid table: its rows are large, and
#: their rowids keep the variables' order).
SCHEMA = """
CREATE TABLE models (
    hash TEXT PRIMARY KEY,
    json TEXT NOT NULL
);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    model TEXT NOT NULL,
    model_hash TEXT REFERENCES models(hash),
    settings TEXT NOT NULL,
    family TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    pid INTEGER NOT NULL,
    hostname TEXT NOT NULL,
    total_steps INTEGER NOT NULL,
    step INTEGER NOT NULL,
    smoothed_elbo REAL,
    checkpoint TEXT,
    posterior TEXT,
    pareto_k REAL
);
CREATE INDEX runs_by_checkpoint ON runs (checkpoint);
CREATE TABLE transitions (
    run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    state TEXT NOT NULL,
    time REAL NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX transitions_by_run ON transitions (run, time);
CREATE TABLE points (
    run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    elbo REAL,
    smoothed_elbo REAL,
    spike INTEGER NOT NULL,
    steps_per_second REAL,
    elapsed REAL,
    lr REAL,
    time REAL NOT NULL,
    PRIMARY KEY (run, step)
) WITHOUT ROWID;
CREATE TABLE summaries (
    run INTEGER PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    time REAL NOT NULL,
    coords TEXT NOT NULL,
    attrs TEXT NOT NULL
);
CREATE TABLE summary_variables (
    run INTEGER NOT NULL REFERENCES summaries(run) ON DELETE CASCADE,
    name TEXT NOT NULL,
    dims TEXT NOT NULL,
    shape TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (run, name)
);
"""


class StoreError(Exception):
    """A run store that cannot be used (no file, not a store, a newer schema, malformed
    contents), or a run that is not in it; the message names the file."""


def default_path() -> Path:
    """The store's file when none is named: ``$PAVI_VIZ_STORE``, else :data:`DEFAULT_PATH`
    (relative to the current working directory)."""
    return Path(os.environ.get(PATH_VARIABLE) or DEFAULT_PATH)


def connect(path: Path, *, create: bool) -> sqlite3.Connection:
    """An open connection to the store at ``path``, its schema checked (and made, in a
    new or empty file, when ``create``).

    The connection is in autocommit mode: writes go in :func:`transaction` blocks.

    Raises:
        StoreError: no file (and not ``create``), a folder, not a pavi_viz store, a
            newer schema.
    """
    if path.is_dir():
        raise StoreError(f"{path} is a folder, not a run store file")
    if not path.exists():
        if not create:
            raise StoreError(f"no run store at {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # timeout= is SQLite's busy timeout: a locked file is waited for, not an error.
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
    except sqlite3.Error as err:
        raise StoreError(f"cannot open the run store {path}: {err}") from err
    try:
        # A hostile file's schema may not call functions with side effects.
        connection.execute("PRAGMA trusted_schema = OFF")
        _check_schema(connection, path, create)
        connection.execute("PRAGMA foreign_keys = ON")
        # WAL: safe against corruption with NORMAL; a power cut may lose the last batches.
        connection.execute("PRAGMA synchronous = NORMAL")
        _use_wal(connection)
    except sqlite3.DatabaseError as err:
        connection.close()
        raise StoreError(f"{path} is not a pavi_viz run store ({err})") from err
    except BaseException:
        connection.close()
        raise
    return connection


def _use_wal(connection: sqlite3.Connection) -> None:
    """Put the store in WAL mode (kept in the file: the first connection to a new store
    does it). Two connections switching a new store at once each hold a read lock and
    want the file to themselves; SQLite answers one of them "locked" at once rather
    than wait for a deadlock (the busy timeout does not apply), so the switch is tried
    again, for as long as the busy timeout (CI saw a ``pavi-viz fit`` fail so while a
    reader opened the store it had just made)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@contextlib.contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction that takes the write lock at once (``BEGIN IMMEDIATE``: two
    writers never deadlock upgrading a read), committed unless the block raises."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _check_schema(connection: sqlite3.Connection, path: Path, create: bool) -> None:
    """Accept a store of this schema; make the schema in an empty file when ``create``."""
    found = _header(connection)
    if found == (0, 0) and _is_empty(connection):
        if not create:
            raise StoreError(f"{path} is an empty file, not a pavi_viz run store")
        with transaction(connection):
            if _header(connection) == (0, 0) and _is_empty(connection):  # no other process made it meanwhile
                _create(connection)
                connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        found = _header(connection)
    application, version = found
    if application != APPLICATION_ID:
        raise StoreError(f"{path} is an SQLite database of another application, not a pavi_viz run store")
    if version > SCHEMA_VERSION:
        raise StoreError(f"{path} is a run store of schema {version}, written by a newer pavi_viz (this one reads "
                         f"schema {SCHEMA_VERSION}): upgrade pavi_viz to read it")
    if version < SCHEMA_VERSION or _declared(connection) != _expected_schema():
        raise StoreError(f"{path} is not a pavi_viz run store of schema {version}: its tables are not the store's")


def _header(connection: sqlite3.Connection) -> tuple[int, int]:
    application = connection.execute("PRAGMA application_id").fetchone()[0]
    return application, connection.execute("PRAGMA user_version").fetchone()[0]


def _is_empty(connection: sqlite3.Connection) -> bool:
    return connection.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0] == 0


def _declared(connection: sqlite3.Connection) -> frozenset[tuple[str, str, str | None]]:
    """What the file declares: every table, index, view and trigger, with its SQL."""
    return frozenset(connection.execute("SELECT type, name, sql FROM sqlite_schema"))


@functools.cache
def _expected_schema() -> frozenset[tuple[str, str, str | None]]:
    """What :data:`SCHEMA` declares, as SQLite records it (read off an in-memory database,
    so that the check needs no second copy of the schema)."""
    with contextlib.closing(sqlite3.connect(":memory:")) as memory:
        _create(memory)
        return _declared(memory)


def _create(connection: sqlite3.Connection) -> None:
    """Run :data:`SCHEMA`'s statements one by one (``executescript`` would commit the
    transaction they belong to first)."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            connection.execute(statement)


__all__ = ["APPLICATION_ID", "BUSY_TIMEOUT_SECONDS", "DEFAULT_PATH", "PATH_VARIABLE", "SCHEMA", "SCHEMA_VERSION",
           "StoreError", "connect", "default_path", "transaction"]
