"""Loopback servers and egress maps for the gateway's integration tests (real sockets, port 0)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from egressmail.gateway.accesslog import AccessLog
from egressmail.gateway.options import GatewayOptions, Limits, Timeouts, parse_connect_to
from egressmail.gateway.resolver import Resolver
from egressmail.gateway.server import Gateway
from egressmail.networking.model import (
    EgressMap,
    EnvironmentNetworking,
    Infrastructure,
    Kind,
    PortForward,
)


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item,
                                   ) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every gateway test runs on asyncio's loop and on uvloop (what `gateway run` uses)."""
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
    if item.path.name in ("test_cli.py", "test_workers.py"):  # a gateway subprocess: once is enough
        return factories
    try:
        import uvloop
    except ImportError:  # the `speed` extra is not installed: asyncio only
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Backend:
    """A loopback server; ``peers`` records each client's source address."""

    server: asyncio.Server
    host: str
    port: int
    peers: list[str] = field(default_factory=list)


@dataclass
class Backends:
    started: list[Backend] = field(default_factory=list)

    async def start(self, handler: Handler, host: str = "127.0.0.1") -> Backend:
        backend: Backend | None = None

        async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            assert backend is not None
            backend.peers.append(writer.get_extra_info("peername")[0])
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(wrapped, host, 0)
        backend = Backend(server, host, server.sockets[0].getsockname()[1])
        self.started.append(backend)
        return backend

    async def echo(self, host: str = "127.0.0.1") -> Backend:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        return await self.start(handler, host)


@pytest.fixture
async def backends() -> AsyncIterator[Backends]:
    b = Backends()
    yield b
    for backend in b.started:
        backend.server.close()


def egress_map(*forwards: tuple[str, int, int], kind: Kind | None = Kind.FLEXIBLE_PORT_EGRESS,
               enabled: bool = True, non_proxy_hosts: tuple[str, ...] = (),
               address_space: tuple[str, ...] = (), generation: int = 1) -> EgressMap:
    """An egress map built directly from the model (``forwards`` are (name, portDest, portOrig))."""
    infra = None if kind is None else Infrastructure(
        kind=kind, address_space=tuple(ipaddress.ip_network(a) for a in address_space))
    networking = EnvironmentNetworking(
        port_forwards=tuple(PortForward(name=n, port_dest=d, port_orig=o) for n, d, o in forwards),
        non_proxy_hosts=non_proxy_hosts) if enabled else None
    return EgressMap(program="1001", environment="2002", infrastructure=infra, networking=networking,
                     generation=generation)


def options(*pins: str, idle: float | None = 5.0, connect: float = 2.0, request: float = 2.0,
            limits: Limits | None = None, egress_address: str | None = None,
            http_proxy: bool = True) -> GatewayOptions:
    return GatewayOptions(
        http_proxy_port=0 if http_proxy else None, ephemeral_ports=True,
        connect_to=tuple(parse_connect_to(p) for p in pins), egress_address=egress_address,
        timeouts=Timeouts(connect=connect, idle=idle, request=request),
        limits=limits or Limits())


class LogSink:
    """An in-memory text stream for the access log."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> int:
        self.lines.extend(line for line in text.split("\n") if line)
        return len(text)

    def flush(self) -> None:
        pass


@dataclass
class Running:
    gateway: Gateway
    log: LogSink

    def port(self, port_orig: int) -> int:
        return self.gateway.listening_ports[port_orig]

    async def log_lines(self, count: int) -> list[str]:
        """Wait (bounded) until ``count`` access-log lines exist."""
        for _ in range(200):
            assert self.gateway.access_log is not None
            self.gateway.access_log.flush()
            if len(self.log.lines) >= count:
                return self.log.lines
            await asyncio.sleep(0.02)
        raise AssertionError(f"expected {count} access-log lines, got {self.log.lines}")


@pytest.fixture
async def run_gateway() -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    started: list[Gateway] = []

    async def start(egress: EgressMap, opts: GatewayOptions | None = None, *,
                    json_lines: bool = False, resolver: Resolver | None = None) -> Running:
        sink = LogSink()
        gw = Gateway(egress, opts or options(), access_log=AccessLog(sink, json_lines=json_lines),  # type: ignore[arg-type]
                     resolver=resolver)
        await gw.start()
        started.append(gw)
        return Running(gw, sink)

    yield start
    for gw in started:
        await gw.aclose(drain_timeout=0.5)


_CLIENTS: list[asyncio.StreamWriter] = []


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _CLIENTS:
        writer = _CLIENTS.pop()
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 1)
        except (OSError, TimeoutError):
            pass


async def open_client(port: int, host: str = "127.0.0.1",
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client connection, closed at the end of the test whatever happens."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
    _CLIENTS.append(writer)
    return reader, writer


async def read_all(reader: asyncio.StreamReader, limit_s: float = 3.0) -> bytes:
    return await asyncio.wait_for(reader.read(), limit_s)
