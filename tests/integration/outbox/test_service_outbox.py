"""MailService with an outbox: durable send, queue without waiting, idempotency, no secrets on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from egressmail.mail.errors import PermanentDeliveryError
from egressmail.mail.message import Message
from egressmail.mail.outbox import Outbox
from egressmail.mail.outbox_model import Status
from egressmail.mail.service import MailService
from egressmail.mail.worker import Worker

from .support import RecordingHandler, smtpd

pytestmark = pytest.mark.timeout(30)

PASSWORD = "s3cret-Pa55word-never-on-disk"


def service(port: int, outbox: Outbox, **extra: object) -> MailService:
    return MailService.from_properties({
        "smtp.host": "127.0.0.1", "smtp.port": port, "smtp.ssl": False, "smtp.starttls": True,
        "smtp.requiretls": False, "from.address": "from@example.test", **extra}, outbox=outbox)


@pytest.fixture
def box(tmp_path: Path):
    with Outbox(tmp_path) as outbox:
        yield outbox


async def test_send_is_durable_then_delivered_and_reports_acceptance(box: Outbox):
    handler = RecordingHandler()
    async with smtpd(handler) as port:
        result = await service(port, box).asend(Message(to=("a@x.test",), subject="hi", text="hello"))
    assert result.reply[0] == 250
    [m] = box.list()
    assert m.status is Status.SENT and m.message_id == result.message_id
    assert handler.message_ids() == [result.message_id]


async def test_send_still_raises_a_permanent_rejection(box: Outbox):
    handler = RecordingHandler(data_reply="550 5.7.1 refused")
    async with smtpd(handler) as port:
        with pytest.raises(PermanentDeliveryError):
            await service(port, box).asend(Message(to=("a@x.test",), subject="hi", text="x"))
    assert box.list()[0].status is Status.FAILED


async def test_queue_returns_at_once_and_a_worker_delivers(box: Outbox):
    handler = RecordingHandler()
    async with smtpd(handler) as port:
        svc = service(port, box)
        queued = await svc.aqueue(Message(to=("a@x.test",), subject="later", text="x"))
        assert queued.status is Status.QUEUED and handler.received == []
        await Worker(box, svc.session_factory).arun_once()
    assert box.status(queued.id) is Status.SENT
    assert len(handler.received) == 1


async def test_the_same_idempotency_key_sends_once(box: Outbox):
    handler = RecordingHandler()
    async with smtpd(handler) as port:
        svc = service(port, box)
        first = await svc.asend(Message(to=("a@x.test",), subject="1", text="x"), idempotency_key="o-1")
        await svc.asend(Message(to=("a@x.test",), subject="2", text="y"), idempotency_key="o-1")
    assert handler.message_ids() == [first.message_id]
    assert len(box.list()) == 1


# aiosmtpd warns about AUTH without TLS: on loopback, in a test, that is the point.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_the_password_never_reaches_the_outbox_file(box: Outbox):
    def authenticate(server, session, envelope, mechanism, auth_data):  # noqa: ARG001
        ok = isinstance(auth_data, LoginPassword) and auth_data.password == PASSWORD.encode()
        return AuthResult(success=ok)

    handler = RecordingHandler()
    async with smtpd(handler, authenticator=authenticate) as port:
        svc = service(port, box, **{"smtp.user": "apikey", "smtp.password": PASSWORD,
                                    "egressmail.auth.allowplaintext": True})
        await svc.asend(Message(to=("a@x.test",), subject="hi", text="hello"))
    assert len(handler.received) == 1
    for f in box.path.parent.glob("outbox.db*"):
        assert PASSWORD.encode() not in f.read_bytes(), f
