"""The outbox store on a real SQLite file: durability settings, enqueue, idempotency, operator actions."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from egressmail.mail.envelope import Envelope
from egressmail.mail.outbox import Outbox, OutboxStorageError, new_outbox_id
from egressmail.mail.outbox_model import (
    TRANSITIONS,
    InvalidEnvelope,
    InvalidTransition,
    OutboxNotFound,
    Status,
    can_move,
)
from egressmail.mail.retry import AttemptKind, RetryPolicy

from .helpers import envelope, report


def test_the_file_is_owner_only_wal_and_fsyncs_every_commit(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    with Outbox(home) as box:
        box.enqueue(envelope(1))
        assert box.path == home / "outbox.db"
        conn = sqlite3.connect(box.path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()
        # The writer's own connection: FULL (2) means the WAL is fsynced at every COMMIT.
        assert box._writer.submit(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]).result() == 2
    for name in ("outbox.db", "outbox.db-wal", "outbox.db-shm"):
        path = home / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name


def test_a_message_is_on_disk_when_enqueue_returns_even_if_the_process_is_killed(tmp_path: Path):
    db = tmp_path / "outbox.db"
    script = (
        "import os, signal, sys\n"
        "from egressmail.mail.outbox import Outbox\n"
        "from tests.unit.outbox.helpers import envelope\n"
        f"box = Outbox({str(db)!r})\n"
        "r = box.enqueue(envelope(7))\n"
        "print(r.id, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30,
                          cwd=root, check=False)
    assert proc.returncode == -9, proc.stderr
    oid = proc.stdout.strip()
    with Outbox(db) as box:
        detail = box.get(oid, with_data=True)
        assert detail.info.status is Status.QUEUED
        assert detail.data == envelope(7).data


def test_enqueue_stores_the_bytes_as_they_will_be_sent(outbox: Outbox):
    env = envelope(1, recipients=("a@x.test", "b@x.test", "a@x.test"))
    receipt = outbox.enqueue(env)
    assert (receipt.status, receipt.message_id, receipt.duplicate) == (Status.QUEUED, "<1@test>", False)
    detail = outbox.get(receipt.id, with_data=True)
    assert detail.data == env.data
    assert [r.address for r in detail.recipients] == ["a@x.test", "b@x.test"]  # repeats dropped
    assert detail.info.size == len(env.data)


def test_an_idempotency_key_returns_the_first_receipt_instead_of_a_copy(outbox: Outbox):
    first = outbox.enqueue(envelope(1), idempotency_key="order-42")
    second = outbox.enqueue(envelope(2), idempotency_key="order-42")
    assert second.duplicate and not first.duplicate
    assert (second.id, second.message_id) == (first.id, first.message_id)
    assert sum(outbox.counts().values()) == 1
    other = outbox.enqueue(envelope(3), idempotency_key="order-43")
    assert other.id != first.id


def test_concurrent_enqueues_with_one_key_queue_one_message(outbox: Outbox):
    ids: list[str] = []

    def go(n: int) -> None:
        ids.append(outbox.enqueue(envelope(n), idempotency_key="same").id)

    threads = [threading.Thread(target=go, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1
    assert outbox.counts()[Status.QUEUED] == 1


def test_concurrent_enqueues_share_commits(outbox: Outbox):
    barrier = threading.Barrier(32)

    def go(n: int) -> None:
        barrier.wait()
        for i in range(20):
            outbox.enqueue(envelope(n * 100 + i))

    threads = [threading.Thread(target=go, args=(n,)) for n in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outbox.counts()[Status.QUEUED] == 640
    assert outbox.commits < 640  # group commit: several enqueues per fsync


@pytest.mark.parametrize(("env", "match"), [
    (Envelope("f@x.test", (), b"data", "<1@t>"), "no recipient"),
    (Envelope("f@x.test", ("a@x.test\r\nRCPT TO:<evil@x.test>",), b"d", "<1@t>"), "invalid recipient"),
    (Envelope("f@x.test\nDATA", ("a@x.test",), b"d", "<1@t>"), "invalid sender"),
    (Envelope("f@x.test", ("a@x.test",), b"", "<1@t>"), "no content"),
    (Envelope("f@x.test", ("a@x.test",), b"d", " "), "invalid Message-ID"),
])
def test_an_invalid_message_is_refused_and_nothing_is_queued(outbox: Outbox, env, match):
    with pytest.raises(InvalidEnvelope, match=match) as info:
        outbox.enqueue(env)
    assert info.value.exit_code == 3 and info.value.stage == "message"
    assert sum(outbox.counts().values()) == 0


def test_enqueue_many_is_all_or_nothing(outbox: Outbox):
    with pytest.raises(InvalidEnvelope):
        outbox.enqueue_many([envelope(1), Envelope("f@x.test", (), b"d", "<2@t>")])
    assert sum(outbox.counts().values()) == 0
    assert len(outbox.enqueue_many([envelope(1), envelope(2)])) == 2


def test_one_failing_job_in_a_group_does_not_undo_the_others(outbox: Outbox):
    def boom(conn):
        conn.execute("INSERT INTO messages(id) VALUES ('half-written')")  # violates NOT NULL
    bad = outbox._writer.submit(boom)
    good = outbox._writer.submit(outbox._enqueue_job(envelope(1), None, None))
    with pytest.raises(sqlite3.IntegrityError):
        bad.result()
    assert outbox.status(good.result().id) is Status.QUEUED


def test_hold_release_and_retry_follow_the_state_machine(outbox: Outbox, clock):
    oid = outbox.enqueue(envelope(1)).id
    assert outbox.hold(oid) is Status.QUEUED
    assert outbox.status(oid) is Status.HELD
    assert outbox.claim("w") == []  # held messages are left alone
    with pytest.raises(InvalidTransition, match="it is held; only queued, deferred, unknown"):
        outbox.hold(oid)
    assert outbox.release(oid) is Status.HELD
    assert outbox.status(oid) is Status.QUEUED
    with pytest.raises(InvalidTransition, match="it is queued; only held"):
        outbox.release(oid)
    [claim] = outbox.claim("w")
    with pytest.raises(InvalidTransition, match="worker w is delivering it now"):
        outbox.hold(oid)
    policy = RetryPolicy()
    outbox.complete(claim, report(claim, AttemptKind.ACCEPTED, policy, clock.now))
    with pytest.raises(InvalidTransition, match="it is sent"):
        outbox.retry(oid)
    history = [a.outcome for a in outbox.get(oid).attempts]
    assert history == ["operator", "operator", "accepted"]


def test_retry_gives_a_failed_message_a_fresh_life(outbox: Outbox, clock):
    policy = RetryPolicy()
    oid = outbox.enqueue(envelope(1)).id
    [claim] = outbox.claim("w")
    outbox.complete(claim, report(claim, AttemptKind.PERMANENT, policy, clock.now, code=550))
    detail = outbox.get(oid)
    assert detail.info.status is Status.FAILED
    assert [r.status.value for r in detail.recipients] == ["refused"]
    assert outbox.retry(oid) is Status.FAILED
    detail = outbox.get(oid)
    assert detail.info.status is Status.QUEUED and detail.info.attempts == 0
    assert [r.status.value for r in detail.recipients] == ["pending"]
    [again] = outbox.claim("w")
    assert again.envelope.recipients == ("to@example.test",)


def test_retry_failed_requeues_every_failed_message(outbox: Outbox, clock):
    policy = RetryPolicy()
    for n in range(3):
        outbox.enqueue(envelope(n))
    for claim in outbox.claim("w", limit=2):
        outbox.complete(claim, report(claim, AttemptKind.PERMANENT, policy, clock.now, code=554))
    assert outbox.counts()[Status.FAILED] == 2
    assert outbox.retry_failed() == 2
    assert outbox.counts()[Status.QUEUED] == 3


def test_purge_deletes_only_old_final_messages(outbox: Outbox, clock):
    policy = RetryPolicy()
    ids = [outbox.enqueue(envelope(n)).id for n in range(3)]
    for claim in outbox.claim("w", limit=2):
        outbox.complete(claim, report(claim, AttemptKind.ACCEPTED, policy, clock.now))
    assert outbox.purge([Status.SENT], older_than_s=3600) == 0
    clock.advance(7200)
    assert outbox.purge([Status.SENT], older_than_s=3600) == 2
    assert [m.id for m in outbox.list()] == [ids[2]]
    with pytest.raises(OutboxNotFound, match=ids[0]):
        outbox.get(ids[0])
    with pytest.raises(ValueError, match="only sent and failed"):
        outbox.purge([Status.QUEUED], older_than_s=0)


def test_unknown_ids_say_where_to_find_the_real_ones(outbox: Outbox):
    with pytest.raises(OutboxNotFound, match="no message 'nope'") as info:
        outbox.retry("nope")
    assert "outbox list" in (info.value.hint or "")


def test_list_filters_by_state_newest_first(outbox: Outbox, clock):
    a = outbox.enqueue(envelope(1)).id
    clock.advance(1)
    b = outbox.enqueue(envelope(2)).id
    outbox.hold(a)
    assert [m.id for m in outbox.list()] == [b, a]
    assert [m.id for m in outbox.list(status=Status.HELD)] == [a]


def test_the_state_table_has_no_way_out_of_sent_and_reaches_every_state():
    assert TRANSITIONS[Status.SENT] == frozenset()
    assert not can_move(Status.SENT, Status.QUEUED)
    reachable = {Status.QUEUED}
    frontier = [Status.QUEUED]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in reachable:
                reachable.add(nxt)
                frontier.append(nxt)
    assert reachable == set(Status)


def test_a_newer_schema_is_refused_with_a_remedy(tmp_path: Path):
    db = tmp_path / "outbox.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(OutboxStorageError, match="newer egressmail") as info:
        Outbox(db)
    assert "upgrade" in (info.value.hint or "")


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path):
    db = tmp_path / "outbox.db"
    db.write_bytes(os.urandom(4096))
    with pytest.raises(OutboxStorageError, match="cannot open the outbox"):
        Outbox(db)


def test_ids_sort_by_time():
    assert new_outbox_id(1000.0) < new_outbox_id(1000.001) < new_outbox_id(2000.0)
    assert len(new_outbox_id()) == 26


def test_release_keeps_recipients_refused_for_good_and_retry_asks_them_again(outbox: Outbox, clock):
    policy = RetryPolicy(jitter=0)
    oid = outbox.enqueue(envelope(1, recipients=("gone@x.test", "busy@x.test"))).id
    [claim] = outbox.claim("w")
    outbox.complete(claim, report(claim, AttemptKind.TRANSIENT, policy, clock.now, code=450,
                                  refused={"gone@x.test": (550, "no such user")},
                                  deferred={"busy@x.test": (450, "busy")}))
    outbox.hold(oid)
    outbox.release(oid)
    assert [(r.status.value, r.code) for r in outbox.get(oid).recipients] == [
        ("refused", 550), ("pending", 450)]
    [again] = outbox.claim("w")
    assert again.envelope.recipients == ("busy@x.test",)
    outbox.release_claims([again])
    outbox.hold(oid)
    outbox.retry(oid)
    assert [r.status.value for r in outbox.get(oid).recipients] == ["pending", "pending"]
    [third] = outbox.claim("w")
    assert third.envelope.recipients == ("gone@x.test", "busy@x.test")
