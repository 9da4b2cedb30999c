"""RFC 2920 PIPELINING against the real Postfix, through the real gateway (the harness of conftest.py).

Postfix offers PIPELINING and answers a pipelined group in one segment (over TLS: one record), so
these prove the transport reads every reply of the group, pairs each with its command, and keeps
the session usable after a refusal. The loopback tests are in tests/integration/mail/test_pipelining.py.
"""

from __future__ import annotations

import logging
import secrets

import pytest

from egressmail.mail.envelope import Envelope
from egressmail.mail.errors import PermanentDeliveryError
from egressmail.mail.settings import parse_mail_settings
from egressmail.mail.transcript import LOGGER_NAME
from egressmail.mail.transport import SmtpTransport, TransportConfig
from tests.interop.conftest import PASSWORD, USER, Harness, RunningGateway

pytestmark = pytest.mark.postfix
SENDER = "noreply@wknd.site"


def envelope(*recipients: str, body: str, n: int) -> Envelope:
    return Envelope(SENDER, recipients, body.encode(), f"<pipelined-{n}@wknd.site>")


def _postfix_transport(gw: RunningGateway, harness: Harness, port: int, *, auth: bool) -> SmtpTransport:
    props: dict[str, object] = {
        "smtp.host": gw.host, "smtp.port": str(port), "from.address": SENDER,
        "smtp.ssl": port == 30465, "smtp.starttls": port != 30465, "debug.email": True,
        "egressmail.tls.cafile": str(harness.cafile),
        "egressmail.timeout.connect": 5, "egressmail.timeout.read": 15,
    }
    if auth:
        props.update({"smtp.user": USER, "smtp.password": PASSWORD})
    settings = parse_mail_settings(props, source="pipelining")
    return SmtpTransport(TransportConfig.from_settings(settings, gw.egress_map))


async def test_pipelined_through_the_gateway(postfix_harness: Harness, harness_gateway: RunningGateway,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    tag = secrets.token_hex(6)
    body = f"Subject: pipelined {tag}\r\n\r\nhello\r\n.leading dot stays\r\n"
    async with _postfix_transport(harness_gateway, postfix_harness, 30465, auth=True)() as session:
        assert session.pipelining  # Postfix offers PIPELINING
        results = [await session.send(envelope("someone@example.com", "other@example.com",
                                               body=body.replace("pipelined", f"pipelined {n}"), n=n))
                   for n in (1, 2)]
    assert all(r.reply[0] == 250 and "queued as" in r.reply[1] for r in results)
    assert all(set(r.accepted) == {"someone@example.com", "other@example.com"} for r in results)
    lines = [r.getMessage().split(" ", 1)[1] for r in caplog.records if r.name == LOGGER_NAME]
    start = next(i for i, line in enumerate(lines) if line.startswith("C: MAIL FROM:"))
    assert [line[:6] for line in lines[start:start + 8]] == [
        "C: MAI", "C: RCP", "C: RCP", "C: DAT", "S: 250", "S: 250", "S: 250", "S: 354"]
    for n in (1, 2):
        data = postfix_harness.wait_for(f"pipelined {n} {tag}".encode())
        assert b"\n.leading dot stays" in data.replace(b"\r\n", b"\n")


async def test_every_recipient_refused_pipelined(postfix_harness: Harness, harness_gateway: RunningGateway,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    # Without AUTH the harness's Postfix refuses every recipient, and then DATA ("no valid
    # recipients"): each reply must be paired with its command, so the session stays usable.
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    async with _postfix_transport(harness_gateway, postfix_harness, 30525, auth=False)() as session:
        assert session.pipelining
        for n in (1, 2):
            with pytest.raises(PermanentDeliveryError) as info:
                await session.send(envelope("someone@example.com", body="Subject: x\r\n\r\nx\r\n", n=n))
            assert info.value.stage == "rcpt" and info.value.code == 554
            assert session.is_open
    lines = [r.getMessage().split(" ", 1)[1] for r in caplog.records if r.name == LOGGER_NAME]
    assert sum(line.startswith("S: 554 5.5.1") for line in lines) == 2  # DATA refused, twice
    assert not [line for line in lines if line.startswith("C: <message data")]
