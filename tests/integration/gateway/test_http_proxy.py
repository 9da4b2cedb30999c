"""The HTTP proxy port: CONNECT tunnels and http:// forwarding, following the kind's routing table."""

from __future__ import annotations

import asyncio

import pytest

from egressmail.gateway.options import Limits
from egressmail.networking.model import Kind
from tests.integration.gateway.conftest import egress_map, open_client, options, read_all


async def _request(port: int, head: bytes) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await open_client(port)
    writer.write(head)
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    return answer, reader, writer


async def _refusal(port: int, head: bytes) -> tuple[int, str]:
    reader, writer = await open_client(port)
    writer.write(head)
    raw = await read_all(reader)
    status = int(raw.split(b" ", 2)[1])
    body = raw.split(b"\r\n\r\n", 1)[1].decode()
    assert body.endswith("\n") and body.count("\n") == 1  # one line
    return status, body.strip()


async def test_connect_443_tunnels_even_without_a_kind(backends, run_gateway):
    echo = await backends.echo()
    run = await run_gateway(egress_map(kind=None), options(f"api.example.test:443=127.0.0.1:{echo.port}"))
    port = run.gateway.http_proxy_port
    answer, reader, writer = await _request(port, b"CONNECT api.example.test:443 HTTP/1.1\r\n\r\nearly")
    assert answer == b"HTTP/1.1 200 Connection established\r\n\r\n"
    assert await asyncio.wait_for(reader.readexactly(5), 3) == b"early"  # bytes after the head pass on
    writer.write(b"more")
    assert await asyncio.wait_for(reader.readexactly(4), 3) == b"more"
    writer.close()
    (line,) = await run.log_lines(1)
    assert "rule=http-proxy via=connect" in line and "dest=api.example.test:443" in line
    assert f"addr=127.0.0.1:{echo.port}" in line and "down=9" in line


@pytest.mark.parametrize(("kind", "enabled", "fragment"), [
    (None, True, "only ports 80 and 443 are open without a kind"),
    (Kind.FLEXIBLE_PORT_EGRESS, False, "advanced networking is disabled"),
])
async def test_other_ports_need_a_kind(run_gateway, kind, enabled, fragment):
    run = await run_gateway(egress_map(kind=kind, enabled=enabled), options("api.example.test=127.0.0.1"))
    status, reason = await _refusal(run.gateway.http_proxy_port,
                                    b"CONNECT api.example.test:8443 HTTP/1.1\r\n\r\n")
    assert status == 403 and fragment in reason
    (line,) = await run.log_lines(1)
    assert "end=refused" in line and "dest=api.example.test:8443" in line


async def test_other_ports_with_a_kind(backends, run_gateway):
    echo = await backends.echo()
    run = await run_gateway(egress_map(kind=Kind.FLEXIBLE_PORT_EGRESS),
                            options(f"api.example.test:8443=127.0.0.1:{echo.port}"))
    answer, reader, writer = await _request(run.gateway.http_proxy_port,
                                            b"CONNECT api.example.test:8443 HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200")
    writer.close()


async def test_mail_ports_never_go_through_the_proxy(run_gateway):
    run = await run_gateway(egress_map(kind=Kind.DEDICATED_EGRESS_IP), options("smtp.sendgrid.com=127.0.0.1"))
    status, reason = await _refusal(run.gateway.http_proxy_port,
                                    b"CONNECT smtp.sendgrid.com:465 HTTP/1.1\r\n\r\n")
    assert status == 403 and "declared port forward" in reason


async def test_private_destination_refused_unless_inside_the_vpn(backends, run_gateway):
    echo = await backends.echo()
    head = f"CONNECT 127.0.0.1:{echo.port} HTTP/1.1\r\n\r\n".encode()
    run = await run_gateway(egress_map(kind=Kind.FLEXIBLE_PORT_EGRESS), options())
    status, reason = await _refusal(run.gateway.http_proxy_port, head)
    assert status == 403 and "loopback address" in reason
    assert 'reason="private-address"' in run.gateway.metrics.render().decode()

    vpn = await run_gateway(egress_map(kind=Kind.VPN, address_space=("127.0.0.0/8",)), options())
    answer, reader, writer = await _request(vpn.gateway.http_proxy_port, head)
    assert answer.startswith(b"HTTP/1.1 200")
    writer.close()
    (line,) = await vpn.log_lines(1)
    assert "egress=vpn" in line


async def test_name_resolving_to_loopback_is_refused(run_gateway):
    run = await run_gateway(egress_map(kind=Kind.FLEXIBLE_PORT_EGRESS), options())
    status, reason = await _refusal(run.gateway.http_proxy_port, b"CONNECT localhost:443 HTTP/1.1\r\n\r\n")
    assert status == 403 and "loopback address" in reason


async def test_absolute_uri_is_forwarded_in_origin_form(backends, run_gateway):
    seen: list[bytes] = []

    async def origin(reader, writer):
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()

    backend = await backends.start(origin)
    run = await run_gateway(egress_map(kind=Kind.FLEXIBLE_PORT_EGRESS),
                            options(f"www.example.test:8080=127.0.0.1:{backend.port}"))
    reader, writer = await open_client(run.gateway.http_proxy_port)
    writer.write(b"GET http://www.example.test:8080/p?q=1 HTTP/1.1\r\nHost: other.test\r\n"
                 b"Proxy-Connection: keep-alive\r\n\r\n")
    response = await read_all(reader)
    assert response.endswith(b"\r\n\r\nok")
    assert seen == [b"GET /p?q=1 HTTP/1.1\r\nHost: www.example.test:8080\r\nConnection: close\r\n\r\n"]
    writer.close()
    (line,) = await run.log_lines(1)
    assert "via=http " in line and "dest=www.example.test:8080" in line


async def test_non_proxy_hosts_leave_from_the_shared_address_on_443_only(backends, run_gateway):
    echo = await backends.echo()
    run = await run_gateway(egress_map(kind=Kind.DEDICATED_EGRESS_IP, non_proxy_hosts=("*.shared.test",)),
                            options(f"a.shared.test:443=127.0.0.1:{echo.port}",
                                    f"api.example.test:443=127.0.0.1:{echo.port}",
                                    egress_address="127.0.0.2"))
    port = run.gateway.http_proxy_port
    for host in (b"a.shared.test", b"api.example.test"):
        answer, reader, writer = await _request(port, b"CONNECT " + host + b":443 HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200")
        writer.write(b"x")
        await asyncio.wait_for(reader.readexactly(1), 3)
        writer.close()
    assert echo.peers == ["127.0.0.1", "127.0.0.2"]  # nonProxyHosts: shared; the rest: dedicated
    status, reason = await _refusal(port, b"CONNECT a.shared.test:8443 HTTP/1.1\r\n\r\n")
    assert status == 403 and "nonProxyHosts" in reason


@pytest.mark.parametrize(("head", "status"), [
    (b"GET https://api.example.test/ HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n", 400),
    (b"CONNECT api.example.test:443 HTTP/3\r\n\r\n", 505),
    (b"CONNECT api.example.test:443 HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"POST http://api.example.test/ HTTP/1.1\r\nContent-Length: 3\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n", 411),
    (b"GET http://api.example.test/ HTTP/1.1\r\nX: a\nHost: evil.test\r\n\r\n", 400),
    (b"CONNECT api.example.test:" + b"4" * 5000 + b" HTTP/1.1\r\n\r\n", 400),
])
async def test_bad_requests_get_a_clear_answer(run_gateway, head, status):
    run = await run_gateway(egress_map(kind=Kind.FLEXIBLE_PORT_EGRESS), options())
    got, reason = await _refusal(run.gateway.http_proxy_port, head)
    assert got == status and reason
    (line,) = await run.log_lines(1)
    assert "end=bad-request" in line


async def test_silent_proxy_client_is_answered_408(run_gateway):
    run = await run_gateway(egress_map(kind=Kind.FLEXIBLE_PORT_EGRESS), options(request=0.2))
    reader, writer = await open_client(run.gateway.http_proxy_port)
    writer.write(b"CONNECT api.exa")
    raw = await read_all(reader, 5)
    assert raw.startswith(b"HTTP/1.1 408")


async def test_proxy_over_the_connection_limit_answers_503(backends, run_gateway):
    echo = await backends.echo()
    run = await run_gateway(egress_map(kind=None), options(f"api.example.test:443=127.0.0.1:{echo.port}",
                                                           limits=Limits(max_connections=1)))
    port = run.gateway.http_proxy_port
    answer, reader, writer = await _request(port, b"CONNECT api.example.test:443 HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200")
    status, reason = await _refusal(port, b"CONNECT api.example.test:443 HTTP/1.1\r\n\r\n")
    assert status == 503 and "limit of 1" in reason
    writer.close()


async def test_unreachable_destination_is_502(run_gateway):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        pin = f"api.example.test:443=127.0.0.1:{s.getsockname()[1]}"
        run = await run_gateway(egress_map(kind=None), options(pin))
        status, reason = await _refusal(run.gateway.http_proxy_port,
                                        b"CONNECT api.example.test:443 HTTP/1.1\r\n\r\n")
    assert status == 502 and "connecting to 127.0.0.1" in reason


async def _keep_alive_origin(backends, seen: list[bytes]):
    """An origin that ignores ``Connection: close``: it answers every request it reads, until EOF."""

    async def origin(reader, writer):
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    seen.append(exc.partial)
                return
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            seen.append(head + (await reader.readexactly(length) if length else b""))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    return await backends.start(origin)


_SECOND = (b"GET http://internal.test:8080/secret HTTP/1.1\r\nHost: internal.test:8080\r\n"
           b"Proxy-Authorization: Basic c2VjcmV0\r\n\r\n")


async def test_second_request_on_a_keep_alive_connection_is_never_forwarded(backends, run_gateway):
    # Only the first request was routed: a second one (another host, and a proxy credential that
    # must never reach an origin) must not be passed on raw to the first request's origin.
    seen: list[bytes] = []
    origin = await _keep_alive_origin(backends, seen)
    run = await run_gateway(egress_map(kind=Kind.FLEXIBLE_PORT_EGRESS),
                            options(f"www.example.test:8080=127.0.0.1:{origin.port}"))
    reader, writer = await open_client(run.gateway.http_proxy_port)
    writer.write(b"GET http://www.example.test:8080/ HTTP/1.1\r\n\r\n")
    assert await asyncio.wait_for(reader.readuntil(b"ok"), 3)
    writer.write(_SECOND)
    writer.write_eof()
    await read_all(reader)  # ends once the origin has seen our FIN, i.e. after anything we sent
    assert seen == [b"GET / HTTP/1.1\r\nHost: www.example.test:8080\r\nConnection: close\r\n\r\n"]


async def test_pipelined_request_after_a_body_is_never_forwarded(backends, run_gateway):
    seen: list[bytes] = []
    origin = await _keep_alive_origin(backends, seen)
    run = await run_gateway(egress_map(kind=Kind.FLEXIBLE_PORT_EGRESS),
                            options(f"www.example.test:8080=127.0.0.1:{origin.port}"))
    reader, writer = await open_client(run.gateway.http_proxy_port)
    writer.write(b"POST http://www.example.test:8080/f HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel")
    await asyncio.sleep(0.05)  # the body arrives in pieces, the second one carrying the next request
    writer.write(b"lo" + _SECOND)
    assert await asyncio.wait_for(reader.readuntil(b"ok"), 3)
    writer.write_eof()
    await read_all(reader)
    assert seen == [b"POST /f HTTP/1.1\r\nHost: www.example.test:8080\r\nContent-Length: 5\r\n"
                    b"Connection: close\r\n\r\nhello"]
    (line,) = await run.log_lines(1)
    assert "end=closed" in line
