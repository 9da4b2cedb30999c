"""``send()`` through the outbox: queue durably, then (optionally) deliver now and report.

This is the piece ``MailService.send`` calls. The message is on disk before anything is sent; with
``wait=True`` it is then delivered in the caller's task (no worker needs to run) and the caller
learns the outcome as the old synchronous ``send`` told it: a return on acceptance, an exception on a
permanent rejection or an invalid message. On a transient failure the exception says the message is
queued and will be retried by ``egressmail worker run``; nothing is lost either way.
"""

from __future__ import annotations

from dataclasses import dataclass

from egressmail.mail.envelope import Envelope, SendResult, SessionFactory
from egressmail.mail.errors import DeliveryUnknown, MailError, TransientDeliveryError
from egressmail.mail.outbox import Outbox
from egressmail.mail.outbox_model import Receipt, Status
from egressmail.mail.retry import RetryPolicy
from egressmail.mail.worker import Worker, WorkerOptions, error_from_record


@dataclass(frozen=True, slots=True)
class Queued:
    """What a durable ``send`` returns.

    Attributes:
        receipt: the outbox id and Message-ID (``receipt.duplicate``: an earlier send with the same
            idempotency key queued it).
        status: the message's state when ``send`` returned (``queued`` without waiting).
        result: the server's answer when it accepted the message during this call.
    """

    receipt: Receipt
    status: Status
    result: SendResult | None = None

    @property
    def id(self) -> str:
        """The outbox id (``egressmail outbox show ID``)."""
        return self.receipt.id


async def send_durably(outbox: Outbox, envelope: Envelope, session_factory: SessionFactory, *,
                       wait: bool = True, idempotency_key: str | None = None,
                       policy: RetryPolicy | None = None,
                       options: WorkerOptions | None = None) -> Queued:
    """Queue ``envelope`` durably; with ``wait``, deliver it now and report the outcome.

    Raises:
        InvalidEnvelope: the message cannot be sent (nothing was queued).
        PermanentDeliveryError, MessageError: with ``wait``, the server refused it for good
            (the message is ``failed`` in the outbox).
        TransientDeliveryError, DeliveryUnknown: with ``wait``, it could not be delivered now; it
            stays queued and a worker retries it (the message says so, with the outbox id). When
            every recipient was refused with a mix of 4xx and 5xx, ``error.recipients`` holds each
            one's reply: the 5xx ones are refused for good, only the 4xx ones are retried.
        OutboxStorageError: the outbox cannot be written (the message was not accepted).
    """
    receipt = await outbox.aenqueue(envelope, idempotency_key=idempotency_key)
    if not wait:
        return Queued(receipt, receipt.status)
    if receipt.duplicate and receipt.status is Status.SENT:
        return Queued(receipt, Status.SENT)
    worker = Worker(outbox, session_factory, policy, options=options,
                    name=f"send:{receipt.id[-6:]}")
    delivery = await worker.deliver(receipt.id)
    if delivery.status is Status.SENT:
        return Queued(receipt, delivery.status, delivery.result)
    error = delivery.error or error_from_record(outbox, receipt.id, delivery.status)
    if error is None:  # pragma: no cover - only sent messages have no error
        return Queued(receipt, delivery.status, delivery.result)
    raise _queued_error(error, receipt, delivery.status)


def _queued_error(error: MailError, receipt: Receipt, status: Status) -> MailError:
    """Say what happens to the message next, keeping the error's class, stage and code."""
    if status in (Status.DEFERRED, Status.UNKNOWN):
        what = ("the server may have it; it will be sent again with the same Message-ID"
                if status is Status.UNKNOWN else "it will be retried")
        cls: type[MailError] = DeliveryUnknown if isinstance(error, DeliveryUnknown) \
            else TransientDeliveryError
        new = cls(f"{error} — message {receipt.id} is queued: {what}", stage=error.stage,
                  code=error.code, server_message=error.server_message, host=error.host,
                  port=error.port, forward=error.forward, recipients=error.recipients,
                  hint=error.hint or f"`egressmail worker run` delivers it; `egressmail outbox show "
                                     f"{receipt.id}` shows its attempts")
        new.__cause__ = error
        return new
    if status is Status.HELD:
        error.hint = error.hint or f"held: `egressmail outbox show {receipt.id}`, then `outbox release`"
    return error
