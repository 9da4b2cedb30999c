"""Pure parts of --workers: the option, adding snapshots up, shared append-only access logs."""

from __future__ import annotations

import json
import os

import pytest

from egressmail.gateway.accesslog import PIPE_BUF, AccessLog, AccessRecord, AppendFile, Via
from egressmail.gateway.errors import InvalidGatewayOption
from egressmail.gateway.metrics import GatewayCollector, GatewayMetrics, merge_snapshots
from egressmail.gateway.workers import parse_workers


def test_parse_workers():
    assert parse_workers("1") == 1
    assert parse_workers("3") == 3
    assert parse_workers("auto") == len(os.sched_getaffinity(0))
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(InvalidGatewayOption, match="expected a number from 1, or auto"):
            parse_workers(bad)


def test_snapshots_add_up_and_render_like_one_gateway():
    a, b = GatewayMetrics(), GatewayMetrics()
    for m, n in ((a, 2), (b, 3)):
        for _ in range(n):
            m.opened("r:1")
            m.closed("r:1", "closed")
        m.add_bytes("r:1", 10, 20)
        m.refuse("port-not-allowed")
        m.generation = n
        m.rules = 1
    a.opened("r:1")  # one still open
    total = merge_snapshots([a.snapshot(), b.snapshot()])
    assert total["total"] == {"r:1\x1fclosed": 5}
    assert total["open"] == {"r:1": 1}
    assert total["generation"] == 3 and total["rules"] == 1
    text = b"".join(f"{s.name} {s.labels} {s.value}\n".encode()
                    for fam in GatewayCollector(lambda: total).collect() for s in fam.samples).decode()
    assert "egressmail_gateway_connections_total {'rule': 'r:1', 'end': 'closed'} 5" in text
    assert "egressmail_gateway_bytes_total {'rule': 'r:1', 'direction': 'down'} 40" in text
    assert "egressmail_gateway_connections_refused_total {'reason': 'port-not-allowed'} 2" in text


def _record(reason: str = "") -> AccessRecord:
    return AccessRecord(via=Via.PORT_FORWARD, rule="r:1", client="127.0.0.1:1", listen_port=1,
                        started=1_778_321_521.5, reason=reason)


def test_worker_is_named_on_every_line_text_and_json(tmp_path):
    path = tmp_path / "a.log"
    log = AccessLog.open(str(path), worker=4242)
    log.write(_record())
    log.close()
    log = AccessLog.open(str(path), json_lines=True, worker=4243)  # appends
    log.write(_record())
    log.close()
    text_line, json_line = path.read_text().splitlines()
    assert text_line.endswith(" end=closed worker=4242")
    assert json.loads(json_line)["worker"] == 4243


def test_pipe_writes_are_cut_at_line_ends_within_pipe_buf(monkeypatch):
    import egressmail.gateway.accesslog as accesslog

    writes: list[bytes] = []
    real_write = os.write

    def recording_write(fd: int, data: memoryview) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(accesslog.os, "write", recording_write)
    read_fd, write_fd = os.pipe()
    try:
        sink = AppendFile(write_fd, owns_fd=False)
        lines = [f"line {i} " + "x" * 300 for i in range(40)]  # ~12 KB: more than one PIPE_BUF
        sink.write("\n".join(lines) + "\n")
        os.close(write_fd)
        received = b""
        while data := os.read(read_fd, 1 << 16):
            received += data
    finally:
        os.close(read_fd)
    assert received.decode().splitlines() == lines
    assert len(writes) > 1
    assert all(len(w) <= PIPE_BUF and w.endswith(b"\n") for w in writes)


def test_regular_file_takes_a_batch_in_one_write(monkeypatch, tmp_path):
    import egressmail.gateway.accesslog as accesslog

    writes: list[int] = []
    real_write = os.write
    monkeypatch.setattr(accesslog.os, "write",
                        lambda fd, data: writes.append(len(data)) or real_write(fd, data))
    sink = AppendFile.open(str(tmp_path / "a.log"))
    sink.write("".join(f"line {i} {'x' * 300}\n" for i in range(40)))
    sink.close()
    assert len(writes) == 1
    assert len((tmp_path / "a.log").read_text().splitlines()) == 40
