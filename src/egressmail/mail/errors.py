"""Errors of the mail part: one family, with the SMTP stage and reply code where there is one.

``transient`` tells the outbox what to do: a transient failure (4xx reply, connection trouble,
timeout) is deferred and retried; a permanent one (5xx, invalid message) fails the message;
:class:`DeliveryUnknown` means the connection was lost after the final ``.`` and before the reply,
so the provider may have the message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from egressmail.errors import DeliveryError

Stage = Literal["config", "message", "connect", "tls", "greeting", "ehlo", "starttls", "auth",
                "mail", "rcpt", "data", "quit", "oauth"]


class MailError(DeliveryError):
    """A message that could not be sent.

    Attributes:
        stage: the SMTP stage that failed.
        code: the server's reply code, or ``None`` when there was no reply.
        transient: whether retrying later may succeed.
        recipients: when every recipient was refused at RCPT, each one's (code, text) reply: the
            outbox fails the 5xx ones for good and retries only the 4xx ones. Empty otherwise.
    """

    transient: bool = False

    def __init__(self, message: str, *, stage: Stage, code: int | None = None,
                 server_message: str | None = None, host: str | None = None,
                 port: int | None = None, forward: str | None = None, hint: str | None = None,
                 transient: bool | None = None,
                 recipients: Mapping[str, tuple[int, str]] | None = None) -> None:
        super().__init__(message, hint=hint)
        self.stage = stage
        self.code = code
        self.server_message = server_message
        self.host = host
        self.port = port
        self.forward = forward
        self.recipients: Mapping[str, tuple[int, str]] = dict(recipients or {})
        if transient is not None:
            self.transient = transient


class MessageError(MailError):
    """The message itself is invalid (header injection, bad address): nothing was sent."""

    exit_code = 3


class MailConfigError(MailError):
    """The mail service's configuration cannot be used (checked before connecting)."""

    exit_code = 2


class TransientDeliveryError(MailError):
    """A 4xx reply or connection trouble: retry later."""

    transient = True


class PermanentDeliveryError(MailError):
    """A 5xx reply: the server refused for good."""


class DeliveryUnknown(MailError):
    """The connection was lost after the final ``.``: the server may or may not have the message."""

    transient = True


class MailTLSError(MailError):
    """The TLS handshake failed or the certificate is not valid for the expected name: nothing was sent.

    Not transient: a wrong name, an expired or self-signed certificate needs a person to act.
    """


class TLSRequiredError(MailError):
    """TLS was required (``smtp.requiretls``, or credentials to protect) but the server did not offer
    STARTTLS: the session stopped before any credential was sent."""
