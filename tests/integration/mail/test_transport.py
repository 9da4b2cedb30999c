"""The SMTP transport against real loopback servers: TLS modes and identity, AUTH, faults, batches."""

from __future__ import annotations

import base64
import logging

import pytest

from egressmail.mail.errors import (
    DeliveryUnknown,
    MailTLSError,
    PermanentDeliveryError,
    TLSRequiredError,
    TransientDeliveryError,
)
from egressmail.mail.message import Message, build_envelope
from egressmail.mail.settings import MailSettings, parse_mail_settings
from egressmail.mail.transcript import LOGGER_NAME
from egressmail.mail.transport import SmtpTransport, TransportConfig
from egressmail.networking.model import EgressMap, EnvironmentNetworking, Infrastructure, Kind, PortForward
from tests.servers import scripted
from tests.servers.fake_smtpd import FakeSmtpd

PASSWORD = "s3cret-Password-42"
FROM = "noreply@wknd.site"


def settings_for(smtpd: FakeSmtpd, **extra: object) -> MailSettings:
    props: dict[str, object] = {
        "smtp.host": "127.0.0.1", "smtp.port": str(smtpd.port), "from.address": FROM,
        "smtp.ssl": smtpd.config.tls == "implicit", "egressmail.tls.cafile": str(smtpd.cafile),
        "egressmail.timeout.connect": 3, "egressmail.timeout.read": 3,
    }
    props.update({k.replace("__", "."): v for k, v in extra.items()})
    return parse_mail_settings({k: v for k, v in props.items() if v is not None})


def forward_map(port: int, name: str = "smtp.sendgrid.com", dest: int = 465) -> EgressMap:
    """An egress map whose forward listens on the fake server's port: 127.0.0.1:port 'is' the gateway."""
    return EgressMap(program="1001", environment="2002",
                     infrastructure=Infrastructure(Kind.FLEXIBLE_PORT_EGRESS),
                     networking=EnvironmentNetworking(port_forwards=(PortForward(name, dest, port),)))


def envelope(to: str | list[str] = "someone@example.com", text: str = "Hello there\n"):
    return build_envelope(Message(to, "Test", text=text), FROM)


def transport(smtpd: FakeSmtpd, emap: EgressMap | None = None, **extra: object) -> SmtpTransport:
    if emap is None:
        emap = forward_map(smtpd.port, dest=465 if smtpd.config.tls == "implicit" else 587)
    return SmtpTransport(TransportConfig.from_settings(settings_for(smtpd, **extra), emap))


@pytest.mark.smtpd(tls="implicit", credentials={"apikey": PASSWORD})
async def test_implicit_tls_verified_for_the_forward_name(smtpd: FakeSmtpd) -> None:
    t = transport(smtpd, smtp__user="apikey", smtp__password=PASSWORD)
    assert t.config.tls_name == "smtp.sendgrid.com" and t.config.forward == "smtp.sendgrid.com:465"
    async with t() as session:
        result = await session.send(envelope())
    [msg] = smtpd.messages
    assert msg.tls and msg.login == "apikey"
    assert msg.rcpt_tos == ["someone@example.com"] and msg.mail_from == FROM
    assert b"Hello there" in msg.data
    assert result.accepted == {"someone@example.com": (250, "2.1.5 OK")}
    assert result.reply[0] == 250 and result.refused == {}
    # the session id carries our local address, which the server (or a gateway) sees as the peer
    assert result.session_id.endswith(f"@{msg.peer[0]}:{msg.peer[1]}")
    assert smtpd.verbs == [["EHLO", "AUTH", "MAIL", "RCPT", "DATA", "QUIT"]]


@pytest.mark.smtpd(tls="starttls", credentials={"apikey": PASSWORD})
async def test_starttls_then_auth(smtpd: FakeSmtpd) -> None:
    async with transport(smtpd, smtp__user="apikey", smtp__password=PASSWORD)() as session:
        await session.send(envelope())
    assert smtpd.messages[0].tls and smtpd.messages[0].login == "apikey"
    assert smtpd.verbs == [["EHLO", "STARTTLS", "EHLO", "AUTH", "MAIL", "RCPT", "DATA", "QUIT"]]


@pytest.mark.smtpd(tls="starttls", credentials={"apikey": PASSWORD}, mechanisms=("LOGIN",))
async def test_auth_uses_a_mechanism_the_server_offers(smtpd: FakeSmtpd) -> None:
    async with transport(smtpd, smtp__user="apikey", smtp__password=PASSWORD)() as session:
        await session.send(envelope())
    assert smtpd.messages[0].login == "apikey"


@pytest.mark.smtpd(tls="none", credentials={"apikey": PASSWORD}, auth_require_tls=False)
async def test_requiretls_without_starttls_fails_before_auth(smtpd: FakeSmtpd) -> None:
    t = transport(smtpd, smtp__user="apikey", smtp__password=PASSWORD, smtp__requiretls=True)
    with pytest.raises(TLSRequiredError) as info:
        async with t():
            pass
    assert info.value.stage == "starttls"
    assert "does not offer STARTTLS" in str(info.value)
    assert "AUTH" not in smtpd.all_verbs and smtpd.messages == []


@pytest.mark.smtpd(tls="none", credentials={"apikey": PASSWORD}, auth_require_tls=False)
async def test_credentials_never_go_out_in_plain_text_unless_allowed(smtpd: FakeSmtpd) -> None:
    with pytest.raises(TLSRequiredError) as info:
        async with transport(smtpd, smtp__user="apikey", smtp__password=PASSWORD)():
            pass
    assert info.value.stage == "auth" and "egressmail.auth.allowplaintext" in (info.value.hint or "")
    assert "AUTH" not in smtpd.all_verbs
    # the explicit extension property allows it
    async with transport(smtpd, smtp__user="apikey", smtp__password=PASSWORD,
                         egressmail__auth__allowplaintext=True)() as session:
        await session.send(envelope())
    assert smtpd.messages[0].login == "apikey" and not smtpd.messages[0].tls


@pytest.mark.smtpd(tls="none")
async def test_plain_without_credentials_is_allowed(smtpd: FakeSmtpd) -> None:
    async with transport(smtpd)() as session:
        await session.send(envelope())
    assert not smtpd.messages[0].tls


@pytest.mark.smtpd(tls="implicit", cert_name="smtp.other-provider.com")
async def test_wrong_certificate_name_is_refused_implicit(smtpd: FakeSmtpd) -> None:
    with pytest.raises(MailTLSError) as info:
        async with transport(smtpd)():
            pass
    text = str(info.value)
    assert f"127.0.0.1:{smtpd.port}" in text and "'smtp.sendgrid.com'" in text
    assert "smtp.sendgrid.com:465" in text  # the forward
    assert info.value.stage == "tls" and not info.value.transient
    assert smtpd.messages == []


@pytest.mark.smtpd(tls="starttls", cert_name="smtp.other-provider.com", credentials={"apikey": PASSWORD})
async def test_wrong_certificate_name_is_refused_starttls_before_auth(smtpd: FakeSmtpd) -> None:
    with pytest.raises(MailTLSError) as info:
        async with transport(smtpd, smtp__user="apikey", smtp__password=PASSWORD)():
            pass
    assert info.value.stage == "starttls" and "Hostname mismatch" in str(info.value)
    assert "AUTH" not in smtpd.all_verbs


@pytest.mark.parametrize("kind", ["expired", "self-signed", "untrusted"])
async def test_bad_certificates_are_refused(kind: str, smtp_ca, tmp_path) -> None:
    from tests.servers.fake_smtpd import FakeSmtpd, SmtpdConfig

    server = FakeSmtpd(SmtpdConfig(tls="implicit", cert=kind), smtp_ca, tmp_path)  # type: ignore[arg-type]
    server.start()
    try:
        with pytest.raises(MailTLSError) as info:
            async with transport(server)():
                pass
    finally:
        server.stop()
    expected = {"expired": "certificate has expired", "self-signed": "self-signed certificate",
                "untrusted": "unable to get local issuer certificate"}[kind]
    assert expected in str(info.value)
    assert "'smtp.sendgrid.com'" in str(info.value)


@pytest.mark.smtpd(tls="implicit")
async def test_without_a_forward_the_host_name_is_verified(smtpd: FakeSmtpd) -> None:
    # No egress map and no override: the name checked is smtp.host (127.0.0.1), which the certificate
    # (for smtp.sendgrid.com) does not name. Verification is never skipped.
    t = SmtpTransport(TransportConfig.from_settings(settings_for(smtpd), None))
    assert t.config.tls_name == "127.0.0.1"
    with pytest.raises(MailTLSError, match="not valid for '127.0.0.1'"):
        async with t():
            pass
    # the extension property names it explicitly
    t = SmtpTransport(TransportConfig.from_settings(
        settings_for(smtpd, egressmail__tls__servername="smtp.sendgrid.com"), None))
    async with t() as session:
        await session.send(envelope())
    assert len(smtpd.messages) == 1


@pytest.mark.smtpd(tls="implicit")
async def test_ssl_cert_file_is_honoured(smtpd: FakeSmtpd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with pytest.raises(MailTLSError, match="unable to get local issuer"):
        async with transport(smtpd, egressmail__tls__cafile=None)():
            pass
    monkeypatch.setenv("SSL_CERT_FILE", str(smtpd.cafile))
    async with transport(smtpd, egressmail__tls__cafile=None)() as session:
        await session.send(envelope())
    assert len(smtpd.messages) == 1


@pytest.mark.smtpd(tls="starttls")
async def test_implicit_tls_against_a_starttls_port_says_to_set_ssl_false(smtpd: FakeSmtpd) -> None:
    with pytest.raises(MailTLSError) as info:
        async with transport(smtpd, smtp__ssl=True)():
            pass
    assert "smtp.ssl to false" in (info.value.hint or "")


@pytest.mark.smtpd(tls="implicit", fail={"MAIL": "451 4.3.0 Try again later"})
async def test_4xx_is_transient_with_stage_and_code(smtpd: FakeSmtpd) -> None:
    async with transport(smtpd)() as session:
        with pytest.raises(TransientDeliveryError) as info:
            await session.send(envelope())
    e = info.value
    assert (e.stage, e.code, e.transient) == ("mail", 451, True)
    assert (e.host, e.port, e.forward) == ("127.0.0.1", smtpd.port, "smtp.sendgrid.com:465")
    assert "451 4.3.0 Try again later" in str(e) and "SMTP mail failed at 127.0.0.1:" in str(e)


@pytest.mark.smtpd(tls="implicit", fail={"DATA": "554 5.7.1 Message rejected as spam"})
async def test_5xx_after_data_is_permanent(smtpd: FakeSmtpd) -> None:
    async with transport(smtpd)() as session:
        with pytest.raises(PermanentDeliveryError) as info:
            await session.send(envelope())
    assert (info.value.stage, info.value.code, info.value.transient) == ("data", 554, False)


@pytest.mark.smtpd(tls="implicit", drop_after_dot=True)
async def test_connection_lost_after_the_final_dot_is_delivery_unknown(smtpd: FakeSmtpd) -> None:
    async with transport(smtpd)() as session:
        with pytest.raises(DeliveryUnknown) as info:
            await session.send(envelope())
        assert not session.is_open
    assert info.value.stage == "data" and info.value.transient
    assert "may or may not have the message" in str(info.value)


@pytest.mark.smtpd(tls="implicit", refuse={"bad@example.com": "550 5.1.1 No such user",
                                           "later@example.com": "450 4.2.1 Mailbox busy"})
async def test_per_recipient_refusals(smtpd: FakeSmtpd) -> None:
    async with transport(smtpd)() as session:
        result = await session.send(envelope(["ok@example.com", "bad@example.com"]))
        assert result.accepted.keys() == {"ok@example.com"}
        assert result.refused == {"bad@example.com": (550, "5.1.1 No such user")}
        with pytest.raises(PermanentDeliveryError) as info:
            await session.send(envelope(["bad@example.com"]))
        assert (info.value.stage, info.value.code) == ("rcpt", 550)
        with pytest.raises(TransientDeliveryError) as tinfo:
            await session.send(envelope(["bad@example.com", "later@example.com"]))
        assert tinfo.value.stage == "rcpt"  # one 4xx among them: worth retrying
        # each recipient's own reply travels with the error, so the outbox can fail the 5xx one
        # for good and retry the 4xx one alone
        assert tinfo.value.recipients == {"bad@example.com": (550, "5.1.1 No such user"),
                                          "later@example.com": (450, "4.2.1 Mailbox busy")}
        assert info.value.recipients == {"bad@example.com": (550, "5.1.1 No such user")}
        # the connection stays usable after refusals (RSET)
        await session.send(envelope(["ok@example.com"]))
    assert [m.rcpt_tos for m in smtpd.messages] == [["ok@example.com"], ["ok@example.com"]]
    assert len(smtpd.verbs) == 1 and "RSET" in smtpd.verbs[0]


@pytest.mark.smtpd(tls="starttls", credentials={"apikey": PASSWORD})
async def test_wrong_password_is_permanent_auth_failure_without_the_secret(smtpd: FakeSmtpd) -> None:
    with pytest.raises(PermanentDeliveryError) as info:
        async with transport(smtpd, smtp__user="apikey", smtp__password="wrong-" + PASSWORD)():
            pass
    assert (info.value.stage, info.value.code) == ("auth", 535)
    assert PASSWORD not in str(info.value) and PASSWORD not in repr(info.value.__dict__)


@pytest.mark.smtpd(tls="implicit")
async def test_batch_reuses_one_connection(smtpd: FakeSmtpd) -> None:
    async with transport(smtpd)() as session:
        ids = {(await session.send(envelope(f"r{i}@example.com"))).session_id for i in range(3)}
    assert len(ids) == 1
    assert len(smtpd.messages) == 3
    assert smtpd.verbs[0].count("MAIL") == 3 and len(smtpd.verbs) == 1


@pytest.mark.smtpd(tls="starttls", credentials={"apikey": PASSWORD})
async def test_transcript_is_redacted(smtpd: FakeSmtpd, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    body = "the-body-text-must-not-be-logged"
    async with transport(smtpd, smtp__user="apikey", smtp__password=PASSWORD, debug__email=True)() as s:
        result = await s.send(envelope(text=body))
    log = "\n".join(r.getMessage() for r in caplog.records if r.name == LOGGER_NAME)
    assert "C: AUTH PLAIN ****" in log
    assert "C: STARTTLS" in log and "S: 235" in log and "<message data:" in log
    assert f"{result.session_id} C: MAIL FROM:<{FROM}>" in log
    plain = base64.b64encode(f"\0apikey\0{PASSWORD}".encode()).decode()
    for secret in (PASSWORD, plain, plain[:20], body):
        assert secret not in log


@pytest.mark.smtpd(tls="implicit")
async def test_no_transcript_without_debug(smtpd: FakeSmtpd, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    async with transport(smtpd)() as session:
        await session.send(envelope())
    assert [r for r in caplog.records if r.name == LOGGER_NAME] == []


async def test_connection_refused_is_transient_stage_connect() -> None:
    async with scripted.scripted_server(scripted.close_immediately) as port:
        pass  # closed again: nothing listens on this port now
    cfg = TransportConfig(host="127.0.0.1", port=port, tls_mode="implicit", tls_name="smtp.sendgrid.com",
                          forward="smtp.sendgrid.com:465")
    with pytest.raises(TransientDeliveryError) as info:
        async with SmtpTransport(cfg)():
            pass
    assert info.value.stage == "connect" and "smtp.sendgrid.com:465" in str(info.value)


async def test_read_timeout_is_transient() -> None:
    from egressmail.mail.settings import Timeouts

    async with scripted.scripted_server(scripted.greet_then_silent) as port:
        cfg = TransportConfig(host="127.0.0.1", port=port, tls_mode="starttls", tls_name="x.example",
                              timeouts=Timeouts(connect=2, read=0.3))
        with pytest.raises(TransientDeliveryError) as info:
            async with SmtpTransport(cfg)():
                pass
    assert info.value.stage == "ehlo" and "in time" in str(info.value)


@pytest.mark.parametrize(("script", "cls", "code"), [
    (scripted.refuse_greeting, PermanentDeliveryError, 554),
    (scripted.busy_greeting, TransientDeliveryError, 421),
])
async def test_greeting_refusals(script, cls, code) -> None:
    async with scripted.scripted_server(script) as port:
        cfg = TransportConfig(host="127.0.0.1", port=port, tls_mode="starttls", tls_name="x.example")
        with pytest.raises(cls) as info:
            async with SmtpTransport(cfg)():
                pass
    assert (info.value.stage, info.value.code) == ("greeting", code)


async def test_dropped_during_the_tls_handshake_is_transient() -> None:
    async with scripted.scripted_server(scripted.close_immediately) as port:
        cfg = TransportConfig(host="127.0.0.1", port=port, tls_mode="implicit", tls_name="x.example")
        with pytest.raises((TransientDeliveryError, MailTLSError)) as info:
            async with SmtpTransport(cfg)():
                pass
    assert info.value.stage in ("tls", "greeting")


@pytest.mark.smtpd(tls="implicit")
async def test_lines_starting_with_a_dot_arrive_intact(smtpd: FakeSmtpd) -> None:
    async with transport(smtpd)() as session:
        await session.send(envelope(text="first\n.second\n..third\n.\nend\n"))
    body = smtpd.messages[0].data.replace(b"\r\n", b"\n")
    assert b"\nfirst\n.second\n..third\n.\nend\n" in body
