from __future__ import annotations

import base64
import logging

import pytest

from egressmail.mail.errors import MailConfigError, PermanentDeliveryError, TransientDeliveryError
from egressmail.mail.settings import parse_mail_settings
from egressmail.mail.tls import client_context, tls_identity, trust_source
from egressmail.mail.transcript import Transcript, new_session_id
from egressmail.mail.transport import _prepare_data, classify_reply
from egressmail.networking.model import EgressMap, EnvironmentNetworking, Infrastructure, Kind, PortForward

SEED_MAP = EgressMap("1001", "2002", Infrastructure(Kind.FLEXIBLE_PORT_EGRESS),
                     EnvironmentNetworking((PortForward("smtp.sendgrid.com", 465, 30002),)))
BASE = {"smtp.host": "proxy.tunnel", "smtp.port": "30002", "from.address": "a@example.com", "smtp.ssl": True}


def test_tls_name_order_override_forward_host() -> None:
    assert tls_identity(parse_mail_settings(BASE), SEED_MAP).name == "smtp.sendgrid.com"
    assert tls_identity(parse_mail_settings(BASE), SEED_MAP).reason == "forward"
    over = parse_mail_settings({**BASE, "egressmail.tls.servername": "smtp.sendgrid.net"})
    assert tls_identity(over, SEED_MAP).name == "smtp.sendgrid.net"
    assert tls_identity(parse_mail_settings(BASE), None).name == "proxy.tunnel"
    other_port = parse_mail_settings({**BASE, "smtp.port": 30003})
    assert tls_identity(other_port, SEED_MAP).reason == "host"


def test_trust_source_and_bad_bundle(tmp_path) -> None:
    assert trust_source("/a.pem", {"SSL_CERT_FILE": "/b.pem"}) == "/a.pem"
    assert trust_source(None, {"SSL_CERT_FILE": "/b.pem"}) == "/b.pem"
    assert trust_source(None, {}) is None
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(MailConfigError, match="egressmail.tls.cafile"):
        client_context(str(bad))
    with pytest.raises(MailConfigError, match="SSL_CERT_FILE"):
        client_context(None, {"SSL_CERT_FILE": str(tmp_path / "missing.pem")})


def test_transcript_masks_secrets_in_any_form(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="egressmail.mail.transcript")
    t = Transcript("abc@127.0.0.1:1", enabled=True, secrets=["hunter2-long-secret"])
    t.client("XSECRET hunter2-long-secret")
    for prefix in ("", "\0", "user\0"):
        t.client(base64.b64encode(f"{prefix}hunter2-long-secret".encode()).decode())
    t.client_auth("PLAIN")
    t.server(250, "first\nsecond")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "hunter2" not in text and "aHVudGVy" not in text
    assert "C: AUTH PLAIN ****" in text
    assert "S: 250-first" in text and "S: 250 second" in text


def test_disabled_transcript_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    Transcript("x", enabled=False).client("EHLO a")
    assert caplog.records == []


def test_session_id_carries_the_local_address() -> None:
    assert new_session_id(("127.0.0.1", 5555)).endswith("@127.0.0.1:5555")
    assert new_session_id(("::1", 5555)).endswith("@[::1]:5555")


def test_data_dot_stuffing_and_line_endings() -> None:
    assert _prepare_data(b"a\n.b\r\n..c\rd") == b"a\r\n..b\r\n...c\r\nd\r\n.\r\n"
    assert _prepare_data(b".\r\n") == b"..\r\n.\r\n"


@pytest.mark.parametrize(("code", "cls"), [(421, TransientDeliveryError), (451, TransientDeliveryError),
                                           (550, PermanentDeliveryError), (554, PermanentDeliveryError),
                                           (-1, TransientDeliveryError)])
def test_reply_classes(code: int, cls: type) -> None:
    assert classify_reply(code) is cls
