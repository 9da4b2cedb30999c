"""``--connect-to`` pins are exact (name, port) pairs, and name lookups are bounded.

A pin is how an operator sends a provider's name to a loopback stand-in; it also exempts that
destination from the private-address check. So the HTTP proxy must not let a client reuse a pinned
name on another port (``CONNECT pinned-name:other-port``), nor use a pin written without a port,
which is for port-forward rules only. Lookups run a slow resolver (a coroutine that waits until
the test lets it answer, injected as the gateway's lookup function): however many clients ask, at
most ``max_lookups`` lookups run, and every connection gets its answer when its connect deadline
passes, never a hang.
"""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from egressmail.gateway.options import Limits
from egressmail.gateway.resolver import IPAddress, Resolver
from egressmail.networking.model import Kind
from tests.integration.gateway.conftest import egress_map, open_client, options, read_all


async def _answer(port: int, head: bytes) -> tuple[int, str, asyncio.StreamReader, asyncio.StreamWriter]:
    """Send a proxy request head; the status and the one-line body (empty for a 200)."""
    reader, writer = await open_client(port)
    writer.write(head)
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    status = int(raw.split(b" ", 2)[1])
    body = b"" if status == 200 else await read_all(reader)
    return status, body.decode().strip(), reader, writer


async def _echo_through_forward(port: int) -> None:
    reader, writer = await open_client(port)
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), 3) == b"ping"
    writer.close()


@pytest.mark.parametrize(("kind", "same_port_status", "same_port_reason"), [
    (Kind.FLEXIBLE_PORT_EGRESS, 200, ""),
    (None, 403, "only ports 80 and 443 are open without a kind"),
])
async def test_a_pin_reaches_only_its_own_name_and_port_through_the_proxy(
        backends, run_gateway, kind, same_port_status, same_port_reason):
    echo = await backends.echo()
    # The port forward exists only with a kind; the pin is the operator's, for that rule.
    forwards = (("api.example.test", 8443, 30843),) if kind is not None else ()
    run = await run_gateway(egress_map(*forwards, kind=kind),
                            options(f"api.example.test:8443=127.0.0.1:{echo.port}"))
    if kind is not None:
        await _echo_through_forward(run.port(30843))
    proxy = run.gateway.http_proxy_port
    assert proxy is not None

    status, reason, _, _ = await _answer(proxy, b"CONNECT api.example.test:443 HTTP/1.1\r\n\r\n")
    assert status == 403
    assert "api.example.test is pinned with --connect-to api.example.test:8443=" in reason
    assert "not on port 443" in reason
    assert str(echo.port) not in reason  # the pin's target is the operator's business

    status, reason, reader, writer = await _answer(proxy, b"CONNECT api.example.test:8443 HTTP/1.1\r\n\r\n")
    assert status == same_port_status and same_port_reason in reason
    if status == 200:
        writer.write(b"pong")
        assert await asyncio.wait_for(reader.readexactly(4), 3) == b"pong"
        writer.close()

    lines = await run.log_lines(3 if kind is not None else 2)
    refused = [line for line in lines if "dest=api.example.test:443" in line]
    assert len(refused) == 1 and "end=refused" in refused[0]
    assert 'reason="pinned-name"' in run.gateway.metrics.render().decode()


async def test_a_pin_for_a_mail_forward_does_not_open_the_mail_port_to_the_proxy(backends, run_gateway):
    echo = await backends.echo()
    run = await run_gateway(egress_map(("smtp.example.test", 465, 30465), kind=Kind.DEDICATED_EGRESS_IP),
                            options(f"smtp.example.test:465=127.0.0.1:{echo.port}"))
    await _echo_through_forward(run.port(30465))
    proxy = run.gateway.http_proxy_port
    assert proxy is not None
    status, reason, _, _ = await _answer(proxy, b"CONNECT smtp.example.test:465 HTTP/1.1\r\n\r\n")
    assert status == 403 and "declared port forward" in reason  # the kinds table says no
    status, reason, _, _ = await _answer(proxy, b"CONNECT smtp.example.test:443 HTTP/1.1\r\n\r\n")
    assert status == 403 and "pinned with --connect-to smtp.example.test:465=" in reason
    assert echo.peers == ["127.0.0.1"]  # only the port forward reached it


async def test_a_pin_without_a_port_serves_port_forwards_only(backends, run_gateway):
    echo = await backends.echo()
    # `name=address` keeps the requested port: through the proxy it would reach any loopback port.
    run = await run_gateway(egress_map(("api.example.test", echo.port, 30001),
                                       kind=Kind.FLEXIBLE_PORT_EGRESS),
                            options("api.example.test=127.0.0.1"))
    await _echo_through_forward(run.port(30001))
    proxy = run.gateway.http_proxy_port
    assert proxy is not None
    for port in (echo.port, 443):
        head = f"CONNECT api.example.test:{port} HTTP/1.1\r\n\r\n".encode()
        status, reason, _, _ = await _answer(proxy, head)
        assert status == 403, reason
        assert "pinned with --connect-to api.example.test=" in reason and "port forwards only" in reason
    assert echo.peers == ["127.0.0.1"]


class SlowDns:
    """A lookup function that answers only once :attr:`release` is set, counting what runs at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.running = 0
        self.most = 0
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append(host)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return [ipaddress.ip_address("127.0.0.1")]


async def test_slow_dns_is_bounded_and_every_proxy_client_gets_an_answer(backends, run_gateway):
    echo = await backends.echo()
    dns = SlowDns()
    run = await run_gateway(egress_map(kind=Kind.FLEXIBLE_PORT_EGRESS),
                            options(f"api.example.test:443=backend.example.test:{echo.port}", connect=0.3),
                            resolver=Resolver(2, lookup=dns))
    proxy = run.gateway.http_proxy_port
    assert proxy is not None

    heads = [f"CONNECT slow{i}.example.test:443 HTTP/1.1\r\n\r\n".encode() for i in range(5)]
    answers = await asyncio.gather(*(_answer(proxy, head) for head in heads))
    assert [status for status, *_ in answers] == [504] * 5
    reasons = [reason for _, reason, *_ in answers]
    assert all(r.startswith(f"resolving slow{i}.example.test: ") for i, r in enumerate(reasons)), reasons
    assert sum("no lookup slot free within 0.3s" in r for r in reasons) == 3
    assert sum("no answer from DNS within 0.3s" in r for r in reasons) == 2
    assert dns.most == 2 and len(dns.asked) == 2  # three waited for a slot and gave up waiting
    lines = await run.log_lines(5)
    assert all("end=connect-timeout" in line and "reason=" in line for line in lines)
    metrics = run.gateway.metrics.render().decode()
    assert 'egressmail_gateway_errors_total{kind="resolve-timeout"} 5.0' in metrics

    # The two abandoned lookups still hold their slots (a thread cannot be cancelled) until they end.
    assert run.gateway.resolver.running == 2
    dns.release.set()
    for _ in range(100):
        if run.gateway.resolver.running == 0:
            break
        await asyncio.sleep(0.01)
    # A pin whose target is a name: that name goes through the lookup function, and is exempt.
    status, _, reader, writer = await _answer(proxy, b"CONNECT api.example.test:443 HTTP/1.1\r\n\r\n")
    assert status == 200 and dns.asked[-1] == "backend.example.test"
    writer.write(b"x")
    assert await asyncio.wait_for(reader.readexactly(1), 3) == b"x"
    writer.close()


async def test_slow_dns_on_a_port_forward_closes_the_connection_with_a_dns_reason(run_gateway):
    dns = SlowDns()
    run = await run_gateway(egress_map(("slow.example.test", 443, 30443), kind=Kind.FLEXIBLE_PORT_EGRESS),
                            options(connect=0.3), resolver=Resolver(2, lookup=dns))
    reader, _ = await open_client(run.port(30443))
    assert await read_all(reader) == b""
    (line,) = await run.log_lines(1)
    assert "end=connect-timeout" in line and "resolving slow.example.test: no answer from DNS" in line
    assert dns.asked == ["slow.example.test"]
    dns.release.set()


async def test_the_default_resolver_takes_max_lookups_from_the_limits(run_gateway):
    run = await run_gateway(egress_map(kind=Kind.FLEXIBLE_PORT_EGRESS), options(limits=Limits(max_lookups=3)))
    assert run.gateway.resolver.max_lookups == 3
    # ...and resolves for real: localhost is found, and refused as a loopback address.
    proxy = run.gateway.http_proxy_port
    assert proxy is not None
    status, reason, _, _ = await _answer(proxy, b"CONNECT localhost:443 HTTP/1.1\r\n\r\n")
    assert status == 403 and "loopback address" in reason
