"""`egressmail send` through the outbox, as a real subprocess against aiosmtpd on loopback."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from egressmail.mail.outbox import Outbox
from egressmail.mail.outbox_model import Status
from tests.conftest import run_cli

from .support import RecordingHandler, smtpd
from .test_worker_cli import write_config

pytestmark = pytest.mark.timeout(60)

MESSAGE = ("--to", "a@example.test", "--subject", "Hello", "--text", "Hi from the outbox test")


async def send(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, "send", *args, home=home)


@pytest.fixture
def made_home(home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    return home


async def test_send_waits_and_exits_0_on_acceptance(made_home: Path, tmp_path: Path):
    handler = RecordingHandler()
    async with smtpd(handler) as port:
        out = await send("--config", str(write_config(tmp_path, port)), *MESSAGE, home=made_home)
    assert out.returncode == 0, out.stderr
    assert "sent:" in out.stdout and len(handler.received) == 1
    with Outbox(made_home) as box:
        assert [m.status for m in box.list()] == [Status.SENT]


async def test_send_no_wait_queues_prints_the_id_and_a_worker_delivers(made_home: Path, tmp_path: Path):
    handler = RecordingHandler()
    async with smtpd(handler) as port:
        cfg = str(write_config(tmp_path, port))
        out = await send("--config", cfg, *MESSAGE, "--no-wait", home=made_home)
        assert out.returncode == 0, out.stderr
        assert handler.received == []
        oid = out.stdout.split()[1]
        with Outbox(made_home) as box:
            assert box.status(oid) is Status.QUEUED
        worker = await asyncio.to_thread(run_cli, "worker", "run", cfg, "--once", home=made_home)
        assert worker.returncode == 0, worker.stderr
    assert len(handler.received) == 1
    with Outbox(made_home) as box:
        assert box.status(oid) is Status.SENT


async def test_a_rejection_exits_nonzero_and_the_message_is_failed(made_home: Path, tmp_path: Path):
    handler = RecordingHandler(data_reply="554 5.7.1 refused")
    async with smtpd(handler) as port:
        out = await send("--config", str(write_config(tmp_path, port)), *MESSAGE, home=made_home)
    assert out.returncode == 1 and "554" in out.stderr
    with Outbox(made_home) as box:
        assert [m.status for m in box.list()] == [Status.FAILED]


async def test_a_server_that_is_down_exits_nonzero_but_the_message_stays_queued(
        made_home: Path, tmp_path: Path):
    async with smtpd(RecordingHandler()) as port:
        pass
    out = await send("--config", str(write_config(tmp_path, port)), *MESSAGE, home=made_home)
    assert out.returncode == 1
    assert "is queued: it will be retried" in out.stderr
    with Outbox(made_home) as box:
        assert [m.status for m in box.list()] == [Status.DEFERRED]


async def test_the_same_idempotency_key_sends_once(made_home: Path, tmp_path: Path):
    handler = RecordingHandler()
    async with smtpd(handler) as port:
        cfg = str(write_config(tmp_path, port))
        for _ in range(2):
            out = await send("--config", cfg, *MESSAGE, "--idempotency-key", "order-7", home=made_home)
            assert out.returncode == 0, out.stderr
    assert len(handler.received) == 1
