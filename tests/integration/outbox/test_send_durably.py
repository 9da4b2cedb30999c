"""``send_durably`` (what MailService.send calls): durable first, then the caller's outcome."""

from __future__ import annotations

import pytest

from egressmail.mail.envelope import Envelope
from egressmail.mail.errors import DeliveryUnknown, PermanentDeliveryError, TransientDeliveryError
from egressmail.mail.outbox import Outbox
from egressmail.mail.outbox_model import InvalidEnvelope, Status
from egressmail.mail.outbox_send import send_durably
from tests.unit.outbox.helpers import envelope

from .support import RecordingHandler, smtpd, transport_factory

pytestmark = pytest.mark.timeout(30)


async def test_waiting_send_returns_on_acceptance(outbox: Outbox):
    handler = RecordingHandler()
    async with smtpd(handler) as port:
        queued = await send_durably(outbox, envelope(1), transport_factory(port))
    assert queued.status is Status.SENT
    assert queued.result is not None and queued.result.reply[0] == 250
    assert handler.message_ids() == ["<1@test>"]
    assert outbox.status(queued.id) is Status.SENT


async def test_a_permanent_rejection_still_raises_for_a_caller_who_waits(outbox: Outbox):
    handler = RecordingHandler(data_reply="554 5.7.1 no thanks")
    async with smtpd(handler) as port:
        with pytest.raises(PermanentDeliveryError) as info:
            await send_durably(outbox, envelope(1), transport_factory(port))
    assert info.value.code == 554
    [m] = outbox.list()
    assert m.status is Status.FAILED


async def test_a_transient_failure_raises_but_the_message_stays_queued(outbox: Outbox):
    handler = RecordingHandler(data_reply="451 4.3.0 later")
    async with smtpd(handler) as port:
        with pytest.raises(TransientDeliveryError) as info:
            await send_durably(outbox, envelope(1), transport_factory(port))
    [m] = outbox.list()
    assert m.status is Status.DEFERRED
    assert f"message {m.id} is queued: it will be retried" in str(info.value)
    assert "egressmail worker run" in (info.value.hint or "")


async def test_a_lost_reply_raises_unknown_and_says_it_will_be_resent(outbox: Outbox):
    handler = RecordingHandler(drop_after_data=1)
    async with smtpd(handler) as port:
        with pytest.raises(DeliveryUnknown, match="same Message-ID"):
            await send_durably(outbox, envelope(1), transport_factory(port))
    assert outbox.list()[0].status is Status.UNKNOWN


async def test_a_server_that_is_down_leaves_the_message_queued(outbox: Outbox):
    async with smtpd(RecordingHandler()) as port:
        pass
    with pytest.raises(TransientDeliveryError, match="is queued"):
        await send_durably(outbox, envelope(1), transport_factory(port))
    assert outbox.list()[0].status is Status.DEFERRED


async def test_no_wait_returns_once_the_message_is_on_disk(outbox: Outbox):
    handler = RecordingHandler()
    async with smtpd(handler) as port:
        queued = await send_durably(outbox, envelope(1), transport_factory(port), wait=False)
    assert queued.status is Status.QUEUED and handler.received == []
    assert outbox.status(queued.id) is Status.QUEUED


async def test_the_same_idempotency_key_returns_the_first_receipt(outbox: Outbox):
    handler = RecordingHandler()
    async with smtpd(handler) as port:
        first = await send_durably(outbox, envelope(1), transport_factory(port), idempotency_key="k1")
        again = await send_durably(outbox, envelope(2), transport_factory(port), idempotency_key="k1")
    assert again.receipt.duplicate and again.id == first.id and again.status is Status.SENT
    assert handler.message_ids() == ["<1@test>"]


async def test_an_invalid_message_raises_and_nothing_is_queued(outbox: Outbox):
    with pytest.raises(InvalidEnvelope, match="no recipient"):
        await send_durably(outbox, Envelope("a@x.test", (), b"x", "<1@t>"), transport_factory(1))
    assert outbox.list() == []
