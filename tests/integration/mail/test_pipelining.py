"""RFC 2920 PIPELINING in the transport, against a real loopback server that offers it.

The server (tests/servers/pipelining_smtpd.py) records the command lines of each read from its
socket, so "MAIL, RCPT and DATA went out in one write" is something a test can see, and it answers
like Postfix: the replies to one read come back in one segment.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

from egressmail.mail.envelope import Envelope
from egressmail.mail.errors import DeliveryUnknown, MailError, PermanentDeliveryError, TransientDeliveryError
from egressmail.mail.settings import Timeouts
from egressmail.mail.transcript import LOGGER_NAME
from egressmail.mail.transport import SmtpTransport, TransportConfig, _prepare_data
from tests.servers.fake_smtpd import server_context
from tests.servers.pipelining_smtpd import NAME, PipeliningConfig, pipelining_smtpd

SENDER = "noreply@wknd.site"
BODY = "Subject: pipelined\r\n\r\nbody-text-that-must-not-be-logged\r\n.leading dot\r\n"


def envelope(*recipients: str, body: str = BODY, n: int = 1) -> Envelope:
    return Envelope(SENDER, recipients or ("a@example.test",), body.encode(), f"<m{n}@wknd.site>")


def transport(port: int, *, read_s: float = 3.0, **extra: object) -> SmtpTransport:
    # No STARTTLS offered and no credentials: a plain session (as to a relay on a trusted network).
    return SmtpTransport(TransportConfig(host="127.0.0.1", port=port, tls_mode="starttls",
                                         tls_name=NAME, timeouts=Timeouts(connect=3, read=read_s),
                                         **extra))  # type: ignore[arg-type]


def verbs_of(reads: list[list[str]]) -> list[list[str]]:
    return [[line.split(" ", 1)[0] for line in read] for read in reads]


async def test_mail_rcpt_and_data_go_in_one_write_and_coalesced_replies_are_read() -> None:
    async with pipelining_smtpd() as srv:
        async with transport(srv.port)() as session:
            assert session.pipelining
            first = await session.send(envelope("a@example.test", "b@example.test"))
            second = await session.send(envelope("c@example.test", n=2))
    [mail, *rest] = srv.group_reads()[0]
    assert mail.startswith(f"MAIL FROM:<{SENDER}> SIZE=")
    assert rest == ["RCPT TO:<a@example.test>", "RCPT TO:<b@example.test>", "DATA"]
    assert verbs_of(srv.group_reads()) == [["MAIL", "RCPT", "RCPT", "DATA"], ["MAIL", "RCPT", "DATA"]]
    assert first.accepted == {"a@example.test": (250, "2.1.5 Ok"), "b@example.test": (250, "2.1.5 Ok")}
    assert first.refused == {} and first.reply == (250, "2.0.0 Ok: queued as Q1")
    assert second.reply == (250, "2.0.0 Ok: queued as Q2")
    assert [m.rcpt_tos for m in srv.messages] == [("a@example.test", "b@example.test"), ("c@example.test",)]
    assert srv.messages[0].mail_from == SENDER
    assert srv.messages[0].data == BODY.encode()  # dot-stuffed on the wire, intact after
    assert srv.verbs.count("EHLO") == 1  # one connection for both


async def test_replies_arriving_one_at_a_time_are_read_too() -> None:
    async with pipelining_smtpd(PipeliningConfig(coalesce=False)) as srv:
        async with transport(srv.port)() as session:
            result = await session.send(envelope("a@example.test", "b@example.test"))
    assert verbs_of(srv.group_reads()) == [["MAIL", "RCPT", "RCPT", "DATA"]]
    assert set(result.accepted) == {"a@example.test", "b@example.test"} and len(srv.messages) == 1


@pytest.mark.parametrize("offered, enabled", [(False, True), (True, False)])
async def test_without_pipelining_each_command_waits_for_its_reply(offered: bool, enabled: bool) -> None:
    async with pipelining_smtpd(PipeliningConfig(pipelining=offered)) as srv:
        async with transport(srv.port, pipelining=enabled)() as session:
            assert not session.pipelining
            await session.send(envelope("a@example.test", "b@example.test"))
    assert verbs_of(srv.group_reads()) == [["MAIL"], ["RCPT"], ["RCPT"], ["DATA"]]
    assert len(srv.messages) == 1


async def test_a_refused_recipient_is_recorded_and_the_others_get_the_message() -> None:
    config = PipeliningConfig(rcpt_replies={"b@example.test": "550 5.1.1 <b@example.test>: no such user",
                                            "c@example.test": "251 2.1.5 will forward"})
    async with pipelining_smtpd(config) as srv:
        async with transport(srv.port)() as session:
            result = await session.send(envelope("a@example.test", "b@example.test", "c@example.test"))
    assert result.refused == {"b@example.test": (550, "5.1.1 <b@example.test>: no such user")}
    assert result.accepted == {"a@example.test": (250, "2.1.5 Ok"),
                               "c@example.test": (251, "2.1.5 will forward")}
    assert [m.rcpt_tos for m in srv.messages] == [("a@example.test", "c@example.test")]


@pytest.mark.parametrize("code, cls", [(550, PermanentDeliveryError), (450, TransientDeliveryError)])
async def test_every_recipient_refused_then_rset_and_the_session_carries_on(
        code: int, cls: type[MailError]) -> None:
    refusal = f"{code} {code // 100}.1.1 refused"
    config = PipeliningConfig(rcpt_replies={"a@example.test": refusal, "b@example.test": refusal})
    async with pipelining_smtpd(config) as srv:
        async with transport(srv.port)() as session:
            with pytest.raises(cls) as info:
                await session.send(envelope("a@example.test", "b@example.test"))
            assert info.value.stage == "rcpt" and info.value.code == code
            assert "<a@example.test> " in info.value.message and "<b@example.test> " in info.value.message
            assert session.is_open
            result = await session.send(envelope("c@example.test", n=2))
    # DATA went with the group and was refused (554: no valid recipients), so RSET, no data at all
    assert srv.verbs == ["EHLO", "MAIL", "RCPT", "RCPT", "DATA", "RSET", "MAIL", "RCPT", "DATA", "QUIT"]
    assert srv.discarded == [] and [m.rcpt_tos for m in srv.messages] == [("c@example.test",)]
    assert result.reply[0] == 250


async def test_every_recipient_refused_with_4xx_and_5xx_carries_each_recipients_reply() -> None:
    config = PipeliningConfig(rcpt_replies={"a@example.test": "550 5.1.1 no such user",
                                            "b@example.test": "451 4.3.0 try later"})
    async with pipelining_smtpd(config) as srv:
        async with transport(srv.port)() as session:
            with pytest.raises(TransientDeliveryError) as info:
                await session.send(envelope("a@example.test", "b@example.test"))
    assert info.value.stage == "rcpt"
    assert info.value.recipients == {"a@example.test": (550, "5.1.1 no such user"),
                                     "b@example.test": (451, "4.3.0 try later")}
    assert srv.messages == []


async def test_data_accepted_without_a_valid_recipient_is_ended_with_an_empty_message() -> None:
    # RFC 2920 section 3.1: the client must check DATA's reply too, and end an accepted DATA with a
    # lone "." (an empty message the server must not deliver), never with the message itself.
    config = PipeliningConfig(rcpt_replies={"a@example.test": "550 5.1.1 refused"},
                              data_without_recipients=True)
    async with pipelining_smtpd(config) as srv:
        async with transport(srv.port)() as session:
            with pytest.raises(PermanentDeliveryError) as info:
                await session.send(envelope("a@example.test"))
            assert info.value.stage == "rcpt" and info.value.code == 550
            await session.send(envelope("b@example.test", n=2))
    assert srv.discarded == [b""]
    assert [m.rcpt_tos for m in srv.messages] == [("b@example.test",)]
    assert srv.verbs == ["EHLO", "MAIL", "RCPT", "DATA", "MAIL", "RCPT", "DATA", "QUIT"]


@pytest.mark.parametrize("reply, cls", [("550 5.7.1 sender refused", PermanentDeliveryError),
                                        ("451 4.3.0 try again later", TransientDeliveryError)])
async def test_refused_sender_is_stage_mail(reply: str, cls: type[MailError]) -> None:
    async with pipelining_smtpd(PipeliningConfig(mail_reply=reply)) as srv:
        async with transport(srv.port)() as session:
            with pytest.raises(cls) as info:
                await session.send(envelope("a@example.test"))
            assert session.is_open
    assert info.value.stage == "mail" and info.value.code == int(reply[:3])
    assert f"<{SENDER}> was refused" in info.value.message
    assert srv.verbs == ["EHLO", "MAIL", "RCPT", "DATA", "RSET", "QUIT"]  # RCPT and DATA got 503
    assert srv.messages == [] and srv.discarded == []


async def test_refused_sender_but_data_accepted_sends_only_the_lone_dot() -> None:
    config = PipeliningConfig(mail_reply="553 5.7.1 sender refused", data_reply="354 go ahead")
    async with pipelining_smtpd(config) as srv:
        async with transport(srv.port)() as session:
            with pytest.raises(PermanentDeliveryError) as info:
                await session.send(envelope("a@example.test"))
    assert info.value.stage == "mail" and info.value.code == 553
    assert srv.discarded == [b""] and srv.messages == []


@pytest.mark.parametrize("reply, cls", [("554 5.3.4 not now", PermanentDeliveryError),
                                        ("452 4.3.1 insufficient storage", TransientDeliveryError)])
async def test_refused_data_is_stage_data_and_no_body_is_sent(reply: str, cls: type[MailError]) -> None:
    async with pipelining_smtpd(PipeliningConfig(data_reply=reply)) as srv:
        async with transport(srv.port)() as session:
            with pytest.raises(cls) as info:
                await session.send(envelope("a@example.test"))
    assert info.value.stage == "data" and info.value.code == int(reply[:3])
    assert "DATA was refused" in info.value.message
    assert srv.verbs == ["EHLO", "MAIL", "RCPT", "DATA", "RSET", "QUIT"]
    assert srv.messages == [] and srv.discarded == []


async def test_421_to_mail_closes_the_session() -> None:
    async with pipelining_smtpd(PipeliningConfig(mail_reply="421 4.3.2 shutting down")) as srv:
        async with transport(srv.port)() as session:
            with pytest.raises(TransientDeliveryError) as info:
                await session.send(envelope("a@example.test"))
            assert not session.is_open
    assert info.value.stage == "mail" and info.value.code == 421
    assert srv.messages == []


async def test_lost_after_the_final_dot_is_delivery_unknown() -> None:
    async with pipelining_smtpd(PipeliningConfig(hangup="after-dot")) as srv:
        async with transport(srv.port)() as session:
            with pytest.raises(DeliveryUnknown) as info:
                await session.send(envelope("a@example.test"))
    assert info.value.stage == "data"


async def test_lost_before_the_replies_is_transient_not_unknown() -> None:
    async with pipelining_smtpd(PipeliningConfig(hangup="after-group")) as srv:
        async with transport(srv.port)() as session:
            with pytest.raises(TransientDeliveryError) as info:
                await session.send(envelope("a@example.test"))
    assert not isinstance(info.value, DeliveryUnknown)
    assert info.value.stage == "mail" and "connection was lost" in info.value.message
    assert verbs_of(srv.group_reads()) == [["MAIL", "RCPT", "DATA"]]


async def test_no_reply_in_time_is_transient() -> None:
    async with pipelining_smtpd(PipeliningConfig(silent=True)) as srv:
        async with transport(srv.port, read_s=0.3)() as session:
            with pytest.raises(TransientDeliveryError) as info:
                await session.send(envelope("a@example.test"))
            assert not session.is_open  # the late replies would be paired with the next commands
    assert not isinstance(info.value, DeliveryUnknown)
    assert info.value.stage == "mail" and "in time" in info.value.message


async def test_transcript_shows_the_group_then_its_replies_and_never_the_body(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    config = PipeliningConfig(rcpt_replies={"b@example.test": "550 5.1.1 no such user"})
    async with pipelining_smtpd(config) as srv:
        async with transport(srv.port, debug=True)() as session:
            await session.send(envelope("a@example.test", "b@example.test"))
    lines = [r.getMessage().split(" ", 1)[1] for r in caplog.records if r.name == LOGGER_NAME]
    start = next(i for i, line in enumerate(lines) if line.startswith("C: MAIL FROM:"))
    assert lines[start + 1:start + 9] == [
        "C: RCPT TO:<a@example.test>", "C: RCPT TO:<b@example.test>", "C: DATA",
        "S: 250 2.1.0 Ok", "S: 250 2.1.5 Ok", "S: 550 5.1.1 no such user",
        "S: 354 End data with <CR><LF>.<CR><LF>", f"C: <message data: {len(BODY) + 4} bytes>"]
    assert any("offers PIPELINING" in line for line in lines)
    assert not [line for line in lines if "must-not-be-logged" in line]
    assert len(srv.messages) == 1


async def test_pipelining_over_implicit_tls(smtp_ca: trustme.CA, tmp_path: Path) -> None:
    # TLS records, not TCP segments, carry the replies here: they still come back together.
    ctx = server_context(smtp_ca, "smtp.sendgrid.com", "ok", tmp_path)
    cafile = tmp_path / "ca.pem"
    smtp_ca.cert_pem.write_to_path(str(cafile))
    async with pipelining_smtpd(tls=ctx) as srv:
        config = TransportConfig(host="127.0.0.1", port=srv.port, tls_mode="implicit",
                                 tls_name="smtp.sendgrid.com", cafile=str(cafile),
                                 timeouts=Timeouts(connect=3, read=3))
        async with SmtpTransport(config)() as session:
            assert session.is_tls and session.pipelining
            result = await session.send(envelope("a@example.test", "b@example.test"))
    assert verbs_of(srv.group_reads()) == [["MAIL", "RCPT", "RCPT", "DATA"]]
    assert result.reply[0] == 250 and len(srv.messages) == 1


@pytest.mark.parametrize("enabled", [True, False])
async def test_a_line_break_in_an_address_cannot_inject_a_command(enabled: bool) -> None:
    # Both paths quote addresses with aiosmtplib's quote_address, which keeps the address only.
    # (The outbox refuses such envelopes before this point: this is the second line of defence.)
    async with pipelining_smtpd() as srv:
        async with transport(srv.port, pipelining=enabled)() as session:
            await session.send(envelope("a@example.test\r\nRCPT TO:<evil@example.test>"))
    assert [line for read in srv.group_reads() for line in read][1:] == ["RCPT TO:<a@example.test>", "DATA"]
    assert [m.rcpt_tos for m in srv.messages] == [("a@example.test",)]



def _prepare_data_reference(data: bytes) -> bytes:
    """The two unconditional regex passes _prepare_data had before its fast path."""
    data = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return re.sub(rb"(?m)^\.", b"..", data) + b".\r\n"


@given(st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"\r\n.", b"x y"]), max_size=30))
def test_prepare_data_fast_path_matches_the_plain_rewrite(parts: list[bytes]) -> None:
    data = b"".join(parts)
    assert _prepare_data(data) == _prepare_data_reference(data)


@pytest.mark.parametrize("value, expected", [(None, [["MAIL", "RCPT", "DATA"]]),
                                             ("false", [["MAIL"], ["RCPT"], ["DATA"]])])
async def test_the_pipelining_property_reaches_the_session(value: str | None,
                                                           expected: list[list[str]]) -> None:
    from egressmail.mail.settings import parse_mail_settings

    async with pipelining_smtpd() as srv:
        props: dict[str, object] = {"smtp.host": "127.0.0.1", "smtp.port": srv.port,
                                    "from.address": SENDER, "smtp.ssl": False,
                                    "egressmail.tls.servername": NAME}
        if value is not None:
            props["egressmail.smtp.pipelining"] = value
        config = TransportConfig.from_settings(parse_mail_settings(props))
        async with SmtpTransport(config)() as session:
            await session.send(envelope("a@example.test"))
    assert verbs_of(srv.group_reads()) == expected
