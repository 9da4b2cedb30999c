"""Addresses the SMTP envelope cannot carry (SMTPUTF8 is not supported) are refused clearly.

An ``Envelope`` can reach the transport without the message builder's checks (``MailService.send``
takes one, and so does the outbox). A non-ASCII address used to escape as a bare
``UnicodeEncodeError``, which the worker recorded as *unknown* ("the server may have it") and
retried for days although nothing had been sent.
"""

from __future__ import annotations

import contextlib
import sqlite3

import pytest

from egressmail.mail.envelope import Envelope
from egressmail.mail.errors import MessageError
from egressmail.mail.outbox import Outbox
from egressmail.mail.outbox_model import InvalidEnvelope, Status
from egressmail.mail.retry import RetryPolicy
from egressmail.mail.settings import Timeouts
from egressmail.mail.transport import SmtpTransport, TransportConfig
from egressmail.mail.worker import Worker, WorkerOptions
from tests.servers.pipelining_smtpd import NAME, pipelining_smtpd

BODY = b"Subject: x\r\n\r\nhello\r\n"


def transport(port: int, *, pipelining: bool) -> SmtpTransport:
    return SmtpTransport(TransportConfig(host="127.0.0.1", port=port, tls_mode="starttls", tls_name=NAME,
                                         timeouts=Timeouts(connect=3, read=3), pipelining=pipelining))


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize(("sender", "rcpt"), [("noreply@wknd.site", "josé@example.test"),
                                              ("nöreply@wknd.site", "a@example.test")])
async def test_a_non_ascii_address_is_a_message_error_and_nothing_is_sent(
        pipelining: bool, sender: str, rcpt: str) -> None:
    async with pipelining_smtpd() as srv:
        async with transport(srv.port, pipelining=pipelining)() as session:
            with pytest.raises(MessageError) as info:
                await session.send(Envelope(sender, (rcpt,), BODY, "<m1@wknd.site>"))
            assert session.is_open  # nothing was written: the session can carry the next message
            await session.send(Envelope("noreply@wknd.site", ("a@example.test",), BODY, "<m2@wknd.site>"))
    assert info.value.stage == "message" and "SMTPUTF8" in str(info.value)
    assert [v for v in srv.verbs if v in ("MAIL", "RCPT")] == ["MAIL", "RCPT"]  # only the 2nd message
    assert len(srv.messages) == 1


async def test_the_worker_fails_such_a_message_instead_of_retrying_it_as_unknown(tmp_path) -> None:
    async with pipelining_smtpd() as srv:
        with Outbox(tmp_path) as outbox:
            oid = outbox.enqueue(Envelope("noreply@wknd.site", ("a@example.test",), BODY, "<m@wknd.site>"))
            # The recipient as an older egressmail (whose enqueue did not check) could have stored it.
            with contextlib.closing(sqlite3.connect(outbox.path)) as conn, conn:
                conn.execute("UPDATE recipients SET address = ? WHERE message = ?",
                             ("josé@example.test", oid.id))
            worker = Worker(outbox, transport(srv.port, pipelining=True), RetryPolicy(),
                            options=WorkerOptions(concurrency=1))
            await worker.arun_once()
            assert outbox.status(oid.id) is Status.FAILED
    assert srv.messages == []


@pytest.mark.parametrize(("sender", "rcpt"), [("noreply@wknd.site", "josé@example.test"),
                                              ("nöreply@wknd.site", "a@example.test")])
def test_the_outbox_refuses_a_non_ascii_address_when_queueing(tmp_path, sender: str, rcpt: str) -> None:
    with Outbox(tmp_path) as outbox:
        with pytest.raises(InvalidEnvelope, match="SMTPUTF8"):
            outbox.enqueue(Envelope(sender, (rcpt,), BODY, "<m@wknd.site>"))
        assert sum(outbox.counts().values()) == 0
