"""Test-only SMTP plumbing for the outbox: a recording aiosmtpd server with one-verb faults, and a
tiny ``SessionFactory`` that drives ``aiosmtplib.SMTP`` directly (used where the point is the
queue, not the transport's TLS and AUTH)."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiosmtplib
from aiosmtpd.smtp import SMTP as SMTPServer

from egressmail.mail.envelope import Envelope, SendResult
from egressmail.mail.errors import (
    DeliveryUnknown,
    MailError,
    PermanentDeliveryError,
    TransientDeliveryError,
)

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
async def smtpd(handler: RecordingHandler) -> AsyncIterator[int]:
    """An aiosmtpd server on 127.0.0.1 (random port) in the running loop; yields the port."""
    loop = asyncio.get_running_loop()

    def factory() -> SMTPServer:
        handler.sessions += 1
        return SMTPServer(handler, hostname="smtpd.test", loop=loop)

    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()


_sid = itertools.count(1)


class DirectSession:
    """One aiosmtplib connection; maps its errors to the mail family like the real transport."""

    def __init__(self, smtp: aiosmtplib.SMTP) -> None:
        self.smtp = smtp
        self.session_id = f"direct-{next(_sid)}"

    async def send(self, envelope: Envelope) -> SendResult:
        try:
            await self.smtp.mail(envelope.sender)
        except aiosmtplib.SMTPResponseException as exc:
            raise _reply_error(exc, "mail") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise TransientDeliveryError(f"connection lost at MAIL: {exc}", stage="mail") from exc
        accepted: dict[str, tuple[int, str]] = {}
        refused: dict[str, tuple[int, str]] = {}
        for rcpt in envelope.recipients:
            try:
                resp = await self.smtp.rcpt(rcpt)
                accepted[rcpt] = (resp.code, resp.message)
            except aiosmtplib.SMTPRecipientRefused as exc:
                refused[rcpt] = (exc.code, exc.message)
            except (aiosmtplib.SMTPException, OSError) as exc:
                raise TransientDeliveryError(f"connection lost at RCPT: {exc}", stage="rcpt") from exc
        if not accepted:
            await self.smtp.rset()
            code, text = next(iter(refused.values()))
            cls = TransientDeliveryError if any(400 <= c < 500 for c, _ in refused.values()) \
                else PermanentDeliveryError
            raise cls(f"every recipient refused: {code} {text}", stage="rcpt", code=code,
                      server_message=text)
        try:
            resp = await self.smtp.data(envelope.data)
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code in (-1, 421) or exc.code < 400:
                raise DeliveryUnknown(f"lost after DATA: {exc}", stage="data") from exc
            await self.smtp.rset()
            raise _reply_error(exc, "data") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            # We cannot tell whether the final "." reached the server: say so.
            raise DeliveryUnknown(f"connection lost during DATA: {exc}", stage="data") from exc
        return SendResult(message_id=envelope.message_id, accepted=accepted, refused=refused,
                          session_id=self.session_id, reply=(resp.code, resp.message))


def _reply_error(exc: aiosmtplib.SMTPResponseException, stage: Any) -> MailError:
    cls = TransientDeliveryError if 400 <= exc.code < 500 else PermanentDeliveryError
    return cls(f"{stage.upper()} refused: {exc.code} {exc.message}", stage=stage, code=exc.code,
               server_message=exc.message)


def direct_factory(port: int, *, host: str = "127.0.0.1",
                   timeout: float = 5.0) -> Callable[[], Any]:
    """A ``SessionFactory`` for plain SMTP to ``host:port``."""

    @asynccontextmanager
    async def open_session() -> AsyncIterator[DirectSession]:
        smtp = aiosmtplib.SMTP(hostname=host, port=port, timeout=timeout, start_tls=False)
        try:
            await smtp.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise TransientDeliveryError(f"cannot connect to {host}:{port}: {exc}",
                                         stage="connect", host=host, port=port) from exc
        try:
            yield DirectSession(smtp)
        finally:
            if smtp.is_connected:
                try:
                    await smtp.quit()
                except (aiosmtplib.SMTPException, OSError):
                    smtp.close()

    return open_session


def read_ids(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line]
