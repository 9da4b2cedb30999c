"""Interoperability: the real SMTP client, through the real gateway, against a real Postfix with Dovecot SASL.

Each test configures the mail service with the seed's property names (``egressmail.tls.cafile`` to
trust the harness CA), dials the gateway's ``portOrig`` and checks what Postfix did: the message in
the harness Maildir, or the refusal before any credential was sent.
"""

from __future__ import annotations

import secrets

import pytest

from egressmail.mail.errors import MailTLSError, PermanentDeliveryError, TLSRequiredError
from egressmail.mail.message import Message, build_envelope
from egressmail.mail.settings import MailSettings, parse_mail_settings
from egressmail.mail.transport import SmtpTransport, TransportConfig
from tests.interop.conftest import PASSWORD, USER, Harness, RunningGateway

pytestmark = pytest.mark.postfix


def _settings(gw: RunningGateway, harness: Harness, port: int, *, ssl: bool, requiretls: bool = False,
              password: str = PASSWORD) -> MailSettings:
    return parse_mail_settings({
        "smtp.host": gw.host, "smtp.port": str(port), "smtp.user": USER, "smtp.password": password,
        "from.address": "noreply@wknd.site", "smtp.ssl": ssl, "smtp.starttls": not ssl,
        "smtp.requiretls": requiretls, "debug.email": True, "oauth.flow": False,
        "egressmail.tls.cafile": str(harness.cafile),
        "egressmail.timeout.connect": 5, "egressmail.timeout.read": 15,
    }, source="interop")


def _transport(settings: MailSettings, gw: RunningGateway) -> SmtpTransport:
    return SmtpTransport(TransportConfig.from_settings(settings, gw.egress_map))


async def _send(settings: MailSettings, gw: RunningGateway) -> tuple[str, str]:
    tag = secrets.token_hex(6)
    envelope = build_envelope(Message(to="someone@example.com", subject=f"interop {tag}",
                                      text=f"hello {tag}\n.leading dot stays\n"), settings.from_address)
    async with _transport(settings, gw)() as session:
        result = await session.send(envelope)
    assert result.reply[0] == 250 and "queued as" in result.reply[1]
    return tag, result.session_id


async def test_implicit_tls_through_the_gateway(postfix_harness: Harness,
                                                harness_gateway: RunningGateway) -> None:
    settings = _settings(harness_gateway, postfix_harness, 30465, ssl=True)
    tag, session_id = await _send(settings, harness_gateway)
    data = postfix_harness.wait_for(f"interop {tag}".encode())
    assert b"\n.leading dot stays" in data.replace(b"\r\n", b"\n")  # dot-stuffing undone by Postfix
    assert b"From: noreply@wknd.site" in data
    client = session_id.split("@", 1)[1]
    line = await harness_gateway.access_line(f"client={client}")
    assert "rule=smtp.sendgrid.com:465" in line and "addr=127.0.0.1:2465" in line, line


async def test_starttls_through_the_gateway(postfix_harness: Harness,
                                            harness_gateway: RunningGateway) -> None:
    settings = _settings(harness_gateway, postfix_harness, 30587, ssl=False, requiretls=True)
    tag, _ = await _send(settings, harness_gateway)
    postfix_harness.wait_for(f"interop {tag}".encode())


async def test_no_starttls_with_requiretls_is_refused_before_auth(
        postfix_harness: Harness, harness_gateway: RunningGateway) -> None:
    settings = _settings(harness_gateway, postfix_harness, 30525, ssl=False, requiretls=True)
    with pytest.raises(TLSRequiredError) as info:
        await _transport(settings, harness_gateway).open()
    assert info.value.stage == "starttls"
    assert "no credentials either" in info.value.message


async def test_no_starttls_without_requiretls_still_keeps_the_credentials(
        postfix_harness: Harness, harness_gateway: RunningGateway) -> None:
    settings = _settings(harness_gateway, postfix_harness, 30525, ssl=False, requiretls=False)
    with pytest.raises(TLSRequiredError) as info:
        await _transport(settings, harness_gateway).open()
    assert info.value.stage == "auth" and "refused before AUTH" in info.value.message


async def test_wrong_certificate_name_is_refused(postfix_harness: Harness,
                                                 harness_gateway: RunningGateway) -> None:
    settings = _settings(harness_gateway, postfix_harness, 30466, ssl=True)
    with pytest.raises(MailTLSError) as info:
        await _transport(settings, harness_gateway).open()
    assert info.value.stage == "tls"
    assert "'smtp.sendgrid.com'" in info.value.message


async def test_wrong_password_is_refused_by_dovecot_without_the_secret(
        postfix_harness: Harness, harness_gateway: RunningGateway) -> None:
    wrong = "wrong-" + secrets.token_hex(4)
    settings = _settings(harness_gateway, postfix_harness, 30465, ssl=True, password=wrong)
    with pytest.raises(PermanentDeliveryError) as info:
        await _transport(settings, harness_gateway).open()
    assert (info.value.stage, info.value.code) == ("auth", 535)
    assert wrong not in str(info.value) and PASSWORD not in str(info.value)


async def test_haproxy_as_a_peer_forwarder_behaves_the_same(postfix_harness: Harness) -> None:
    # The same client straight to HAProxy (31002 → 2465): the TLS name is the provider's, not HAProxy's.
    settings = parse_mail_settings({
        "smtp.host": "127.0.0.1", "smtp.port": "31002", "smtp.user": USER, "smtp.password": PASSWORD,
        "from.address": "noreply@wknd.site", "smtp.ssl": True,
        "egressmail.tls.servername": "smtp.sendgrid.com",
        "egressmail.tls.cafile": str(postfix_harness.cafile),
        "egressmail.timeout.connect": 5, "egressmail.timeout.read": 15,
    }, source="interop")
    tag = secrets.token_hex(6)
    envelope = build_envelope(Message(to="a@example.com", subject=f"haproxy {tag}", text="x\n"),
                              settings.from_address)
    async with SmtpTransport(TransportConfig.from_settings(settings))() as session:
        await session.send(envelope)
    postfix_harness.wait_for(f"haproxy {tag}".encode())
