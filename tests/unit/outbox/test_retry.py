"""The retry policy: pure decisions, checked exhaustively where the space is small."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from egressmail.mail.retry import Action, AttemptKind, RetryPolicy, parse_duration

T0 = 1_700_000_000.0


def test_accepted_is_sent_and_permanent_fails_whatever_the_history():
    policy = RetryPolicy()
    for failures in (1, 5, 500):
        assert policy.decide(AttemptKind.ACCEPTED, failures=failures, crashes=0, created_at=T0,
                             now=T0 + 10**7, rand=0.5).action is Action.SENT
        assert policy.decide(AttemptKind.PERMANENT, failures=failures, crashes=0, created_at=T0,
                             now=T0, rand=0.5).action is Action.FAIL


def test_transient_defers_with_exponential_backoff_between_min_and_max():
    policy = RetryPolicy(min_delay_s=60, max_delay_s=3600, multiplier=2, jitter=0)
    delays = [policy.decide(AttemptKind.TRANSIENT, failures=n, crashes=0, created_at=T0, now=T0,
                            rand=0.0).retry_at - T0 for n in range(1, 10)]  # type: ignore[operator]
    assert delays == [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]


def test_jitter_only_shortens_the_delay_by_up_to_its_fraction():
    policy = RetryPolicy(min_delay_s=100, max_delay_s=100, jitter=0.25)
    assert policy.backoff(1, 0.0) == 100
    assert policy.backoff(1, 0.999) == pytest.approx(75.025)


@given(failures=st.integers(min_value=0, max_value=10_000), rand=st.floats(0, 1),
       min_delay=st.floats(0, 1e5), spread=st.floats(0, 1e6), jitter=st.floats(0, 1),
       multiplier=st.floats(1, 10))
def test_backoff_always_stays_within_bounds(failures, rand, min_delay, spread, jitter, multiplier):
    policy = RetryPolicy(min_delay_s=min_delay, max_delay_s=min_delay + spread, jitter=jitter,
                         multiplier=multiplier)
    delay = policy.backoff(failures, rand)
    assert min_delay * (1 - jitter) - 1e-6 <= delay <= min_delay + spread + 1e-6


def test_a_retry_past_the_lifetime_fails_as_expired():
    policy = RetryPolicy(min_delay_s=60, max_delay_s=60, jitter=0, max_lifetime_s=3600)
    ok = policy.decide(AttemptKind.TRANSIENT, failures=1, crashes=0, created_at=T0,
                       now=T0 + 3500, rand=0)
    assert ok.action is Action.RETRY
    late = policy.decide(AttemptKind.TRANSIENT, failures=1, crashes=0, created_at=T0,
                         now=T0 + 3541, rand=0)
    assert late.action is Action.FAIL
    assert "expired" in late.reason


@pytest.mark.parametrize(("on_unknown", "expected"), [("retry", Action.RETRY), ("hold", Action.HOLD)])
def test_unknown_follows_the_documented_policy(on_unknown, expected):
    policy = RetryPolicy(on_unknown=on_unknown)
    for kind in (AttemptKind.UNKNOWN, AttemptKind.CRASH):
        decision = policy.decide(kind, failures=1, crashes=1, created_at=T0, now=T0, rand=0)
        assert decision.action is expected


def test_the_default_for_unknown_is_retry():
    assert RetryPolicy().on_unknown == "retry"


def test_a_crash_is_retried_at_once_until_max_crashes_then_held():
    policy = RetryPolicy(max_crashes=3)
    for crashes in (1, 2):
        d = policy.decide(AttemptKind.CRASH, failures=0, crashes=crashes, created_at=T0, now=T0 + 5,
                          rand=0.9)
        assert (d.action, d.retry_at) == (Action.RETRY, T0 + 5)
    held = policy.decide(AttemptKind.CRASH, failures=0, crashes=3, created_at=T0, now=T0, rand=0)
    assert held.action is Action.HOLD
    assert "isolated" in held.reason


@pytest.mark.parametrize("kwargs", [
    {"min_delay_s": -1}, {"min_delay_s": 10, "max_delay_s": 5}, {"max_delay_s": float("inf")},
    {"multiplier": 0.5}, {"jitter": 1.5}, {"max_lifetime_s": 0}, {"on_unknown": "drop"},
    {"max_crashes": 0},
])
def test_impossible_limits_are_refused_at_construction(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs)).split("_s")[0].split("_")[0]):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize(("text", "seconds"), [("30", 30), ("30s", 30), ("15m", 900), ("2h", 7200),
                                               ("7d", 604800), ("1w", 604800), (" 1.5h ", 5400)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "-5m", "5y", "nan"])
def test_bad_durations_say_how_to_write_one(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)
