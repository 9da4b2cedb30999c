"""The embedded SMTP server (the demo's stand-in provider) against the real mail client."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from egressmail.mail.embedded_server import EmbeddedSmtpServer, local_tls
from egressmail.mail.errors import MailTLSError, PermanentDeliveryError
from egressmail.mail.message import Message, build_envelope
from egressmail.mail.settings import Secret, Timeouts
from egressmail.mail.transport import PasswordAuth, SmtpTransport, TransportConfig

KEY = "k3y-for-this-test"
NAME = "smtp.sendgrid.com"


def _config(server: EmbeddedSmtpServer, cafile: Path, *, password: str | None = KEY,
            tls_mode: str = "implicit", name: str = NAME) -> TransportConfig:
    creds = PasswordAuth("apikey", Secret(password)) if password is not None else None
    return TransportConfig(host="127.0.0.1", port=server.port, tls_mode=tls_mode,  # type: ignore[arg-type]
                           tls_name=name, credentials=creds, cafile=str(cafile),
                           timeouts=Timeouts(connect=5, read=5))


def _envelope() -> object:
    return build_envelope(Message(to="someone@example.com", subject="hi", text="body\n"), "app@example.com")


@pytest.fixture
def tls(tmp_path: Path):
    return local_tls([NAME], tmp_path)


async def test_implicit_tls_auth_and_delivery(tls) -> None:
    async with EmbeddedSmtpServer(tls="implicit", ssl_context=tls.server_context,
                                  credentials=("apikey", Secret(KEY)), hostname=NAME) as server:
        async with SmtpTransport(_config(server, tls.cafile))() as session:
            result = await session.send(_envelope())  # type: ignore[arg-type]
        assert result.reply[0] == 250
        [message] = await server.wait_for(1)
    assert message.tls and message.authenticated
    assert message.rcpt_tos == ("someone@example.com",)
    assert b"Subject: hi" in message.data
    assert KEY not in repr(message) and KEY not in repr(server)


async def test_wrong_password_is_refused(tls) -> None:
    async with EmbeddedSmtpServer(tls="implicit", ssl_context=tls.server_context,
                                  credentials=("apikey", Secret(KEY))) as server:
        with pytest.raises(PermanentDeliveryError) as info:
            await SmtpTransport(_config(server, tls.cafile, password="wrong")).open()
    assert info.value.stage == "auth" and info.value.code == 535
    assert server.messages == []


async def test_mail_before_auth_is_refused(tls) -> None:
    async with EmbeddedSmtpServer(tls="implicit", ssl_context=tls.server_context,
                                  credentials=("apikey", Secret(KEY))) as server:
        session = await SmtpTransport(_config(server, tls.cafile, password=None)).open()
        try:
            with pytest.raises(PermanentDeliveryError) as info:
                await session.send(_envelope())  # type: ignore[arg-type]
        finally:
            await session.aclose()
    assert info.value.code == 530 and info.value.stage == "mail"


async def test_starttls_mode_offers_auth_only_after_tls(tls) -> None:
    async with EmbeddedSmtpServer(tls="starttls", ssl_context=tls.server_context,
                                  credentials=("apikey", Secret(KEY))) as server:
        async with SmtpTransport(_config(server, tls.cafile, tls_mode="starttls"))() as session:
            await session.send(_envelope())  # type: ignore[arg-type]
            assert session.is_tls  # type: ignore[attr-defined]
        [message] = server.messages
    assert message.tls and message.authenticated


async def test_certificate_for_another_name_is_refused(tls) -> None:
    async with EmbeddedSmtpServer(tls="implicit", ssl_context=tls.server_context,
                                  credentials=("apikey", Secret(KEY))) as server:
        config = dataclasses.replace(_config(server, tls.cafile), tls_name="smtp.other.test")
        with pytest.raises(MailTLSError, match="smtp.other.test"):
            await SmtpTransport(config).open()


async def test_plain_server_without_auth_accepts_anyone() -> None:
    async with EmbeddedSmtpServer(tls="none") as server:
        config = TransportConfig(host="127.0.0.1", port=server.port, tls_mode="starttls", tls_name="x",
                                 timeouts=Timeouts(connect=5, read=5))
        async with SmtpTransport(config)() as session:
            await session.send(_envelope())  # type: ignore[arg-type]
        [message] = server.messages
    assert not message.tls and not message.authenticated


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ssl_context"):
        EmbeddedSmtpServer(tls="implicit")
    with pytest.raises(ValueError, match="tls must be"):
        EmbeddedSmtpServer(tls="tls")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one name"):
        local_tls([], tmp_path)
    with pytest.raises(RuntimeError, match="start"):
        EmbeddedSmtpServer(tls="none").port  # noqa: B018
