from __future__ import annotations

import pytest

from egressmail.mail.errors import MailConfigError
from egressmail.mail.lint import lint, raise_for_errors
from egressmail.mail.settings import parse_mail_settings, parse_oauth_settings
from egressmail.networking.model import EgressMap, EnvironmentNetworking, Infrastructure, Kind, PortForward

SEED = {"smtp.host": "proxy.tunnel", "smtp.port": "30002", "smtp.user": "apikey",
        "smtp.password": "password123", "from.address": "noreply@wknd.site", "smtp.ssl": True,
        "smtp.starttls": False, "smtp.requiretls": False, "debug.email": False, "oauth.flow": False}


def egress(*forwards: PortForward, kind: Kind | None = Kind.FLEXIBLE_PORT_EGRESS,
           enabled: bool = True) -> EgressMap:
    return EgressMap(program="1001", environment="2002",
                     infrastructure=Infrastructure(kind) if kind else None,
                     networking=EnvironmentNetworking(port_forwards=forwards) if enabled else None)


SEED_MAP = egress(PortForward("smtp.sendgrid.com", 465, 30002))


def codes(props: dict[str, object], emap: EgressMap | None = SEED_MAP) -> list[str]:
    return [f.code for f in lint(parse_mail_settings(props), emap)]


def test_the_seed_is_clean() -> None:
    assert lint(parse_mail_settings(SEED), SEED_MAP) == []


def test_provider_port_instead_of_port_orig() -> None:
    [f] = lint(parse_mail_settings({**SEED, "smtp.port": 465}), SEED_MAP)
    assert (f.code, f.severity, f.property) == ("provider-port", "error", "smtp.port")
    assert 'set smtp.port to "30002"' in f.message
    [f] = lint(parse_mail_settings({**SEED, "smtp.port": "587", "smtp.ssl": False}), SEED_MAP)
    assert f.code == "provider-port" and "30587" in f.message


def test_ssl_mismatch_seen_from_the_forward() -> None:
    m587 = egress(PortForward("smtp.sendgrid.net", 587, 30587))
    [f] = lint(parse_mail_settings({**SEED, "smtp.port": 30587}), m587)
    assert f.code == "ssl-mismatch" and "set smtp.ssl to false" in f.message
    [f] = lint(parse_mail_settings({**SEED, "smtp.ssl": False}), SEED_MAP)
    assert f.code == "ssl-mismatch" and "set smtp.ssl to true" in f.message


def test_without_an_egress_map_well_known_ports_still_pair_with_tls() -> None:
    assert codes({**SEED, "smtp.port": 465, "smtp.ssl": False}, None) == ["ssl-mismatch"]
    assert codes({**SEED, "smtp.port": 587, "smtp.ssl": False}, None) == []
    assert codes({**SEED, "smtp.port": 2525}, None) == ["ssl-mismatch"]


def test_unresolved_placeholder_says_which_secret_to_set() -> None:
    settings = parse_mail_settings({**SEED, "smtp.password": "$[secret:EMAIL_PASSWORD]"})
    [f] = lint(settings, SEED_MAP)
    assert (f.code, f.severity, f.property) == ("unresolved-placeholder", "error", "smtp.password")
    assert "--secret EMAIL_PASSWORD" in f.message
    with pytest.raises(MailConfigError, match="cannot start.*EMAIL_PASSWORD"):
        raise_for_errors([f], "mail.cfg.json")
    # with oauth.flow the password is unused: only a warning
    settings = parse_mail_settings({**SEED, "smtp.password": "$[secret:EMAIL_PASSWORD]", "oauth.flow": True},
                                   oauth=parse_oauth_settings({"refreshUrl": "https://t/x", "clientId": "c",
                                                               "refreshToken": "r"}))
    assert [(f.code, f.severity) for f in lint(settings, SEED_MAP)] == [("unresolved-placeholder", "warning")]


def test_env_placeholder_in_port() -> None:
    [f] = lint(parse_mail_settings({**SEED, "smtp.port": "$[env:SMTP_PORT]"}), SEED_MAP)
    assert f.property == "smtp.port" and "--variable SMTP_PORT" in f.message


@pytest.mark.parametrize("value", ["password123 ", "\tpassword123", "password123\n"])
def test_secret_with_stray_whitespace(value: str) -> None:
    findings = lint(parse_mail_settings({**SEED, "smtp.password": value}), SEED_MAP)
    assert [(f.code, f.severity) for f in findings] == [("secret-whitespace", "error")]
    assert "password123" not in findings[0].message


def test_gateway_environment_without_a_kind_or_networking() -> None:
    [f] = lint(parse_mail_settings(SEED), egress(kind=None))
    assert f.code == "no-kind" and "flexiblePortEgress" in f.message
    [f] = lint(parse_mail_settings(SEED), egress(enabled=False))
    assert f.code == "networking-disabled"


def test_undeclared_port_lists_the_declared_ones() -> None:
    [f] = lint(parse_mail_settings({**SEED, "smtp.port": 30003}), SEED_MAP)
    assert f.code == "no-forward" and "30002 -> smtp.sendgrid.com:465" in f.message


def test_warnings() -> None:
    assert codes({**SEED, "egressmail.auth.allowplaintext": True, "smtp.sll": True,
                  "egressmail.tls.servername": "other.example.com"}) == [
        "tls-name-override", "plaintext-auth", "unknown-property"]
    assert codes({**SEED, "oauth.flow": True}) == ["oauth-missing"]
    props = dict(SEED)
    del props["smtp.password"]
    assert codes(props) == ["no-password"]
    raise_for_errors(lint(parse_mail_settings(props), SEED_MAP), "x")  # warnings do not raise
