"""What travels between the message builder, the outbox and the SMTP transport.

The contract between ``mail/transport.py`` (one SMTP connection that can carry several messages),
``mail/outbox.py`` (the durable queue) and ``mail/worker.py`` (delivery): plain data plus two small
protocols, so the outbox never imports aiosmtplib and tests can pass their own session.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message ready to send: SMTP envelope plus the exact bytes of the message.

    ``data`` is the RFC 5322 message as it will be sent (the outbox stores these bytes); it never
    contains credentials.
    """

    sender: str
    recipients: tuple[str, ...]
    data: bytes = field(repr=False)
    message_id: str


@dataclass(frozen=True, slots=True)
class SendResult:
    """The server's answer to one message.

    ``accepted`` and ``refused`` map each recipient to its (code, text) reply; a message with at
    least one accepted recipient has been handed over.
    """

    message_id: str
    accepted: Mapping[str, tuple[int, str]]
    refused: Mapping[str, tuple[int, str]]
    session_id: str
    reply: tuple[int, str] = (250, "")


class SmtpSession(Protocol):
    """One open SMTP connection (greeted, TLS, authenticated) that can carry several messages."""

    session_id: str

    async def send(self, envelope: Envelope) -> SendResult:
        """Send one message on this connection.

        Raises:
            MessageError, TransientDeliveryError, PermanentDeliveryError, DeliveryUnknown
        """
        ...


class SessionFactory(Protocol):
    """Opens a new session; ``async with factory() as session: …`` closes it with QUIT."""

    def __call__(self) -> AbstractAsyncContextManager[SmtpSession]: ...
