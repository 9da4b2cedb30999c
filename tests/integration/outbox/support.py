"""Test plumbing for the outbox: a recording aiosmtpd server with one-verb faults, and the real
SMTP transport pointed at it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from aiosmtpd.smtp import SMTP as SMTPServer

MESSAGE_ID = re.compile(rb"^Message-ID:\s*(\S+)", re.IGNORECASE | re.MULTILINE)


def message_id_of(data: bytes) -> str:
    m = MESSAGE_ID.search(data.split(b"\r\n\r\n", 1)[0])
    return m.group(1).decode() if m else "<none>"


@dataclass
class RecordingHandler:
    """Records every accepted message; faults are set per test.

    rcpt_replies: recipient → reply to RCPT (e.g. "450 busy", "550 no such user").
    data_reply: reply to the end of DATA instead of 250 (e.g. "451 try later", "554 spam").
    drop_after_data: how many messages to take in and then drop the connection without a reply
        (the "unknown" case: the server has the message, the client never hears it).
    record_file: append each accepted Message-ID to this file (flushed at once).
    """

    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None
    drop_after_data: int = 0
    record_file: IO[str] | None = None
    received: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    sessions: int = 0
    got_one: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        reply = self.rcpt_replies.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply is not None:
            return self.data_reply
        mid = message_id_of(envelope.content)
        self.received.append((mid, tuple(envelope.rcpt_tos)))
        self.got_one.set()
        if self.record_file is not None:
            self.record_file.write(mid + "\n")
            self.record_file.flush()
        if self.drop_after_data > 0:
            self.drop_after_data -= 1
            server.transport.abort()
        return "250 OK queued"

    def message_ids(self) -> list[str]:
        return [mid for mid, _ in self.received]


@asynccontextmanager
async def smtpd(handler: RecordingHandler, authenticator: Any = None) -> AsyncIterator[int]:
    """An aiosmtpd server on 127.0.0.1 (random port) in the running loop; yields the port.

    With ``authenticator``, AUTH is offered (and required) over plain text, for tests only.
    """
    loop = asyncio.get_running_loop()
    auth: dict[str, Any] = {}
    if authenticator is not None:
        auth = {"authenticator": authenticator, "auth_required": True, "auth_require_tls": False}

    def factory() -> SMTPServer:
        handler.sessions += 1
        return SMTPServer(handler, hostname="smtpd.test", loop=loop, **auth)

    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()


def transport_factory(port: int, *, host: str = "127.0.0.1", timeout: float = 5.0) -> Any:
    """The real SMTP transport (``mail/transport.py``) for plain SMTP to ``host:port``: the
    server offers no STARTTLS and no credentials are configured, as with a local relay."""
    from egressmail.mail.settings import Timeouts
    from egressmail.mail.transport import SmtpTransport, TransportConfig

    return SmtpTransport(TransportConfig(host=host, port=port, tls_mode="starttls",
                                         tls_name="smtpd.test",
                                         timeouts=Timeouts(connect=timeout, read=timeout)))
