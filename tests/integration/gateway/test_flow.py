"""Backpressure and reload: memory stays bounded, rule changes never drop a tunnel."""

from __future__ import annotations

import asyncio

import pytest

from egressmail.gateway.options import Limits
from tests.integration.gateway.conftest import egress_map, open_client, options, read_all

NAME = "bulk.example.test"
CHUNK = 1024 * 1024
ATTEMPT = 300 * CHUNK  # what the writer tries to push while the reader is stopped
HIGH, LOW = 256 * 1024, 64 * 1024
READ_CHUNK = 256 * 1024  # the event loop's largest single read
BOUND = 2 * (HIGH + READ_CHUNK)  # both directions, each at most high water plus one read


async def _write_until_stalled(writer: asyncio.StreamWriter, sample) -> int:
    """Write up to ATTEMPT bytes; stop when a drain makes no progress for a second."""
    sent = 0
    chunk = b"z" * CHUNK
    while sent < ATTEMPT:
        writer.write(chunk)
        sent += CHUNK
        sample()
        try:
            await asyncio.wait_for(writer.drain(), 1.0)
        except TimeoutError:
            return sent
    return sent


@pytest.mark.parametrize("direction", ["client-writes", "destination-writes"])
async def test_a_stopped_reader_bounds_the_gateway_buffers(backends, run_gateway, direction):
    release = asyncio.Event()
    state: dict[str, int] = {}
    peak = 0

    def sample() -> None:
        nonlocal peak
        peak = max(peak, run.gateway.buffered_bytes())

    async def backend_handler(reader, writer):
        if direction == "client-writes":
            await release.wait()  # not reading: the client's bytes pile up upstream of us
            received = 0
            while data := await reader.read(CHUNK):
                received += len(data)
            state["received"] = received
        else:
            state["sent"] = await _write_until_stalled(writer, sample)
            release.set()
            writer.write_eof()
            await reader.read()

    backend = await backends.start(backend_handler)
    run = await run_gateway(egress_map((NAME, 9000, 30900)),
                            options(f"{NAME}:9000=127.0.0.1:{backend.port}",
                                    limits=Limits(high_water=HIGH, low_water=LOW)))
    reader, writer = await open_client(run.port(30900))
    if direction == "client-writes":
        sent = await _write_until_stalled(writer, sample)
        sample()
        stalled_buffered = run.gateway.buffered_bytes()
        release.set()
        writer.write_eof()
        await asyncio.wait_for(writer.drain(), 10)
        assert await read_all(reader, 10) == b""
        for _ in range(500):
            if "received" in state:
                break
            await asyncio.sleep(0.02)
        assert state["received"] == sent  # nothing lost once the reader resumed
    else:
        await asyncio.wait_for(release.wait(), 60)
        sample()
        stalled_buffered = run.gateway.buffered_bytes()
        sent = state["sent"]
        received = 0
        while data := await asyncio.wait_for(reader.read(CHUNK), 10):
            received += len(data)
        assert received == sent
    assert sent < ATTEMPT, "the writer was never slowed down"
    assert stalled_buffered <= BOUND, stalled_buffered
    assert peak <= BOUND, peak
    writer.close()
    (line,) = await run.log_lines(1)
    assert (f"up={sent}" if direction == "client-writes" else f"down={sent}") in line


async def test_reload_adds_and_removes_rules_without_dropping_tunnels(backends, run_gateway):
    echo = await backends.echo()
    pins = (f"a.example.test:1=127.0.0.1:{echo.port}", f"c.example.test:3=127.0.0.1:{echo.port}")
    run = await run_gateway(egress_map(("a.example.test", 1, 30001), generation=1), options(*pins))
    old_port = run.port(30001)
    reader, writer = await open_client(old_port)
    writer.write(b"before")
    assert await asyncio.wait_for(reader.readexactly(6), 3) == b"before"

    changed = await run.gateway.reload(egress_map(("c.example.test", 3, 30003), generation=2))
    assert changed
    assert sorted(run.gateway.listening_ports) == [30003]
    with pytest.raises(ConnectionRefusedError):  # the removed rule no longer accepts
        await open_client(old_port)
    writer.write(b"after")  # ...but its established tunnel still works
    assert await asyncio.wait_for(reader.readexactly(5), 3) == b"after"
    r2, w2 = await open_client(run.port(30003))  # the new rule listens
    w2.write(b"new")
    assert await asyncio.wait_for(r2.readexactly(3), 3) == b"new"
    writer.close()
    w2.close()
    lines = await run.log_lines(2)
    old = next(line for line in lines if "listen=30001" in line)
    assert "up=11 down=11" in old and old.endswith("end=closed")
    assert await run.gateway.reload(egress_map(("c.example.test", 3, 30003), generation=2)) is False


async def test_reload_changing_a_destination_keeps_the_listener(backends, run_gateway):
    first, second = await backends.echo(), await backends.echo()
    pins = (f"one.example.test:1=127.0.0.1:{first.port}", f"two.example.test:2=127.0.0.1:{second.port}")
    run = await run_gateway(egress_map(("one.example.test", 1, 30001)), options(*pins))
    port = run.port(30001)
    await run.gateway.reload(egress_map(("two.example.test", 2, 30001), generation=2))
    assert run.port(30001) == port
    reader, writer = await open_client(port)
    writer.write(b"x")
    await asyncio.wait_for(reader.readexactly(1), 3)
    assert (first.peers, second.peers) == ([], ["127.0.0.1"])


async def test_aclose_drains_then_cuts(backends, run_gateway):
    echo = await backends.echo()
    run = await run_gateway(egress_map((NAME, 9000, 30900)), options(f"{NAME}:9000=127.0.0.1:{echo.port}"))
    reader, writer = await open_client(run.port(30900))
    writer.write(b"x")
    await asyncio.wait_for(reader.readexactly(1), 3)
    await run.gateway.aclose(drain_timeout=0.2)
    assert await read_all(reader) == b""
    (line,) = await run.log_lines(1)
    assert "end=shutdown" in line
    assert run.gateway.open_connections == 0
