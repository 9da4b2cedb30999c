"""`egressmail gateway run --workers 2` as a real process tree: sharing ports, reload, metrics, stop."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

import httpx
import pytest

from egressmail.networking.store import NetworkStore
from tests.integration.gateway.conftest import open_client
from tests.integration.gateway.test_cli import ENV, PROGRAM, Daemon, _forward_port, _start, _stop, _store

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="SO_REUSEPORT spreading is Linux's")


def _worker_pids(daemon: Daemon) -> set[int]:
    regex = re.compile(r"worker \d started \(pid (\d+)\)")
    return {int(m.group(1)) for line in daemon.lines if (m := regex.search(line))}


def _rule(store: NetworkStore, name: str, port_dest: int, port_orig: int) -> None:
    rule = {"name": name, "portDest": port_dest, "portOrig": port_orig}
    store.enable(PROGRAM, ENV, {"portForwards": [rule]})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _gone(pids: set[int], limit_s: float = 10.0) -> bool:
    for _ in range(int(limit_s / 0.05)):
        if not any(_alive(p) for p in pids):
            return True
        await asyncio.sleep(0.05)
    return False


async def _echo_once(port: int, payload: bytes) -> None:
    reader, writer = await open_client(port)
    writer.write(payload)
    assert await asyncio.wait_for(reader.readexactly(len(payload)), 3) == payload
    writer.close()


async def _matches(daemon: Daemon, pattern: str, count: int, limit_s: float = 15.0) -> list[re.Match[str]]:
    """Read stderr until ``count`` lines match ``pattern`` (bounded)."""
    regex = re.compile(pattern)
    async with asyncio.timeout(limit_s):
        while len(found := [m for line in daemon.lines if (m := regex.search(line))]) < count:
            assert daemon.proc.stderr is not None
            raw = await daemon.proc.stderr.readline()
            if not raw:
                raise AssertionError(f"gateway exited before {count}× {pattern!r}: {daemon.lines}")
            daemon.lines.append(raw.decode().rstrip("\n"))
    return found


async def _metrics(port: int) -> str:
    response = await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/metrics", trust_env=False,
                                       timeout=5)
    return response.text


async def test_two_workers_share_ports_log_reload_sum_metrics_and_stop(home, backends, tmp_path):
    echo = await backends.echo()
    store = _store(home)
    store.create_infrastructure(PROGRAM, "flexiblePortEgress")
    _rule(store, "a.example.test", 1, 30001)
    log_file = tmp_path / "access.log"
    daemon = await _start(home, "--workers", "2", "--access-log", str(log_file), "--metrics", "127.0.0.1:0",
                          "--poll-interval", "0.2", "--drain-timeout", "0.5",
                          "--connect-to", f"a.example.test:1=127.0.0.1:{echo.port}",
                          "--connect-to", f"b.example.test:2=127.0.0.1:{echo.port}")
    workers = _worker_pids(daemon)
    try:
        assert len(workers) == 2
        assert any("gateway ready (generation" in line and "2 workers)" in line for line in daemon.lines)
        port = _forward_port(daemon, 30001)
        for i in range(40):  # the kernel hashes each new connection to one worker's socket
            await _echo_once(port, b"ping %d" % i)

        # Every line is whole and names its worker; with 40 connections both workers served some.
        for _ in range(100):
            lines = log_file.read_text().splitlines() if log_file.exists() else []
            if len(lines) >= 40:
                break
            await asyncio.sleep(0.05)
        assert len(lines) == 40
        served = {int(m.group(1)) for line in lines if (m := re.search(r" worker=(\d+)$", line))}
        assert len(served) == 2 and served == workers
        assert all("end=closed" in line and line.count(" rule=") == 1 for line in lines)

        # The parent serves the sum of both workers' counters (each reports about once a second).
        metrics_port = int((await daemon.wait_for(r"metrics on http://127\.0\.0\.1:(\d+)/metrics")).group(1))
        want = 'egressmail_gateway_connections_total{end="closed",rule="a.example.test:1"} 40.0'
        for _ in range(60):
            text = await _metrics(metrics_port)
            if want in text:
                break
            await asyncio.sleep(0.1)
        assert want in text

        # A store change reaches every worker, and a new ephemeral rule gets one port for all.
        _rule(store, "b.example.test", 2, 30002)
        listening = await _matches(daemon, r"gateway\[(\d+)\]: rule b\.example\.test:2 listening on "
                                           r"127\.0\.0\.1:(\d+)", 2)
        assert {int(m.group(1)) for m in listening} == workers
        ports = {int(m.group(2)) for m in listening}
        assert len(ports) == 1
        await _matches(daemon, r"rule a\.example\.test:1 on 30001 removed", 2)
        (port_b,) = ports
        for _ in range(6):
            await _echo_once(port_b, b"b")
    finally:
        code = await _stop(daemon)
    assert code == 0
    assert await _gone(workers), "a worker outlived the gateway"


async def test_a_killed_worker_is_restarted_and_a_killed_parent_takes_its_workers_along(home, backends):
    echo = await backends.echo()
    store = _store(home)
    store.create_infrastructure(PROGRAM, "flexiblePortEgress")
    _rule(store, "a.example.test", 1, 30001)
    daemon = await _start(home, "--workers", "2", "--connect-to", f"a.example.test:1=127.0.0.1:{echo.port}")
    try:
        first = _worker_pids(daemon)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        await daemon.wait_for(rf"worker \d \(pid {victim}\) exited with status -9: restarting it")
        await _matches(daemon, r"worker \d started \(pid (\d+)\)", 3)
        now = _worker_pids(daemon) - {victim}
        assert len(now) == 2 and all(_alive(p) for p in now)
        await _matches(daemon, r"gateway\[\d+\]: rule a\.example\.test:1 listening on", 3)
        port = _forward_port(daemon, 30001)
        for _ in range(10):  # whichever worker gets it, the port still forwards
            await _echo_once(port, b"x")

        daemon.proc.kill()  # the parent dies without a word: each worker sees its control socket close
        await daemon.proc.wait()
        assert await _gone(now), "workers outlived their parent"
    finally:
        if daemon.proc.returncode is None:
            daemon.proc.kill()
            await daemon.proc.wait()


async def test_a_worker_that_cannot_start_stops_the_gateway_with_its_error(home):
    import socket

    with socket.socket() as s:  # held without SO_REUSEPORT: no worker can share it
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        env = dict(os.environ, EGRESSMAIL_HOME=str(home))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "egressmail", "gateway", "run", PROGRAM, ENV, "--workers", "2",
            "--http-proxy-port", str(taken), env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        async with asyncio.timeout(20):
            _, err = await proc.communicate()
    text = err.decode()
    assert proc.returncode == 1, text
    assert f"error: the HTTP proxy cannot listen on 127.0.0.1:{taken}" in text
    assert "failed to start" in text and "stopping the gateway" in text


async def test_workers_option_is_checked(home):
    from tests.conftest import run_cli

    result = await asyncio.to_thread(run_cli, "gateway", "run", PROGRAM, ENV, "--workers", "0", home=home)
    assert result.returncode == 2
    assert "--workers '0': expected a number from 1, or auto" in result.stderr
    assert "hint: e.g. --workers 2" in result.stderr
