"""One SMTP connection that can carry several messages, over aiosmtplib (its only importer).

Theory of operation
-------------------
:class:`SmtpTransport` is a :class:`~egressmail.mail.envelope.SessionFactory`:
``async with transport() as session: await session.send(envelope)``. Opening a session walks the
stages in order, each with its own error stage name:

``connect``
    We open the TCP connection to ``smtp.host:smtp.port`` ourselves and hand the socket to
    aiosmtplib (``sock=``). The dialled address and the TLS name are then independent: on the
    platform we dial the gateway (``proxy.tunnel:30002``) and verify the provider's certificate
    (``smtp.sendgrid.com``), see ``mail/tls.py``. The local address of the socket becomes part of the
    session id (the gateway logs it as ``client=``).
``tls`` (implicit, ``smtp.ssl``)
    TLS from the first byte, SNI and verification for the TLS name.
``greeting``, ``ehlo``
    The server's 220, then EHLO (HELO if EHLO is refused).
``starttls`` (``smtp.ssl`` false)
    STARTTLS whenever offered, then EHLO again (RFC 3207 section 4.2: forget what was said in
    plain text). When it is not offered: with ``smtp.requiretls`` the session fails here; without,
    it goes on in plain text, but credentials are still refused unless
    ``egressmail.auth.allowplaintext`` is set. Either way nothing secret was sent.
``auth``
    With a user name: SASL XOAUTH2 with an OAuth2 token (one retry with a fresh token when the
    server refuses), else the first of PLAIN, LOGIN, CRAM-MD5 the server offers.

Each :meth:`AioSmtpSession.send` is one transaction: ``mail`` (MAIL FROM, with SIZE when offered),
``rcpt`` (per-recipient refusals are recorded; all refused is an error), ``data``. The final reply
to the message's ``.`` is the moment of truth: a connection lost (or a timeout) after the ``.``
has been written and before the reply is :class:`DeliveryUnknown`, because the server may already
have taken the message. After a refused transaction we send RSET so the connection can carry the
next message of a batch.

When the server offers PIPELINING (RFC 2920; Postfix does), MAIL, every RCPT and DATA go out in
one write and their replies are read in order: two round trips per message instead of
``3 + recipients``. Every reply is still checked (RFC 2920 section 3.1): a refused MAIL or DATA, or
every recipient refused, fails exactly as without pipelining, and when DATA was nevertheless
accepted we end it with an empty message (a lone ``.``, which the server must not deliver) before
going on. The message body and its final ``.`` are always one write of their own.

Errors are translated here, at the boundary, into the ``mail/errors.py`` family: 4xx →
:class:`TransientDeliveryError`, 5xx → :class:`PermanentDeliveryError`, connection trouble and
timeouts → transient, certificate problems → :class:`MailTLSError`. Each message names
``host:port``, the forward (``via smtp.sendgrid.com:465``) and the stage; none contains a secret.
"""

from __future__ import annotations

import asyncio
import functools
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal, Protocol

import aiosmtplib
from aiosmtplib.email import quote_address
from aiosmtplib.errors import (
    SMTPAuthenticationError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPException,
    SMTPHeloError,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from aiosmtplib.protocol import SMTPProtocol

from egressmail.mail.envelope import Envelope, SendResult
from egressmail.mail.errors import (
    DeliveryUnknown,
    MailError,
    MailTLSError,
    MessageError,
    PermanentDeliveryError,
    Stage,
    TLSRequiredError,
    TransientDeliveryError,
)
from egressmail.mail.settings import MailSettings, Secret, Timeouts
from egressmail.mail.tls import client_context, describe_tls_failure, is_tls_failure, tls_identity
from egressmail.mail.transcript import Transcript, new_session_id
from egressmail.networking.model import EgressMap

TlsMode = Literal["implicit", "starttls"]
Replies = dict[str, tuple[int, str]]  # recipient → (code, text)
QUIT_TIMEOUT_S = 2.0
_PASSWORD_MECHANISMS = ("plain", "login", "cram-md5")  # preference order among those offered
_EHLO_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?")
_RCPT_OK = (250, 251)  # 251: "user not local; will forward" is an acceptance (RFC 5321 3.4)
# aiosmtplib's protocol parses one reply per chunk received and keeps the rest in its buffer until
# more bytes arrive (its read_response says so: it must be awaited once per command written). A
# server answering a pipelined group in one segment (RFC 2920 server rule 2: Postfix, smtp-sink)
# would leave the 2nd reply there while we wait for bytes that never come. So the pipelined path
# takes complete replies from that buffer first (_next_reply), through the one private method
# aiosmtplib 3-5 all have; without it, we do not pipeline.
_CAN_PIPELINE = callable(getattr(SMTPProtocol, "_read_response_from_buffer", None))


class TokenSource(Protocol):
    """Gives OAuth2 access tokens for XOAUTH2 (``mail/oauth.py``)."""

    async def token(self, *, fresh: bool = False) -> Secret:
        """A valid access token; ``fresh`` forces a new one (after the server refused the last).

        Raises:
            MailError: stage ``oauth``, the token endpoint refused or could not be reached.
        """
        ...


@dataclass(frozen=True, slots=True)
class PasswordAuth:
    """AUTH with a user name and password (``smtp.user`` / ``smtp.password``)."""

    user: str
    password: Secret = field(repr=False)


@dataclass(frozen=True, slots=True)
class OAuth2Auth:
    """SASL XOAUTH2 with tokens from ``tokens`` for ``user`` (``oauth.flow``)."""

    user: str
    tokens: TokenSource = field(repr=False)


Credentials = PasswordAuth | OAuth2Auth


def default_ehlo_name() -> str:
    """This machine's host name if it is a valid EHLO argument, else ``localhost`` (no DNS lookup)."""
    name = socket.gethostname()
    return name if _EHLO_NAME.fullmatch(name) else "localhost"


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """Everything one connection needs, decided before connecting (pure data)."""

    host: str
    port: int
    tls_mode: TlsMode
    tls_name: str
    forward: str | None = None  # "smtp.sendgrid.com:465" when dialling a port forward
    require_tls: bool = False
    allow_plaintext_auth: bool = False
    credentials: Credentials | None = None
    timeouts: Timeouts = Timeouts()
    ehlo_name: str | None = None
    cafile: str | None = None
    debug: bool = False
    pipelining: bool = True  # use RFC 2920 PIPELINING when the server offers it

    @classmethod
    def from_settings(cls, settings: MailSettings, egress_map: EgressMap | None = None, *,
                      tokens: TokenSource | None = None) -> TransportConfig:
        """Derive the connection's parameters from the service settings and the egress map."""
        identity = tls_identity(settings, egress_map)
        forward = identity.forward
        credentials: Credentials | None = None
        if settings.oauth_flow and tokens is not None and settings.user:
            credentials = OAuth2Auth(settings.user, tokens)
        elif settings.user:
            credentials = PasswordAuth(settings.user, settings.password or Secret(""))
        return cls(
            host=settings.host, port=settings.port,
            tls_mode="implicit" if settings.ssl else "starttls",
            tls_name=identity.name,
            forward=f"{forward.name}:{forward.port_dest}" if forward is not None else None,
            require_tls=settings.requiretls, allow_plaintext_auth=settings.allow_plaintext_auth,
            credentials=credentials, timeouts=settings.timeouts, ehlo_name=settings.ehlo_name,
            cafile=settings.cafile, debug=settings.debug, pipelining=settings.pipelining,
        )

    @property
    def where(self) -> str:
        """``host:port`` plus the forward, for messages."""
        via = f" (forward to {self.forward})" if self.forward else ""
        return f"{self.host}:{self.port}{via}"


def classify_reply(code: int) -> type[MailError]:
    """4xx → transient, 5xx → permanent; anything else (a broken reply) → transient."""
    if 500 <= code <= 599:
        return PermanentDeliveryError
    return TransientDeliveryError


class _Failer:
    """Builds errors that carry stage, code, host, port and forward, and say where."""

    def __init__(self, config: TransportConfig, redact: Callable[[str], str] | None = None) -> None:
        self.config = config
        # A server may echo what it was sent (an AUTH payload) in its reply: the session's
        # transcript masks are applied to every error text too.
        self._redact = redact or (lambda text: text)

    def error(self, cls: type[MailError], stage: Stage, text: str, *, code: int | None = None,
              server_message: str | None = None, hint: str | None = None,
              recipients: Replies | None = None) -> MailError:
        c = self.config
        text = self._redact(text)
        server_message = self._redact(server_message) if server_message is not None else None
        reply = f" (server replied {code} {server_message})" if code is not None else ""
        replies = {r: (rc, self._redact(rt)) for r, (rc, rt) in (recipients or {}).items()}
        return cls(f"SMTP {stage} failed at {c.where}: {text}{reply}", stage=stage, code=code,
                   server_message=server_message, host=c.host, port=c.port, forward=c.forward, hint=hint,
                   recipients=replies)

    def reply(self, stage: Stage, exc: SMTPResponseException, text: str) -> MailError:
        return self.error(classify_reply(exc.code), stage, text, code=exc.code, server_message=exc.message)

    def lost(self, stage: Stage, exc: BaseException) -> MailError:
        if isinstance(exc, TimeoutError | SMTPTimeoutError):
            return self.error(TransientDeliveryError, stage,
                              "no reply from the server in time (egressmail.timeout.read)",
                              hint="the server or the tunnel is slow or stuck; it will be retried")
        return self.error(TransientDeliveryError, stage, f"the connection was lost ({exc})")


async def _open_socket(host: str, port: int, connect_timeout: float | None) -> socket.socket:
    """Resolve and connect (first address that answers), non-blocking, for aiosmtplib's ``sock=``.

    ``connect_timeout`` is one deadline for the whole step (name lookup and every address tried),
    so a slow resolver or a host with several dead addresses cannot stretch it.
    """
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(connect_timeout):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        last: OSError | None = None
        for family, type_, proto, _, addr in infos:
            sock = socket.socket(family, type_, proto)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, addr)
            except BaseException as exc:
                sock.close()
                if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
                    last = exc
                    continue
                raise
            return sock
        raise last or OSError(f"no address found for {host}")


async def _wait_socket_closed(sock: socket.socket | None, limit_s: float = 1.0) -> None:
    """Let the event loop finish closing the transport (a TLS close needs a few loop turns).

    Without this a caller that stops its loop right after ``aclose()`` leaves the socket to the
    garbage collector (a ResourceWarning). Bounded: a peer that never answers costs ``limit_s``.
    """
    if sock is None:
        return
    step_s = 0.005
    # Polling a public fact (the fd is gone) rather than hooking aiosmtplib's private callbacks.
    for _ in range(int(limit_s / step_s)):
        if sock.fileno() == -1:
            return
        await asyncio.sleep(step_s)


@functools.lru_cache(maxsize=1024)
def _quoted(address: str) -> str:
    """``<address>`` as aiosmtplib's SMTP.mail/rcpt quote it (cached: its address parser is slow,
    and a worker sends from the same sender again and again).

    Raises:
        ValueError: the address has characters that cannot go on an SMTP command line.
    """
    return quote_address(address)


def _check_envelope_addresses(envelope: Envelope) -> None:
    """Refuse, before anything is written, an address MAIL/RCPT cannot carry.

    Without this a non-ASCII address escaped as a bare ``UnicodeEncodeError`` mid-send, which the
    worker could only record as *unknown* (the server may have it) and retry for days.

    Raises:
        MessageError: an address is not ASCII (SMTPUTF8 is not supported) or cannot be quoted.
    """
    for what, address in (("sender", envelope.sender),
                          *(("recipient", rcpt) for rcpt in envelope.recipients)):
        try:
            _quoted(address).encode("ascii")
        except (ValueError, UnicodeError) as exc:  # UnicodeEncodeError is a ValueError too
            raise MessageError(
                f"the {what} <{address}> of message {envelope.message_id} cannot be sent: "
                "addresses must be ASCII (SMTPUTF8 is not supported)", stage="message",
                hint="use an ASCII address (an IDNA-encoded domain, xn--...)") from exc


async def _next_reply(protocol: SMTPProtocol, limit_s: float | None) -> aiosmtplib.SMTPResponse:
    """The next reply to a pipelined group: one already received if there is, else wait for it.

    Raises:
        SMTPResponseException: a malformed reply.
        SMTPServerDisconnected, SMTPTimeoutError: the connection was lost, or no reply in time.
    """
    buffered = protocol._read_response_from_buffer()  # see _CAN_PIPELINE
    if buffered is not None:
        return buffered
    return await protocol.read_response(timeout=limit_s)


def _prepare_data(data: bytes) -> bytes:
    """CRLF line endings, dot-stuffing (RFC 5321 section 4.5.2) and the final ``.``."""
    # Each rewrite only when needed, decided by scans that run at C speed: the message builder's
    # output is already CRLF and rarely has a line starting with ".", and the two regex passes were
    # a fifth of the transport's CPU per message.
    lines = data.count(b"\n")
    if data.count(b"\r\n") != lines or data.count(b"\r") != lines:  # a lone CR or LF somewhere
        data = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b".") or b"\n." in data:
        data = re.sub(rb"(?m)^\.", b"..", data)
    return data + b".\r\n"


class AioSmtpSession:
    """An open, greeted, secured and authenticated connection (implements ``SmtpSession``)."""

    def __init__(self, smtp: aiosmtplib.SMTP, config: TransportConfig, session_id: str,
                 transcript: Transcript, sock: socket.socket | None = None) -> None:
        self._smtp = smtp
        self._sock = sock
        self._config = config
        self._fail = _Failer(config, transcript.redact)
        self.session_id = session_id
        self.transcript = transcript
        self.is_tls = False
        self.pipelining = False  # decided after the last EHLO (SmtpTransport.open)

    @property
    def is_open(self) -> bool:
        """True while the connection can carry another message."""
        return self._smtp.is_connected

    async def _command(self, stage: Stage, line: str, call: Awaitable[aiosmtplib.SMTPResponse]
                       ) -> aiosmtplib.SMTPResponse:
        self.transcript.client(line)
        try:
            response = await call
        except SMTPResponseException as exc:
            self.transcript.server(exc.code, exc.message)
            raise
        except (SMTPServerDisconnected, SMTPTimeoutError, OSError) as exc:
            self.transcript.note(f"{type(exc).__name__}: {exc}")
            raise self._fail.lost(stage, exc) from exc
        self.transcript.server(response.code, response.message)
        return response

    async def _rset(self) -> None:
        # Leave the connection ready for the next message; a failure here only closes it.
        if not self._smtp.is_connected:
            return
        try:
            await self._command("mail", "RSET", self._smtp.rset())
        except (MailError, SMTPResponseException):
            self._smtp.close()

    async def send(self, envelope: Envelope) -> SendResult:
        """Send one message on this connection.

        Raises:
            TransientDeliveryError: a 4xx reply, connection trouble or a timeout before the ``.``.
            PermanentDeliveryError: a 5xx reply (sender refused, every recipient refused, data refused).
            DeliveryUnknown: the connection was lost, or no reply came, after the final ``.``.
        """
        smtp, fail = self._smtp, self._fail
        if not smtp.is_connected:
            raise fail.error(TransientDeliveryError, "mail", "the session is closed")
        _check_envelope_addresses(envelope)
        payload = _prepare_data(envelope.data)
        options = [f"SIZE={len(payload) - 3}"] if smtp.supports_extension("size") else []
        if self.pipelining:
            accepted, refused = await self._envelope_pipelined(envelope, options)
        else:
            accepted, refused = await self._envelope(envelope, options)
        return await self._body(envelope, payload, accepted, refused)

    async def _envelope(self, envelope: Envelope, options: list[str]) -> tuple[Replies, Replies]:
        """MAIL, RCPT and DATA one at a time, each waiting for its reply; ends after DATA's 354."""
        smtp, fail = self._smtp, self._fail
        try:
            await self._command("mail", f"MAIL FROM:<{envelope.sender}> {' '.join(options)}".rstrip(),
                                smtp.mail(envelope.sender, options=options))
        except SMTPResponseException as exc:
            await self._rset()
            raise fail.reply("mail", exc, f"the sender <{envelope.sender}> was refused") from exc

        accepted: Replies = {}
        refused: Replies = {}
        for rcpt in envelope.recipients:
            try:
                r = await self._command("rcpt", f"RCPT TO:<{rcpt}>", smtp.rcpt(rcpt))
                accepted[rcpt] = (r.code, r.message)
            except SMTPResponseException as exc:
                refused[rcpt] = (exc.code, exc.message)
        if not accepted:
            await self._rset()
            raise self._every_recipient_refused(refused)

        try:
            start = await self._command("data", "DATA", smtp.execute_command(b"DATA"))
        except SMTPResponseException as exc:
            await self._rset()
            raise fail.reply("data", exc, "DATA was refused") from exc
        if start.code != 354:
            await self._rset()
            raise fail.error(classify_reply(start.code), "data", "DATA was refused",
                             code=start.code, server_message=start.message)
        return accepted, refused

    async def _envelope_pipelined(self, envelope: Envelope, options: list[str]
                                  ) -> tuple[Replies, Replies]:
        """MAIL, every RCPT and DATA in one write (RFC 2920), then their replies in order."""
        smtp, fail, t = self._smtp, self._fail, self.transcript
        # The same bytes aiosmtplib's SMTP.mail/rcpt would send; quote_address also refuses an
        # address with CR, LF or other control characters (ValueError), before anything is written.
        group: list[tuple[Stage, str]] = [("mail", " ".join(
            ["MAIL", f"FROM:{_quoted(envelope.sender)}", *options]))]
        group += [("rcpt", f"RCPT TO:{_quoted(rcpt)}") for rcpt in envelope.recipients]
        group.append(("data", "DATA"))
        wire = "".join(f"{line}\r\n" for _, line in group).encode("ascii")
        protocol = smtp.protocol
        for _, line in group:
            t.client(line)
        try:
            if protocol is None:
                raise SMTPServerDisconnected("Connection lost")
            protocol.write(wire)
        except (SMTPServerDisconnected, OSError) as exc:
            smtp.close()
            raise fail.lost("mail", exc) from exc

        # Every reply is read, even after a refusal: they are on their way, and the next command
        # must not be paired with one of them (RFC 2920 section 3.1: check every status).
        replies: list[tuple[int, str]] = []
        for stage, _ in group:
            try:
                reply = await _next_reply(protocol, self._config.timeouts.read)
            except SMTPResponseException as exc:  # malformed: the replies no longer line up
                t.server(exc.code, exc.message)
                smtp.close()
                raise fail.reply(stage, exc, "unreadable reply") from exc
            except (SMTPServerDisconnected, SMTPTimeoutError, OSError) as exc:
                t.note(f"{type(exc).__name__}: {exc}")
                smtp.close()
                raise fail.lost(stage, exc) from exc
            t.server(reply.code, reply.message)
            if reply.code == 421:  # the server is closing the connection: no more replies will come
                smtp.close()
                raise fail.error(TransientDeliveryError, stage, "the server is closing the connection",
                                 code=reply.code, server_message=reply.message)
            replies.append((reply.code, reply.message))

        (mail_code, mail_text), data_reply = replies[0], replies[-1]
        accepted: Replies = {}
        refused: Replies = {}
        for rcpt, (code, text) in zip(envelope.recipients, replies[1:-1], strict=True):
            (accepted if code in _RCPT_OK else refused)[rcpt] = (code, text)
        if mail_code != 250:
            await self._abandon(data_reply[0])
            raise fail.error(classify_reply(mail_code), "mail", f"the sender <{envelope.sender}> was refused",
                             code=mail_code, server_message=mail_text)
        if not accepted:
            await self._abandon(data_reply[0])
            raise self._every_recipient_refused(refused)
        if data_reply[0] != 354:
            await self._rset()
            raise fail.error(classify_reply(data_reply[0]), "data", "DATA was refused",
                             code=data_reply[0], server_message=data_reply[1])
        return accepted, refused

    async def _abandon(self, data_code: int) -> None:
        """End a pipelined transaction that will not be sent: RSET, or if DATA was accepted anyway,
        an empty message (RFC 2920 section 3.1: "the client SMTP should send a single dot"; with no
        valid recipient the server must not deliver it)."""
        if data_code != 354:
            await self._rset()
            return
        protocol = self._smtp.protocol
        self.transcript.note("DATA was accepted without a valid transaction: ending it with an empty "
                             "message (RFC 2920 section 3.1)")
        self.transcript.client(".")
        try:
            if protocol is None:
                raise SMTPServerDisconnected("Connection lost")
            protocol.write(b".\r\n")
            reply = await protocol.read_response(timeout=self._config.timeouts.read)
        except (SMTPException, OSError) as exc:
            # Nothing can be delivered either way; only the connection is lost for the next message.
            self.transcript.note(f"{type(exc).__name__}: {exc}")
            self._smtp.close()
            return
        self.transcript.server(reply.code, reply.message)

    def _every_recipient_refused(self, refused: Replies) -> MailError:
        # Transient if any refusal was 4xx (some recipient may take it later); the per-recipient
        # replies go with the error so that the outbox can fail the 5xx ones for good and retry
        # only the 4xx ones (Postfix's per-recipient semantics), even though nothing was sent.
        codes = [code for code, _ in refused.values()]
        cls = TransientDeliveryError if any(400 <= c < 500 for c in codes) else PermanentDeliveryError
        first_code, first_text = next(iter(refused.values()))
        listing = ", ".join(f"<{r}> {c}" for r, (c, _) in refused.items())
        return self._fail.error(cls, "rcpt", f"every recipient was refused ({listing})",
                                code=first_code, server_message=first_text, recipients=refused)

    async def _body(self, envelope: Envelope, payload: bytes, accepted: Replies, refused: Replies
                    ) -> SendResult:
        """The message and its final ``.`` (one write, after DATA's 354), then the moment of truth."""
        smtp, fail = self._smtp, self._fail
        protocol = smtp.protocol
        try:
            if protocol is None:
                raise SMTPServerDisconnected("Connection lost")
            # Written with the protocol's own write/read pair (not SMTP.data) so that a loss *before*
            # the bytes left (transient, not delivered) is told apart from a loss after the final
            # "." (DeliveryUnknown). read_response arms the reply before the loop can run again.
            protocol.write(payload)
        except (SMTPServerDisconnected, OSError) as exc:
            smtp.close()
            raise fail.lost("data", exc) from exc
        self.transcript.client_data(len(payload))
        try:
            reply = await protocol.read_response(timeout=self._config.timeouts.read)
        except (SMTPServerDisconnected, SMTPTimeoutError, OSError) as exc:
            self.transcript.note(f"{type(exc).__name__} after the final '.': {exc}")
            smtp.close()
            raise fail.error(
                DeliveryUnknown, "data",
                "the connection was lost after the message's final '.' and before the server's reply, "
                "so the server may or may not have the message",
                hint="check the recipient's mailbox before sending it again") from exc
        except SMTPResponseException as exc:  # a malformed reply
            smtp.close()
            raise fail.error(DeliveryUnknown, "data", f"unreadable reply after the final '.': {exc}") from exc
        self.transcript.server(reply.code, reply.message)
        if reply.code != 250:
            raise fail.error(classify_reply(reply.code), "data", "the message was refused",
                             code=reply.code, server_message=reply.message)
        return SendResult(message_id=envelope.message_id, accepted=accepted, refused=refused,
                          session_id=self.session_id, reply=(reply.code, reply.message))

    async def aclose(self) -> None:
        """QUIT (briefly) and close; never raises."""
        if self._smtp.is_connected:
            try:
                await self._command("quit", "QUIT", self._smtp.quit(timeout=QUIT_TIMEOUT_S))
            except (MailError, SMTPException, OSError):
                pass
        self._smtp.close()
        await _wait_socket_closed(self._sock)


class SmtpTransport:
    """A :class:`~egressmail.mail.envelope.SessionFactory` over aiosmtplib.

    Args:
        config: where to connect and how (see :meth:`TransportConfig.from_settings`).
        secrets: extra values to mask in the transcript (the password and tokens are masked anyway).
    """

    def __init__(self, config: TransportConfig, *, secrets: tuple[str, ...] = ()) -> None:
        self.config = config
        self._secrets = secrets
        # Built now so that a bad CA bundle is a configuration error before any connection.
        self._tls_context = client_context(config.cafile)

    def __call__(self) -> AbstractAsyncContextManager[AioSmtpSession]:
        return self._session()

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[AioSmtpSession]:
        session = await self.open()
        try:
            yield session
        finally:
            await session.aclose()

    async def open(self) -> AioSmtpSession:
        """Connect, greet, secure and authenticate; the caller must ``aclose()`` the session.

        Raises:
            TransientDeliveryError: the connection failed or timed out, or a 4xx reply.
            PermanentDeliveryError: a 5xx reply (e.g. 535 authentication failed).
            MailTLSError: the certificate is not valid for the TLS name (wrong name, expired,
                self-signed, unknown CA) or the TLS handshake failed.
            TLSRequiredError: STARTTLS is required (``smtp.requiretls``) or credentials are configured,
                but the server did not offer it.
            MailError: stage ``oauth``, no access token could be obtained.
        """
        c, fail = self.config, _Failer(self.config)
        try:
            sock = await _open_socket(c.host, c.port, c.timeouts.connect)
        except TimeoutError as exc:
            raise fail.error(TransientDeliveryError, "connect",
                             f"no TCP connection within {c.timeouts.connect} s (egressmail.timeout.connect)",
                             hint="check the port forward and that the gateway is running") from exc
        except OSError as exc:
            raise fail.error(TransientDeliveryError, "connect", f"cannot connect: {exc.strerror or exc}",
                             hint="check smtp.host/smtp.port and that the gateway (or server) is "
                                  "listening there") from exc
        try:
            local = sock.getsockname()
        except OSError:  # pragma: no cover - a socket that just connected has a name
            local = None
        session_id = new_session_id((local[0], local[1]) if local else None)
        secrets = list(self._secrets)
        if isinstance(c.credentials, PasswordAuth) and c.credentials.password.reveal():
            secrets.append(c.credentials.password.reveal())
        transcript = Transcript(session_id, enabled=c.debug, secrets=secrets)
        fail = _Failer(c, transcript.redact)
        transcript.note(f"connected to {c.where}, TLS {c.tls_mode}, verifying the certificate "
                        f"for {c.tls_name!r}")
        smtp = aiosmtplib.SMTP(hostname=c.tls_name, sock=sock, use_tls=c.tls_mode == "implicit",
                               start_tls=False, tls_context=self._tls_context, timeout=c.timeouts.read,
                               local_hostname=c.ehlo_name or default_ehlo_name())
        session = AioSmtpSession(smtp, c, session_id, transcript)
        try:
            await self._handshake(smtp, session, fail)
            session.pipelining = c.pipelining and _CAN_PIPELINE and smtp.supports_extension("pipelining")
            if session.pipelining:
                transcript.note("the server offers PIPELINING: MAIL, RCPT and DATA go out together")
        except BaseException:
            # Abort, not close: a TLS close waits for the peer's close_notify, and with the socket
            # closed just below the transport would never finish (a ResourceWarning at GC).
            if isinstance(smtp.transport, asyncio.Transport):
                smtp.transport.abort()
            smtp.close()
            sock.close()
            raise
        return session

    async def _handshake(self, smtp: aiosmtplib.SMTP, session: AioSmtpSession, fail: _Failer) -> None:
        c, t = self.config, session.transcript
        connect_timeout = c.timeouts.connect
        try:
            greeting = await smtp.connect(timeout=connect_timeout)
        except SMTPConnectResponseError as exc:
            t.server(exc.code, exc.message)
            raise fail.reply("greeting", exc, "the server refused the connection") from exc
        except SMTPConnectTimeoutError as exc:
            stage: Stage = "greeting" if "ready message" in str(exc) or c.tls_mode != "implicit" else "tls"
            raise fail.error(TransientDeliveryError, stage,
                             f"timed out after {connect_timeout} s (egressmail.timeout.connect)") from exc
        except (SMTPException, OSError) as exc:
            if is_tls_failure(exc):
                text, hint = describe_tls_failure(exc, f"{c.host}:{c.port}", c.tls_name)
                raise fail.error(MailTLSError, "tls", text, hint=hint) from exc
            raise fail.lost("greeting", exc) from exc
        if c.tls_mode == "implicit":
            session.is_tls = True
            t.note(f"TLS established, certificate valid for {c.tls_name!r}")
        t.server(greeting.code, greeting.message)
        await self._ehlo(smtp, session, fail)

        if c.tls_mode == "starttls":
            if smtp.supports_extension("starttls"):
                try:
                    await session._command("starttls", "STARTTLS", smtp.starttls(
                        server_hostname=c.tls_name, tls_context=self._tls_context, timeout=connect_timeout))
                except SMTPResponseException as exc:
                    raise fail.reply("starttls", exc, "STARTTLS was refused") from exc
                except (SMTPException, OSError) as exc:
                    if is_tls_failure(exc):
                        text, hint = describe_tls_failure(exc, f"{c.host}:{c.port}", c.tls_name)
                        raise fail.error(MailTLSError, "starttls", text, hint=hint) from exc
                    raise fail.lost("starttls", exc) from exc
                except MailError as exc:
                    if is_tls_failure(exc):
                        text, hint = describe_tls_failure(exc, f"{c.host}:{c.port}", c.tls_name)
                        raise fail.error(MailTLSError, "starttls", text, hint=hint) from exc
                    raise
                session.is_tls = True
                t.note(f"TLS established, certificate valid for {c.tls_name!r}")
                await self._ehlo(smtp, session, fail)
            elif c.require_tls:
                raise fail.error(TLSRequiredError, "starttls",
                                 "the server does not offer STARTTLS and smtp.requiretls is true; "
                                 "nothing was sent, no credentials either",
                                 hint="use the provider's TLS port, or set smtp.requiretls to false if "
                                      "this server is on a trusted network")
            elif c.credentials is not None and not c.allow_plaintext_auth:
                raise fail.error(TLSRequiredError, "auth",
                                 "the server does not offer STARTTLS, so the credentials would travel "
                                 "unencrypted: refused before AUTH",
                                 hint="use the provider's TLS port (465 with smtp.ssl true, or a port "
                                      "offering STARTTLS); egressmail.auth.allowplaintext=true allows "
                                      "it on trusted networks")
            else:
                t.note("the server does not offer STARTTLS: continuing without TLS (no credentials)")

        if c.credentials is not None:
            await self._authenticate(smtp, session, fail, c.credentials)

    async def _ehlo(self, smtp: aiosmtplib.SMTP, session: AioSmtpSession, fail: _Failer) -> None:
        name = smtp.local_hostname or "localhost"
        try:
            await session._command("ehlo", f"EHLO {name}", smtp.ehlo())
        except (SMTPHeloError, SMTPResponseException) as exc:
            if not smtp.is_connected or exc.code >= 500 and exc.code not in (500, 502, 504):
                raise fail.reply("ehlo", exc, "EHLO was refused") from exc
            try:
                await session._command("ehlo", f"HELO {name}", smtp.helo())
            except SMTPResponseException as exc2:
                raise fail.reply("ehlo", exc2, "EHLO and HELO were refused") from exc2

    async def _authenticate(self, smtp: aiosmtplib.SMTP, session: AioSmtpSession, fail: _Failer,
                            credentials: Credentials) -> None:
        offered = smtp.server_auth_methods
        t = session.transcript
        if not smtp.supports_extension("auth"):
            raise fail.error(PermanentDeliveryError, "auth",
                             "the server offers no AUTH, but smtp.user is set",
                             hint="remove smtp.user/smtp.password if this server needs no login, or "
                                  "check that the connection is encrypted (some servers offer AUTH only "
                                  "over TLS)")
        if isinstance(credentials, OAuth2Auth):
            if "xoauth2" not in offered:
                raise fail.error(PermanentDeliveryError, "auth",
                                 f"oauth.flow is true but the server does not offer XOAUTH2 "
                                 f"(it offers {' '.join(offered).upper() or 'nothing'})",
                                 hint="set oauth.flow to false and use a password, or use a provider "
                                      "that supports OAuth2 for SMTP")
            for attempt in (1, 2):
                token = await credentials.tokens.token(fresh=attempt == 2)
                t.add_secret(token.reveal())
                try:
                    t.client_auth("XOAUTH2")
                    r = await self._auth_call(
                        smtp, fail, smtp.auth_xoauth2(credentials.user, token.reveal()))
                    t.server(r.code, r.message)
                    return
                except SMTPAuthenticationError as exc:
                    t.server(exc.code, exc.message)
                    if attempt == 2 or not smtp.is_connected:
                        # from None: the raw reply in the cause may echo the token
                        raise fail.reply("auth", exc,
                                         "the server refused the OAuth2 token (XOAUTH2)") from None
                    t.note("token refused: fetching a fresh one and retrying once")
            return  # pragma: no cover - the loop returns or raises
        usable = [m for m in _PASSWORD_MECHANISMS if m in offered]
        if not usable:
            raise fail.error(PermanentDeliveryError, "auth",
                             f"the server offers none of the password mechanisms we support "
                             f"(offered: {' '.join(offered).upper() or 'none'}; "
                             "supported: PLAIN LOGIN CRAM-MD5)")
        user, password = credentials.user, credentials.password.reveal()
        last: SMTPAuthenticationError | None = None
        for mechanism in usable:
            method: Callable[..., Awaitable[aiosmtplib.SMTPResponse]] = getattr(
                smtp, f"auth_{mechanism.replace('-', '')}")
            t.client_auth(mechanism.upper())
            try:
                r = await self._auth_call(smtp, fail, method(user, password))
            except SMTPAuthenticationError as exc:
                t.server(exc.code, exc.message)
                last = exc
                # 504: mechanism not really supported; try the next. Anything else is the answer.
                if exc.code != 504 or not smtp.is_connected:
                    break
                continue
            t.server(r.code, r.message)
            return
        assert last is not None  # noqa: S101 - the loop ran at least once and did not return
        # from None: the raw reply in the cause may echo the password (the error itself is redacted)
        raise fail.reply("auth", last, "the server refused the user name and password") from None

    @staticmethod
    async def _auth_call(smtp: aiosmtplib.SMTP, fail: _Failer,
                         call: Awaitable[aiosmtplib.SMTPResponse]) -> aiosmtplib.SMTPResponse:
        try:
            return await call
        except SMTPAuthenticationError:
            raise
        except SMTPResponseException as exc:
            raise fail.reply("auth", exc, "AUTH failed") from None  # may echo the secret
        except (SMTPServerDisconnected, SMTPTimeoutError, OSError) as exc:
            raise fail.lost("auth", exc) from exc

