"""How the worker reads an attempt's end: pure functions over errors and server answers."""

from __future__ import annotations

import pytest

from egressmail.mail.envelope import SendResult
from egressmail.mail.errors import (
    DeliveryUnknown,
    MailConfigError,
    MessageError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from egressmail.mail.retry import AttemptKind
from egressmail.mail.worker import (
    WorkerOptions,
    classify_error,
    classify_result,
    session_is_usable,
    split_refusals,
)


@pytest.mark.parametrize(("error", "kind"), [
    (DeliveryUnknown("lost after .", stage="data"), AttemptKind.UNKNOWN),
    (MessageError("bad header", stage="message"), AttemptKind.PERMANENT),
    (PermanentDeliveryError("550", stage="rcpt", code=550), AttemptKind.PERMANENT),
    (PermanentDeliveryError("554", stage="data", code=554), AttemptKind.PERMANENT),
    (PermanentDeliveryError("553", stage="mail", code=553), AttemptKind.PERMANENT),
    (TransientDeliveryError("451", stage="data", code=451), AttemptKind.TRANSIENT),
    (TransientDeliveryError("refused", stage="connect"), AttemptKind.TRANSIENT),
    # A 5xx before the message (a wrong password, a bad certificate) is not the message's fault.
    (PermanentDeliveryError("535 bad credentials", stage="auth", code=535), AttemptKind.TRANSIENT),
    (PermanentDeliveryError("certificate", stage="tls"), AttemptKind.TRANSIENT),
    (MailConfigError("no STARTTLS", stage="starttls"), AttemptKind.TRANSIENT),
    (RuntimeError("a bug"), AttemptKind.TRANSIENT),
])
def test_classify_error(error, kind):
    assert classify_error(error) is kind


@pytest.mark.parametrize(("error", "usable"), [
    (PermanentDeliveryError("550", stage="rcpt", code=550), True),
    (TransientDeliveryError("451", stage="data", code=451), True),
    (TransientDeliveryError("421 closing", stage="data", code=421), False),
    (TransientDeliveryError("reset", stage="mail"), False),
    (DeliveryUnknown("lost", stage="data"), False),
    (OSError("reset"), False),
])
def test_a_session_is_reused_only_after_a_reply(error, usable):
    assert session_is_usable(error) is usable


def result(accepted=(), refused=None) -> SendResult:
    return SendResult("<1@t>", {a: (250, "ok") for a in accepted}, refused or {}, "s")


def test_a_result_with_a_4xx_recipient_is_transient_for_that_one():
    kind, acc, ref, dfr = classify_result(["a", "b", "c"],
                                          result(["a"], {"b": (450, "busy"), "c": (550, "gone")}), 0)
    assert kind is AttemptKind.TRANSIENT
    assert (list(acc), list(ref), list(dfr)) == (["a"], ["c"], ["b"])


def test_a_result_with_only_5xx_left_is_sent_if_anyone_got_it_now_or_before():
    assert classify_result(["a", "c"], result(["a"], {"c": (550, "gone")}), 0)[0] is AttemptKind.ACCEPTED
    assert classify_result(["c"], result([], {"c": (550, "gone")}), 1)[0] is AttemptKind.ACCEPTED
    assert classify_result(["c"], result([], {"c": (550, "gone")}), 0)[0] is AttemptKind.PERMANENT


def test_a_recipient_the_server_did_not_refuse_is_accepted_with_the_data_reply():
    kind, acc, _, _ = classify_result(["a"], SendResult("<1@t>", {}, {}, "s", (250, "queued")), 0)
    assert kind is AttemptKind.ACCEPTED and acc == {"a": (250, "queued")}


@pytest.mark.parametrize("kwargs", [{"concurrency": 0}, {"batch_size": 0}, {"lease_s": 0.5},
                                    {"poll_interval_s": 0}, {"attempt_timeout_s": 0}])
def test_worker_options_refuse_values_that_cannot_work(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        WorkerOptions(**kwargs)


def test_split_refusals_fails_5xx_for_good_and_defers_4xx_in_envelope_order():
    replies = {"c@x": (450, "busy"), "a@x": (550, "no such user"), "other@x": (550, "not ours")}
    refused, deferred = split_refusals(("a@x", "b@x", "c@x"), replies)
    assert refused == {"a@x": (550, "no such user")}
    assert deferred == {"c@x": (450, "busy")}  # b@x had no reply: left to the caller
    assert split_refusals(("a@x",), {}) == ({}, {})
