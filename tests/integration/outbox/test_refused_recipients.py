"""Every recipient refused at RCPT, with a mix of 4xx and 5xx (Postfix semantics): the 5xx ones are
refused for good, the 4xx ones deferred and retried alone — through both transport paths (one
command at a time against aiosmtpd, pipelined against tests/servers/pipelining_smtpd.py).

And what an operator's ``release`` and ``retry`` do with recipients refused for good.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from egressmail.mail.errors import PermanentDeliveryError, TransientDeliveryError
from egressmail.mail.outbox import Outbox
from egressmail.mail.outbox_model import RecipientStatus, Status
from egressmail.mail.outbox_send import send_durably
from egressmail.mail.retry import RetryPolicy
from egressmail.mail.settings import Timeouts
from egressmail.mail.transport import SmtpTransport, TransportConfig
from egressmail.mail.worker import Worker, WorkerOptions
from tests.servers.pipelining_smtpd import NAME, PipeliningConfig, pipelining_smtpd
from tests.unit.outbox.helpers import Clock, envelope

from .support import RecordingHandler, smtpd, transport_factory

pytestmark = pytest.mark.timeout(30)

POLICY = RetryPolicy(min_delay_s=60, max_delay_s=600, jitter=0, max_lifetime_s=86400)
FAST = WorkerOptions(concurrency=1, batch_size=5, lease_s=30, poll_interval_s=0.05, idle_close_s=0.2)
GONE, BUSY, ALSO_GONE = "gone@x.test", "busy@x.test", "nobody@x.test"
REPLIES = {GONE: "550 5.1.1 no such user", BUSY: "450 4.2.1 mailbox busy",
           ALSO_GONE: "553 5.1.3 bad address"}


class Server:
    """One of the two servers, with the recipients it refuses and what it delivered."""

    def __init__(self, refuse: dict[str, str], set_refusals: Callable[[dict[str, str]], None],
                 delivered: Callable[[], list[tuple[str, ...]]], factory: Any) -> None:
        self.refuse = refuse
        self._set = set_refusals
        self.delivered = delivered
        self.factory = factory

    def accept(self, address: str) -> None:
        self.refuse.pop(address)
        self._set(self.refuse)


@asynccontextmanager
async def server(kind: str, refuse: dict[str, str]) -> AsyncIterator[Server]:
    refuse = dict(refuse)
    if kind == "one-command":
        handler = RecordingHandler(rcpt_replies=refuse)
        async with smtpd(handler) as port:
            yield Server(refuse, lambda r: setattr(handler, "rcpt_replies", r),
                         lambda: [rcpts for _, rcpts in handler.received], transport_factory(port))
    else:
        config = PipeliningConfig(rcpt_replies=refuse)
        async with pipelining_smtpd(config) as srv:
            factory = SmtpTransport(TransportConfig(host="127.0.0.1", port=srv.port,
                                                    tls_mode="starttls", tls_name=NAME,
                                                    timeouts=Timeouts(connect=3, read=3)))
            yield Server(refuse, lambda r: setattr(config, "rcpt_replies", r),
                         lambda: [m.rcpt_tos for m in srv.messages], factory)


def worker(outbox: Outbox, factory: Any, clock: Clock) -> Worker:
    return Worker(outbox, factory, POLICY, options=FAST, clock=clock, rand=lambda: 0.0)


def recipients(outbox: Outbox, oid: str) -> list[tuple[str, RecipientStatus, int | None, str | None]]:
    return [(r.address, r.status, r.code, r.reply) for r in outbox.get(oid).recipients]


PATHS = pytest.mark.parametrize("kind", ["one-command", "pipelined"])


@PATHS
async def test_a_mix_of_4xx_and_5xx_refuses_the_5xx_for_good_and_retries_only_the_4xx(
        outbox: Outbox, clock: Clock, kind: str):
    oid = outbox.enqueue(envelope(1, recipients=(GONE, BUSY))).id
    async with server(kind, {GONE: REPLIES[GONE], BUSY: REPLIES[BUSY]}) as srv:
        w = worker(outbox, srv.factory, clock)
        delivery = await w.deliver(oid)
        assert delivery.status is Status.DEFERRED
        assert recipients(outbox, oid) == [
            (GONE, RecipientStatus.REFUSED, 550, "5.1.1 no such user"),
            (BUSY, RecipientStatus.PENDING, 450, "4.2.1 mailbox busy")]
        # The next attempt goes to the 4xx recipient alone; the 5xx one is never asked again.
        clock.advance(60)
        [claim] = outbox.claim("peek", ids=[oid], policy=POLICY)
        assert claim.envelope.recipients == (BUSY,)
        outbox.release_claims([claim])
        srv.accept(BUSY)
        assert await w.arun_once() == 1
        assert srv.delivered() == [(BUSY,)]
    detail = outbox.get(oid)
    assert detail.info.status is Status.SENT
    assert [(r.address, r.status, r.code) for r in detail.recipients] == [
        (GONE, RecipientStatus.REFUSED, 550), (BUSY, RecipientStatus.ACCEPTED, 250)]


@PATHS
async def test_every_recipient_5xx_fails_the_message_with_each_recipients_own_reply(
        outbox: Outbox, clock: Clock, kind: str):
    oid = outbox.enqueue(envelope(1, recipients=(GONE, ALSO_GONE))).id
    async with server(kind, {GONE: REPLIES[GONE], ALSO_GONE: REPLIES[ALSO_GONE]}) as srv:
        delivery = await worker(outbox, srv.factory, clock).deliver(oid)
    assert delivery.status is Status.FAILED
    assert isinstance(delivery.error, PermanentDeliveryError)
    assert recipients(outbox, oid) == [
        (GONE, RecipientStatus.REFUSED, 550, "5.1.1 no such user"),
        (ALSO_GONE, RecipientStatus.REFUSED, 553, "5.1.3 bad address")]


@PATHS
async def test_every_recipient_4xx_defers_the_message_and_keeps_them_all(
        outbox: Outbox, clock: Clock, kind: str):
    oid = outbox.enqueue(envelope(1, recipients=(BUSY, "full@x.test"))).id
    async with server(kind, {BUSY: REPLIES[BUSY], "full@x.test": "452 4.2.2 over quota"}) as srv:
        delivery = await worker(outbox, srv.factory, clock).deliver(oid)
    assert delivery.status is Status.DEFERRED
    assert recipients(outbox, oid) == [
        (BUSY, RecipientStatus.PENDING, 450, "4.2.1 mailbox busy"),
        ("full@x.test", RecipientStatus.PENDING, 452, "4.2.2 over quota")]


async def test_a_caller_who_waits_learns_which_recipients_were_refused_and_which_deferred(
        outbox: Outbox):
    async with server("one-command", {GONE: REPLIES[GONE], BUSY: REPLIES[BUSY]}) as srv:
        with pytest.raises(TransientDeliveryError) as info:
            await send_durably(outbox, envelope(1, recipients=(GONE, BUSY)), srv.factory)
    [m] = outbox.list()
    assert m.status is Status.DEFERRED
    assert f"message {m.id} is queued: it will be retried" in str(info.value)
    assert info.value.recipients == {GONE: (550, "5.1.1 no such user"),
                                     BUSY: (450, "4.2.1 mailbox busy")}


async def test_release_resends_only_to_recipients_not_refused_for_good_but_retry_asks_all_again(
        outbox: Outbox, clock: Clock):
    oid = outbox.enqueue(envelope(1, recipients=(GONE, BUSY))).id
    async with server("one-command", {GONE: REPLIES[GONE], BUSY: REPLIES[BUSY]}) as srv:
        w = worker(outbox, srv.factory, clock)
        await w.deliver(oid)
        assert outbox.hold(oid) is Status.DEFERRED
        assert outbox.release(oid) is Status.HELD
        assert recipients(outbox, oid)[0] == (GONE, RecipientStatus.REFUSED, 550, "5.1.1 no such user")
        srv.accept(BUSY)
        assert await w.arun_once() == 1
        assert srv.delivered() == [(BUSY,)]
        assert outbox.status(oid) is Status.SENT
    oid2 = outbox.enqueue(envelope(2, recipients=(GONE, BUSY))).id
    async with server("one-command", {GONE: REPLIES[GONE], BUSY: REPLIES[BUSY]}) as srv:
        w = worker(outbox, srv.factory, clock)
        await w.deliver(oid2)
        outbox.hold(oid2)
        assert outbox.retry(oid2) is Status.HELD  # the operator asks: the refused one again too
        assert [r.status for r in outbox.get(oid2).recipients] == [RecipientStatus.PENDING] * 2
        srv.accept(GONE)
        srv.accept(BUSY)
        assert await w.arun_once() == 1
        assert srv.delivered() == [(GONE, BUSY)]
