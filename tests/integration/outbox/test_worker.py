"""The worker against a real aiosmtpd server on loopback, through the real SMTP transport."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from egressmail.mail.errors import PermanentDeliveryError
from egressmail.mail.outbox import Outbox
from egressmail.mail.outbox_metrics import OutboxMetrics
from egressmail.mail.outbox_model import RecipientStatus, Status
from egressmail.mail.retry import RetryPolicy
from egressmail.mail.worker import Worker, WorkerOptions
from tests.unit.outbox.helpers import Clock, envelope

from .support import RecordingHandler, smtpd, transport_factory

pytestmark = pytest.mark.timeout(30)

POLICY = RetryPolicy(min_delay_s=60, max_delay_s=600, jitter=0, max_lifetime_s=86400)
FAST = WorkerOptions(concurrency=4, batch_size=5, lease_s=30, poll_interval_s=0.05, idle_close_s=0.2)


def worker(outbox: Outbox, port: int, clock: Clock, **kw) -> Worker:
    return Worker(outbox, transport_factory(port), kw.pop("policy", POLICY),
                  options=kw.pop("options", FAST), clock=clock, rand=lambda: 0.0, **kw)


async def test_every_message_is_delivered_once_over_reused_sessions(outbox: Outbox, clock: Clock):
    handler = RecordingHandler()
    ids = [outbox.enqueue(envelope(n)).id for n in range(40)]
    async with smtpd(handler) as port:
        attempts = await worker(outbox, port, clock).arun_once()
    assert attempts == 40
    assert sorted(handler.message_ids()) == sorted(f"<{n}@test>" for n in range(40))
    assert handler.sessions <= FAST.concurrency  # one connection per lane, not per message
    assert outbox.counts()[Status.SENT] == 40
    detail = outbox.get(ids[0])
    [attempt] = detail.attempts
    assert (attempt.outcome, attempt.code, attempt.session_id) == ("accepted", 250, attempt.session_id)
    assert attempt.session_id and "@127.0.0.1:" in attempt.session_id  # the transport's id


async def test_a_4xx_defers_and_the_retry_delivers(outbox: Outbox, clock: Clock):
    handler = RecordingHandler(data_reply="451 4.3.0 try again later")
    oid = outbox.enqueue(envelope(1)).id
    async with smtpd(handler) as port:
        w = worker(outbox, port, clock)
        await w.arun_once()
        info = outbox.get(oid).info
        assert (info.status, info.last_code, info.attempts) == (Status.DEFERRED, 451, 1)
        assert await w.arun_once() == 0  # not due yet
        handler.data_reply = None
        clock.advance(60)
        assert await w.arun_once() == 1
    assert outbox.status(oid) is Status.SENT
    assert [(a.outcome, a.code) for a in outbox.get(oid).attempts] == [("transient", 451),
                                                                     ("accepted", 250)]


async def test_a_5xx_fails_and_a_waiting_caller_gets_the_rejection(outbox: Outbox, clock: Clock):
    handler = RecordingHandler(data_reply="554 5.7.1 rejected as spam")
    oid = outbox.enqueue(envelope(1)).id
    async with smtpd(handler) as port:
        delivery = await worker(outbox, port, clock).deliver(oid)
    assert delivery.status is Status.FAILED
    assert isinstance(delivery.error, PermanentDeliveryError)
    assert delivery.error.code == 554
    detail = outbox.get(oid)
    assert [(r.status, r.code) for r in detail.recipients] == [(RecipientStatus.REFUSED, 554)]


async def test_some_recipients_accepted_some_refused_some_deferred(outbox: Outbox, clock: Clock):
    handler = RecordingHandler(rcpt_replies={"busy@x.test": "450 4.2.1 mailbox busy",
                                             "gone@x.test": "550 5.1.1 no such user"})
    env = envelope(1, recipients=("ok@x.test", "busy@x.test", "gone@x.test"))
    oid = outbox.enqueue(env).id
    async with smtpd(handler) as port:
        w = worker(outbox, port, clock)
        delivery = await w.deliver(oid)
        assert delivery.status is Status.DEFERRED
        assert delivery.result is not None and set(delivery.result.refused) == {"busy@x.test",
                                                                                "gone@x.test"}
        handler.rcpt_replies.pop("busy@x.test")
        clock.advance(60)
        await w.arun_once()
    assert handler.received == [("<1@test>", ("ok@x.test",)), ("<1@test>", ("busy@x.test",))]
    detail = outbox.get(oid)
    assert detail.info.status is Status.SENT
    assert [(r.address, r.status, r.code) for r in detail.recipients] == [
        ("ok@x.test", RecipientStatus.ACCEPTED, 250), ("busy@x.test", RecipientStatus.ACCEPTED, 250),
        ("gone@x.test", RecipientStatus.REFUSED, 550)]


async def test_every_recipient_refused_for_good_fails_the_message(outbox: Outbox, clock: Clock):
    handler = RecordingHandler(rcpt_replies={"gone@x.test": "550 5.1.1 no such user"})
    oid = outbox.enqueue(envelope(1, recipients=("gone@x.test",))).id
    async with smtpd(handler) as port:
        delivery = await worker(outbox, port, clock).deliver(oid)
    assert delivery.status is Status.FAILED
    assert delivery.error is not None and delivery.error.code == 550
    assert handler.received == []


async def test_a_connection_lost_after_the_final_dot_is_unknown_and_resent_with_the_same_id(
        outbox: Outbox, clock: Clock):
    handler = RecordingHandler(drop_after_data=1)
    oid = outbox.enqueue(envelope(1)).id
    async with smtpd(handler) as port:
        w = worker(outbox, port, clock)
        await w.arun_once()
        assert outbox.status(oid) is Status.UNKNOWN
        clock.advance(60)
        await w.arun_once()
    assert outbox.status(oid) is Status.SENT
    # The server got it twice, and the outbox says why: the first attempt's fate was unknown.
    assert handler.message_ids() == ["<1@test>", "<1@test>"]
    assert [a.outcome for a in outbox.get(oid).attempts] == ["unknown", "accepted"]


async def test_with_on_unknown_hold_a_lost_reply_parks_the_message(outbox: Outbox, clock: Clock):
    handler = RecordingHandler(drop_after_data=1)
    oid = outbox.enqueue(envelope(1)).id
    async with smtpd(handler) as port:
        await worker(outbox, port, clock, policy=RetryPolicy(on_unknown="hold")).arun_once()
    assert outbox.status(oid) is Status.HELD
    assert handler.message_ids() == ["<1@test>"]


async def test_a_server_that_is_down_defers_the_batch_after_one_connection_attempt(
        outbox: Outbox, clock: Clock):
    handler = RecordingHandler()
    async with smtpd(handler) as port:
        pass  # closed again: nothing listens on the port now
    for n in range(5):
        outbox.enqueue(envelope(n))
    w = worker(outbox, port, clock, options=WorkerOptions(concurrency=1, batch_size=5,
                                                           poll_interval_s=0.05))
    assert await w.arun_once() == 1
    assert outbox.counts()[Status.DEFERRED] == 5
    info = outbox.list()[0]
    assert "cannot connect" in (info.last_error or "")


async def test_a_dead_workers_messages_are_delivered_after_its_lease(outbox: Outbox, clock: Clock):
    handler = RecordingHandler()
    oid = outbox.enqueue(envelope(1)).id
    outbox.claim("dead-worker", lease_s=30, policy=POLICY)  # claimed, never reported
    async with smtpd(handler) as port:
        w = worker(outbox, port, clock)
        assert await w.arun_once() == 0
        clock.advance(31)
        assert await w.arun_once() == 1
    assert outbox.status(oid) is Status.SENT
    assert [(a.outcome, a.worker) for a in outbox.get(oid).attempts] == [
        ("unknown", "dead-worker"), ("accepted", w.name)]


async def test_stop_finishes_in_flight_work_and_gives_back_the_rest(outbox: Outbox, clock: Clock):
    handler = RecordingHandler()
    outbox.enqueue_many([envelope(n) for n in range(200)])
    async with smtpd(handler) as port:
        w = worker(outbox, port, clock, options=WorkerOptions(concurrency=2, batch_size=50,
                                                               poll_interval_s=0.05))
        task = asyncio.create_task(w.arun())
        await asyncio.wait_for(handler.got_one.wait(), 10)
        w.stop()
        await asyncio.wait_for(task, 10)
    counts = outbox.counts()
    assert counts[Status.SENDING] == 0
    assert counts[Status.SENT] == len(handler.received)
    assert counts[Status.SENT] + counts[Status.QUEUED] == 200


async def test_metrics_count_outcomes_latency_and_queue_depth(outbox: Outbox, clock: Clock):
    handler = RecordingHandler(rcpt_replies={"gone@x.test": "550 no"})
    metrics = OutboxMetrics(outbox.counts, outbox.oldest_due)
    outbox.enqueue(envelope(1))
    outbox.enqueue(envelope(2, recipients=("gone@x.test",)))
    async with smtpd(handler) as port:
        await worker(outbox, port, clock, metrics=metrics).arun_once()
    text = metrics.exposition().decode()
    assert 'egressmail_outbox_messages{state="sent"} 1.0' in text
    assert 'egressmail_outbox_messages{state="failed"} 1.0' in text
    assert 'egressmail_outbox_attempts_total{outcome="accepted"} 1.0' in text
    assert 'egressmail_outbox_attempts_total{outcome="permanent"} 1.0' in text
    assert "egressmail_outbox_delivery_latency_seconds_count 1.0" in text


def test_several_workers_in_threads_never_deliver_a_message_twice(tmp_path: Path):
    """Four workers, each with its own Outbox (own connection), like four processes."""
    db = tmp_path / "outbox.db"
    handler = RecordingHandler()
    with Outbox(db) as seed:
        seed.enqueue_many([envelope(n) for n in range(300)])
    ready = threading.Event()
    port_box: list[int] = []
    stop_server = threading.Event()

    def serve() -> None:
        async def main() -> None:
            async with smtpd(handler) as port:
                port_box.append(port)
                ready.set()
                await asyncio.get_running_loop().run_in_executor(None, stop_server.wait)
        asyncio.run(main())

    server = threading.Thread(target=serve)
    server.start()
    ready.wait(5)

    def run_worker(i: int) -> None:
        with Outbox(db) as box:
            Worker(box, transport_factory(port_box[0]), POLICY, name=f"w{i}",
                   options=WorkerOptions(concurrency=2, batch_size=7)).run_once()

    workers = [threading.Thread(target=run_worker, args=(i,)) for i in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(20)
    stop_server.set()
    server.join(5)
    ids = handler.message_ids()
    assert len(ids) == 300 and len(set(ids)) == 300
    with Outbox(db) as box:
        assert box.counts()[Status.SENT] == 300


async def test_a_claim_whose_lease_ran_out_is_not_sent_but_given_back(outbox: Outbox, clock: Clock):
    handler = RecordingHandler()
    oid = outbox.enqueue(envelope(1)).id
    async with smtpd(handler) as port:
        # This worker's clock runs ahead: by its watch, every lease it gets has already expired.
        late = Worker(outbox, transport_factory(port), POLICY, clock=lambda: clock.now + 3600,
                      options=WorkerOptions(lease_s=1))
        delivery = await late.deliver(oid)
    assert handler.received == []
    assert delivery.status is Status.QUEUED
    assert delivery.error is not None and "could not be sent now" in str(delivery.error)
    assert outbox.status(oid) is Status.QUEUED
