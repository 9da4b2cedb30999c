"""The outbox's SQLite file: opening it safely and committing in groups.

Theory of operation
-------------------
Durability: the file is in WAL mode with ``PRAGMA synchronous=FULL``, so every ``COMMIT`` fsyncs
the write-ahead log before it returns; a message whose ``enqueue`` returned survives a crash of the
process and of the machine (as far as the disk honours fsync). :func:`open_connection` refuses a
file where SQLite would not give that (e.g. a filesystem without WAL support).

Group commit: an fsync costs far more than the inserts it protects, so every write of a process
goes through one writer thread (:class:`GroupCommitter`). Callers hand it a small function; the
thread takes *everything* that is waiting, runs each function in its own SAVEPOINT inside one
``BEGIN IMMEDIATE`` transaction, commits once (one fsync), and only then resolves the callers'
futures. One function failing rolls back its savepoint only. Because a caller's future resolves
after the commit, "returned" still means "on disk". One writer per process also means the process
never fights itself for SQLite's write lock; several processes queue on the lock (busy timeout).
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from egressmail.mail.outbox_model import OutboxError
from egressmail.storage.sqlite import create_owner_only

T = TypeVar("T")

BUSY_TIMEOUT_MS = 30_000
MAX_GROUP = 4096  # jobs per transaction: bounds the time one commit holds the write lock


class OutboxStorageError(OutboxError):
    """The outbox file cannot be opened, read or written."""


def open_connection(path: Path) -> sqlite3.Connection:
    """Open the outbox file in WAL mode with a real fsync per commit (autocommit mode).

    Raises:
        OutboxStorageError: the file cannot be opened, is not SQLite, or cannot be made durable.
    """
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        create_owner_only(path)
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        conn.execute("PRAGMA synchronous = FULL")
        sync = conn.execute("PRAGMA synchronous").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise OutboxStorageError(f"cannot open the outbox {path}: {exc}",
                                 hint="check the file is an egressmail outbox and you own it") from exc
    if str(mode).lower() != "wal" or int(sync) != 2:
        conn.close()
        raise OutboxStorageError(
            f"the outbox {path} cannot be made durable (journal_mode={mode}, synchronous={sync})",
            hint="put the egressmail home on a local filesystem that supports SQLite's WAL mode")
    return conn


@dataclass(slots=True)
class _Job(Generic[T]):
    fn: Callable[[sqlite3.Connection], T]
    future: Future[T] | None = None  # a thread waiting
    afuture: asyncio.Future[T] | None = None  # or a task in an event loop
    loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> bool:
        """Mark it running; ``False`` if its caller gave up (cancelled) before its turn."""
        if self.future is not None:
            return self.future.running() or self.future.set_running_or_notify_cancel()
        return self.afuture is not None and not self.afuture.cancelled()


def _resolve(items: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    """Runs in the event loop: hand each task its result (one wake-up per group, not per job)."""
    for fut, ok, value in items:
        if fut.done():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


class GroupCommitter:
    """One writer thread that commits whatever jobs are waiting in a single fsync'd transaction.

    Args:
        path: the SQLite file.
        on_open: run once on the writer's connection before any job (creates the schema).
    """

    def __init__(self, path: Path, on_open: Callable[[sqlite3.Connection], None]) -> None:
        self._path = path
        self._queue: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._ready: Future[None] = Future()
        self._closed = False
        self._lock = threading.Lock()
        self.commits = 0
        self.jobs = 0
        self._thread = threading.Thread(target=self._run, args=(on_open,),
                                        name=f"outbox-writer:{path.name}", daemon=True)
        self._thread.start()
        # Fail fast (in the caller's thread) when the file cannot be opened.
        self._ready.result()

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> Future[T]:
        """Queue ``fn(conn)`` for the next group; the future resolves after its COMMIT.

        Raises:
            OutboxStorageError: the outbox was closed.
        """
        future: Future[T] = Future()
        self._put(_Job(fn, future=future))
        return future

    def submit_async(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """:meth:`submit` for a task of the running event loop (call it from that loop).

        Raises:
            OutboxStorageError: the outbox was closed.
        """
        loop = asyncio.get_running_loop()
        afuture: asyncio.Future[T] = loop.create_future()
        self._put(_Job(fn, afuture=afuture, loop=loop))
        return afuture

    def _put(self, job: _Job[Any]) -> None:
        with self._lock:
            if self._closed:
                raise OutboxStorageError(f"the outbox {self._path} is closed")
            self._queue.put(job)

    def close(self) -> None:
        """Finish the jobs already submitted, then stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join()

    def _run(self, on_open: Callable[[sqlite3.Connection], None]) -> None:
        try:
            conn = open_connection(self._path)
            on_open(conn)
        except BaseException as exc:  # noqa: BLE001 - handed to the constructor's thread
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        try:
            stopping = False
            while not stopping:
                first = self._queue.get()
                if first is None:
                    break
                group: list[_Job[Any]] = [first]
                while len(group) < MAX_GROUP:
                    try:
                        job = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        stopping = True
                        break
                    group.append(job)
                self._commit(conn, group)
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, group: list[_Job[Any]]) -> None:
        jobs = [job for job in group if job.start()]  # skip callers that gave up before their turn
        if not jobs:
            return
        results: list[tuple[_Job[Any], bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            # Fast path: jobs almost never fail, so run them without savepoints; if one does,
            # roll the whole group back and run it again with a savepoint around each job.
            try:
                results = [(job, True, job.fn(conn)) for job in jobs]
            except Exception:  # noqa: BLE001 - the slow path below reports it to its caller
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                results = self._run_isolated(conn, jobs)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._fail(jobs, exc)
            return
        self.commits += 1
        self.jobs += len(results)
        self._deliver(results)

    @staticmethod
    def _run_isolated(conn: sqlite3.Connection, jobs: list[_Job[Any]]
                      ) -> list[tuple[_Job[Any], bool, Any]]:
        results: list[tuple[_Job[Any], bool, Any]] = []
        for job in jobs:
            conn.execute("SAVEPOINT job")
            try:
                value = job.fn(conn)
            except Exception as exc:  # noqa: BLE001 - returned to that job's caller
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                results.append((job, False, exc))
            else:
                conn.execute("RELEASE job")
                results.append((job, True, value))
        return results

    @staticmethod
    def _deliver(results: list[tuple[_Job[Any], bool, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for job, ok, value in results:
            if job.future is not None:
                if ok:
                    job.future.set_result(value)
                else:
                    job.future.set_exception(value)
            elif job.loop is not None and job.afuture is not None:
                by_loop.setdefault(job.loop, []).append((job.afuture, ok, value))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, items)
            except RuntimeError:
                pass  # that loop is closed: nobody is waiting any more

    def _fail(self, jobs: list[_Job[Any]], exc: sqlite3.Error) -> None:
        error = OutboxStorageError(f"cannot write to the outbox {self._path}: {exc}",
                                   hint="check free disk space and that no other program locks "
                                        "the file for long")
        self._deliver([(job, False, error) for job in jobs])
