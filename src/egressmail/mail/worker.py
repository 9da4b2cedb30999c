"""The delivery worker: takes messages from the outbox and hands them to SMTP sessions.

Theory of operation
-------------------
A worker runs ``concurrency`` *lanes*. Each lane owns at most one open SMTP session and reuses it
for message after message (no connection per message: the platform caps egress connections, and a
handshake with TLS and AUTH costs more than a message). A lane claims a small batch (``batch_size``)
from the outbox with a lease, sends the messages one after another on its session, and reports each
attempt; the reports of a batch are committed together by the outbox's group commit, so a fast
server costs far less than one fsync per message. A lane closes its session after ``idle_close_s``
without work.

While messages are claimed, a heartbeat renews their leases every third of ``lease_s``; a lane never
starts a message whose lease it may have lost. If the process dies, the leases run out and another
worker takes the messages over, recording the lost attempt as ``unknown`` (see ``outbox.py``).

How an attempt ends (:func:`classify_error`, :func:`classify_result`, pure):

- the server accepted the message for every recipient still pending → ``accepted``;
- some recipients refused with 4xx → ``transient`` for those only (the accepted ones are done, the
  5xx ones refused for good);
- a 5xx to MAIL, RCPT (every recipient) or DATA, or an invalid message → ``permanent``;
- every recipient refused at RCPT with a mix of 4xx and 5xx → ``transient`` for the 4xx ones only:
  the transport's error carries each recipient's reply (``MailError.recipients``), so the 5xx ones
  are refused for good here too and never asked again (:func:`split_refusals`);
- anything that went wrong *before* the message itself (connect, TLS, greeting, EHLO, AUTH, a bad
  configuration) → ``transient``, even with a 5xx: a wrong password is not the message's fault, and
  Postfix too defers mail on SASL failures, so fixing the password delivers the queue;
- the connection lost after the final ``.`` and before the reply (``DeliveryUnknown``) → ``unknown``.

What happens next is the :class:`~egressmail.mail.retry.RetryPolicy`'s decision.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass

from egressmail.mail.envelope import SendResult, SessionFactory, SmtpSession
from egressmail.mail.errors import (
    DeliveryUnknown,
    MailError,
    MessageError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from egressmail.mail.outbox import DEFAULT_LEASE_S, Outbox
from egressmail.mail.outbox_metrics import OutboxMetrics
from egressmail.mail.outbox_model import AttemptReport, Claim, OutboxError, Status
from egressmail.mail.retry import Action, AttemptKind, RetryPolicy

log = logging.getLogger("egressmail.outbox")

# Stages that concern the session, not the message: a failure there says nothing about the message.
SESSION_STAGES = frozenset({"config", "connect", "tls", "greeting", "ehlo", "starttls", "auth",
                            "oauth"})

Reply = tuple[int, str]


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How a worker runs.

    Args:
        concurrency: SMTP sessions in parallel (lanes).
        batch_size: messages a lane claims at a time (and sends on one session).
        lease_s: how long a claim lasts without renewal; a dead worker's messages wait this long.
        poll_interval_s: how often an idle lane looks for due messages (with ±50 % jitter).
        idle_close_s: a session unused this long is closed (QUIT).
        attempt_timeout_s: the longest one message may take on a session (``None``: no limit
            beyond the transport's own per-phase timeouts).
        unrecorded_per_lane: how many messages a lane may send before the outcome of the
            earliest is on disk. 1 = write each outcome before the next message (fewest
            duplicates if the process dies); more lets sending overlap the fsync (throughput).

    Raises:
        ValueError: a value that cannot work (zero lanes, a lease shorter than a second, ...).
    """

    concurrency: int = 4
    batch_size: int = 20
    lease_s: float = DEFAULT_LEASE_S
    poll_interval_s: float = 1.0
    idle_close_s: float = 10.0
    attempt_timeout_s: float | None = 300.0
    unrecorded_per_lane: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.concurrency <= 1000:
            raise ValueError(f"concurrency must be between 1 and 1000, got {self.concurrency}")
        if not 1 <= self.batch_size <= 10_000:
            raise ValueError(f"batch_size must be between 1 and 10000, got {self.batch_size}")
        if self.lease_s < 1:
            raise ValueError(f"lease_s must be at least 1 second, got {self.lease_s}")
        if self.poll_interval_s <= 0 or self.idle_close_s < 0:
            raise ValueError("poll_interval_s must be positive and idle_close_s not negative")
        if not 1 <= self.unrecorded_per_lane <= 1000:
            raise ValueError(f"unrecorded_per_lane must be between 1 and 1000, "
                             f"got {self.unrecorded_per_lane}")
        if self.attempt_timeout_s is not None and self.attempt_timeout_s <= 0:
            raise ValueError(f"attempt_timeout_s must be positive, got {self.attempt_timeout_s}")


@dataclass(frozen=True, slots=True)
class Delivery:
    """What :meth:`Worker.deliver` saw: the message's state after its attempt, the server's
    answer when it accepted, and the error otherwise."""

    id: str
    status: Status
    result: SendResult | None = None
    error: MailError | None = None


# -- pure classification ----------------------------------------------------------------------


def classify_error(exc: BaseException) -> AttemptKind:
    """How an attempt that raised ``exc`` ended (see the module docstring)."""
    if isinstance(exc, DeliveryUnknown):
        return AttemptKind.UNKNOWN
    if isinstance(exc, MessageError):
        return AttemptKind.PERMANENT
    if isinstance(exc, MailError):
        if exc.stage in SESSION_STAGES or exc.transient:
            return AttemptKind.TRANSIENT
        return AttemptKind.PERMANENT
    return AttemptKind.TRANSIENT


def session_is_usable(exc: BaseException) -> bool:
    """Whether the session may carry the next message after ``exc`` (a reply, and not 421)."""
    return (isinstance(exc, MailError) and not isinstance(exc, DeliveryUnknown)
            and exc.stage not in SESSION_STAGES and exc.code is not None and exc.code != 421)


def split_refusals(recipients: Sequence[str], replies: Mapping[str, Reply]
                   ) -> tuple[dict[str, Reply], dict[str, Reply]]:
    """Split per-recipient refusals into (refused for good: 5xx, deferred: 4xx), in envelope order.

    Recipients without a reply are left out (the caller decides what they are).
    """
    refused: dict[str, Reply] = {}
    deferred: dict[str, Reply] = {}
    for rcpt in recipients:
        if rcpt in replies:
            code, text = replies[rcpt]
            (deferred if 400 <= code < 500 else refused)[rcpt] = (code, text)
    return refused, deferred


def classify_result(recipients: Sequence[str], result: SendResult, accepted_before: int
                    ) -> tuple[AttemptKind, dict[str, Reply], dict[str, Reply], dict[str, Reply]]:
    """Split a server's answer into (kind, accepted, refused for good, deferred) recipients.

    The server took the message (DATA was accepted), so a recipient it did not refuse is accepted.
    """
    accepted: dict[str, Reply] = {}
    refused, deferred = split_refusals(recipients, result.refused)
    for rcpt in recipients:
        if rcpt not in result.refused:
            accepted[rcpt] = result.accepted.get(rcpt, result.reply)
    if deferred:
        kind = AttemptKind.TRANSIENT
    elif accepted or accepted_before:
        kind = AttemptKind.ACCEPTED
    else:
        kind = AttemptKind.PERMANENT
    return kind, accepted, refused, deferred


# -- one SMTP session, reused ----------------------------------------------------------------


class _Lane:
    """At most one open session, opened on demand and closed when idle or broken."""

    def __init__(self, factory: SessionFactory) -> None:
        self._factory = factory
        self._stack: AsyncExitStack | None = None
        self._session: SmtpSession | None = None
        self.last_used = time.monotonic()

    async def session(self) -> SmtpSession:
        if self._session is None:
            stack = AsyncExitStack()
            self._session = await stack.enter_async_context(self._factory())
            self._stack = stack
        self.last_used = time.monotonic()
        return self._session

    @property
    def is_open(self) -> bool:
        return self._session is not None

    async def close(self) -> None:
        stack, self._stack, self._session = self._stack, None, None
        if stack is not None:
            try:
                await stack.aclose()  # QUIT
            except Exception as exc:  # noqa: BLE001 - a broken session may fail to say goodbye
                log.debug("closing an SMTP session: %s", exc)


# -- the worker ---------------------------------------------------------------------------------


class Worker:
    """Delivers the messages of an outbox through sessions from ``session_factory``.

    Embeddable: ``await worker.arun()`` in an application's event loop (``worker.stop()`` to end
    it), ``worker.run()`` in a thread or process of its own, ``worker.run_once()`` to deliver what
    is due now and return.

    Args:
        outbox: the queue to work on.
        session_factory: opens SMTP sessions (``mail/transport.py``, or any ``SessionFactory``).
        policy: retries, lifetime and isolation (default :class:`RetryPolicy`).
        options: concurrency, batch size, lease and timing (default :class:`WorkerOptions`).
        metrics: counts attempts and latency when given.
        name: shown in ``outbox show`` as the owner of leases (default ``host:pid:random``).
    """

    def __init__(self, outbox: Outbox, session_factory: SessionFactory,
                 policy: RetryPolicy | None = None, *, options: WorkerOptions | None = None,
                 metrics: OutboxMetrics | None = None, name: str | None = None,
                 clock: Callable[[], float] | None = None,
                 rand: Callable[[], float] = random.random) -> None:
        self.outbox = outbox
        self.session_factory = session_factory
        self.policy = policy or RetryPolicy()
        self.options = options or WorkerOptions()
        self.metrics = metrics
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"
        self._clock = clock or outbox.clock  # leases are compared with the store's own time
        self._rand = rand
        self._inflight: dict[str, Claim] = {}
        self._stop: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.attempts = 0

    def __repr__(self) -> str:
        return f"Worker({self.name!r}, outbox={self.outbox!r}, concurrency={self.options.concurrency})"

    # -- control --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask a running worker to finish the messages it is sending and return (thread-safe)."""
        loop, stop, wake = self._loop, self._stop, self._wake
        if loop is None or stop is None or wake is None:
            return

        def _set() -> None:
            stop.set()
            wake.set()

        try:
            loop.call_soon_threadsafe(_set)
        except RuntimeError:  # the loop is already closed
            pass

    def wake(self) -> None:
        """Look for due messages now instead of at the next poll (e.g. right after an enqueue)."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return

        def _pulse() -> None:
            wake.set()
            # Waiters already woken stay woken; clearing re-arms the event for the next pulse.
            loop.call_soon(wake.clear)

        try:
            loop.call_soon_threadsafe(_pulse)
        except RuntimeError:
            pass

    # -- entry points ---------------------------------------------------------------------------

    def run(self, *, until_idle: bool = False) -> int:
        """Run in a new event loop until :meth:`stop` (or until nothing is due, with
        ``until_idle``). Returns the number of attempts made.

        Raises:
            OutboxStorageError: the outbox became unusable.
        """
        return asyncio.run(self.arun(until_idle=until_idle))

    def run_once(self) -> int:
        """Deliver what is due now, then return the number of attempts made.

        Raises:
            OutboxStorageError: the outbox became unusable.
        """
        return self.run(until_idle=True)

    async def arun_once(self) -> int:
        """:meth:`run_once` in the running event loop.

        Raises:
            OutboxStorageError: the outbox became unusable.
        """
        return await self.arun(until_idle=True)

    async def arun(self, *, until_idle: bool = False) -> int:
        """Run in the current event loop until :meth:`stop` (or until nothing is due, with
        ``until_idle``). Returns the number of attempts made.

        Raises:
            OutboxStorageError: the outbox became unusable.
        """
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        start = self.attempts
        heartbeat = asyncio.create_task(self._heartbeat(), name=f"{self.name}:heartbeat")
        lanes = [asyncio.create_task(self._run_lane(_Lane(self.session_factory), until_idle),
                                     name=f"{self.name}:lane{i}")
                 for i in range(self.options.concurrency)]
        try:
            await asyncio.gather(*lanes)
        finally:
            for task in lanes:
                task.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
        return self.attempts - start

    async def deliver(self, oid: str) -> Delivery:
        """Deliver one message now, in the caller's task (``MailService.send`` waiting for its
        outcome). If another worker holds it, wait for that worker's outcome instead.

        Raises:
            OutboxNotFound: no such message.
            OutboxStorageError: the outbox cannot be read or written.
        """
        claims = await self.outbox.aclaim(self.name, ids=[oid], lease_s=self.options.lease_s,
                                          policy=self.policy)
        if not claims:
            return await self._outcome_of_others(oid)
        heartbeat = asyncio.create_task(self._heartbeat())
        lane = _Lane(self.session_factory)
        try:
            outcomes = await self._deliver_batch(lane, claims)
        finally:
            await lane.close()
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
        if not outcomes:  # its lease ran out before it could be sent
            return await self._outcome_of_others(oid)
        return Delivery(oid, self.outbox.status(oid), outcomes[0].result, outcomes[0].error)

    async def _outcome_of_others(self, oid: str) -> Delivery:
        """Another worker holds the message, or it is not due yet: wait a lease at most."""
        try:
            status = await self.outbox.await_outcome(oid, within_s=self.options.lease_s)
        except TimeoutError:
            status = self.outbox.status(oid)
            return Delivery(oid, status, None, TransientDeliveryError(
                f"message {oid} could not be sent now (it is {status.value})", stage="connect"))
        return Delivery(oid, status, None, error_from_record(self.outbox, oid, status))

    # -- the work ---------------------------------------------------------------------------------

    async def _pause(self, seconds: float) -> None:
        assert self._wake is not None  # noqa: S101 - set by arun
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass

    def _stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    async def _run_lane(self, lane: _Lane, until_idle: bool) -> None:
        opts = self.options
        try:
            while not self._stopping():
                try:
                    claims = await self.outbox.aclaim(self.name, limit=opts.batch_size,
                                                      lease_s=opts.lease_s, policy=self.policy)
                except OutboxError as exc:
                    log.error("cannot claim messages from %s: %s", self.outbox.path, exc)
                    await self._pause(opts.poll_interval_s)
                    continue
                if not claims:
                    if until_idle:
                        return
                    if lane.is_open and time.monotonic() - lane.last_used >= opts.idle_close_s:
                        await lane.close()
                    await self._pause(opts.poll_interval_s * (0.5 + self._rand()))
                    continue
                await self._deliver_batch(lane, claims)
        finally:
            await lane.close()

    async def _deliver_batch(self, lane: _Lane, claims: Sequence[Claim]) -> list[_Outcome]:
        for c in claims:
            self._inflight[c.id] = c
        pending = list(claims)
        done: list[_Outcome] = []
        skipped: list[Claim] = []
        writes: collections.deque[asyncio.Future[None]] = collections.deque()
        margin = min(self.options.lease_s * 0.1, 5.0)
        try:
            while pending and not self._stopping():
                head = pending.pop(0)
                claim = self._inflight.get(head.id, head)  # renewed by the heartbeat
                if self._clock() >= claim.lease_until - margin:
                    # The lease may be another worker's by now: sending could duplicate. Give it
                    # back (fenced: a no-op if someone else took it over).
                    log.warning("skipping %s: its lease ran out before it could be sent", claim.id)
                    skipped.append(claim)
                    continue
                # Bound the outcomes not yet on disk: if this process dies, at most
                # `unrecorded_per_lane` messages per lane reached the server without their outcome
                # being written (they are retried, recorded unknown). More in flight lets a lane
                # go on sending while the fsync of the previous outcomes runs.
                while len(writes) >= self.options.unrecorded_per_lane:
                    await writes.popleft()
                outcome = await self._attempt(lane, claim)
                done.append(outcome)
                writes.append(asyncio.ensure_future(self._record(claim, outcome.report)))
                if outcome.session_down and outcome.error is not None:
                    # No session could be opened: the rest of the batch would fail the same way.
                    rest = [self._inflight.get(c.id, c) for c in pending]
                    pending.clear()
                    writes.extend(asyncio.ensure_future(self._record(c, self._report(
                        c, AttemptKind.TRANSIENT, self._clock(), error=outcome.error))) for c in rest)
            if pending or skipped:  # stopping, or leases lost: give back what was never started
                await self.outbox.arelease_claims(pending + skipped)
        finally:
            await asyncio.gather(*writes, return_exceptions=True)
            for c in claims:
                self._inflight.pop(c.id, None)
        return done

    async def _record(self, claim: Claim, report: AttemptReport) -> None:
        try:
            await self.outbox.acomplete(claim, report)
        except OutboxError as exc:
            # The lease will run out and the message be retried (recorded as unknown).
            log.error("cannot record the outcome of %s in %s: %s", claim.id, self.outbox.path, exc)

    async def _attempt(self, lane: _Lane, claim: Claim) -> _Outcome:
        started = self._clock()
        self.attempts += 1
        try:
            session = await lane.session()
        except Exception as exc:  # noqa: BLE001 - any failure to open is a session failure
            error = _as_mail_error(exc, "connect")
            log.warning("cannot open an SMTP session for %s: %s", claim.id, error)
            report = self._report(claim, AttemptKind.TRANSIENT, started, error=error)
            await lane.close()
            return _Outcome(report, None, error, session_down=True)
        try:
            async with asyncio.timeout(self.options.attempt_timeout_s):
                result = await session.send(claim.envelope)
        except TimeoutError as exc:
            await lane.close()
            error = DeliveryUnknown(f"sending {claim.envelope.message_id} took longer than "
                                    f"{self.options.attempt_timeout_s:g}s; the server may have it",
                                    stage="data")
            error.__cause__ = exc
            return _Outcome(self._report(claim, AttemptKind.UNKNOWN, started, error=error), None, error)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a recorded outcome
            error = _as_mail_error(exc, "data")
            if not session_is_usable(exc):
                await lane.close()
            kind = classify_error(error)
            if not isinstance(exc, MailError):
                log.error("unexpected error sending %s: %r", claim.id, exc)
            refused, deferred = split_refusals(claim.envelope.recipients, error.recipients)
            return _Outcome(self._report(claim, kind, started, error=error, refused=refused,
                                         deferred=deferred), None, error)
        kind, accepted, refused, deferred = classify_result(claim.envelope.recipients, result,
                                                            claim.accepted_before)
        report = self._report(claim, kind, started, result=result, accepted=accepted,
                              refused=refused, deferred=deferred)
        refusal: MailError | None = None
        if kind is AttemptKind.PERMANENT:
            code, text = next(iter(refused.values()))
            refusal = PermanentDeliveryError(f"every recipient of {claim.envelope.message_id} was "
                                             f"refused (last: {code} {text})", stage="rcpt",
                                             code=code, server_message=text)
        return _Outcome(report, result, refusal)

    def _report(self, claim: Claim, kind: AttemptKind, started: float, *,
                error: MailError | None = None, result: SendResult | None = None,
                accepted: dict[str, Reply] | None = None, refused: dict[str, Reply] | None = None,
                deferred: dict[str, Reply] | None = None) -> AttemptReport:
        now = self._clock()
        decision = self.policy.decide(kind, failures=claim.failures + 1, crashes=claim.crashes,
                                      created_at=claim.queued_at, now=now, rand=self._rand())
        code: int | None
        if error is not None:
            code, reply, stage, detail = error.code, error.server_message, error.stage, str(error)
        else:
            assert result is not None  # noqa: S101 - one of the two is always given
            code, reply = result.reply
            stage, detail = "data", None
            if deferred:
                rcpt, (code, reply) = next(iter(deferred.items()))
                stage, detail = "rcpt", f"{len(deferred)} recipient(s) deferred, e.g. {rcpt}: {code} {reply}"
        if self.metrics is not None:
            self.metrics.observe_attempt(kind, now - started)
            if decision.action is Action.SENT:
                self.metrics.observe_delivered(now - claim.created_at)
        level = logging.DEBUG if decision.action is Action.SENT else logging.WARNING
        log.log(level, "%s %s: %s → %s%s", claim.id, claim.envelope.message_id, kind.value,
                decision.action.value, f" ({detail})" if detail else "")
        return AttemptReport(kind=kind, decision=decision, started_at=started, finished_at=now,
                             session_id=result.session_id if result else None, code=code, stage=stage,
                             reply=reply, detail=detail, accepted=accepted or {},
                             refused=refused or {}, deferred=deferred or {})

    async def _heartbeat(self) -> None:
        every = self.options.lease_s / 3
        while True:
            await asyncio.sleep(every)
            claims = list(self._inflight.values())
            if not claims:
                continue
            try:
                kept = await self.outbox.arenew(claims, lease_s=self.options.lease_s)
            except OutboxError as exc:
                log.error("cannot renew leases in %s: %s", self.outbox.path, exc)
                continue
            kept_ids = {c.id for c in kept}
            for c in kept:
                if c.id in self._inflight:
                    self._inflight[c.id] = c
            for c in claims:
                if c.id not in kept_ids and c.id in self._inflight:
                    log.warning("lost the lease of %s to another worker", c.id)
                    self._inflight[c.id] = _expired(c)


@dataclass(frozen=True, slots=True)
class _Outcome:
    report: AttemptReport
    result: SendResult | None
    error: MailError | None
    session_down: bool = False


def _expired(c: Claim) -> Claim:
    return Claim(id=c.id, envelope=c.envelope, token=c.token, lease_until=0.0, worker=c.worker,
                 previous=c.previous, failures=c.failures, crashes=c.crashes, queued_at=c.queued_at,
                 created_at=c.created_at, accepted_before=c.accepted_before)


def _as_mail_error(exc: BaseException, stage: str) -> MailError:
    if isinstance(exc, MailError):
        return exc
    if stage == "data":
        # Not one of ours: we cannot tell whether the final "." went out, so say so.
        return DeliveryUnknown(f"unexpected {type(exc).__name__} while sending: {exc}", stage="data")
    return TransientDeliveryError(f"cannot open an SMTP session: {type(exc).__name__}: {exc}",
                                  stage="connect")


def error_from_record(outbox: Outbox, oid: str, status: Status) -> MailError | None:
    """Rebuild the error of an attempt another worker made (for a caller waiting on it)."""
    if status is Status.SENT:
        return None
    info = outbox.get(oid).info
    text = f"message {oid} is {status.value}: {info.last_error or 'no reply'}"
    if status is Status.FAILED:
        return PermanentDeliveryError(text, stage="data", code=info.last_code)
    if status is Status.UNKNOWN:
        return DeliveryUnknown(text, stage="data", code=info.last_code)
    return TransientDeliveryError(text, stage="data", code=info.last_code)
