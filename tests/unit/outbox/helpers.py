"""Small builders shared by the outbox tests: envelopes, a settable clock, attempt reports."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from egressmail.mail.envelope import Envelope
from egressmail.mail.outbox import Outbox
from egressmail.mail.outbox_model import AttemptReport, Claim
from egressmail.mail.retry import AttemptKind, RetryPolicy


def envelope(n: int = 0, *, recipients: tuple[str, ...] = ("to@example.test",),
             size: int = 200) -> Envelope:
    """A small message whose Message-ID is ``<n@test>``."""
    mid = f"<{n}@test>"
    head = f"From: from@example.test\r\nTo: {', '.join(recipients)}\r\nMessage-ID: {mid}\r\n" \
           f"Subject: test {n}\r\n\r\n"
    # Lines of 76 characters: SMTP servers refuse lines over 998 (RFC 5321 4.5.3.1.6).
    n = max(size - len(head), 1)
    body = "".join(("x" * 74 + "\r\n") for _ in range(n // 76)) + "y" * (n % 76) + "\r\n"
    return Envelope(sender="from@example.test", recipients=recipients,
                    data=(head + body).encode(), message_id=mid)


@dataclass
class Clock:
    """A clock the test moves by hand."""

    now: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def report(claim: Claim, kind: AttemptKind, policy: RetryPolicy, now: float, *,
           code: int | None = None, accepted: dict[str, tuple[int, str]] | None = None,
           refused: dict[str, tuple[int, str]] | None = None,
           deferred: dict[str, tuple[int, str]] | None = None) -> AttemptReport:
    """The report a worker would send for ``claim`` (decision from ``policy``, rand = 0)."""
    crashes = claim.crashes
    decision = policy.decide(kind, failures=claim.failures + 1, crashes=crashes,
                             created_at=claim.queued_at, now=now, rand=0.0)
    if kind is AttemptKind.ACCEPTED and accepted is None:
        accepted = {r: (250, "ok") for r in claim.envelope.recipients}
    return AttemptReport(kind=kind, decision=decision, started_at=now, finished_at=now,
                         session_id="s1", code=code, reply=f"{code} reply" if code else None,
                         accepted=accepted or {}, refused=refused or {}, deferred=deferred or {})


# Fixtures shared by the outbox unit and integration tests (each conftest re-exports them).


@pytest.fixture
def clock() -> Clock:
    """A hand-moved clock, so lease expiry and backoff are tested without waiting."""
    return Clock()


@pytest.fixture
def outbox(tmp_path: Path, clock: Clock) -> Iterator[Outbox]:
    """A real SQLite outbox file in tmp_path, on ``clock``."""
    with Outbox(tmp_path / "outbox.db", clock=clock) as box:
        yield box
