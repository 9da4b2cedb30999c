"""A real SMTP server on loopback (aiosmtpd) standing in for a mail provider, configurable per test.

Use the ``smtpd`` fixture with a marker::

    @pytest.mark.smtpd(tls="implicit", credentials={"apikey": "pw"}, fail={"MAIL": "451 4.3.0 later"})
    async def test_x(smtpd: FakeSmtpd) -> None: ...

Options (all keyword arguments of :class:`SmtpdConfig`):

- ``tls``: ``"implicit"`` (TLS from the first byte, like 465), ``"starttls"`` (offered after EHLO, like
  587) or ``"none"``. The certificate names ``cert_name`` (default ``smtp.sendgrid.com``) and is issued
  by the session's trustme CA (``smtp_ca`` fixture; its PEM file is ``FakeSmtpd.cafile``).
  ``cert="expired" | "self-signed" | "untrusted"`` swaps in a bad certificate for that name.
- ``credentials``: ``{user: password}`` for PLAIN/LOGIN; ``mechanisms`` limits what AUTH offers;
  ``auth_require_tls`` (default true) hides AUTH until TLS; ``xoauth2``: ``{user: {valid tokens}}``
  adds the XOAUTH2 mechanism (refusals answer with a Google-style 334 JSON challenge, then 535).
- faults: ``fail={"MAIL"|"RCPT"|"DATA"|"AUTH"|"EHLO": "4xx/5xx text"}`` (DATA: the reply to the final
  ``.``), ``refuse={"rcpt@x": "550 5.1.1 no such user"}``, ``drop_after_dot=True`` (close the
  connection after the message's final ``.``, before any reply), ``starttls_offered=False``.

The server records every message (:class:`Received`) and every verb it saw per connection
(``FakeSmtpd.verbs``: e.g. ``["EHLO", "STARTTLS", "EHLO", "AUTH", "MAIL", ...]``), so a test can
prove that AUTH was never sent. Provider names are never resolved: clients dial 127.0.0.1 and verify
the certificate for the provider's name.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CertKind = Literal["ok", "expired", "self-signed", "untrusted"]


@dataclass
class SmtpdConfig:
    """How the fake server behaves (see the module docstring)."""

    tls: Literal["implicit", "starttls", "none"] = "none"
    cert_name: str = "smtp.sendgrid.com"
    cert: CertKind = "ok"
    credentials: dict[str, str] | None = None
    mechanisms: tuple[str, ...] | None = None
    auth_require_tls: bool = True
    xoauth2: dict[str, set[str]] | None = None
    fail: dict[str, str] = field(default_factory=dict)
    refuse: dict[str, str] = field(default_factory=dict)
    drop_after_dot: bool = False
    starttls_offered: bool = True


@dataclass
class Received:
    """One message the server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    login: str | None
    tls: bool
    peer: tuple[str, int]


@dataclass
class Connection:
    """What the server saw on one connection."""

    peer: tuple[str, int]
    implicit_tls: bool = False
    verbs: list[str] = field(default_factory=list)


def self_signed_cert(name: str, directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate (and key) for ``name``, valid now, written as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.self-signed.crt", directory / f"{name}.self-signed.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def server_context(ca: trustme.CA, name: str, kind: CertKind, tmp: Path) -> ssl.SSLContext:
    """A server-side context presenting a certificate of the given kind for ``name``."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if kind == "ok":
        ca.issue_cert(name).configure_cert(ctx)
    elif kind == "expired":
        past = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
        ca.issue_cert(name, not_before=past - dt.timedelta(days=30), not_after=past).configure_cert(ctx)
    elif kind == "untrusted":
        trustme.CA().issue_cert(name).configure_cert(ctx)
    else:
        cert, key = self_signed_cert(name, tmp)
        ctx.load_cert_chain(cert, key)
    return ctx


class RecordingHandler:
    """The aiosmtpd handler: applies the faults and records what arrives."""

    def __init__(self, server: FakeSmtpd) -> None:
        self.fake = server
        self.cfg = server.config

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        if "EHLO" in self.cfg.fail:
            return [self.cfg.fail["EHLO"]]
        session.host_name = hostname
        if not self.cfg.starttls_offered:
            responses = [r for r in responses if "STARTTLS" not in r]
            responses[-1] = "250 " + responses[-1][4:]
            for i in range(len(responses) - 1):
                responses[i] = "250-" + responses[i][4:]
        return responses

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        if "MAIL" in self.cfg.fail:
            return self.cfg.fail["MAIL"]
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if address in self.cfg.refuse:
            return self.cfg.refuse[address]
        if "RCPT" in self.cfg.fail:
            return self.cfg.fail["RCPT"]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.cfg.drop_after_dot:
            assert server.transport is not None
            server.transport.abort()  # the dot arrived; the reply never will
            return "250 2.0.0 never sent"
        if "DATA" in self.cfg.fail:
            return self.cfg.fail["DATA"]
        auth = session.auth_data
        login = auth.login.decode() if isinstance(auth, LoginPassword) else None
        peer = session.peer if isinstance(session.peer, tuple) else ("", 0)
        self.fake.messages.append(Received(
            mail_from=envelope.mail_from or "", rcpt_tos=list(envelope.rcpt_tos),
            data=bytes(envelope.original_content or b""), login=login,
            tls=session.ssl is not None or bool(getattr(getattr(server, "conn", None), "implicit_tls", 0)),
            peer=(peer[0], peer[1])))
        return f"250 2.0.0 Ok: queued as {len(self.fake.messages)}"

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                     auth_data: Any) -> AuthResult:
        if "AUTH" in self.cfg.fail:
            return AuthResult(success=False, handled=False, message=self.cfg.fail["AUTH"])
        creds = self.cfg.credentials or {}
        if isinstance(auth_data, LoginPassword):
            user, password = auth_data.login.decode(), auth_data.password.decode()
            if creds.get(user) == password:
                return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)


class XOAuth2Handler(RecordingHandler):
    """Adds SASL XOAUTH2 (aiosmtpd offers every ``auth_*`` method of the handler as a mechanism)."""

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        """SASL XOAUTH2 as Google and Microsoft speak it."""
        if len(args) < 2:
            blob = await server.challenge_auth("", encode_to_b64=False)
            if not isinstance(blob, bytes):
                return AuthResult(success=False, handled=True)
        else:
            blob = base64.b64decode(args[1])
        fields = dict(part.split("=", 1) for part in blob.decode().split("\x01") if "=" in part)
        user, bearer = fields.get("user", ""), fields.get("auth", "")
        token = bearer.removeprefix("Bearer ")
        self.fake.xoauth2_attempts.append((user, token))
        valid = (self.cfg.xoauth2 or {}).get(user, set())
        if token in valid:
            return AuthResult(success=True, auth_data=LoginPassword(user.encode(), b""))
        # Google's behaviour: a 334 with a base64 JSON error, the client answers empty, then 535.
        error = json.dumps({"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"})
        await server.challenge_auth(error)
        return AuthResult(success=False, handled=False)


_RECORDED_VERBS = ("EHLO", "HELO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "RSET", "QUIT", "NOOP")


class RecordingSMTP(SMTP):
    """aiosmtpd's server, recording the verbs of each connection."""

    def __init__(self, handler: RecordingHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.fake = handler.fake
        self.conn: Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.conn is not None:  # the same connection, now under STARTTLS
            return
        peer = transport.get_extra_info("peername")
        self.conn = Connection(peer=(peer[0], peer[1]),
                               implicit_tls=transport.get_extra_info("sslcontext") is not None)
        with self.fake.lock:
            self.fake.connections.append(self.conn)

    def _record(self, verb: str) -> None:
        if self.conn is not None:
            self.conn.verbs.append(verb)


def _recording(verb: str) -> Any:
    async def smtp_verb(self: RecordingSMTP, arg: str) -> None:
        self._record(verb)
        await getattr(SMTP, f"smtp_{verb}")(self, arg)
    smtp_verb.__name__ = f"smtp_{verb}"
    return smtp_verb


for _verb in _RECORDED_VERBS:
    setattr(RecordingSMTP, f"smtp_{_verb}", _recording(_verb))


class _PortZeroController(Controller):
    """aiosmtpd's threaded controller, bound to an ephemeral port (never a fixed one)."""

    def __init__(self, fake: FakeSmtpd, **kwargs: Any) -> None:
        self.fake = fake
        super().__init__(fake.handler, hostname="127.0.0.1", port=0, **kwargs)

    def factory(self) -> SMTP:
        return RecordingSMTP(self.fake.handler, **self.SMTP_kwargs)

    async def _create_server_and_learn_port(self) -> asyncio.AbstractServer:
        server = await self.loop.create_server(self._factory_invoker, host=self.hostname, port=0,
                                               ssl=self.ssl_context)
        self.port = server.sockets[0].getsockname()[1]
        return server

    def _create_server(self) -> Any:
        return self._create_server_and_learn_port()


class FakeSmtpd:
    """A running fake provider: ``host``/``port`` to dial, ``cafile`` to trust, what it received."""

    def __init__(self, config: SmtpdConfig, ca: trustme.CA, tmp: Path) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.messages: list[Received] = []
        self.connections: list[Connection] = []
        self.xoauth2_attempts: list[tuple[str, str]] = []
        self.cafile = tmp / "fake-smtpd-ca.pem"
        ca.cert_pem.write_to_path(str(self.cafile))
        self.handler = XOAuth2Handler(self) if config.xoauth2 is not None else RecordingHandler(self)
        kwargs: dict[str, Any] = {"server_hostname": config.cert_name, "ready_timeout": 5.0}
        ctx = server_context(ca, config.cert_name, config.cert, tmp) if config.tls != "none" else None
        if config.tls == "implicit":
            kwargs["ssl_context"] = ctx
        elif config.tls == "starttls":
            kwargs["tls_context"] = ctx
        if config.credentials is not None or config.xoauth2 is not None:
            kwargs["authenticator"] = self.handler.authenticate
            # aiosmtpd only knows STARTTLS as "TLS"; with implicit TLS every byte is encrypted anyway.
            kwargs["auth_require_tls"] = config.auth_require_tls and config.tls != "implicit"
            if config.mechanisms is not None:
                all_mechs = {"LOGIN", "PLAIN", "XOAUTH2"}
                kwargs["auth_exclude_mechanism"] = sorted(all_mechs - {m.upper() for m in config.mechanisms})
        self.controller = _PortZeroController(self, **kwargs)
        self.host = "127.0.0.1"

    @property
    def port(self) -> int:
        return int(self.controller.port)

    @property
    def verbs(self) -> list[list[str]]:
        """The verbs of each real connection (the controller's readiness probe sends none)."""
        with self.lock:
            return [list(c.verbs) for c in self.connections if c.verbs]

    @property
    def all_verbs(self) -> list[str]:
        return [v for conn in self.verbs for v in conn]

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


@pytest.fixture(scope="session")
def smtp_ca() -> trustme.CA:
    """The session's test CA; fake servers' certificates are issued by it."""
    return trustme.CA()


@pytest.fixture
def smtpd(request: pytest.FixtureRequest, smtp_ca: trustme.CA, tmp_path: Path) -> Iterator[FakeSmtpd]:
    """A running fake provider configured by ``@pytest.mark.smtpd(...)`` (defaults: plain, no AUTH)."""
    marker = request.node.get_closest_marker("smtpd")
    config = SmtpdConfig(**(marker.kwargs if marker else {}))
    server = FakeSmtpd(config, smtp_ca, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def register_marker(config: pytest.Config) -> None:
    """Register the ``smtpd`` marker (call from a conftest's ``pytest_configure``)."""
    config.addinivalue_line("markers", "smtpd(**options): configure the fake SMTP server (tests/servers/"
                                       "fake_smtpd.py SmtpdConfig)")
