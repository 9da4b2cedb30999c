"""`egressmail worker run` as a real subprocess: reads the mail service's .cfg.json, delivers the
home's outbox through the real SMTP transport to an aiosmtpd server on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from egressmail.mail.outbox import Outbox
from egressmail.mail.outbox_model import Status
from tests.conftest import run_cli
from tests.unit.outbox.helpers import envelope

from .support import RecordingHandler, smtpd

pytestmark = pytest.mark.timeout(60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(folder: Path, port: int) -> Path:
    cfg = folder / "com.day.cq.mailer.DefaultMailService.cfg.json"
    cfg.write_text(json.dumps({
        "smtp.host": "127.0.0.1", "smtp.port": port, "smtp.ssl": False, "smtp.starttls": True,
        "smtp.requiretls": False, "from.address": "from@example.test", "debug.email": False,
        "oauth.flow": False}))
    return cfg


@pytest.fixture
def made_home(home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    return home


async def run_cli_async(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, *args, home=home)


async def test_worker_run_once_delivers_the_outbox(made_home: Path, tmp_path: Path):
    home = made_home
    with Outbox(home) as box:
        ids = [box.enqueue(envelope(n)).id for n in range(5)]
    handler = RecordingHandler()
    async with smtpd(handler) as port:
        cfg = write_config(tmp_path, port)
        out = await run_cli_async("worker", "run", str(cfg), "--once", home=home)
    assert out.returncode == 0, out.stderr
    assert "worker ready" in out.stderr and "sent 5" in out.stderr
    assert sorted(handler.message_ids()) == sorted(f"<{n}@test>" for n in range(5))
    with Outbox(home) as box:
        assert {box.status(i) for i in ids} == {Status.SENT}


async def test_worker_run_stops_cleanly_on_sigterm(made_home: Path, tmp_path: Path):
    home = made_home
    handler = RecordingHandler()
    async with smtpd(handler) as port:
        cfg = write_config(tmp_path, port)
        env = dict(os.environ, EGRESSMAIL_HOME=str(home))
        metrics_port = free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "egressmail", "worker", "run", str(cfg), "--poll", "0.05s",
            "--metrics-port", str(metrics_port),
            env=env, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL)
        assert proc.stderr is not None
        line = await asyncio.wait_for(proc.stderr.readline(), 20)
        assert b"worker ready" in line
        with Outbox(home) as box:
            oid = box.enqueue(envelope(1)).id
        await asyncio.wait_for(handler.got_one.wait(), 20)
        async with httpx.AsyncClient() as client:
            scrape = await client.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert "egressmail_outbox_messages{state=" in scrape.text
        assert "egressmail_outbox_delivery_latency_seconds_bucket" in scrape.text
        proc.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(proc.stderr.read(), 20)
        assert await proc.wait() == 0, rest.decode()
    with Outbox(home) as box:
        assert box.status(oid) is Status.SENT


def test_bad_arguments_say_what_to_fix(home: Path, tmp_path: Path):
    cfg = write_config(tmp_path, 25)
    out = run_cli("worker", "run", str(cfg), "--lease", "soon", home=home)
    assert out.returncode == 2 and "invalid duration 'soon'" in out.stderr
    out = run_cli("worker", "run", str(cfg), "--program", "1001", home=home)
    assert out.returncode == 2 and "--program and --environment go together" in out.stderr
    out = run_cli("worker", "run", str(cfg), "--min-delay", "2h", "--max-delay", "1h", home=home)
    assert out.returncode == 2 and "min_delay_s" in out.stderr


def test_help_teaches_with_examples(home: Path):
    out = run_cli("worker", "run", "--help", home=home)
    assert out.returncode == 0 and "egressmail worker run ./osgiconfig" in out.stdout


async def test_connect_host_dials_elsewhere_with_the_same_settings(made_home: Path, tmp_path: Path):
    home = made_home
    with Outbox(home) as box:
        oid = box.enqueue(envelope(1)).id
    handler = RecordingHandler()
    async with smtpd(handler) as port:
        cfg = write_config(tmp_path, port)
        settings = json.loads(cfg.read_text())
        settings["smtp.host"] = "proxy.tunnel.invalid"  # does not resolve: only --connect-host works
        cfg.write_text(json.dumps(settings))
        out = await run_cli_async("worker", "run", str(cfg), "--once", "--connect-host", "127.0.0.1",
                                  home=home)
    assert out.returncode == 0, out.stderr
    assert handler.message_ids() == ["<1@test>"]
    with Outbox(home) as box:
        assert box.status(oid) is Status.SENT
