"""Opening the egressmail database: owner-only permissions, WAL, one transaction per update.

Theory of operation: every CLI invocation and every long-running service opens its own connection.
Writers take the database lock at the start of their transaction (``BEGIN IMMEDIATE``) so two
processes updating at once queue behind each other instead of failing half-way with ``SQLITE_BUSY``
in the middle of a read-modify-write. WAL lets readers (the gateway, the mail service) carry on
while a writer works.

Shared tables (the parts add their own):

- ``programs(program_id)`` and ``environments(program_id, environment_id, generation)``: created on
  first write. ``generation`` is the change counter: every committed change to an environment's
  variables, secrets or networking bumps it, so a running service can notice a rotated secret or a
  new rule by comparing one integer.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from egressmail.errors import NotFoundError, StoreError

DB_FILE_NAME = "egressmail.db"
BUSY_TIMEOUT_MS = 30_000

_SHARED_SCHEMA = """
CREATE TABLE IF NOT EXISTS programs (
    program_id   TEXT PRIMARY KEY,
    created_at   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS environments (
    program_id     TEXT NOT NULL REFERENCES programs(program_id),
    environment_id TEXT NOT NULL,
    generation     INTEGER NOT NULL DEFAULT 0,
    created_at     REAL NOT NULL,
    PRIMARY KEY (program_id, environment_id)
);
"""


def create_owner_only(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (SQLite gives its -wal/-shm the same mode)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)


class Database:
    """The SQLite database in an egressmail home folder.

    Args:
        path: the database file (a name with a suffix, e.g. ``store.db``), or a home folder, existing
            or not (then ``egressmail.db`` inside it is used).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        p = Path(path)
        self.path = p / DB_FILE_NAME if p.is_dir() or not p.suffix else p
        self._schema_ready = False

    def __repr__(self) -> str:
        return f"Database({str(self.path)!r})"

    def connect(self) -> sqlite3.Connection:
        """Open a new connection (autocommit mode; use :meth:`transaction` for updates).

        Raises:
            StoreError: the file cannot be opened or is not an egressmail database.
        """
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            create_owner_only(self.path)
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA foreign_keys = ON")
            if not self._schema_ready:
                conn.executescript(_SHARED_SCHEMA)
                self._schema_ready = True
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the egressmail database {self.path}: {exc}",
                             hint="check the file is an egressmail database and you own it") from exc
        except OSError as exc:  # creating the folder or the file
            raise StoreError(f"cannot create the egressmail database {self.path}: {exc.strerror}",
                             hint="check the folder is writable and you own it") from exc
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A connection inside ``BEGIN IMMEDIATE`` … ``COMMIT``; rolled back if the block raises."""
        conn = self.connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A connection for reads (a consistent snapshot while inside ``BEGIN``)."""
        conn = self.connect()
        try:
            conn.execute("BEGIN")
            yield conn
            conn.execute("COMMIT")
        finally:
            conn.close()


def ensure_environment(conn: sqlite3.Connection, program_id: str, environment_id: str) -> None:
    """Create the program and the environment if they do not exist (call inside a transaction)."""
    now = time.time()
    conn.execute("INSERT OR IGNORE INTO programs(program_id, created_at) VALUES (?, ?)",
                 (program_id, now))
    conn.execute(
        "INSERT OR IGNORE INTO environments(program_id, environment_id, created_at) VALUES (?, ?, ?)",
        (program_id, environment_id, now),
    )


def ensure_program(conn: sqlite3.Connection, program_id: str) -> None:
    """Create the program if it does not exist (call inside a transaction)."""
    conn.execute("INSERT OR IGNORE INTO programs(program_id, created_at) VALUES (?, ?)",
                 (program_id, time.time()))


def require_program(conn: sqlite3.Connection, program_id: str) -> None:
    """Raise :class:`NotFoundError` naming the program unless it exists."""
    row = conn.execute("SELECT 1 FROM programs WHERE program_id = ?", (program_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"program {program_id!r} does not exist",
                            hint="programs are created by their first write, e.g. "
                                 "`egressmail env set PROGRAM ENV -v NAME VALUE`")


def require_environment(conn: sqlite3.Connection, program_id: str, environment_id: str) -> None:
    """Raise :class:`NotFoundError` naming the program or environment unless it exists."""
    require_program(conn, program_id)
    row = conn.execute(
        "SELECT 1 FROM environments WHERE program_id = ? AND environment_id = ?",
        (program_id, environment_id),
    ).fetchone()
    if row is None:
        raise NotFoundError(f"environment {environment_id!r} of program {program_id!r} does not exist",
                            hint="environments are created by their first write, e.g. "
                                 "`egressmail env set PROGRAM ENV -v NAME VALUE`")


def bump_generation(conn: sqlite3.Connection, program_id: str, environment_id: str) -> None:
    """Record that the environment changed (call inside the transaction that changed it)."""
    conn.execute(
        "UPDATE environments SET generation = generation + 1 "
        "WHERE program_id = ? AND environment_id = ?",
        (program_id, environment_id),
    )


def generation(conn: sqlite3.Connection, program_id: str, environment_id: str) -> int:
    """The environment's change counter (0 for one that does not exist yet)."""
    row = conn.execute(
        "SELECT generation FROM environments WHERE program_id = ? AND environment_id = ?",
        (program_id, environment_id),
    ).fetchone()
    return int(row[0]) if row is not None else 0
