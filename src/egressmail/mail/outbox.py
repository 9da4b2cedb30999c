"""The durable outbox: an SQLite file of messages waiting for delivery, with leases for workers.

Theory of operation
-------------------
``enqueue`` returns only after the message is committed with an fsync (see ``outbox_sqlite``), so
an accepted message survives a crash. Workers ``claim`` due messages: the claim moves them to
``sending`` with a lease (``due_at`` = end of the lease, ``claims`` = the lease's fencing token).
A worker reports each attempt with ``complete``; a report whose token no longer matches (the lease
expired and another worker took the message) is kept in the history as *late* but changes nothing.

A message whose lease expired is picked up again by the next ``claim``: that claim records the lost
attempt as ``unknown`` (the vanished worker may have delivered it) and counts a *crash*. A message
that has crashed a worker before is claimed *alone*, so a poison message cannot take its batch-mates
down with it again; after ``RetryPolicy.max_crashes`` it is held (isolated) for an operator.

One column, ``due_at``, orders all the work: the next try of a queued, deferred or unknown message,
or the end of the lease of a message being sent; ``NULL`` for sent, failed and held ones. A partial
index on it makes ``claim`` one index range scan, whatever the size of the history.

The interface is small on purpose (enqueue, claim, renew, release, complete, plus the operator
actions and reads) so another backend can implement it, e.g. PostgreSQL with
``SELECT … FOR UPDATE SKIP LOCKED`` in ``claim``.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from egressmail.mail.envelope import Envelope
from egressmail.mail.outbox_model import (
    CLAIMABLE,
    AttemptInfo,
    AttemptReport,
    Claim,
    InvalidTransition,
    MessageDetail,
    MessageInfo,
    OutboxError,
    OutboxNotFound,
    Receipt,
    RecipientInfo,
    RecipientStatus,
    Status,
    can_move,
    status_after,
    validate_envelope,
)
from egressmail.mail.outbox_sqlite import GroupCommitter, OutboxStorageError, open_connection
from egressmail.mail.retry import Action, AttemptKind, RetryPolicy

T = TypeVar("T")

OUTBOX_FILE_NAME = "outbox.db"
DEFAULT_LEASE_S = 60.0
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id              TEXT PRIMARY KEY,
    message_id      TEXT NOT NULL,
    sender          TEXT NOT NULL,
    data            BLOB NOT NULL,
    size            INTEGER NOT NULL,
    status          TEXT NOT NULL,
    created_at      REAL NOT NULL,
    queued_at       REAL NOT NULL,              -- start of the lifetime; `outbox retry` resets it
    updated_at      REAL NOT NULL,
    due_at          REAL,                       -- next try, or end of the lease; NULL when final
    attempts        INTEGER NOT NULL DEFAULT 0, -- failed tries since queued_at (the backoff)
    crashes         INTEGER NOT NULL DEFAULT 0, -- claims in a row that ended without an outcome
    claims          INTEGER NOT NULL DEFAULT 0, -- the current lease's fencing token
    lease_owner     TEXT,
    last_code       INTEGER,
    last_error      TEXT,
    idempotency_key TEXT UNIQUE,
    sent_at         REAL,
    history         INTEGER NOT NULL DEFAULT 0  -- entries in attempts (numbers them)
);
CREATE INDEX IF NOT EXISTS messages_due ON messages(due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_status ON messages(status);
CREATE TABLE IF NOT EXISTS recipients (
    message  TEXT NOT NULL,
    position INTEGER NOT NULL,
    address  TEXT NOT NULL,
    status   TEXT NOT NULL,
    code     INTEGER,
    reply    TEXT,
    PRIMARY KEY (message, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attempts (
    message     TEXT NOT NULL,
    number      INTEGER NOT NULL,
    started_at  REAL NOT NULL,
    finished_at REAL NOT NULL,
    worker      TEXT,
    session_id  TEXT,
    outcome     TEXT NOT NULL,
    action      TEXT,
    code        INTEGER,
    stage       TEXT,
    reply       TEXT,
    detail      TEXT,
    late        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (message, number)
) WITHOUT ROWID;
"""

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_outbox_id(now: float | None = None) -> str:
    """A 26-character id that sorts by creation time (48-bit milliseconds + 80 random bits)."""
    ms = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    value = (ms << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def _init_schema(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise OutboxStorageError(f"the outbox was written by a newer egressmail (schema {version}, "
                                 f"this version knows {SCHEMA_VERSION})",
                                 hint="upgrade egressmail before using this outbox")
    conn.executescript(_SCHEMA)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


class Outbox:
    """The durable outbox in one SQLite file.

    Use it as a context manager, or call :meth:`close`; it is safe to share between threads and
    between the tasks of an event loop (writes go through one writer thread).

    Args:
        path: the outbox file, or a folder (the egressmail home) holding ``outbox.db``.
        clock: the time source (epoch seconds); tests pass a fake one.

    Raises:
        OutboxStorageError: the file cannot be opened or made durable.
    """

    def __init__(self, path: str | os.PathLike[str], *,
                 clock: Callable[[], float] = time.time) -> None:
        p = Path(path)
        self.path = p / OUTBOX_FILE_NAME if p.is_dir() else p
        self._clock = clock
        self._writer = GroupCommitter(self.path, _init_schema)
        self._read_lock = threading.Lock()
        self._reader = open_connection(self.path)

    def __repr__(self) -> str:
        return f"Outbox({str(self.path)!r})"

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Write what is pending, then close the file."""
        self._writer.close()
        with self._read_lock:
            self._reader.close()

    @property
    def clock(self) -> Callable[[], float]:
        """The time source the outbox stamps and compares leases with (workers use it too)."""
        return self._clock

    @property
    def commits(self) -> int:
        """Transactions committed by this process (each is one fsync); for benchmarks."""
        return self._writer.commits

    # -- plumbing -----------------------------------------------------------------------------

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._writer.submit(fn).result()

    async def _awrite(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._writer.submit_async(fn)

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._read_lock:
            try:
                self._reader.execute("BEGIN")
                try:
                    return fn(self._reader)
                finally:
                    self._reader.execute("COMMIT")
            except sqlite3.Error as exc:
                raise OutboxStorageError(f"cannot read the outbox {self.path}: {exc}") from exc

    # -- enqueue ------------------------------------------------------------------------------

    def _enqueue_job(self, envelope: Envelope, idempotency_key: str | None,
                     not_before: float | None) -> Callable[[sqlite3.Connection], Receipt]:
        envelope = validate_envelope(envelope)
        if idempotency_key is not None and (not idempotency_key.strip() or len(idempotency_key) > 200):
            raise ValueError("idempotency_key must be 1 to 200 characters")
        data = bytes(envelope.data)

        def job(conn: sqlite3.Connection) -> Receipt:
            if idempotency_key is not None:
                row = conn.execute("SELECT id, message_id, status FROM messages "
                                   "WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
                if row is not None:
                    return Receipt(row["id"], row["message_id"], Status(row["status"]), duplicate=True)
            now = self._clock()
            oid = new_outbox_id(now)
            conn.execute(
                "INSERT INTO messages(id, message_id, sender, data, size, status, created_at, "
                "queued_at, updated_at, due_at, idempotency_key) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (oid, envelope.message_id, envelope.sender, data, len(data), Status.QUEUED.value,
                 now, now, now, max(now, not_before or now), idempotency_key))
            conn.executemany(
                "INSERT INTO recipients(message, position, address, status) VALUES (?,?,?,?)",
                [(oid, i, r, RecipientStatus.PENDING.value) for i, r in enumerate(envelope.recipients)])
            return Receipt(oid, envelope.message_id, Status.QUEUED)

        return job

    def enqueue(self, envelope: Envelope, *, idempotency_key: str | None = None,
                not_before: float | None = None) -> Receipt:
        """Store a message durably; it is on disk (fsync'd) when this returns.

        Args:
            envelope: the message; its bytes are stored exactly as they will be sent.
            idempotency_key: when a message with this key is already in the outbox, return its
                receipt (``duplicate=True``) instead of queueing a copy.
            not_before: do not try before this time (epoch seconds).

        Raises:
            InvalidEnvelope: the message cannot be sent (no recipient, a line break in an address).
            OutboxStorageError: the outbox file cannot be written.
        """
        return self._write(self._enqueue_job(envelope, idempotency_key, not_before))

    async def aenqueue(self, envelope: Envelope, *, idempotency_key: str | None = None,
                       not_before: float | None = None) -> Receipt:
        """:meth:`enqueue` for event loops: waits for the group commit without blocking the loop.

        Raises:
            InvalidEnvelope, OutboxStorageError: as :meth:`enqueue`.
        """
        return await self._awrite(self._enqueue_job(envelope, idempotency_key, not_before))

    def enqueue_many(self, envelopes: Iterable[Envelope]) -> list[Receipt]:
        """Queue several messages in one transaction (all or nothing).

        Raises:
            InvalidEnvelope, OutboxStorageError: as :meth:`enqueue`; then none is queued.
        """
        jobs = [self._enqueue_job(e, None, None) for e in envelopes]
        return self._write(lambda conn: [job(conn) for job in jobs])

    # -- worker side --------------------------------------------------------------------------

    def _claim_job(self, worker: str, limit: int, lease_s: float, policy: RetryPolicy,
                   ids: Sequence[str] | None) -> Callable[[sqlite3.Connection], list[Claim]]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        if lease_s <= 0:
            raise ValueError(f"lease_s must be positive, got {lease_s}")

        def job(conn: sqlite3.Connection) -> list[Claim]:
            now = self._clock()
            cols = ("id, message_id, sender, status, created_at, queued_at, due_at, attempts, "
                    "crashes, claims, lease_owner")
            if ids is None:
                # Read a little more than asked: some rows may be held or expired on the way.
                rows = conn.execute(f"SELECT {cols} FROM messages WHERE due_at <= ? "  # noqa: S608
                                    "ORDER BY due_at LIMIT ?", (now, limit * 2 + 8)).fetchall()
            else:
                marks = ",".join("?" * len(ids))
                rows = conn.execute(f"SELECT {cols} FROM messages WHERE due_at <= ? "  # noqa: S608
                                    f"AND id IN ({marks}) ORDER BY due_at", (now, *ids)).fetchall()
            batch: list[tuple[sqlite3.Row, Status, int]] = []
            for row in rows:
                status = Status(row["status"])
                crashes = int(row["crashes"])
                if status is Status.SENDING:
                    # Its lease ran out: the worker died or hung holding it.
                    crashes += 1
                    status = self._lost_lease(conn, row, crashes, policy, now)
                    if status not in CLAIMABLE:
                        continue
                if policy.is_expired(row["queued_at"], now):
                    self._expire(conn, row, policy, now)
                    continue
                if crashes and batch:
                    continue  # a suspect goes alone; leave it for the next claim
                batch.append((row, status, crashes))
                if crashes or len(batch) >= limit:
                    break
            if not batch:
                return []
            lease_until = now + lease_s
            ids_taken = [row["id"] for row, _, _ in batch]
            conn.executemany("UPDATE messages SET status = ?, due_at = ?, claims = claims + 1, "
                             "lease_owner = ?, updated_at = ? WHERE id = ?",
                             [(Status.SENDING.value, lease_until, worker, now, oid) for oid in ids_taken])
            # One query per table for the whole batch, not one per message.
            marks = ",".join("?" * len(ids_taken))
            data = dict(conn.execute(f"SELECT id, data FROM messages "  # noqa: S608
                                     f"WHERE id IN ({marks})", ids_taken).fetchall())
            pending: dict[str, list[str]] = {oid: [] for oid in ids_taken}
            accepted: dict[str, int] = dict.fromkeys(ids_taken, 0)
            for oid, address, rstatus in conn.execute(
                    f"SELECT message, address, status FROM recipients "  # noqa: S608
                    f"WHERE message IN ({marks}) ORDER BY message, position", ids_taken):
                if rstatus == RecipientStatus.PENDING.value:
                    pending[oid].append(address)
                elif rstatus == RecipientStatus.ACCEPTED.value:
                    accepted[oid] += 1
            claims = []
            for row, previous, crashes in batch:
                oid = row["id"]
                envelope = Envelope(sender=row["sender"], recipients=tuple(pending[oid]),
                                    data=bytes(data[oid]), message_id=row["message_id"])
                claims.append(Claim(id=oid, envelope=envelope, token=int(row["claims"]) + 1,
                                    lease_until=lease_until, worker=worker, previous=previous,
                                    failures=int(row["attempts"]), crashes=crashes,
                                    queued_at=row["queued_at"], created_at=row["created_at"],
                                    accepted_before=accepted[oid]))
            return claims

        return job

    def _lost_lease(self, conn: sqlite3.Connection, row: sqlite3.Row, crashes: int,
                    policy: RetryPolicy, now: float) -> Status:
        decision = policy.decide(AttemptKind.CRASH, failures=int(row["attempts"]), crashes=crashes,
                                 created_at=row["queued_at"], now=now, rand=random.random())  # noqa: S311
        new = status_after(AttemptKind.CRASH, decision.action)
        detail = (f"worker {row['lease_owner']} stopped without reporting an outcome (its lease "
                  f"expired); the server may have the message. {decision.reason}")
        self._add_history(conn, row["id"], started=row["due_at"], finished=now,
                          worker=row["lease_owner"], outcome=AttemptKind.UNKNOWN.value,
                          action=decision.action.value, detail=detail)
        due = decision.retry_at if decision.action is Action.RETRY else None
        conn.execute("UPDATE messages SET status = ?, due_at = ?, crashes = ?, lease_owner = NULL, "
                     "updated_at = ?, last_error = ? WHERE id = ?",
                     (new.value, due, crashes, now, detail, row["id"]))
        if new is Status.FAILED:
            self._refuse_pending(conn, row["id"], None, decision.reason)
        return new

    def _expire(self, conn: sqlite3.Connection, row: sqlite3.Row, policy: RetryPolicy,
                now: float) -> None:
        detail = f"expired: not delivered within max_lifetime_s={policy.max_lifetime_s:g}"
        self._add_history(conn, row["id"], started=now, finished=now, worker=None,
                          outcome="expired", action=Action.FAIL.value, detail=detail)
        conn.execute("UPDATE messages SET status = ?, due_at = NULL, updated_at = ?, last_error = ? "
                     "WHERE id = ?", (Status.FAILED.value, now, detail, row["id"]))
        self._refuse_pending(conn, row["id"], None, "expired")

    def claim(self, worker: str, *, limit: int = 1, lease_s: float = DEFAULT_LEASE_S,
              policy: RetryPolicy | None = None, ids: Sequence[str] | None = None) -> list[Claim]:
        """Lease up to ``limit`` due messages to ``worker`` (fewer, or none, when less is due).

        Messages whose lease expired are taken over (their lost attempt is recorded as ``unknown``);
        a message that crashed a worker before comes alone; expired messages fail on the way.

        Args:
            worker: the claiming worker's name (shown in ``outbox show``).
            limit: the most messages to lease.
            lease_s: how long the worker may hold them without :meth:`renew`.
            policy: decides what lost leases and lifetimes mean (default :class:`RetryPolicy`).
            ids: claim only these messages (``MailService.send`` delivering its own message).

        Raises:
            ValueError: limit below 1 or a lease that is not positive.
            OutboxStorageError: the outbox file cannot be written.
        """
        return self._write(self._claim_job(worker, limit, lease_s, policy or RetryPolicy(), ids))

    async def aclaim(self, worker: str, *, limit: int = 1, lease_s: float = DEFAULT_LEASE_S,
                     policy: RetryPolicy | None = None,
                     ids: Sequence[str] | None = None) -> list[Claim]:
        """:meth:`claim` for event loops.

        Raises:
            ValueError, OutboxStorageError: as :meth:`claim`.
        """
        return await self._awrite(self._claim_job(worker, limit, lease_s, policy or RetryPolicy(),
                                                  ids))

    def _renew_job(self, claims: Sequence[Claim],
                   lease_s: float) -> Callable[[sqlite3.Connection], list[Claim]]:
        def job(conn: sqlite3.Connection) -> list[Claim]:
            now = self._clock()
            kept = []
            for c in claims:
                cur = conn.execute("UPDATE messages SET due_at = ? WHERE id = ? AND status = ? "
                                   "AND claims = ?", (now + lease_s, c.id, Status.SENDING.value, c.token))
                if cur.rowcount:
                    kept.append(_with_lease(c, now + lease_s))
            return kept

        return job

    def renew(self, claims: Sequence[Claim], *, lease_s: float = DEFAULT_LEASE_S) -> list[Claim]:
        """Extend the leases still held; returns them with their new end (lost ones are left out).

        Raises:
            OutboxStorageError: the outbox file cannot be written.
        """
        return self._write(self._renew_job(claims, lease_s))

    async def arenew(self, claims: Sequence[Claim], *,
                     lease_s: float = DEFAULT_LEASE_S) -> list[Claim]:
        """:meth:`renew` for event loops.

        Raises:
            OutboxStorageError: the outbox file cannot be written.
        """
        return await self._awrite(self._renew_job(claims, lease_s))

    def _release_job(self, claims: Sequence[Claim]) -> Callable[[sqlite3.Connection], int]:
        def job(conn: sqlite3.Connection) -> int:
            now = self._clock()
            n = 0
            for c in claims:
                n += conn.execute("UPDATE messages SET status = ?, due_at = ?, lease_owner = NULL, "
                                  "updated_at = ? WHERE id = ? AND status = ? AND claims = ?",
                                  (c.previous.value, now, now, c.id, Status.SENDING.value,
                                   c.token)).rowcount
            return n

        return job

    def release_claims(self, claims: Sequence[Claim]) -> int:
        """Give back claims whose delivery was never started (a worker shutting down).

        Raises:
            OutboxStorageError: the outbox file cannot be written.
        """
        return self._write(self._release_job(claims))

    async def arelease_claims(self, claims: Sequence[Claim]) -> int:
        """:meth:`release_claims` for event loops.

        Raises:
            OutboxStorageError: the outbox file cannot be written.
        """
        return await self._awrite(self._release_job(claims))

    def _complete_job(self, claim: Claim,
                      report: AttemptReport) -> Callable[[sqlite3.Connection], bool]:
        decision = report.decision
        new = status_after(report.kind, decision.action)
        failures = claim.failures if decision.action is Action.SENT else claim.failures + 1
        due = decision.retry_at if decision.action is Action.RETRY else None
        error = None if new is Status.SENT else (report.detail or report.reply or decision.reason)
        if new is Status.FAILED and report.kind is AttemptKind.TRANSIENT:
            error = f"{decision.reason}; last reply: {error}"  # failed by expiry

        def job(conn: sqlite3.Connection) -> bool:
            now = self._clock()
            # The fence: only the holder of the current lease moves the message on.
            row = conn.execute(
                "UPDATE messages SET status = ?, due_at = ?, attempts = ?, crashes = 0, "
                "lease_owner = NULL, updated_at = ?, last_code = ?, last_error = ?, "
                "sent_at = CASE WHEN ? THEN ? ELSE sent_at END, history = history + 1 "
                "WHERE id = ? AND status = ? AND claims = ? RETURNING history",
                (new.value, due, failures, now, report.code, error, new is Status.SENT, now, claim.id,
                 Status.SENDING.value, claim.token)).fetchone()
            current = row is not None
            self._add_history(conn, claim.id, number=row[0] if current else None,
                              started=report.started_at, finished=report.finished_at,
                              worker=claim.worker, session_id=report.session_id,
                              outcome=report.kind.value, action=decision.action.value,
                              code=report.code, stage=report.stage, reply=report.reply,
                              detail=report.detail or decision.reason, late=not current)
            if not current:
                return False
            self._record_recipients(conn, claim, report)
            if new is Status.FAILED:
                self._refuse_pending(conn, claim.id, report.code, error)
            return True

        return job

    def complete(self, claim: Claim, report: AttemptReport) -> bool:
        """Record how an attempt ended and move the message on (sent, deferred, failed, …).

        Returns:
            ``False`` when the claim's lease had been taken over: the report is kept in the
            history (marked late) but the message is left alone.

        Raises:
            OutboxStorageError: the outbox file cannot be written.
        """
        return self._write(self._complete_job(claim, report))

    async def acomplete(self, claim: Claim, report: AttemptReport) -> bool:
        """:meth:`complete` for event loops.

        Raises:
            OutboxStorageError: the outbox file cannot be written.
        """
        return await self._awrite(self._complete_job(claim, report))

    @staticmethod
    def _record_recipients(conn: sqlite3.Connection, claim: Claim, report: AttemptReport) -> None:
        oid = claim.id
        if (not report.refused and not report.deferred
                and len(report.accepted) == len(claim.envelope.recipients)
                and len(set(report.accepted.values())) == 1):
            # The usual case: every pending recipient accepted with the same reply.
            code, text = next(iter(report.accepted.values()))
            conn.execute("UPDATE recipients SET status = ?, code = ?, reply = ? "
                         "WHERE message = ? AND status = ?",
                         (RecipientStatus.ACCEPTED.value, code, text, oid,
                          RecipientStatus.PENDING.value))
            return
        updates: list[tuple[str, int, str, str, str, str]] = []
        for status, replies in ((RecipientStatus.ACCEPTED, report.accepted),
                                (RecipientStatus.REFUSED, report.refused),
                                (RecipientStatus.PENDING, report.deferred)):
            updates.extend((status.value, code, text, oid, addr, RecipientStatus.PENDING.value)
                           for addr, (code, text) in replies.items())
        conn.executemany("UPDATE recipients SET status = ?, code = ?, reply = ? "
                         "WHERE message = ? AND address = ? AND status = ?", updates)

    @staticmethod
    def _refuse_pending(conn: sqlite3.Connection, oid: str, code: int | None,
                        reason: str | None) -> None:
        conn.execute("UPDATE recipients SET status = ?, code = coalesce(?, code), reply = ? "
                     "WHERE message = ? AND status = ?",
                     (RecipientStatus.REFUSED.value, code, reason, oid, RecipientStatus.PENDING.value))

    @staticmethod
    def _add_history(conn: sqlite3.Connection, oid: str, *, started: float, finished: float,
                     worker: str | None, outcome: str, action: str | None = None,
                     session_id: str | None = None, code: int | None = None,
                     stage: str | None = None, reply: str | None = None,
                     detail: str | None = None, late: bool = False,
                     number: int | None = None) -> None:
        if number is None:
            row = conn.execute("UPDATE messages SET history = history + 1 WHERE id = ? "
                               "RETURNING history", (oid,)).fetchone()
            if row is None:
                return  # purged meanwhile: nothing to attach the entry to
            number = int(row[0])
        conn.execute("INSERT INTO attempts(message, number, started_at, finished_at, worker, "
                     "session_id, outcome, action, code, stage, reply, detail, late) "
                     "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                     (oid, number, started, finished, worker, session_id, outcome, action, code,
                      stage, reply, detail, int(late)))

    # -- operator actions ---------------------------------------------------------------------

    def _move(self, oid: str, new: Status, verb: str, allowed: Sequence[Status],
              extra_sql: str = "", extra: tuple[object, ...] = (), *,
              ask_refused_again: bool = False) -> Status:
        def job(conn: sqlite3.Connection) -> Status:
            now = self._clock()
            row = conn.execute("SELECT status, lease_owner, due_at FROM messages WHERE id = ?",
                               (oid,)).fetchone()
            if row is None:
                raise OutboxNotFound(f"no message {oid!r} in the outbox {self.path}",
                                     hint="`egressmail outbox list` shows the ids")
            old = Status(row["status"])
            if old not in allowed or not can_move(old, new):
                raise InvalidTransition(_refusal(oid, old, verb, allowed, row))
            due = now if new is Status.QUEUED else None
            conn.execute(f"UPDATE messages SET status = ?, due_at = ?, updated_at = ?, "  # noqa: S608
                         f"lease_owner = NULL {extra_sql} WHERE id = ?",
                         (new.value, due, now, *extra, oid))
            if ask_refused_again:
                conn.execute("UPDATE recipients SET status = ? WHERE message = ? AND status = ?",
                             (RecipientStatus.PENDING.value, oid, RecipientStatus.REFUSED.value))
            self._add_history(conn, oid, started=now, finished=now, worker=None, outcome="operator",
                              action=new.value, detail=f"{verb} by operator (was {old.value})")
            return old

        return self._write(job)

    def retry(self, oid: str) -> Status:
        """Queue a failed, deferred, unknown or held message for delivery now, with a fresh
        lifetime and backoff (recipients refused before are tried again). Returns the old state.

        Raises:
            OutboxNotFound: no such message.
            InvalidTransition: it is sent or being sent.
        """
        now = self._clock()
        return self._move(oid, Status.QUEUED, "retry",
                          (Status.FAILED, Status.DEFERRED, Status.UNKNOWN, Status.HELD, Status.QUEUED),
                          ", attempts = 0, crashes = 0, queued_at = ?", (now,),
                          ask_refused_again=True)

    def retry_failed(self) -> int:
        """Queue every failed message again (as :meth:`retry`); returns how many.

        Raises:
            OutboxStorageError: the outbox file cannot be written.
        """
        def job(conn: sqlite3.Connection) -> int:
            now = self._clock()
            ids = [r[0] for r in conn.execute("SELECT id FROM messages WHERE status = ?",
                                              (Status.FAILED.value,))]
            for oid in ids:
                conn.execute("UPDATE messages SET status = ?, due_at = ?, updated_at = ?, "
                             "attempts = 0, crashes = 0, queued_at = ? WHERE id = ?",
                             (Status.QUEUED.value, now, now, now, oid))
                conn.execute("UPDATE recipients SET status = ? WHERE message = ? AND status = ?",
                             (RecipientStatus.PENDING.value, oid, RecipientStatus.REFUSED.value))
                self._add_history(conn, oid, started=now, finished=now, worker=None,
                                  outcome="operator", action=Status.QUEUED.value,
                                  detail="retry by operator (was failed)")
            return len(ids)

        return self._write(job)

    def hold(self, oid: str) -> Status:
        """Park a waiting message: workers leave it alone until :meth:`release`. Returns the old state.

        Raises:
            OutboxNotFound: no such message.
            InvalidTransition: it is sent, failed, or being sent right now.
        """
        return self._move(oid, Status.HELD, "hold", CLAIMABLE)

    def release(self, oid: str) -> Status:
        """Queue a held message for delivery now (``outbox release``). Returns the old state.

        Only recipients still pending are sent to: those refused for good (5xx) stay refused, and
        those that accepted it are done. :meth:`retry` is the way to ask refused recipients again.

        Raises:
            OutboxNotFound: no such message.
            InvalidTransition: it is not held.
        """
        return self._move(oid, Status.QUEUED, "release", (Status.HELD,), ", crashes = 0")

    def purge(self, statuses: Iterable[Status], *, older_than_s: float) -> int:
        """Delete sent or failed messages (and their history) last changed ``older_than_s`` ago.

        Raises:
            ValueError: a state other than sent or failed, or a negative age.
            OutboxStorageError: the outbox file cannot be written.
        """
        wanted = sorted({s.value for s in statuses})
        if not wanted or any(s not in (Status.SENT.value, Status.FAILED.value) for s in wanted):
            raise ValueError("only sent and failed messages can be purged")
        if older_than_s < 0:
            raise ValueError("older_than_s must not be negative")

        def job(conn: sqlite3.Connection) -> int:
            cutoff = self._clock() - older_than_s
            marks = ",".join("?" * len(wanted))
            ids = [r[0] for r in conn.execute(
                f"SELECT id FROM messages WHERE status IN ({marks}) "  # noqa: S608
                "AND updated_at <= ?", (*wanted, cutoff))]
            for table, col in (("attempts", "message"), ("recipients", "message"), ("messages", "id")):
                conn.executemany(f"DELETE FROM {table} WHERE {col} = ?",  # noqa: S608
                                 [(i,) for i in ids])
            return len(ids)

        return self._write(job)

    # -- reads --------------------------------------------------------------------------------

    def get(self, oid: str, *, with_data: bool = False) -> MessageDetail:
        """One message with its recipients and history.

        Raises:
            OutboxNotFound: no such message.
        """
        def read(conn: sqlite3.Connection) -> MessageDetail:
            row = conn.execute(f"SELECT {_INFO_COLS} FROM messages m WHERE id = ?",  # noqa: S608
                               (oid,)).fetchone()
            if row is None:
                raise OutboxNotFound(f"no message {oid!r} in the outbox {self.path}",
                                     hint="`egressmail outbox list` shows the ids")
            rcpts = tuple(RecipientInfo(r["address"], RecipientStatus(r["status"]), r["code"], r["reply"])
                          for r in conn.execute("SELECT address, status, code, reply FROM recipients "
                                                "WHERE message = ? ORDER BY position", (oid,)))
            attempts = tuple(
                AttemptInfo(a["number"], a["started_at"], a["finished_at"], a["worker"],
                            a["session_id"], a["outcome"], a["code"], a["stage"], a["reply"],
                            _join(a["action"], a["detail"]), bool(a["late"]))
                for a in conn.execute("SELECT * FROM attempts WHERE message = ? ORDER BY number",
                                      (oid,)))
            data = None
            if with_data:
                data = bytes(conn.execute("SELECT data FROM messages WHERE id = ?",
                                          (oid,)).fetchone()[0])
            return MessageDetail(_info(row), rcpts, attempts, data)

        return self._read(read)

    def list(self, *, status: Status | None = None, limit: int = 100) -> list[MessageInfo]:
        """The newest ``limit`` messages (of one state, when given), newest first.

        Raises:
            OutboxStorageError: the outbox file cannot be read.
        """
        def read(conn: sqlite3.Connection) -> list[MessageInfo]:
            if status is None:
                rows = conn.execute(f"SELECT {_INFO_COLS} FROM messages m "  # noqa: S608
                                    "ORDER BY id DESC LIMIT ?", (limit,))
            else:
                rows = conn.execute(f"SELECT {_INFO_COLS} FROM messages m WHERE status = ? "  # noqa: S608
                                    "ORDER BY id DESC LIMIT ?", (status.value, limit))
            return [_info(r) for r in rows]

        return self._read(read)

    def counts(self) -> dict[Status, int]:
        """How many messages are in each state (every state present, zero included).

        Raises:
            OutboxStorageError: the outbox file cannot be read.
        """
        def read(conn: sqlite3.Connection) -> dict[Status, int]:
            out = dict.fromkeys(Status, 0)
            for row in conn.execute("SELECT status, count(*) FROM messages GROUP BY status"):
                out[Status(row[0])] = int(row[1])
            return out

        return self._read(read)

    def oldest_due(self) -> float | None:
        """The earliest next-try time of a waiting message (``None`` when none waits).

        Raises:
            OutboxStorageError: the outbox file cannot be read.
        """
        def read(conn: sqlite3.Connection) -> float | None:
            row = conn.execute("SELECT min(due_at) FROM messages WHERE due_at IS NOT NULL "
                               "AND status IN (?, ?, ?)", tuple(s.value for s in CLAIMABLE)).fetchone()
            return None if row[0] is None else float(row[0])

        return self._read(read)

    def status(self, oid: str) -> Status:
        """The current state of one message.

        Raises:
            OutboxNotFound: no such message.
        """
        def read(conn: sqlite3.Connection) -> Status:
            row = conn.execute("SELECT status FROM messages WHERE id = ?", (oid,)).fetchone()
            if row is None:
                raise OutboxNotFound(f"no message {oid!r} in the outbox {self.path}")
            return Status(row[0])

        return self._read(read)

    async def await_outcome(self, oid: str, *, within_s: float | None = None,
                            poll_s: float = 0.2) -> Status:
        """Wait until the message has left ``queued``/``sending`` (its first outcome is known).

        Raises:
            OutboxNotFound: no such message.
            TimeoutError: ``within_s`` seconds passed first.
        """
        async with asyncio.timeout(within_s):
            delay = 0.005
            while (st := self.status(oid)) in (Status.QUEUED, Status.SENDING):
                await asyncio.sleep(delay)
                delay = min(delay * 2, poll_s)
            return st


def _with_lease(c: Claim, lease_until: float) -> Claim:
    return Claim(id=c.id, envelope=c.envelope, token=c.token, lease_until=lease_until,
                 worker=c.worker, previous=c.previous, failures=c.failures, crashes=c.crashes,
                 queued_at=c.queued_at, created_at=c.created_at, accepted_before=c.accepted_before)


_INFO_COLS = ("id, message_id, sender, status, size, created_at, updated_at, due_at, attempts, "
              "crashes, lease_owner, last_code, last_error, idempotency_key, sent_at, "
              "(SELECT count(*) FROM recipients r WHERE r.message = m.id) AS n_rcpt")


def _info(row: sqlite3.Row) -> MessageInfo:
    status = Status(row["status"])
    return MessageInfo(
        id=row["id"], message_id=row["message_id"], sender=row["sender"], recipients=row["n_rcpt"],
        status=status, size=row["size"], created_at=row["created_at"], updated_at=row["updated_at"],
        attempts=row["attempts"], crashes=row["crashes"],
        next_attempt_at=row["due_at"] if status in CLAIMABLE else None,
        lease_owner=row["lease_owner"], last_code=row["last_code"], last_error=row["last_error"],
        idempotency_key=row["idempotency_key"], sent_at=row["sent_at"])


def _join(action: str | None, detail: str | None) -> str | None:
    if action and detail:
        return f"→ {action}: {detail}"
    return detail or (f"→ {action}" if action else None)


def _refusal(oid: str, old: Status, verb: str, allowed: Sequence[Status], row: sqlite3.Row) -> str:
    names = ", ".join(s.value for s in allowed)
    if old is Status.SENDING:
        return (f"cannot {verb} message {oid}: worker {row['lease_owner']} is delivering it now "
                f"(lease until {time.strftime('%H:%M:%S', time.localtime(row['due_at']))}); "
                "try again once it has an outcome")
    return f"cannot {verb} message {oid}: it is {old.value}; only {names} messages can be"


__all__ = ["DEFAULT_LEASE_S", "OUTBOX_FILE_NAME", "Outbox", "OutboxError", "OutboxStorageError",
           "new_outbox_id"]
