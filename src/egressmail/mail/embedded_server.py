"""An embedded SMTP server (aiosmtpd) that stands in for a mail provider on loopback.

The demo uses it as "SendGrid": implicit TLS from the first byte (like port 465) with a certificate
for the provider's name issued by a locally generated CA, AUTH PLAIN/LOGIN against one user name and
password, and every accepted message kept in memory. It can also offer STARTTLS (like 587) or no TLS
at all (a server on a trusted network).

Theory of operation
-------------------
The server runs on the caller's event loop (``await server.start()``), not in a thread: the demo
runs the client, the gateway and this server in one loop, so everything it started stops with
``await server.aclose()``. aiosmtpd only knows STARTTLS as "TLS" (``auth_require_tls``); with
implicit TLS every byte is already encrypted, so AUTH is offered from the first EHLO there, and
after STARTTLS otherwise. Whatever the mode, MAIL before a successful AUTH is refused (530) when
credentials are configured: a provider never relays for strangers.

Credentials are compared in constant time and never logged; :class:`ReceivedMessage` records whether
the session authenticated, not with what.
"""

from __future__ import annotations

import asyncio
import hmac
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from egressmail.mail.settings import Secret

ServerTls = Literal["implicit", "starttls", "none"]
DEFAULT_HOSTNAME = "smtp.example.test"
DEFAULT_DATA_SIZE_LIMIT = 32 * 1024 * 1024
DEFAULT_SESSION_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class LocalTls:
    """A locally generated CA and a server context presenting a certificate it issued.

    Attributes:
        server_context: for the server (present ``names``' certificate).
        cafile: the CA certificate as a PEM file, for clients to trust (``egressmail.tls.cafile`` or
            ``$SSL_CERT_FILE``).
        names: the names the certificate is valid for.
    """

    server_context: ssl.SSLContext
    cafile: Path
    names: tuple[str, ...]


def local_tls(names: tuple[str, ...] | list[str], directory: Path) -> LocalTls:
    """Mint a CA with trustme and a server certificate for ``names``; write the CA to ``directory``.

    Raises:
        ValueError: ``names`` is empty.
        OSError: the CA file cannot be written.
    """
    if not names:
        raise ValueError("local_tls() needs at least one name for the certificate")
    ca = trustme.CA(organization_name="egressmail demo CA")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    ca.issue_cert(*names).configure_cert(context)
    directory.mkdir(parents=True, exist_ok=True)
    cafile = directory / "demo-ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    return LocalTls(server_context=context, cafile=cafile, names=tuple(names))


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """One message the server accepted.

    ``data`` is the message exactly as received (after dot-unstuffing); ``authenticated`` whether
    the session had logged in; ``tls`` whether the connection was encrypted.
    """

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes = field(repr=False)
    authenticated: bool
    tls: bool
    peer: str
    queue_id: str


def _peer_text(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    return "-"


class _Handler:
    """The aiosmtpd handler: the AUTH check, the "no MAIL before AUTH" rule, and the recording."""

    def __init__(self, server: EmbeddedSmtpServer) -> None:
        self.server = server

    def authenticate(self, smtp: SMTP, session: Session, envelope: Envelope, mechanism: str,
                     auth_data: Any) -> AuthResult:
        expected = self.server.credentials
        if expected is None or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user_ok = hmac.compare_digest(auth_data.login, expected[0].encode("utf-8"))
        password_ok = hmac.compare_digest(auth_data.password, expected[1].reveal().encode("utf-8"))
        if user_ok and password_ok:
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    async def handle_MAIL(self, smtp: SMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        if self.server.credentials is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(self, smtp: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        queue_id = f"demo{len(self.server.messages) + 1:04d}"
        is_tls = isinstance(smtp, _EmbeddedSMTP) and smtp.is_encrypted
        self.server._record(ReceivedMessage(
            mail_from=envelope.mail_from or "", rcpt_tos=tuple(envelope.rcpt_tos),
            data=bytes(envelope.original_content or b""), authenticated=bool(session.authenticated),
            tls=is_tls, peer=_peer_text(session.peer), queue_id=queue_id))
        return f"250 2.0.0 Ok: queued as {queue_id}"


class _Session(Session):
    """aiosmtpd's session without the warning its deprecated ``login_data`` logs on every AUTH."""

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class _EmbeddedSMTP(SMTP):
    """aiosmtpd's protocol, knowing whether the connection is encrypted (implicit TLS or STARTTLS)."""

    implicit_tls = False

    def _create_session(self) -> Session:
        return _Session(self.loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if transport.get_extra_info("sslcontext") is not None and self._original_transport is None:
            self.implicit_tls = True

    @property
    def is_encrypted(self) -> bool:
        """True once the connection is under TLS."""
        return self.implicit_tls or self._tls_protocol is not None


class EmbeddedSmtpServer:
    """An SMTP server on the running event loop: ``await start()``, mail arrives, ``await aclose()``.

    Args:
        host: the address to listen on (loopback by default).
        port: the port (0 = a free one; see :attr:`port` after start).
        tls: ``"implicit"`` (TLS from the first byte), ``"starttls"`` (offered after EHLO) or ``"none"``.
        ssl_context: the server context (required unless ``tls`` is ``"none"``); see :func:`local_tls`.
        credentials: ``(user, password)`` that AUTH accepts; ``None`` = no AUTH, anyone may send.
        hostname: the name in the greeting and EHLO reply.

    Example::

        tls = local_tls(["smtp.sendgrid.com"], tmp)
        async with EmbeddedSmtpServer(tls="implicit", ssl_context=tls.server_context,
                                      credentials=("apikey", Secret(key))) as server:
            ...  # a client dials 127.0.0.1:server.port, trusting tls.cafile
            print(server.messages)
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, tls: ServerTls = "implicit",
                 ssl_context: ssl.SSLContext | None = None,
                 credentials: tuple[str, Secret] | None = None,
                 hostname: str = DEFAULT_HOSTNAME,
                 data_size_limit: int = DEFAULT_DATA_SIZE_LIMIT,
                 session_timeout: float = DEFAULT_SESSION_TIMEOUT_S) -> None:
        if tls not in ("implicit", "starttls", "none"):
            raise ValueError(f"tls must be 'implicit', 'starttls' or 'none', not {tls!r}")
        if tls != "none" and ssl_context is None:
            raise ValueError(f"tls={tls!r} needs an ssl_context (see local_tls())")
        self.host = host
        self.requested_port = port
        self.tls: ServerTls = tls
        self.ssl_context = ssl_context
        self.credentials = credentials
        self.hostname = hostname
        self.data_size_limit = data_size_limit
        self.session_timeout = session_timeout
        self.messages: list[ReceivedMessage] = []
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._arrived = asyncio.Event()
        self._protocols: set[_EmbeddedSMTP] = set()
        self._handler = _Handler(self)

    def __repr__(self) -> str:
        auth = "AUTH" if self.credentials is not None else "no AUTH"
        return f"EmbeddedSmtpServer({self.host}:{self._port or self.requested_port}, tls={self.tls}, {auth})"

    @property
    def port(self) -> int:
        """The port actually listened on.

        Raises:
            RuntimeError: the server has not been started.
        """
        if self._port is None:
            raise RuntimeError("EmbeddedSmtpServer.port: call start() first")
        return self._port

    def _factory(self) -> _EmbeddedSMTP:
        loop = asyncio.get_running_loop()
        kwargs: dict[str, Any] = {
            "hostname": self.hostname, "ident": "egressmail embedded server",
            "data_size_limit": self.data_size_limit, "timeout": self.session_timeout, "loop": loop,
        }
        if self.tls == "starttls":
            kwargs["tls_context"] = self.ssl_context
            kwargs["require_starttls"] = self.credentials is not None
        if self.credentials is not None:
            kwargs["authenticator"] = self._handler.authenticate
            # aiosmtpd's "TLS" means STARTTLS; with implicit TLS the whole connection is encrypted.
            kwargs["auth_require_tls"] = self.tls == "starttls"
        else:
            kwargs["auth_exclude_mechanism"] = ["LOGIN", "PLAIN"]
        protocol = _EmbeddedSMTP(self._handler, **kwargs)
        self._protocols.add(protocol)
        return protocol

    async def start(self) -> None:
        """Listen.

        Raises:
            OSError: the address cannot be bound.
            RuntimeError: already started.
        """
        if self._server is not None:
            raise RuntimeError("EmbeddedSmtpServer.start() called twice")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._factory, self.host, self.requested_port,
            ssl=self.ssl_context if self.tls == "implicit" else None)
        self._port = self._server.sockets[0].getsockname()[1]

    def _record(self, message: ReceivedMessage) -> None:
        self.messages.append(message)
        self._arrived.set()

    async def wait_for(self, count: int) -> list[ReceivedMessage]:
        """Wait until ``count`` messages have arrived (bound it with ``asyncio.timeout``)."""
        while len(self.messages) < count:
            self._arrived.clear()
            await self._arrived.wait()
        return list(self.messages)

    async def aclose(self) -> None:
        """Stop listening and close every open session."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for protocol in list(self._protocols):
            transport = protocol.transport
            if transport is not None and not transport.is_closing():
                transport.close()
        self._protocols.clear()
        try:
            async with asyncio.timeout(2.0):
                await server.wait_closed()
        except TimeoutError:  # pragma: no cover - a client that never acknowledges the close
            pass

    async def __aenter__(self) -> EmbeddedSmtpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

