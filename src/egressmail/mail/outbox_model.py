"""What the outbox holds: message states, the state machine as data, and the records it returns.

Theory of operation
-------------------
A message moves through these states (``→`` by the worker, ``⇢`` by an operator)::

    queued ──→ sending ──→ sent
      ▲  ⇡        │  ├──→ deferred ──→ sending …        (4xx, connection trouble: retry at a time)
      ┊  ┊        │  ├──→ unknown  ──→ sending …        (lost after the final ".": may be delivered)
      ┊  ┊        │  ├──→ failed                         (5xx, invalid, expired)
      ┊  ┊        │  └──→ held                           (poison message, or on_unknown="hold")
      ┊  └┄┄┄┄ held ⇠┄┄ queued | deferred | unknown      (outbox hold / release)
      └┄┄┄┄┄┄┄┄ failed | deferred | unknown | held       (outbox retry)

``sending`` carries a lease: the worker that claimed the message owns it until ``lease_until``.
A worker that dies leaves the lease to expire; the next claim records the lost attempt as
``unknown`` (the dead worker may have delivered it) and counts a *crash*. :data:`TRANSITIONS` is the
single table of allowed moves; the store checks every change against it.

Recipients have their own small state (``pending`` → ``accepted`` | ``refused``): a server may take
some recipients and refuse others; only the pending ones (4xx) are sent again. That holds when every
recipient is refused too (a mix of 4xx and 5xx): the 5xx ones are refused for good. ``release``
keeps refused recipients refused; only ``retry`` makes them pending again.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from egressmail.errors import DeliveryError
from egressmail.mail.envelope import Envelope
from egressmail.mail.errors import MessageError
from egressmail.mail.retry import Action, AttemptKind, Decision


class Status(enum.Enum):
    """The state of a message in the outbox."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    UNKNOWN = "unknown"
    FAILED = "failed"
    HELD = "held"

    @property
    def is_final(self) -> bool:
        """Whether the worker is done with it (only an operator can move it on)."""
        return self in (Status.SENT, Status.FAILED, Status.HELD)


TRANSITIONS: Mapping[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.SENDING, Status.HELD, Status.FAILED}),
    Status.SENDING: frozenset({Status.SENT, Status.DEFERRED, Status.UNKNOWN, Status.FAILED,
                               Status.HELD, Status.QUEUED}),
    Status.DEFERRED: frozenset({Status.SENDING, Status.HELD, Status.FAILED, Status.QUEUED}),
    Status.UNKNOWN: frozenset({Status.SENDING, Status.HELD, Status.FAILED, Status.QUEUED}),
    Status.HELD: frozenset({Status.QUEUED}),
    Status.FAILED: frozenset({Status.QUEUED}),
    Status.SENT: frozenset(),
}
"""Allowed moves. ``sending → queued`` is a worker giving back a claim it did not start."""

CLAIMABLE = (Status.QUEUED, Status.DEFERRED, Status.UNKNOWN)


def can_move(old: Status, new: Status) -> bool:
    """Whether the state machine allows ``old → new``."""
    return new in TRANSITIONS[old]


class RecipientStatus(enum.Enum):
    """Where one recipient of a message stands."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    REFUSED = "refused"


class OutboxError(DeliveryError):
    """The outbox cannot do what was asked."""


class OutboxNotFound(OutboxError):
    """No message with that id in the outbox."""

    exit_code = 2


class InvalidTransition(OutboxError):
    """An operator action that the message's current state does not allow."""

    exit_code = 3


class InvalidEnvelope(MessageError):
    """A message that cannot be queued (no recipients, a line break in an address, no bytes)."""

    exit_code = 3

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, stage="message", hint=hint)


@dataclass(frozen=True, slots=True)
class Receipt:
    """What ``enqueue`` returns: the outbox id, the Message-ID, and whether it was already queued.

    ``duplicate`` is true when an earlier ``enqueue`` with the same idempotency key queued it.
    """

    id: str
    message_id: str
    status: Status
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Claim:
    """A message leased to one worker: deliver ``envelope`` (pending recipients only) before
    ``lease_until``, then report with ``Outbox.complete``.

    ``token`` fences the lease: a report from a worker whose lease was taken over is kept in the
    history but does not change the message.
    """

    id: str
    envelope: Envelope
    token: int
    lease_until: float
    worker: str
    previous: Status
    failures: int
    crashes: int
    queued_at: float
    created_at: float
    accepted_before: int


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """One row of ``outbox list``."""

    id: str
    message_id: str
    sender: str
    recipients: int
    status: Status
    size: int
    created_at: float
    updated_at: float
    attempts: int
    crashes: int
    next_attempt_at: float | None
    lease_owner: str | None
    last_code: int | None
    last_error: str | None
    idempotency_key: str | None
    sent_at: float | None


@dataclass(frozen=True, slots=True)
class RecipientInfo:
    """One recipient of a message and its last reply."""

    address: str
    status: RecipientStatus
    code: int | None
    reply: str | None


@dataclass(frozen=True, slots=True)
class AttemptInfo:
    """One entry of a message's history (a delivery attempt or an event such as a lost lease)."""

    number: int
    started_at: float
    finished_at: float
    worker: str | None
    session_id: str | None
    outcome: str
    code: int | None
    stage: str | None
    reply: str | None
    detail: str | None
    late: bool


@dataclass(frozen=True, slots=True)
class MessageDetail:
    """Everything ``outbox show`` prints; ``data`` is only loaded when asked for."""

    info: MessageInfo
    recipients: tuple[RecipientInfo, ...]
    attempts: tuple[AttemptInfo, ...]
    data: bytes | None = field(default=None, repr=False)


def validate_envelope(envelope: Envelope) -> Envelope:
    """Check what the SMTP envelope needs and drop repeated recipients (keeping the first).

    Raises:
        InvalidEnvelope: no recipient, an empty, multi-line or non-ASCII address, no Message-ID,
            no bytes.
    """
    if not isinstance(envelope.data, bytes | bytearray | memoryview) or len(envelope.data) == 0:
        raise InvalidEnvelope(f"message {envelope.message_id!r} has no content to send",
                              hint="build the message before queueing it")
    if not envelope.message_id.strip() or _has_line_break(envelope.message_id):
        raise InvalidEnvelope(f"invalid Message-ID {envelope.message_id!r}: it must be one "
                              "non-empty line", hint="use email.utils.make_msgid()")
    # An empty reverse-path (<>) is legal for bounces, so the sender may be empty, but never
    # multi-line: a line break would let the sender inject SMTP commands.
    if _has_line_break(envelope.sender):
        raise InvalidEnvelope(f"invalid sender {envelope.sender!r} in message "
                              f"{envelope.message_id!r}: line breaks are not allowed")
    if not envelope.sender.isascii():
        raise InvalidEnvelope(_NON_ASCII.format(what="sender", address=envelope.sender,
                                                mid=envelope.message_id), hint=_NON_ASCII_HINT)
    seen: dict[str, None] = {}
    for rcpt in envelope.recipients:
        if not rcpt.strip() or _has_line_break(rcpt):
            raise InvalidEnvelope(f"invalid recipient {rcpt!r} in message {envelope.message_id!r}: "
                                  "it must be one non-empty address")
        if not rcpt.isascii():
            raise InvalidEnvelope(_NON_ASCII.format(what="recipient", address=rcpt,
                                                    mid=envelope.message_id), hint=_NON_ASCII_HINT)
        seen.setdefault(rcpt, None)
    if not seen:
        raise InvalidEnvelope(f"message {envelope.message_id!r} has no recipient",
                              hint="give at least one To, Cc or Bcc address")
    recipients = tuple(seen)
    if recipients == envelope.recipients:
        return envelope
    return Envelope(sender=envelope.sender, recipients=recipients, data=envelope.data,
                    message_id=envelope.message_id)


# Refused at queue time: the transport cannot send them, and queueing them would only fail later.
_NON_ASCII = ("invalid {what} {address!r} in message {mid!r}: addresses must be ASCII "
              "(SMTPUTF8 is not supported)")
_NON_ASCII_HINT = "use an ASCII address (an IDNA-encoded domain, xn--...)"


def _has_line_break(text: str) -> bool:
    return any(c in text for c in "\r\n\x00")


@dataclass(frozen=True, slots=True)
class AttemptReport:
    """What a worker tells the outbox after one attempt (see ``Outbox.complete``).

    ``accepted``, ``refused`` (for good) and ``deferred`` (4xx, to be sent again) map recipients to
    the server's (code, text) reply; the decision comes from :class:`RetryPolicy`.
    """

    kind: AttemptKind
    decision: Decision
    started_at: float
    finished_at: float
    session_id: str | None = None
    code: int | None = None
    stage: str | None = None
    reply: str | None = None
    detail: str | None = None
    accepted: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    refused: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    deferred: Mapping[str, tuple[int, str]] = field(default_factory=dict)


def status_after(kind: AttemptKind, action: Action) -> Status:
    """The message's state once a decision is applied (``unknown`` keeps its own name)."""
    if action is Action.SENT:
        return Status.SENT
    if action is Action.FAIL:
        return Status.FAILED
    if action is Action.HOLD:
        return Status.HELD
    return Status.UNKNOWN if kind in (AttemptKind.UNKNOWN, AttemptKind.CRASH) else Status.DEFERRED
