"""Port forwards through a real gateway on loopback: forwarding, refusals, limits, timeouts."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from egressmail.gateway.options import Limits
from egressmail.networking.model import Kind
from tests.integration.gateway.conftest import egress_map, open_client, options, read_all

NAME = "smtp.example.test"


async def test_forwards_both_ways_and_logs_one_line(backends, run_gateway):
    echo = await backends.echo()
    run = await run_gateway(egress_map((NAME, 465, 30465)), options(f"{NAME}:465=127.0.0.1:{echo.port}"))
    reader, writer = await open_client(run.port(30465))
    payload = bytes(range(256)) * 4096  # 1 MiB, every byte value
    writer.write(payload)
    assert await asyncio.wait_for(reader.readexactly(len(payload)), 5) == payload
    client_addr = "{}:{}".format(*writer.get_extra_info("sockname")[:2])
    writer.close()
    (line,) = await run.log_lines(1)
    assert f"client={client_addr} " in line
    assert f"rule={NAME}:465 via=port-forward listen=30465" in line
    assert f"dest={NAME}:465 addr=127.0.0.1:{echo.port}" in line
    assert f"up={len(payload)} down={len(payload)}" in line
    assert line.endswith("end=closed")


async def test_listens_only_on_declared_ports(run_gateway):
    run = await run_gateway(egress_map((NAME, 465, 30465), ("b.example.test", 587, 30587)),
                            options(http_proxy=False))
    assert sorted(run.gateway.listening_ports) == [30465, 30587]
    assert run.gateway.http_proxy_port is None


@pytest.mark.parametrize("egress", [
    egress_map((NAME, 465, 30465), kind=None),
    egress_map((NAME, 465, 30465), enabled=False),
], ids=["no-kind", "disabled"])
async def test_no_advanced_networking_means_no_listeners(run_gateway, egress):
    run = await run_gateway(egress)
    assert run.gateway.listening_ports == {}


async def test_unmapped_port_is_closed_after_its_rule_goes(backends, run_gateway):
    echo = await backends.echo()
    run = await run_gateway(egress_map((NAME, 465, 30465), ("b.example.test", 587, 30587)),
                            options(f"{NAME}:465=127.0.0.1:{echo.port}"))
    gone = run.port(30587)
    await run.gateway.reload(egress_map((NAME, 465, 30465), generation=2))
    assert 30587 not in run.gateway.listening_ports
    with pytest.raises(ConnectionRefusedError):
        await open_client(gone)


async def test_name_resolving_to_loopback_is_refused_unless_pinned(backends, run_gateway):
    echo = await backends.echo()
    run = await run_gateway(egress_map(("localhost", echo.port, 30001)), options())
    reader, writer = await open_client(run.port(30001))
    assert await read_all(reader) == b""  # cut without a byte
    (line,) = await run.log_lines(1)
    assert "end=refused" in line and "loopback address" in line
    assert echo.peers == []  # nothing was connected
    assert 'egressmail_gateway_connections_refused_total{reason="private-address"} 1.0' in \
        run.gateway.metrics.render().decode()


async def test_rule_naming_a_private_literal_is_followed(backends, run_gateway):
    echo = await backends.echo()
    run = await run_gateway(egress_map(("127.0.0.1", echo.port, 30001)), options())
    reader, writer = await open_client(run.port(30001))
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), 3) == b"ping"
    writer.close()


async def test_connect_failure_is_logged(run_gateway):
    with socket.socket() as s:  # a port with certainly nothing listening: bound, never listened on
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
        run = await run_gateway(egress_map((NAME, 465, 30465)),
                                options(f"{NAME}:465=127.0.0.1:{closed_port}"))
        reader, writer = await open_client(run.port(30465))
        assert await read_all(reader) == b""
        (line,) = await run.log_lines(1)
    assert "end=connect-failed" in line
    metrics = run.gateway.metrics.render().decode()
    assert 'egressmail_gateway_errors_total{kind="connect-failed"} 1.0' in metrics


async def test_half_close_is_carried_through(backends, run_gateway):
    async def count_then_answer(reader, writer):
        data = await reader.read()  # until the client's FIN
        writer.write(b"got %d bytes" % len(data))
        await writer.drain()

    backend = await backends.start(count_then_answer)
    run = await run_gateway(egress_map((NAME, 465, 30465)), options(f"{NAME}:465=127.0.0.1:{backend.port}"))
    reader, writer = await open_client(run.port(30465))
    writer.write(b"x" * 100_000)
    writer.write_eof()
    assert await read_all(reader) == b"got 100000 bytes"
    writer.close()
    (line,) = await run.log_lines(1)
    assert "up=100000 down=16" in line and "end=closed" in line


async def test_silent_client_is_cut_at_idle_timeout(backends, run_gateway):
    async def silent(reader, writer):
        await reader.read()

    backend = await backends.start(silent)
    run = await run_gateway(egress_map((NAME, 465, 30465)),
                            options(f"{NAME}:465=127.0.0.1:{backend.port}", idle=0.3))
    reader, writer = await open_client(run.port(30465))
    assert await read_all(reader, 5) == b""  # the gateway cut it
    (line,) = await run.log_lines(1)
    assert "end=idle-timeout" in line and "up=0 down=0" in line


async def test_total_connection_limit_drops_new_connections(backends, run_gateway):
    echo = await backends.echo()
    run = await run_gateway(egress_map((NAME, 465, 30465)),
                            options(f"{NAME}:465=127.0.0.1:{echo.port}", limits=Limits(max_connections=2)))
    held = [await open_client(run.port(30465)) for _ in range(2)]
    for reader, writer in held:  # both really relayed
        writer.write(b"a")
        assert await asyncio.wait_for(reader.readexactly(1), 3) == b"a"
    reader, writer = await open_client(run.port(30465))
    assert await read_all(reader) == b""
    lines = await run.log_lines(1)
    assert "end=refused" in lines[0] and "over the gateway's limit of 2" in lines[0]
    for _, w in held:
        w.close()
    await run.log_lines(3)
    reader, writer = await open_client(run.port(30465))  # room again
    writer.write(b"b")
    assert await asyncio.wait_for(reader.readexactly(1), 3) == b"b"
    writer.close()


async def test_per_rule_limit(backends, run_gateway):
    echo = await backends.echo()
    run = await run_gateway(egress_map((NAME, 465, 30465), ("b.example.test", 587, 30587)),
                            options(f"{NAME}:465=127.0.0.1:{echo.port}",
                                    f"b.example.test:587=127.0.0.1:{echo.port}",
                                    limits=Limits(max_connections_per_rule=1)))
    r1, w1 = await open_client(run.port(30465))
    w1.write(b"1")
    assert await asyncio.wait_for(r1.readexactly(1), 3) == b"1"
    r2, w2 = await open_client(run.port(30465))
    assert await read_all(r2) == b""
    r3, w3 = await open_client(run.port(30587))  # another rule still has room
    w3.write(b"3")
    assert await asyncio.wait_for(r3.readexactly(1), 3) == b"3"
    lines = await run.log_lines(1)
    assert "over the limit of 1 open connections for this rule" in lines[0]
    assert 'egressmail_gateway_connections_refused_total{reason="over-rule-limit"} 1.0' in \
        run.gateway.metrics.render().decode()
    w1.close()
    w3.close()


async def test_dedicated_egress_address_is_bound(backends, run_gateway):
    echo = await backends.echo()
    run = await run_gateway(egress_map((NAME, 465, 30465), kind=Kind.DEDICATED_EGRESS_IP),
                            options(f"{NAME}:465=127.0.0.1:{echo.port}", egress_address="127.0.0.2"))
    reader, writer = await open_client(run.port(30465))
    writer.write(b"x")
    await asyncio.wait_for(reader.readexactly(1), 3)
    writer.close()
    assert echo.peers == ["127.0.0.2"]
    (line,) = await run.log_lines(1)
    assert "egress=dedicated" in line


async def test_flexible_kind_leaves_from_the_shared_address(backends, run_gateway):
    echo = await backends.echo()
    run = await run_gateway(egress_map((NAME, 465, 30465), kind=Kind.FLEXIBLE_PORT_EGRESS),
                            options(f"{NAME}:465=127.0.0.1:{echo.port}", egress_address="127.0.0.2"))
    reader, writer = await open_client(run.port(30465))
    writer.write(b"x")
    await asyncio.wait_for(reader.readexactly(1), 3)
    writer.close()
    assert echo.peers == ["127.0.0.1"]


async def test_json_access_log(backends, run_gateway):
    echo = await backends.echo()
    run = await run_gateway(egress_map((NAME, 465, 30465)), options(f"{NAME}:465=127.0.0.1:{echo.port}"),
                            json_lines=True)
    reader, writer = await open_client(run.port(30465))
    writer.write(b"abc")
    await asyncio.wait_for(reader.readexactly(3), 3)
    local = "{}:{}".format(*writer.get_extra_info("sockname")[:2])
    writer.close()
    (line,) = await run.log_lines(1)
    data = json.loads(line)
    assert data["client"] == local
    assert (data["up"], data["down"], data["end"], data["rule"]) == (3, 3, "closed", f"{NAME}:465")


async def test_metrics_count_connections_and_bytes(backends, run_gateway):
    echo = await backends.echo()
    run = await run_gateway(egress_map((NAME, 465, 30465)), options(f"{NAME}:465=127.0.0.1:{echo.port}"))
    for _ in range(3):
        reader, writer = await open_client(run.port(30465))
        writer.write(b"12345")
        await asyncio.wait_for(reader.readexactly(5), 3)
        writer.close()
    await run.log_lines(3)
    text = run.gateway.metrics.render().decode()
    rule = f'rule="{NAME}:465"'
    assert f'egressmail_gateway_connections_total{{end="closed",{rule}}} 3.0' in text
    assert f'egressmail_gateway_connections_open{{{rule}}} 0.0' in text
    assert f'egressmail_gateway_bytes_total{{direction="up",{rule}}} 15.0' in text
    assert f'egressmail_gateway_bytes_total{{direction="down",{rule}}} 15.0' in text
    assert "egressmail_gateway_rules 1.0" in text


async def test_destination_that_never_answers_is_cut_at_connect_timeout(run_gateway):
    # A listener whose accept queue is full drops further SYNs: connecting to it hangs.
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        fillers = []
        for _ in range(8):  # fill the queue (its size depends on the kernel); stop once one hangs
            s = socket.socket()
            s.setblocking(False)
            fillers.append(s)
            if s.connect_ex(("127.0.0.1", port)) != 0:
                break
        try:
            run = await run_gateway(egress_map((NAME, 465, 30465)),
                                    options(f"{NAME}:465=127.0.0.1:{port}", connect=0.3))
            reader, writer = await open_client(run.port(30465))
            writer.write(b"EHLO early\r\n")  # held while connecting, dropped with the tunnel
            assert await read_all(reader, 5) == b""
            (line,) = await run.log_lines(1)
        finally:
            for s in fillers:
                s.close()
    assert "end=connect-timeout" in line and "no answer within 0.3s" in line
    assert "addr=- " in line
