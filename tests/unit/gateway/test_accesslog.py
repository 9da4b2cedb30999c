from __future__ import annotations

import io
import json

from egressmail.gateway.accesslog import AccessLog, AccessRecord, End, Via, format_json, format_text


def record(**kw):
    base = dict(via=Via.PORT_FORWARD, rule="smtp.sendgrid.com:465", client="127.0.0.1:50412",
                listen_port=30465, started=1_778_321_521.532, dest="smtp.sendgrid.com:465",
                addr="127.0.0.1:2465", egress="dedicated", up=1834, down=5120, duration=0.4123)
    base.update(kw)
    return AccessRecord(**base)


def test_text_line_has_every_field():
    line = format_text(record())
    assert line == ("2026-05-09T10:12:01.532Z rule=smtp.sendgrid.com:465 via=port-forward listen=30465 "
                    "client=127.0.0.1:50412 dest=smtp.sendgrid.com:465 addr=127.0.0.1:2465 "
                    "egress=dedicated up=1834 down=5120 duration=0.412s end=closed")


def test_reason_is_quoted_and_stays_on_one_line():
    line = format_text(record(end=End.REFUSED, reason='bad "x"\nnext'))
    assert "\n" not in line
    assert line.endswith(r'end=refused reason="bad \"x\"\nnext"')


def test_json_line():
    data = json.loads(format_json(record(end=End.IDLE_TIMEOUT, reason="quiet")))
    assert data["client"] == "127.0.0.1:50412"
    assert (data["up"], data["down"], data["end"], data["reason"]) == (1834, 5120, "idle-timeout", "quiet")
    assert data["time"] == "2026-05-09T10:12:01.532Z"


def test_writer_buffers_until_flush():
    out = io.StringIO()
    log = AccessLog(out)
    log.write(record())
    log.write(record(up=1))
    assert out.getvalue() == ""
    log.flush()
    assert out.getvalue().count("\n") == 2
