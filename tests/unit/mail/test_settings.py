from __future__ import annotations

import json

import pytest

from egressmail.mail.errors import MailConfigError
from egressmail.mail.settings import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_READ_TIMEOUT_S,
    Secret,
    parse_mail_settings,
    parse_oauth_settings,
)
from tests.conftest import SEED_CONFIG_FILE

BASE = {"smtp.host": "proxy.tunnel", "from.address": "noreply@wknd.site"}


def test_seed_file_as_written_parses() -> None:
    props = json.loads(SEED_CONFIG_FILE.read_text())
    props["smtp.host"] = "proxy.tunnel"
    props["smtp.user"] = "apikey"
    props["smtp.password"] = "password123"
    s = parse_mail_settings(props, source=str(SEED_CONFIG_FILE))
    assert s.port == 30002
    assert s.ssl is True and s.starttls is False and s.starttls_configured is False
    assert s.requiretls is False and s.debug is False and s.oauth_flow is False
    assert s.user == "apikey"
    assert isinstance(s.password, Secret) and s.password.reveal() == "password123"
    assert s.unresolved == ()
    assert "password123" not in repr(s)
    assert s.timeouts.connect == DEFAULT_CONNECT_TIMEOUT_S < 60
    assert s.timeouts.read == DEFAULT_READ_TIMEOUT_S < 60


@pytest.mark.parametrize(("port", "expected"), [("30002", 30002), (30465, 30465), (" 587 ", 587)])
def test_port_as_number_or_numeric_string(port: object, expected: int) -> None:
    assert parse_mail_settings({**BASE, "smtp.port": port}).port == expected


@pytest.mark.parametrize("port", ["abc", "0", 70000, True, 30.5, "-1"])
def test_bad_port_names_file_property_and_value(port: object) -> None:
    with pytest.raises(MailConfigError) as info:
        parse_mail_settings({**BASE, "smtp.port": port}, source="/x/mail.cfg.json")
    text = str(info.value)
    assert "/x/mail.cfg.json" in text and "'smtp.port'" in text and repr(port) in text
    assert info.value.exit_code == 2


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), ("true", True),
                                                  ("false", False), ("TRUE", True)])
def test_booleans_json_or_strings(value: object, expected: bool) -> None:
    s = parse_mail_settings({**BASE, "smtp.ssl": value, "smtp.requiretls": value, "debug.email": value})
    assert s.ssl is s.requiretls is s.debug is expected
    assert s.starttls is (not expected)  # the platform's override


@pytest.mark.parametrize("value", ["yes", 1, "1", [], "truth"])
def test_bad_boolean(value: object) -> None:
    with pytest.raises(MailConfigError, match="'smtp.ssl'.*expected a boolean"):
        parse_mail_settings({**BASE, "smtp.ssl": value})


def test_starttls_in_file_is_overridden_by_not_ssl() -> None:
    s = parse_mail_settings({**BASE, "smtp.ssl": False, "smtp.starttls": False})
    assert s.starttls is True and s.tls_mode == "starttls"
    s = parse_mail_settings({**BASE, "smtp.ssl": True, "smtp.starttls": True})
    assert s.starttls is False and s.tls_mode == "implicit"


def test_missing_host_and_blank_from() -> None:
    with pytest.raises(MailConfigError, match="'smtp.host' is not set"):
        parse_mail_settings({"from.address": "a@b.c"})
    with pytest.raises(MailConfigError, match="'from.address' is blank"):
        parse_mail_settings({"smtp.host": "h", "from.address": "  "})


def test_secret_values_are_never_shown_in_errors() -> None:
    with pytest.raises(MailConfigError) as info:
        parse_mail_settings({**BASE, "smtp.password": ["hunter2-secret"]})
    assert "hunter2" not in str(info.value) and "****" in str(info.value)
    with pytest.raises(MailConfigError) as info:
        parse_mail_settings({**BASE, "smtp.user": {"k": "user-secret"}}, secret_properties={"smtp.user"})
    assert "user-secret" not in str(info.value)


def test_unresolved_placeholders_are_recorded_not_raised() -> None:
    s = parse_mail_settings({**BASE, "smtp.password": "$[secret:EMAIL_PASSWORD]",
                             "smtp.port": "$[env:SMTP_PORT]"})
    assert ("smtp.password", "$[secret:EMAIL_PASSWORD]") in s.unresolved
    assert ("smtp.port", "$[env:SMTP_PORT]") in s.unresolved
    # given explicitly by the config part, detection is not used
    s = parse_mail_settings({**BASE, "smtp.password": "$[secret:X]"}, unresolved={})
    assert s.unresolved == ()


def test_extension_properties() -> None:
    s = parse_mail_settings({**BASE, "egressmail.tls.servername": "SMTP.SendGrid.NET",
                             "egressmail.tls.cafile": "/etc/ca.pem", "egressmail.timeout.connect": "2.5",
                             "egressmail.timeout.read": 7, "egressmail.auth.allowplaintext": "true",
                             "egressmail.ehlo.name": "app.example.com", "smtp.porrt": "1"})
    assert s.tls_server_name == "smtp.sendgrid.net"
    assert s.cafile == "/etc/ca.pem"
    assert (s.timeouts.connect, s.timeouts.read) == (2.5, 7.0)
    assert s.allow_plaintext_auth is True
    assert s.ehlo_name == "app.example.com"
    assert s.unknown_properties == ("smtp.porrt",)
    with pytest.raises(MailConfigError, match="egressmail.timeout.read"):
        parse_mail_settings({**BASE, "egressmail.timeout.read": "0"})
    with pytest.raises(MailConfigError, match="egressmail.tls.servername"):
        parse_mail_settings({**BASE, "egressmail.tls.servername": "bad name!"})


def test_oauth_settings() -> None:
    o = parse_oauth_settings({"refreshUrl": "https://login.example.com/token", "clientId": "cid",
                              "clientSecret": "cs-secret", "refreshToken": "rt-secret",
                              "scopes": ["https://outlook.office.com/SMTP.Send", "offline_access"]})
    assert o.scopes == ("https://outlook.office.com/SMTP.Send", "offline_access")
    assert "rt-secret" not in repr(o) and "cs-secret" not in repr(o)
    with pytest.raises(MailConfigError, match="https"):
        parse_oauth_settings({"refreshUrl": "http://x/token", "clientId": "c", "refreshToken": "r"})
    with pytest.raises(MailConfigError, match="'refreshToken' is not set"):
        parse_oauth_settings({"refreshUrl": "https://x/token", "clientId": "c"})
