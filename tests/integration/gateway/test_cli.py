"""The real `egressmail gateway` command in a subprocess: ready, reload (poll and SIGHUP), SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import httpx

from egressmail.networking.store import NetworkStore
from egressmail.storage.home import resolve_home
from egressmail.storage.sqlite import Database
from tests.conftest import run_cli
from tests.integration.gateway.conftest import open_client, read_all

PROGRAM, ENV = "1001", "2002"


def _store(home: Path) -> NetworkStore:
    return NetworkStore(Database(resolve_home(str(home))))


class Daemon:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def wait_for(self, pattern: str, limit_s: float = 15.0) -> re.Match[str]:
        """Read stderr until a line matches ``pattern`` (bounded)."""
        regex = re.compile(pattern)
        for line in self.lines:
            if m := regex.search(line):
                return m
        assert self.proc.stderr is not None
        async with asyncio.timeout(limit_s):
            while True:
                raw = await self.proc.stderr.readline()
                if not raw:
                    raise AssertionError(f"gateway exited before {pattern!r}: {self.lines}")
                line = raw.decode().rstrip("\n")
                self.lines.append(line)
                if m := regex.search(line):
                    return m


async def _start(home: Path, *args: str) -> Daemon:
    env = dict(os.environ, EGRESSMAIL_HOME=str(home))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "egressmail", "gateway", "run", PROGRAM, ENV, "--ephemeral-ports",
        "--http-proxy-port", "0", *args, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    daemon = Daemon(proc)
    await daemon.wait_for("gateway ready")
    return daemon


async def _stop(daemon: Daemon) -> int:
    if daemon.proc.returncode is None:
        daemon.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(15):
        await daemon.proc.wait()
    return daemon.proc.returncode  # type: ignore[return-value]


def _forward_port(daemon: Daemon, port_orig: int) -> int:
    for line in daemon.lines:
        if m := re.search(rf"port forward {port_orig} → \S+ on 127\.0\.0\.1:(\d+)", line):
            return int(m.group(1))
    raise AssertionError(f"no listener line for {port_orig}: {daemon.lines}")


async def test_run_forwards_logs_serves_metrics_and_stops_on_sigterm(home, backends, tmp_path):
    echo = await backends.echo()
    store = _store(home)
    store.create_infrastructure(PROGRAM, "flexiblePortEgress")
    store.enable(PROGRAM, ENV, {"portForwards": [{"name": "smtp.sendgrid.com", "portDest": 465,
                                                  "portOrig": 30465}]})
    log_file = tmp_path / "access.log"
    daemon = await _start(home, "--connect-to", f"smtp.sendgrid.com:465=127.0.0.1:{echo.port}",
                          "--access-log", str(log_file), "--metrics", "127.0.0.1:0", "--drain-timeout", "0.5")
    try:
        port = _forward_port(daemon, 30465)
        reader, writer = await open_client(port)
        writer.write(b"EHLO x\r\n")
        assert await asyncio.wait_for(reader.readexactly(8), 3) == b"EHLO x\r\n"
        client = "{}:{}".format(*writer.get_extra_info("sockname")[:2])
        metrics_port = int((await daemon.wait_for(r"metrics on http://127\.0\.0\.1:(\d+)/metrics")).group(1))
        text = (await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{metrics_port}/metrics",
                                        trust_env=False, timeout=5)).text
        assert 'egressmail_gateway_connections_open{rule="smtp.sendgrid.com:465"} 1.0' in text
        # SIGTERM with the tunnel still open: it drains for 0.5 s, then is cut, and the process exits 0.
        assert await _stop(daemon) == 0
        assert await read_all(reader) == b""
    finally:
        if daemon.proc.returncode is None:
            daemon.proc.kill()
            await daemon.proc.wait()
    lines = log_file.read_text().splitlines()
    assert len(lines) == 1
    assert f"client={client} " in lines[0] and "up=8 down=8" in lines[0] and "end=shutdown" in lines[0]
    assert any("stopped" in line for line in daemon.lines + [(await daemon.proc.stderr.read()).decode()])


async def test_store_changes_apply_by_polling_and_sighup(home, backends):
    echo = await backends.echo()
    store = _store(home)
    store.create_infrastructure(PROGRAM, "dedicatedEgressIp")
    store.enable(PROGRAM, ENV, {"portForwards": [{"name": "a.example.test", "portDest": 1,
                                                  "portOrig": 30001}]})
    pins = ("--connect-to", f"a.example.test:1=127.0.0.1:{echo.port}",
            "--connect-to", f"b.example.test:2=127.0.0.1:{echo.port}")
    daemon = await _start(home, *pins, "--poll-interval", "0.2")
    try:
        reader, writer = await open_client(_forward_port(daemon, 30001))
        writer.write(b"1")
        await asyncio.wait_for(reader.readexactly(1), 3)
        store.enable(PROGRAM, ENV, {"portForwards": [{"name": "b.example.test", "portDest": 2,
                                                      "portOrig": 30002}]})
        listening = await daemon.wait_for(r"rule b\.example\.test:2 listening on 127\.0\.0\.1:(\d+)")
        port_b = int(listening.group(1))
        await daemon.wait_for(r"rule a\.example\.test:1 on 30001 removed")
        writer.write(b"2")  # the removed rule's tunnel survives the reload
        assert await asyncio.wait_for(reader.readexactly(1), 3) == b"2"
        r2, w2 = await open_client(port_b)
        w2.write(b"b")
        assert await asyncio.wait_for(r2.readexactly(1), 3) == b"b"
        writer.close()
        w2.close()
    finally:
        assert await _stop(daemon) == 0

    daemon = await _start(home, *pins, "--poll-interval", "3600")  # only SIGHUP can reload now
    try:
        store.disable(PROGRAM, ENV)
        daemon.proc.send_signal(signal.SIGHUP)
        await daemon.wait_for(r"rule b\.example\.test:2 on 30002 removed")
    finally:
        assert await _stop(daemon) == 0


async def test_env_prints_the_variables_apps_use(home):
    store = _store(home)
    store.create_infrastructure(PROGRAM, "flexiblePortEgress")
    store.enable(PROGRAM, ENV, {"portForwards": [{"name": "smtp.sendgrid.com", "portDest": 465,
                                                  "portOrig": 30465}]})
    result = await asyncio.to_thread(run_cli, "gateway", "env", PROGRAM, ENV, "--http-proxy-port", "3129",
                                     home=home)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:5] == ["AEM_PROXY_HOST=127.0.0.1", "AEM_HTTP_PROXY_HOST=127.0.0.1",
                         "AEM_HTTPS_PROXY_HOST=127.0.0.1", "AEM_HTTP_PROXY_PORT=3129",
                         "AEM_HTTPS_PROXY_PORT=3129"]
    assert "# port forward: $AEM_PROXY_HOST:30465 → smtp.sendgrid.com:465" in lines


async def test_bad_options_exit_2_with_a_hint(home):
    result = await asyncio.to_thread(run_cli, "gateway", "run", PROGRAM, ENV, "--connect-to", "nonsense",
                                     home=home)
    assert result.returncode == 2
    assert "error: --connect-to 'nonsense': expected NAME:PORT=HOST:PORT" in result.stderr
    assert "hint: e.g. --connect-to smtp.sendgrid.com:465=127.0.0.1:2465" in result.stderr
    result = await asyncio.to_thread(run_cli, "gateway", "run", PROGRAM, ENV, "--egress-address", "nope",
                                     home=home)
    assert result.returncode == 2 and "--egress-address 'nope' is not an IP address" in result.stderr


async def test_port_in_use_is_a_clear_error(home):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        result = await asyncio.to_thread(run_cli, "gateway", "run", PROGRAM, ENV, "--http-proxy-port",
                                         str(taken), home=home)
    assert result.returncode == 1
    assert f"error: the HTTP proxy cannot listen on 127.0.0.1:{taken}" in result.stderr
    assert "hint:" in result.stderr


def test_help_teaches():
    result = run_cli("gateway", "run", "--help")
    assert result.returncode == 0
    assert "--connect-to smtp.sendgrid.com:465=127.0.0.1:2465" in result.stdout
