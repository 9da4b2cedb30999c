"""``egressmail doctor``: check every layer from configuration to SMTP AUTH; name the first that fails.

Theory of operation
-------------------
Sending mail from a locked-down network crosses many layers, and a failure in any of them looks the
same from the application ("could not send"). The doctor walks them in order and stops at the
first that fails, so the report says *which* layer and what to change::

    config     the .cfg.json resolves (run modes, placeholders) and passes the lint
    forward    smtp.port is the portOrig of a port forward of the environment (the provider's name)
    gateway    smtp.host (the gateway, ``proxy.tunnel``) resolves to an address
    tcp        a TCP connection to smtp.host:smtp.port opens (the gateway listens)
    tls        implicit TLS: the handshake succeeds and the certificate is valid for the provider's name
    greeting   the server's 220 arrives through the tunnel
    ehlo       EHLO is answered; its capabilities are listed
    starttls   STARTTLS mode: offered, and the certificate is valid for the provider's name
    auth       the credentials are accepted (no MAIL is ever sent)

The report model (:class:`LayerResult`, :class:`DoctorReport`) is pure. The probes are async and
use the mail part's own pieces: :func:`~egressmail.mail.tls.tls_identity` for the name to verify,
:func:`~egressmail.mail.tls.client_context` for trust, and
:meth:`~egressmail.mail.transport.SmtpTransport.open` for greeting → EHLO → STARTTLS → AUTH, whose
error ``stage`` names the failing layer and whose redacted transcript gives the details (the
greeting, the capabilities). Nothing here prints a secret: details come from the settings' public
fields and the redacted transcript.

:func:`~egressmail.mail.service_config.load_service_config` reads the configuration the way the
service does, so the doctor checks exactly what would run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from egressmail.errors import EgressMailError
from egressmail.mail.errors import MailConfigError, MailError
from egressmail.mail.lint import lint
from egressmail.mail.service_config import ServiceConfig, load_service_config
from egressmail.mail.tls import client_context, describe_tls_failure, tls_identity, trust_source
from egressmail.mail.transcript import TranscriptCapture
from egressmail.mail.transport import SmtpTransport, TransportConfig
from egressmail.storage.sqlite import Database

# ---------------------------------------------------------------------------------------------
# The report (pure)


class Layer(StrEnum):
    """The layers, in the order they are checked."""

    CONFIG = "config"
    FORWARD = "forward"
    GATEWAY = "gateway"
    TCP = "tcp"
    TLS = "tls"
    GREETING = "greeting"
    EHLO = "ehlo"
    STARTTLS = "starttls"
    AUTH = "auth"


LAYER_TITLES: Final[Mapping[Layer, str]] = {
    Layer.CONFIG: "configuration resolves",
    Layer.FORWARD: "port forward declared",
    Layer.GATEWAY: "gateway reachable (name resolves)",
    Layer.TCP: "TCP connection",
    Layer.TLS: "TLS handshake and certificate name",
    Layer.GREETING: "SMTP greeting",
    Layer.EHLO: "EHLO capabilities",
    Layer.STARTTLS: "STARTTLS",
    Layer.AUTH: "AUTH",
}


class Status(StrEnum):
    """How a layer fared."""

    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class LayerResult:
    """One line of the report: the layer, how it fared, a detail (never a secret) and a remedy."""

    layer: Layer
    status: Status
    detail: str
    hint: str | None = None

    @property
    def title(self) -> str:
        """The layer's human name."""
        return LAYER_TITLES[self.layer]


@dataclass(frozen=True, slots=True)
class DoctorReport:
    """Every layer's result, in order; the first failure is the one to fix."""

    results: tuple[LayerResult, ...]

    @property
    def first_failure(self) -> LayerResult | None:
        """The first layer that failed, or ``None`` when all passed (or were not applicable)."""
        return next((r for r in self.results if r.status is Status.FAILED), None)

    @property
    def ok(self) -> bool:
        """True when no layer failed."""
        return self.first_failure is None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (``--json``)."""
        failure = self.first_failure
        return {
            "ok": self.ok,
            "first_failure": failure.layer.value if failure is not None else None,
            "layers": [{"layer": r.layer.value, "title": r.title, "status": r.status.value,
                        "detail": r.detail, **({"hint": r.hint} if r.hint else {})}
                       for r in self.results],
        }


def build_report(results: Iterable[LayerResult]) -> DoctorReport:
    """Order ``results`` by layer and mark every layer without a result as skipped.

    A layer after a failure is "not checked"; a layer before it that has no result was not
    applicable (e.g. ``tls`` in STARTTLS mode is reported by its own probe).
    """
    by_layer = {r.layer: r for r in results}
    failed_at = next((layer for layer in Layer if layer in by_layer
                      and by_layer[layer].status is Status.FAILED), None)
    out: list[LayerResult] = []
    after_failure = False
    for layer in Layer:
        result = by_layer.get(layer)
        if result is None or (after_failure and result.status is not Status.FAILED):
            reason = "not applicable"
            if after_failure and failed_at is not None:
                reason = f"not checked: {failed_at.value} failed"
            result = LayerResult(layer, Status.SKIPPED, reason)
        out.append(result)
        if layer is failed_at:
            after_failure = True
    return DoctorReport(tuple(out))


class DoctorFailed(EgressMailError):
    """A layer failed; the message names it and the hint says what to change."""

    def __init__(self, report: DoctorReport) -> None:
        failure = report.first_failure
        assert failure is not None  # noqa: S101 - only raised for a failed report
        super().__init__(f"the first failing layer is {failure.layer.value} ({failure.title}): "
                         f"{failure.detail}", hint=failure.hint)
        self.report = report
        self.layer = failure.layer


# ---------------------------------------------------------------------------------------------
# The probes


@dataclass(frozen=True, slots=True)
class DoctorOptions:
    """How the probes connect.

    Attributes:
        gateway: dial this host instead of ``smtp.host`` (e.g. ``127.0.0.1`` where ``proxy.tunnel``
            does not resolve); the TLS name does not change.
        cafile: trust this CA bundle (else ``egressmail.tls.cafile``, else ``$SSL_CERT_FILE``, else the
            system's).
        connect_timeout / read_timeout: per phase, in seconds (default: the settings').
    """

    gateway: str | None = None
    cafile: str | None = None
    connect_timeout: float | None = None
    read_timeout: float | None = None


def _fail(layer: Layer, detail: str, hint: str | None = None) -> LayerResult:
    return LayerResult(layer, Status.FAILED, detail, hint)


def _ok(layer: Layer, detail: str) -> LayerResult:
    return LayerResult(layer, Status.OK, detail)


def check_config(loaded: ServiceConfig) -> list[LayerResult]:
    """The ``config`` and ``forward`` layers from a loaded configuration (pure)."""
    s = loaded.settings
    own = set(lint(s, None))
    config_errors = [f for f in loaded.errors if f in own]
    egress_errors = [f for f in loaded.errors if f not in own]
    results: list[LayerResult] = []
    if config_errors:
        first = config_errors[0]
        more = f" (and {len(config_errors) - 1} more)" if len(config_errors) > 1 else ""
        results.append(_fail(Layer.CONFIG, f"{first.property or loaded.path.name}: {first.message}{more}",
                             "fix the configuration or the environment's variables and secrets"))
        return results
    user = "****" if s.user and "smtp.user" in s.secret_properties else (s.user or "(none)")
    password = "****" if s.password is not None and s.password.reveal() else "(none)"
    results.append(_ok(Layer.CONFIG, f"{loaded.path.name}: smtp.host={s.host} smtp.port={s.port} "
                                     f"TLS {s.tls_mode} user={user} password={password}"))
    egress = loaded.egress_map
    if egress is None:
        results.append(LayerResult(Layer.FORWARD, Status.SKIPPED, "no environment given: direct connection"))
        return results
    if egress_errors:
        first = egress_errors[0]
        results.append(_fail(Layer.FORWARD, first.message,
                             f"egressmail network show {egress.program} {egress.environment}"))
        return results
    forward = egress.forward_for(s.port)
    if forward is None:  # pragma: no cover - the lint reports it as an error above
        results.append(_fail(Layer.FORWARD, f"no port forward has portOrig {s.port}"))
        return results
    results.append(_ok(Layer.FORWARD, f"{forward.port_orig} → {forward.name}:{forward.port_dest} "
                                      f"({egress.kind.value if egress.kind else '-'}, program "
                                      f"{egress.program}, environment {egress.environment})"))
    return results


def _server_lines(lines: list[str], first_code: str) -> list[str]:
    """The text of the server reply lines (``S: 250-...``) of the reply starting with ``first_code``."""
    out: list[str] = []
    for line in lines:
        _, _, rest = line.partition(" S: ")
        if rest and rest.startswith(first_code):
            out.append(rest[4:])
    return out


def _capabilities(lines: list[str]) -> list[str]:
    """The EHLO capabilities of the last EHLO reply in a transcript (after STARTTLS, if any)."""
    last: list[str] = []
    current: list[str] | None = None
    for line in lines:
        _, _, text = line.partition(": ")
        if " C: EHLO" in line or " C: HELO" in line:
            current = []
            continue
        if current is not None and " S: 250" in line:
            current.append(text[4:])
            if text[3:4] == " ":
                last, current = current, None
    return list(last[1:])  # the first line is the server's name


async def _resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in out:
            out.append(address)
    return out


def _cert_summary(ssl_object: ssl.SSLObject | None) -> str:
    if ssl_object is None:  # pragma: no cover - an SSL connection always has one
        return ""
    cert: dict[str, Any] = dict(ssl_object.getpeercert() or {})

    def name_of(field_name: str) -> str:
        for rdn in cert.get(field_name, ()):
            for pair in rdn:
                if pair[0] in ("commonName", "organizationName"):
                    return str(pair[1])
        return "?"

    expires = cert.get("notAfter", "?")
    return f"{ssl_object.version()}, issued by {name_of('issuer')}, valid until {expires}"


LOST_HINT = ("the gateway accepted the connection but it ended: the gateway could not reach the "
             "provider (see its access log: end=connect-failed) or the provider closed it")


async def run_probes(loaded: ServiceConfig, options: DoctorOptions = DoctorOptions()) -> DoctorReport:
    """Check every layer after ``config``/``forward`` (which :func:`check_config` covers); never MAIL.

    Never raises for a failing layer: the report says which failed.
    """
    results = check_config(loaded)
    if any(r.status is Status.FAILED for r in results):
        return build_report(results)
    s = loaded.settings
    host = options.gateway or s.host
    identity = tls_identity(s, loaded.egress_map)
    connect_timeout = options.connect_timeout or s.timeouts.connect
    where = f"{host}:{s.port}"

    # gateway: the name resolves
    try:
        async with asyncio.timeout(connect_timeout):
            addresses = await _resolve(host, s.port)
    except (OSError, TimeoutError) as exc:
        hint = ("proxy.tunnel only resolves on the platform: set AEM_PROXY_HOST for the configuration, "
                "or give --gateway 127.0.0.1 where the gateway runs locally")
        results.append(_fail(Layer.GATEWAY, f"{host} does not resolve ({exc})", hint))
        return build_report(results)
    via = " (--gateway)" if options.gateway else ""
    results.append(_ok(Layer.GATEWAY, f"{host}{via} → {', '.join(addresses)}"))

    # tcp
    egress = loaded.egress_map
    env_words = f"{egress.program} {egress.environment}" if egress is not None else "PROGRAM ENVIRONMENT"
    try:
        async with asyncio.timeout(connect_timeout):
            _, writer = await asyncio.open_connection(host, s.port)
        writer.close()
        await _quiet_close(writer)
    except TimeoutError:
        results.append(_fail(Layer.TCP, f"no TCP connection to {where} within {connect_timeout:g} s",
                             "a firewall drops the packets, or the host is wrong"))
        return build_report(results)
    except OSError as exc:
        results.append(_fail(Layer.TCP, f"cannot connect to {where}: {exc.strerror or exc}",
                             f"start the gateway (egressmail gateway run {env_words}) so that it "
                             f"listens on {s.port}, or check smtp.host/smtp.port"))
        return build_report(results)
    results.append(_ok(Layer.TCP, f"connected to {where}"))

    cafile = options.cafile or s.cafile
    try:
        context = client_context(cafile)
    except MailConfigError as exc:
        results.append(_fail(Layer.TLS, exc.message, exc.hint))
        return build_report(results)
    trust = trust_source(cafile) or "the system's CA store"

    # tls (implicit only: in STARTTLS mode the handshake happens after EHLO)
    if s.ssl:
        try:
            async with asyncio.timeout(connect_timeout):
                _, writer = await asyncio.open_connection(host, s.port, ssl=context,
                                                          server_hostname=identity.name)
            summary = _cert_summary(writer.get_extra_info("ssl_object"))
            writer.close()
            await _quiet_close(writer)
        except TimeoutError:
            results.append(_fail(Layer.TLS, f"no TLS handshake with {where} within {connect_timeout:g} s",
                                 "the port may speak plain SMTP (STARTTLS): set smtp.ssl to false"))
            return build_report(results)
        except (OSError, ssl.SSLError) as exc:
            if isinstance(exc, ssl.SSLError):
                text, hint = describe_tls_failure(exc, where, identity.name)
            else:
                text, hint = f"the connection to {where} ended during the TLS handshake ({exc})", LOST_HINT
            results.append(_fail(Layer.TLS, text, hint))
            return build_report(results)
        results.append(_ok(Layer.TLS, f"certificate valid for {identity.name!r} ({identity.reason}); "
                                      f"{summary}; trusting {trust}"))

    # greeting → EHLO → STARTTLS → AUTH, through the mail client itself
    config = dataclasses.replace(
        TransportConfig.from_settings(s, loaded.egress_map), host=host, debug=True, cafile=cafile,
        timeouts=dataclasses.replace(s.timeouts, connect=connect_timeout,
                                     read=options.read_timeout or s.timeouts.read))
    results.extend(await _smtp_layers(config, trust))
    return build_report(results)


async def diagnose(config_path: Path | str, *, db: Database | None, program: str, environment: str,
                   run_modes: str | None = None, service: str | None = None,
                   options: DoctorOptions = DoctorOptions(), environ: Mapping[str, str] | None = None,
                   secret_dirs: Iterable[Path] = ()) -> DoctorReport:
    """Load the configuration the way the service would, then check every layer (never MAIL).

    A configuration that cannot be read (missing file, bad value, unknown environment, unreadable
    secret) is the ``config`` layer's failure, not an exception.
    """
    try:
        loaded = load_service_config(config_path, db=db, program=program, environment=environment,
                                     run_modes=run_modes, service=service, environ=environ,
                                     secret_dirs=secret_dirs)
    except EgressMailError as exc:
        return build_report([_fail(Layer.CONFIG, exc.message, exc.hint)])
    return await run_probes(loaded, options)


async def _quiet_close(writer: asyncio.StreamWriter) -> None:
    try:
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
    except (OSError, ssl.SSLError, TimeoutError):
        pass


_STAGE_LAYER: Final[Mapping[str, Layer]] = {
    "connect": Layer.TCP, "tls": Layer.TLS, "greeting": Layer.GREETING, "ehlo": Layer.EHLO,
    "starttls": Layer.STARTTLS, "auth": Layer.AUTH, "oauth": Layer.AUTH, "config": Layer.CONFIG,
}


async def _smtp_layers(config: TransportConfig, trust: str) -> list[LayerResult]:
    failure: MailError | None = None
    with TranscriptCapture() as capture:
        try:
            session = await SmtpTransport(config).open()
            await session.aclose()  # QUIT: the doctor never sends MAIL
        except MailError as exc:
            failure = exc
    lines = capture.lines
    failed_layer = _STAGE_LAYER.get(failure.stage, Layer.AUTH) if failure is not None else None
    order = [Layer.TLS, Layer.GREETING, Layer.EHLO, Layer.STARTTLS, Layer.AUTH]
    results: list[LayerResult] = []
    for layer in order:
        if layer is failed_layer:
            assert failure is not None  # noqa: S101
            hint = failure.hint
            if "connection was lost" in failure.message and config.forward:
                hint = LOST_HINT
            results.append(_fail(layer, failure.message, hint))
            break
        if layer is Layer.TLS:
            continue  # implicit TLS has its own probe; STARTTLS is reported under starttls
        results.append(_passed(layer, config, lines, trust))
    return results


def _passed(layer: Layer, config: TransportConfig, lines: list[str], trust: str) -> LayerResult:
    if layer is Layer.GREETING:
        greeting = _server_lines(lines, "220")
        return _ok(layer, f"220 {greeting[0]}" if greeting else "220")
    if layer is Layer.EHLO:
        caps = _capabilities(lines)
        return _ok(layer, ", ".join(caps) if caps else "no extensions")
    if layer is Layer.STARTTLS:
        if config.tls_mode == "implicit":
            return LayerResult(layer, Status.SKIPPED, "implicit TLS (smtp.ssl true): not used")
        if any("TLS established" in line for line in lines):
            return _ok(layer, f"offered; certificate valid for {config.tls_name!r}; trusting {trust}")
        return LayerResult(layer, Status.SKIPPED, "not offered by the server; no credentials were sent")
    # auth
    if config.credentials is None:
        return LayerResult(layer, Status.SKIPPED, "no smtp.user: the server is used without AUTH")
    mechanism = next((line.split(" C: AUTH ", 1)[1].split()[0] for line in reversed(lines)
                      if " C: AUTH " in line), "?")
    accepted = _server_lines(lines, "235")
    return _ok(layer, f"{mechanism} accepted" + (f": 235 {accepted[-1]}" if accepted else ""))


__all__ = [
    "DoctorFailed",
    "DoctorOptions",
    "DoctorReport",
    "LAYER_TITLES",
    "Layer",
    "LayerResult",
    "Status",
    "build_report",
    "check_config",
    "diagnose",
    "run_probes",
]
