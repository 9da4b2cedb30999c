"""The retry policy of the outbox: pure decisions, no clock and no I/O.

Theory of operation
-------------------
Every delivery attempt ends in one :class:`AttemptKind`. The policy turns that kind, the number of
attempts so far and the message's age into a :class:`Decision`: the message is sent, retried at a
given time, failed for good, or held for a human. The worker passes the current time and a random
number in, so the same inputs always give the same decision (and tests can enumerate them).

- ``accepted``: the server took the message (for every recipient still pending) → sent.
- ``transient`` (a 4xx reply, a refused or dropped connection, a timeout) → retried after an
  exponential backoff with jitter, clamped between ``min_delay_s`` and ``max_delay_s``; once the
  next try would fall after ``max_lifetime_s`` from the message's creation, it fails as *expired*
  instead (Postfix's ``maximal_queue_lifetime``, 5 days by default there and here).
- ``permanent`` (a 5xx reply, an invalid message) → failed, never retried.
- ``unknown`` (the connection was lost after the final ``.`` and before the reply, or the worker
  holding the message vanished): the provider may already have the message. ``on_unknown`` decides:
  ``"retry"`` (the default) sends it again later with the *same* Message-ID, accepting a possible
  duplicate that receivers can recognise; ``"hold"`` parks it until someone looks. docs/outbox.md
  argues the default: a lost message is silent, a duplicate is visible and de-duplicable.
- ``crash``: the worker died holding the message without recording an outcome. A message that keeps
  doing this (``max_crashes`` times) is isolated (held) so it cannot block the queue.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Literal

DEFAULT_MIN_DELAY_S = 60.0
DEFAULT_MAX_DELAY_S = 3600.0
DEFAULT_MAX_LIFETIME_S = 5 * 24 * 3600.0
DEFAULT_MULTIPLIER = 2.0
DEFAULT_JITTER = 0.25
DEFAULT_MAX_CRASHES = 5

UnknownPolicy = Literal["retry", "hold"]


class AttemptKind(enum.Enum):
    """How one delivery attempt ended."""

    ACCEPTED = "accepted"
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    UNKNOWN = "unknown"
    CRASH = "crash"


class Action(enum.Enum):
    """What the outbox does with the message next."""

    SENT = "sent"
    RETRY = "retry"
    FAIL = "fail"
    HOLD = "hold"


@dataclass(frozen=True, slots=True)
class Decision:
    """The policy's answer: an action, when to retry (for ``RETRY``) and why (for the history)."""

    action: Action
    retry_at: float | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff, lifetime and isolation limits of the outbox.

    Args:
        min_delay_s: the delay before the first retry (before jitter).
        max_delay_s: the longest delay between two tries.
        multiplier: how much the delay grows after each failed try.
        jitter: a fraction of the delay drawn at random, so that many messages deferred together by
            one outage do not all come back in the same second (0 = none, 1 = up to the full delay).
        max_lifetime_s: a message older than this when it would be retried fails as expired.
        on_unknown: ``"retry"`` or ``"hold"`` a message whose last attempt's fate is unknown.
        max_crashes: claims without an outcome (its worker died) after which a message is held.

    Raises:
        ValueError: a limit that cannot work (negative, min above max, jitter outside 0..1).
    """

    min_delay_s: float = DEFAULT_MIN_DELAY_S
    max_delay_s: float = DEFAULT_MAX_DELAY_S
    multiplier: float = DEFAULT_MULTIPLIER
    jitter: float = DEFAULT_JITTER
    max_lifetime_s: float = DEFAULT_MAX_LIFETIME_S
    on_unknown: UnknownPolicy = "retry"
    max_crashes: int = DEFAULT_MAX_CRASHES

    def __post_init__(self) -> None:
        if not (0 <= self.min_delay_s <= self.max_delay_s) or not math.isfinite(self.max_delay_s):
            raise ValueError(f"retry delays must satisfy 0 <= min_delay_s ({self.min_delay_s}) "
                             f"<= max_delay_s ({self.max_delay_s}) < infinity")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be at least 1, got {self.multiplier}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, got {self.jitter}")
        if not self.max_lifetime_s > 0:
            raise ValueError(f"max_lifetime_s must be positive, got {self.max_lifetime_s}")
        if self.on_unknown not in ("retry", "hold"):
            raise ValueError(f"on_unknown must be 'retry' or 'hold', got {self.on_unknown!r}")
        if self.max_crashes < 1:
            raise ValueError(f"max_crashes must be at least 1, got {self.max_crashes}")

    def backoff(self, failures: int, rand: float) -> float:
        """The delay before the next try after ``failures`` failed tries (1 = the first failed).

        ``rand`` is a number in [0, 1); the jitter removes up to ``jitter`` of the delay, so the
        result stays within [min_delay_s * (1 - jitter), max_delay_s].
        """
        exponent = max(failures, 1) - 1
        # Cap the exponent before computing: 2.0 ** 5000 overflows a float.
        if self.multiplier > 1 and exponent > 0:
            cap = math.log(max(self.max_delay_s, 1.0) / max(self.min_delay_s, 1e-9)) / math.log(
                self.multiplier)
            exponent = min(exponent, math.ceil(max(cap, 0.0)))
        base = min(self.max_delay_s, self.min_delay_s * self.multiplier ** exponent)
        return base * (1.0 - self.jitter * min(max(rand, 0.0), 1.0))

    def is_expired(self, created_at: float, at: float) -> bool:
        """Whether a message created at ``created_at`` is past its lifetime at time ``at``."""
        return at - created_at > self.max_lifetime_s

    def decide(self, kind: AttemptKind, *, failures: int, crashes: int, created_at: float,
               now: float, rand: float) -> Decision:
        """What to do after an attempt of kind ``kind``.

        Args:
            kind: how the attempt ended.
            failures: failed tries so far, including this one.
            crashes: claims that ended without an outcome so far, including this one.
            created_at: when the message was queued (epoch seconds).
            now: the current time (epoch seconds).
            rand: a random number in [0, 1) for the jitter.
        """
        if kind is AttemptKind.ACCEPTED:
            return Decision(Action.SENT, reason="accepted")
        if kind is AttemptKind.PERMANENT:
            return Decision(Action.FAIL, reason="permanent failure")
        if kind is AttemptKind.CRASH and crashes >= self.max_crashes:
            return Decision(Action.HOLD, reason=f"isolated: its worker stopped without an outcome "
                                                f"{crashes} times (max_crashes={self.max_crashes})")
        if kind in (AttemptKind.UNKNOWN, AttemptKind.CRASH) and self.on_unknown == "hold":
            return Decision(Action.HOLD, reason="delivery unknown: the server may have it "
                                                "(on_unknown='hold')")
        if kind is AttemptKind.CRASH:
            # The worker vanished: nothing says the server is unwell, so try again at once.
            retry_at = now
        else:
            retry_at = now + self.backoff(failures, rand)
        if self.is_expired(created_at, retry_at):
            return Decision(Action.FAIL, reason=f"expired: still undelivered after "
                                                f"{_duration(self.max_lifetime_s)} (max_lifetime_s)")
        return Decision(Action.RETRY, retry_at=retry_at, reason=kind.value)


def _duration(seconds: float) -> str:
    """A short human duration: ``90s``, ``15m``, ``5d``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def parse_duration(text: str) -> float:
    """Parse ``30s``, ``15m``, ``2h``, ``7d`` or a plain number of seconds.

    Raises:
        ValueError: the text is not a non-negative number with an optional s/m/h/d suffix.
    """
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    t = text.strip().lower()
    factor = 1
    if t and t[-1] in units:
        factor = units[t[-1]]
        t = t[:-1]
    try:
        value = float(t)
    except ValueError:
        raise ValueError(f"invalid duration {text!r}: use a number with s, m, h, d or w, "
                         "e.g. 30s, 15m, 7d") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"invalid duration {text!r}: must be a non-negative number")
    return value * factor
