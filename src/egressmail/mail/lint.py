"""Checks run before the first connection: the misconfigurations users hit most, each with its fix.

:func:`lint` is pure: settings and the environment's egress map in, findings out. An ``error``
finding stops the mail service from starting (``MailService`` raises
:class:`~egressmail.mail.errors.MailConfigError` listing them); a ``warning`` is reported and the
service carries on. Messages never contain a secret value, only property and secret names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from egressmail.mail.errors import MailConfigError
from egressmail.mail.settings import (
    EXT_ALLOW_PLAINTEXT_AUTH,
    EXT_TLS_SERVER_NAME,
    OAUTH_FLOW,
    OAUTH_PID,
    SMTP_PASSWORD,
    SMTP_PORT,
    SMTP_SSL,
    SMTP_USER,
    MailSettings,
    Secret,
)
from egressmail.networking.model import EgressMap, PortForward

Severity = Literal["error", "warning"]

IMPLICIT_TLS_PORTS = frozenset({465})
STARTTLS_PORTS = frozenset({25, 587, 2525})
PROVIDER_PORTS = IMPLICIT_TLS_PORTS | STARTTLS_PORTS
_PLACEHOLDER_PARTS = re.compile(r"\$\[(?P<kind>env|secret|prop|conf):(?P<name>[^;\]]*)")


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: a stable ``code``, how bad it is, the property concerned and what to change."""

    code: str
    severity: Severity
    property: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.property}: " if self.property else ""
        return f"{self.severity}: {where}{self.message}"


def _placeholder_fix(placeholder: str) -> str:
    m = _PLACEHOLDER_PARTS.match(placeholder)
    if m is None:  # pragma: no cover - UNRESOLVED_PLACEHOLDER only yields these four kinds
        return "give the placeholder a value"
    name = m.group("name")
    return {
        "secret": f"set the secret {name} in this environment (egressmail cloudmanager:set-environment-"
                  f"variables --programId=PROGRAM ENVIRONMENT --secret {name} VALUE)",
        "env": f"set the variable {name} in this environment (--variable {name} VALUE) or add a "
               f"';default=...' to the placeholder",
        "prop": f"define the framework/system property {name} or add a ';default=...'",
        "conf": f"add the property {name} to the same configuration",
    }[m.group("kind")]


def _forward_list(forwards: tuple[PortForward, ...]) -> str:
    if not forwards:
        return "none"
    return ", ".join(f"{f.port_orig} -> {f.name}:{f.port_dest}" for f in forwards)


def _secret_values(settings: MailSettings) -> list[tuple[str, Secret | str | None]]:
    items: list[tuple[str, Secret | str | None]] = [(SMTP_PASSWORD, settings.password)]
    if SMTP_USER in settings.secret_properties:
        items.append((SMTP_USER, settings.user))
    if settings.oauth is not None:
        items += [("clientSecret", settings.oauth.client_secret),
                  ("refreshToken", settings.oauth.refresh_token)]
    return items


def _lint_placeholders(settings: MailSettings) -> list[Finding]:
    out: list[Finding] = []
    unused = {SMTP_PASSWORD} if settings.oauth_flow else set()
    if not settings.oauth_flow and settings.oauth is not None:
        unused |= {k for k, _ in settings.oauth.unresolved}
    unresolved = list(settings.unresolved)
    if settings.oauth is not None:
        unresolved += settings.oauth.unresolved
    for prop, placeholder in unresolved:
        severity: Severity = "warning" if prop in unused else "error"
        out.append(Finding(
            "unresolved-placeholder", severity, prop,
            f"the value still holds the placeholder {placeholder} (no value was found for it): "
            f"{_placeholder_fix(placeholder)}"))
    return out


def _lint_secrets(settings: MailSettings) -> list[Finding]:
    out: list[Finding] = []
    for prop, value in _secret_values(settings):
        text = value.reveal() if isinstance(value, Secret) else value
        if text and text != text.strip():
            out.append(Finding(
                "secret-whitespace", "error", prop,
                "the secret value starts or ends with whitespace (a space or line break), which makes "
                "authentication fail: set the secret again without it (SendGrid warns about this for "
                "API keys)"))
    if settings.user and settings.password is None and not settings.oauth_flow:
        out.append(Finding("no-password", "warning", SMTP_PASSWORD,
                           f"{SMTP_USER} is set but {SMTP_PASSWORD} is not: AUTH will send an empty "
                           "password; set it to \"$[secret:EMAIL_PASSWORD]\""))
    if settings.oauth_flow and settings.oauth is None:
        out.append(Finding("oauth-missing", "error", OAUTH_FLOW,
                           f"{OAUTH_FLOW} is true but there is no {OAUTH_PID} configuration: add "
                           f"{OAUTH_PID}.cfg.json (refreshUrl, clientId, refreshToken) or set "
                           f"{OAUTH_FLOW} to false"))
    if settings.oauth_flow and not settings.user:
        out.append(Finding("oauth-user", "error", SMTP_USER,
                           "XOAUTH2 needs the mailbox's address as the user name: set smtp.user"))
    return out


def _lint_tls_for_port(settings: MailSettings, dest_port: int, where: str) -> list[Finding]:
    if settings.ssl and dest_port in STARTTLS_PORTS:
        return [Finding("ssl-mismatch", "error", SMTP_SSL,
                        f"smtp.ssl is true but {where} is port {dest_port}, where the server expects "
                        "plain text then STARTTLS: set smtp.ssl to false (STARTTLS is then used)")]
    if not settings.ssl and dest_port in IMPLICIT_TLS_PORTS:
        return [Finding("ssl-mismatch", "error", SMTP_SSL,
                        f"smtp.ssl is false but {where} is port {dest_port}, which speaks TLS from the "
                        "first byte: set smtp.ssl to true")]
    return []


def _lint_egress(settings: MailSettings, egress: EgressMap) -> list[Finding]:
    env = f"environment {egress.environment} of program {egress.program}"
    if egress.kind is None:
        return [Finding("no-kind", "error", None,
                        f"program {egress.program} has no advanced networking, so mail cannot leave "
                        f"{env}: create a network infrastructure of kind flexiblePortEgress (or "
                        "dedicatedEgressIp / vpn) and a port forward to the mail provider")]
    if not egress.is_enabled:
        return [Finding("networking-disabled", "error", None,
                        f"advanced networking is not enabled for {env}: enable it with a portForwards "
                        "rule to the mail provider, e.g. "
                        '{"portForwards": [{"name": "smtp.sendgrid.net", "portDest": 465, '
                        '"portOrig": 30465}]}')]
    if settings.unresolved and any(p == SMTP_PORT for p, _ in settings.unresolved):
        return []
    forwards = egress.port_forwards
    forward = egress.forward_for(settings.port)
    if forward is None:
        same_dest = [f for f in forwards if f.port_dest == settings.port]
        if settings.port in PROVIDER_PORTS and same_dest:
            f = same_dest[0]
            return [Finding("provider-port", "error", SMTP_PORT,
                            f"smtp.port is {settings.port}, the provider's port; connect to the gateway's "
                            f"portOrig instead: set smtp.port to \"{f.port_orig}\" (the rule forwarding "
                            f"to {f.name}:{f.port_dest})")]
        if settings.port in PROVIDER_PORTS:
            return [Finding("provider-port", "error", SMTP_PORT,
                            f"smtp.port is {settings.port}, a provider's port, but the gateway only "
                            f"listens on the portOrig of a port forward: add a rule such as "
                            f'{{"name": "<provider host>", "portDest": {settings.port}, '
                            f'"portOrig": {30000 + settings.port}}} and set smtp.port to '
                            f'"{30000 + settings.port}" (declared: {_forward_list(forwards)})')]
        return [Finding("no-forward", "error", SMTP_PORT,
                        f"no port forward of {env} has portOrig {settings.port}: set smtp.port to the "
                        f"portOrig of a declared rule (declared: {_forward_list(forwards)}) or add one")]
    out = _lint_tls_for_port(settings, forward.port_dest,
                             f"the forward {forward.port_orig} -> {forward.name}:{forward.port_dest}")
    if settings.tls_server_name and settings.tls_server_name != forward.name:
        out.append(Finding("tls-name-override", "warning", EXT_TLS_SERVER_NAME,
                           f"the certificate is checked for {settings.tls_server_name!r}, not for the "
                           f"forward's name {forward.name!r}: remove {EXT_TLS_SERVER_NAME} unless the "
                           "provider's certificate really names that host"))
    return out


def lint(settings: MailSettings, egress_map: EgressMap | None = None) -> list[Finding]:
    """Check ``settings`` (against the environment's egress map when there is one).

    Without an egress map the service connects straight to ``smtp.host:smtp.port`` (an app that does
    not use the gateway), so only the port/TLS pairing of well-known ports is checked.
    """
    findings = _lint_placeholders(settings) + _lint_secrets(settings)
    if egress_map is not None:
        findings += _lint_egress(settings, egress_map)
    elif not any(p == SMTP_PORT for p, _ in settings.unresolved):
        findings += _lint_tls_for_port(settings, settings.port, f"{settings.host}:{settings.port}")
    if settings.allow_plaintext_auth:
        findings.append(Finding("plaintext-auth", "warning", EXT_ALLOW_PLAINTEXT_AUTH,
                                "credentials may be sent over an unencrypted connection: remove "
                                f"{EXT_ALLOW_PLAINTEXT_AUTH} unless the server is on a trusted network"))
    for prop in settings.unknown_properties:
        findings.append(Finding("unknown-property", "warning", prop,
                                "not a property of the mail service: check the spelling "
                                "(docs/mail.md lists the properties)"))
    return findings


def raise_for_errors(findings: list[Finding], source: str) -> None:
    """Raise when any finding is an error.

    Raises:
        MailConfigError: at least one ``error`` finding; the message lists all of them.
    """
    errors = [f for f in findings if f.severity == "error"]
    if not errors:
        return
    lines = "; ".join(f"{f.property + ': ' if f.property else ''}{f.message}" for f in errors)
    raise MailConfigError(f"{source}: the mail service cannot start: {lines}", stage="config",
                          hint="fix the configuration as described, then send again")
