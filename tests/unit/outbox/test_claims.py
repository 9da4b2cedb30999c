"""Claims, leases and outcomes: every state transition a worker causes, on a real SQLite file."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from egressmail.mail.outbox import Outbox
from egressmail.mail.outbox_model import RecipientStatus, Status
from egressmail.mail.retry import AttemptKind, RetryPolicy

from .helpers import Clock, envelope, report

POLICY = RetryPolicy(min_delay_s=60, max_delay_s=600, jitter=0, max_lifetime_s=3600, max_crashes=3)


def test_queued_to_sending_to_sent(outbox: Outbox, clock: Clock):
    oid = outbox.enqueue(envelope(1)).id
    [claim] = outbox.claim("w1", lease_s=30, policy=POLICY)
    assert (claim.id, claim.worker, claim.lease_until) == (oid, "w1", clock.now + 30)
    assert claim.envelope == envelope(1)
    info = outbox.get(oid).info
    assert (info.status, info.lease_owner) == (Status.SENDING, "w1")
    assert outbox.claim("w2", policy=POLICY) == []  # leased: nobody else gets it
    assert outbox.complete(claim, report(claim, AttemptKind.ACCEPTED, POLICY, clock.now))
    detail = outbox.get(oid)
    assert detail.info.status is Status.SENT and detail.info.sent_at == clock.now
    assert detail.info.lease_owner is None
    assert [r.status for r in detail.recipients] == [RecipientStatus.ACCEPTED]
    assert outbox.claim("w2", policy=POLICY) == []


def test_sending_to_deferred_then_due_again_after_the_backoff(outbox: Outbox, clock: Clock):
    oid = outbox.enqueue(envelope(1)).id
    [claim] = outbox.claim("w", policy=POLICY)
    outbox.complete(claim, report(claim, AttemptKind.TRANSIENT, POLICY, clock.now, code=451))
    info = outbox.get(oid).info
    assert (info.status, info.attempts, info.last_code) == (Status.DEFERRED, 1, 451)
    assert info.next_attempt_at == clock.now + 60
    clock.advance(59)
    assert outbox.claim("w", policy=POLICY) == []
    clock.advance(1)
    [again] = outbox.claim("w", policy=POLICY)
    assert (again.failures, again.previous) == (1, Status.DEFERRED)
    outbox.complete(again, report(again, AttemptKind.TRANSIENT, POLICY, clock.now, code=421))
    assert outbox.get(oid).info.next_attempt_at == clock.now + 120  # doubled


def test_sending_to_failed_on_a_permanent_reply(outbox: Outbox, clock: Clock):
    oid = outbox.enqueue(envelope(1)).id
    [claim] = outbox.claim("w", policy=POLICY)
    outbox.complete(claim, report(claim, AttemptKind.PERMANENT, POLICY, clock.now, code=554))
    detail = outbox.get(oid)
    assert (detail.info.status, detail.info.last_code) == (Status.FAILED, 554)
    assert detail.info.next_attempt_at is None
    assert [(r.status, r.code) for r in detail.recipients] == [(RecipientStatus.REFUSED, 554)]
    assert [(a.outcome, a.code) for a in detail.attempts] == [("permanent", 554)]


@pytest.mark.parametrize(("on_unknown", "status"), [("retry", Status.UNKNOWN), ("hold", Status.HELD)])
def test_sending_to_unknown_follows_the_policy(outbox: Outbox, clock: Clock, on_unknown, status):
    policy = RetryPolicy(min_delay_s=60, jitter=0, on_unknown=on_unknown)
    oid = outbox.enqueue(envelope(1)).id
    [claim] = outbox.claim("w", policy=policy)
    outbox.complete(claim, report(claim, AttemptKind.UNKNOWN, policy, clock.now))
    assert outbox.status(oid) is status
    clock.advance(61)
    again = outbox.claim("w", policy=policy)
    if status is Status.UNKNOWN:
        # Retried with the same Message-ID: the receiver can recognise a duplicate.
        assert [c.envelope.message_id for c in again] == ["<1@test>"]
    else:
        assert again == []


def test_sending_to_held_and_back(outbox: Outbox, clock: Clock):
    policy = RetryPolicy(on_unknown="hold")
    oid = outbox.enqueue(envelope(1)).id
    [claim] = outbox.claim("w", policy=policy)
    outbox.complete(claim, report(claim, AttemptKind.UNKNOWN, policy, clock.now))
    assert outbox.status(oid) is Status.HELD
    outbox.release(oid)
    [again] = outbox.claim("w", policy=policy)
    assert again.id == oid


def test_a_claim_not_started_is_given_back_in_its_previous_state(outbox: Outbox, clock: Clock):
    oid = outbox.enqueue(envelope(1)).id
    [claim] = outbox.claim("w", policy=POLICY)
    outbox.complete(claim, report(claim, AttemptKind.TRANSIENT, POLICY, clock.now, code=421))
    clock.advance(60)
    [again] = outbox.claim("w", policy=POLICY)
    assert outbox.release_claims([again]) == 1
    info = outbox.get(oid).info
    assert (info.status, info.attempts) == (Status.DEFERRED, 1)


def test_an_expired_lease_is_taken_over_and_recorded_as_unknown(outbox: Outbox, clock: Clock):
    oid = outbox.enqueue(envelope(1)).id
    [dead] = outbox.claim("w1", lease_s=30, policy=POLICY)
    clock.advance(29)
    assert outbox.claim("w2", lease_s=30, policy=POLICY) == []
    clock.advance(2)
    [taken] = outbox.claim("w2", lease_s=30, policy=POLICY)
    assert (taken.id, taken.crashes, taken.token) == (oid, 1, dead.token + 1)
    [lost] = outbox.get(oid).attempts
    assert (lost.outcome, lost.worker) == ("unknown", "w1")
    assert "stopped without reporting an outcome" in (lost.detail or "")
    # The first worker wakes up late: its report is kept, marked late, and changes nothing.
    assert not outbox.complete(dead, report(dead, AttemptKind.ACCEPTED, POLICY, clock.now))
    assert outbox.get(oid).info.status is Status.SENDING
    assert outbox.complete(taken, report(taken, AttemptKind.ACCEPTED, POLICY, clock.now))
    detail = outbox.get(oid)
    assert detail.info.status is Status.SENT and detail.info.crashes == 0
    assert [(a.outcome, a.late) for a in detail.attempts] == [
        ("unknown", False), ("accepted", True), ("accepted", False)]


def test_renew_keeps_the_lease_and_fails_once_taken_over(outbox: Outbox, clock: Clock):
    outbox.enqueue(envelope(1))
    [claim] = outbox.claim("w1", lease_s=30, policy=POLICY)
    clock.advance(20)
    [renewed] = outbox.renew([claim], lease_s=30)
    assert renewed.lease_until == clock.now + 30
    clock.advance(20)
    assert outbox.claim("w2", lease_s=30, policy=POLICY) == []  # still ours thanks to the renewal
    clock.advance(11)
    assert len(outbox.claim("w2", lease_s=30, policy=POLICY)) == 1
    assert outbox.renew([renewed], lease_s=30) == []


def test_a_poison_message_is_claimed_alone_then_isolated_without_blocking_the_queue(
        outbox: Outbox, clock: Clock):
    ids = [outbox.enqueue(envelope(n)).id for n in range(4)]
    poison = ids[0]
    batch = outbox.claim("w", limit=4, lease_s=10, policy=POLICY)
    assert len(batch) == 4
    # The worker dies holding all four. Next time, each suspect comes alone.
    clock.advance(11)
    for _ in range(4):
        [alone] = outbox.claim("w", limit=4, lease_s=10, policy=POLICY)
        assert alone.crashes == 1
        if alone.id != poison:
            outbox.complete(alone, report(alone, AttemptKind.ACCEPTED, POLICY, clock.now))
        # the poison one: the worker dies again (no report)
    clock.advance(11)
    [p] = outbox.claim("w", limit=4, lease_s=10, policy=POLICY)
    assert (p.id, p.crashes) == (poison, 2)
    clock.advance(11)
    assert outbox.claim("w", limit=4, lease_s=10, policy=POLICY) == []  # third crash: isolated
    detail = outbox.get(poison)
    assert detail.info.status is Status.HELD
    assert "isolated" in (detail.info.last_error or "")
    assert [a.outcome for a in detail.attempts] == ["unknown"] * 3
    counts = outbox.counts()
    assert (counts[Status.SENT], counts[Status.HELD]) == (3, 1)
    # New mail flows past it.
    outbox.enqueue(envelope(9))
    assert len(outbox.claim("w", limit=4, policy=POLICY)) == 1


def test_a_message_past_its_lifetime_fails_as_expired(outbox: Outbox, clock: Clock):
    oid = outbox.enqueue(envelope(1)).id
    [claim] = outbox.claim("w", policy=POLICY)
    outbox.complete(claim, report(claim, AttemptKind.TRANSIENT, POLICY, clock.now, code=421))
    clock.advance(3500)
    [claim] = outbox.claim("w", policy=POLICY)
    # 3500 s old + 120 s backoff is past the 3600 s lifetime.
    outbox.complete(claim, report(claim, AttemptKind.TRANSIENT, POLICY, clock.now, code=421))
    detail = outbox.get(oid)
    assert detail.info.status is Status.FAILED
    assert "expired" in (detail.info.last_error or "")


def test_a_message_that_waited_past_its_lifetime_fails_at_claim_without_an_attempt(
        outbox: Outbox, clock: Clock):
    oid = outbox.enqueue(envelope(1)).id
    clock.advance(3601)  # e.g. no worker ran for that long
    assert outbox.claim("w", policy=POLICY) == []
    detail = outbox.get(oid)
    assert detail.info.status is Status.FAILED
    assert [a.outcome for a in detail.attempts] == ["expired"]
    assert [r.status for r in detail.recipients] == [RecipientStatus.REFUSED]


def test_partial_recipient_failure_resends_only_the_deferred_ones(outbox: Outbox, clock: Clock):
    env = envelope(1, recipients=("ok@x.test", "gone@x.test", "later@x.test"))
    oid = outbox.enqueue(env).id
    [claim] = outbox.claim("w", policy=POLICY)
    outbox.complete(claim, report(claim, AttemptKind.TRANSIENT, POLICY, clock.now, code=450,
                                  accepted={"ok@x.test": (250, "ok")},
                                  refused={"gone@x.test": (550, "no such user")},
                                  deferred={"later@x.test": (450, "mailbox busy")}))
    detail = outbox.get(oid)
    assert detail.info.status is Status.DEFERRED
    assert [(r.address, r.status, r.code) for r in detail.recipients] == [
        ("ok@x.test", RecipientStatus.ACCEPTED, 250),
        ("gone@x.test", RecipientStatus.REFUSED, 550),
        ("later@x.test", RecipientStatus.PENDING, 450)]
    clock.advance(60)
    [again] = outbox.claim("w", policy=POLICY)
    assert again.envelope.recipients == ("later@x.test",)
    assert again.accepted_before == 1
    assert again.envelope.data == env.data
    outbox.complete(again, report(again, AttemptKind.ACCEPTED, POLICY, clock.now))
    detail = outbox.get(oid)
    assert detail.info.status is Status.SENT
    assert [r.status for r in detail.recipients] == [
        RecipientStatus.ACCEPTED, RecipientStatus.REFUSED, RecipientStatus.ACCEPTED]


def test_not_before_delays_the_first_try(outbox: Outbox, clock: Clock):
    outbox.enqueue(envelope(1), not_before=clock.now + 100)
    assert outbox.claim("w", policy=POLICY) == []
    clock.advance(100)
    assert len(outbox.claim("w", policy=POLICY)) == 1


def test_claims_take_the_oldest_due_first_and_respect_the_limit(outbox: Outbox, clock: Clock):
    ids = []
    for n in range(5):
        ids.append(outbox.enqueue(envelope(n)).id)
        clock.advance(1)
    assert [c.id for c in outbox.claim("w", limit=3, policy=POLICY)] == ids[:3]
    assert [c.id for c in outbox.claim("w", limit=3, policy=POLICY)] == ids[3:]


def test_claim_by_id_takes_only_that_message(outbox: Outbox):
    ids = [outbox.enqueue(envelope(n)).id for n in range(3)]
    assert [c.id for c in outbox.claim("send", ids=[ids[1]], policy=POLICY)] == [ids[1]]
    assert outbox.claim("send", ids=[ids[1]], policy=POLICY) == []


def test_bad_claim_arguments_are_refused(outbox: Outbox):
    with pytest.raises(ValueError, match="limit"):
        outbox.claim("w", limit=0)
    with pytest.raises(ValueError, match="lease_s"):
        outbox.claim("w", lease_s=0)


def test_several_outboxes_on_one_file_never_claim_a_message_twice(tmp_path: Path):
    """Each Outbox has its own writer connection, like separate worker processes."""
    db = tmp_path / "outbox.db"
    with Outbox(db) as seed:
        seed.enqueue_many([envelope(n) for n in range(300)])
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        with Outbox(db) as box:
            while batch := box.claim(name, limit=7, policy=POLICY):
                with lock:
                    claimed.extend(c.id for c in batch)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 300 and len(set(claimed)) == 300
