"""`egressmail outbox …` through the real command line (a subprocess) on a real outbox file."""

from __future__ import annotations

from pathlib import Path

import pytest

from egressmail.mail.outbox import Outbox
from egressmail.mail.outbox_model import Status
from egressmail.mail.retry import AttemptKind, RetryPolicy
from tests.conftest import run_cli
from tests.unit.outbox.helpers import envelope, report

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def filled(home: Path) -> dict[str, str]:
    """An outbox with one message in each of sent, failed, deferred and queued."""
    home.mkdir(parents=True, exist_ok=True)
    policy = RetryPolicy()
    ids: dict[str, str] = {}
    with Outbox(home) as box:
        for n, name in enumerate(("sent", "failed", "deferred")):
            ids[name] = box.enqueue(envelope(n, recipients=(f"{name}@x.test",))).id
            [claim] = box.claim("w1", ids=[ids[name]])
            kind = {"sent": AttemptKind.ACCEPTED, "failed": AttemptKind.PERMANENT,
                    "deferred": AttemptKind.TRANSIENT}[name]
            code = {"sent": 250, "failed": 554, "deferred": 451}[name]
            box.complete(claim, report(claim, kind, policy, claim.lease_until - 60, code=code))
        ids["queued"] = box.enqueue(envelope(9), idempotency_key="order-9").id
    return ids


def test_list_shows_every_message_and_the_counts(home, filled):
    out = run_cli("outbox", "list", home=home)
    assert out.returncode == 0, out.stderr
    for oid in filled.values():
        assert oid in out.stdout
    assert "554" in out.stdout and "451" in out.stdout
    assert "queued: 1  sent: 1  deferred: 1  failed: 1" in out.stdout


def test_list_filters_by_state_and_refuses_unknown_states(home, filled):
    out = run_cli("outbox", "list", "--status", "failed", home=home)
    assert filled["failed"] in out.stdout and filled["sent"] not in out.stdout
    bad = run_cli("outbox", "list", "--status", "lost", home=home)
    assert bad.returncode == 2 and "'lost' is not one of" in bad.stderr


def test_show_prints_recipients_and_the_attempt_history_with_codes(home, filled):
    out = run_cli("outbox", "show", filled["deferred"], home=home)
    assert out.returncode == 0, out.stderr
    assert "deferred@x.test" in out.stdout
    assert "transient" in out.stdout and "451" in out.stdout and "w1" in out.stdout
    assert "next try:" in out.stdout


def test_show_data_prints_the_stored_bytes(home, filled):
    out = run_cli("outbox", "show", filled["queued"], "--data", home=home)
    assert "Message-ID: <9@test>" in out.stdout
    assert "order-9" in out.stdout


def test_show_of_an_unknown_id_is_a_clear_error(home, filled):
    out = run_cli("outbox", "show", "NOPE", home=home)
    assert out.returncode == 2
    assert "error: no message 'NOPE'" in out.stderr and "hint:" in out.stderr


def test_retry_hold_release_through_the_cli(home, filled):
    out = run_cli("outbox", "retry", filled["failed"], home=home)
    assert out.returncode == 0 and "failed → queued" in out.stdout
    out = run_cli("outbox", "hold", filled["failed"], home=home)
    assert out.returncode == 0 and "queued → held" in out.stdout
    out = run_cli("outbox", "release", filled["failed"], home=home)
    assert out.returncode == 0 and "held → queued" in out.stdout
    bad = run_cli("outbox", "retry", filled["sent"], home=home)
    assert bad.returncode == 3 and "it is sent" in bad.stderr


def test_retry_failed_requeues_all_of_them(home, filled):
    out = run_cli("outbox", "retry", "--failed", home=home)
    assert out.returncode == 0 and "queued 1 failed message(s) again" in out.stdout
    with Outbox(home) as box:
        assert box.status(filled["failed"]) is Status.QUEUED
    usage = run_cli("outbox", "retry", home=home)
    assert usage.returncode == 2 and "either a message ID or --failed" in usage.stderr


def test_purge_deletes_old_sent_messages_only(home, filled):
    out = run_cli("outbox", "purge", "--sent", "--older-than", "0s", home=home)
    assert out.returncode == 0 and "purged 1 message(s)" in out.stdout
    with Outbox(home) as box:
        assert {m.id for m in box.list()} == {filled["failed"], filled["deferred"], filled["queued"]}
    bad = run_cli("outbox", "purge", "--sent", "--older-than", "soon", home=home)
    assert bad.returncode == 2 and "invalid duration 'soon'" in bad.stderr
    none = run_cli("outbox", "purge", "--older-than", "7d", home=home)
    assert none.returncode == 2 and "--sent, --failed or both" in none.stderr


def test_metrics_prints_the_queue_depth(home, filled):
    out = run_cli("outbox", "metrics", home=home)
    assert 'egressmail_outbox_messages{state="deferred"} 1.0' in out.stdout


def test_help_teaches_with_examples(home):
    out = run_cli("outbox", "--help", home=home)
    assert "egressmail outbox purge --sent --older-than 7d" in out.stdout
    for sub in ("list", "show", "retry", "hold", "release", "purge", "metrics"):
        sub_help = run_cli("outbox", sub, "--help", home=home)
        assert sub_help.returncode == 0 and "egressmail outbox" in sub_help.stdout, sub
