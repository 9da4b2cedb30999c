"""The gateway: port-forward listeners, the HTTP proxy listener, limits, reload and drain.

Theory of operation
-------------------
The gateway holds one :class:`~egressmail.networking.model.EgressMap` at a time and one listener
per port-forward rule in it (``portOrig`` on ``listen_host``, shifted by ``port_offset`` or on a
free port in tests), plus the HTTP proxy's listener. Nothing else listens: a port that no rule
declares is simply closed, which is the strongest "no" TCP has.

Every accepted connection is admitted against the limits (total, then per rule), then routed with
:func:`~egressmail.networking.routing.decide` against the map *in force at that moment*, then
connected by :func:`~egressmail.gateway.dial.dial`, then handed to a
:class:`~egressmail.gateway.relay.Tunnel` that moves the bytes. Each tunnel ends with one
access-log line and its metrics.

Reload swaps the map and reconciles listeners: new rules start listening, removed rules stop
accepting (their listening socket closes) while their open tunnels run to their natural end, and a
rule whose destination changed keeps its listener and sends *new* connections to the new place.
Established tunnels are never touched by a reload.

``aclose(drain_timeout)`` stops every listener, waits for the open tunnels to finish for up to
``drain_timeout`` seconds, then aborts the rest (``end=shutdown``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from egressmail.gateway.accesslog import AccessLog, AccessRecord, End, Via
from egressmail.gateway.dial import (
    AddressChecks,
    DialFailure,
    FixedTarget,
    connect_fixed,
    dial,
    plan_fixed,
)
from egressmail.gateway.errors import BadProxyRequest, GatewayBindError
from egressmail.gateway.httphead import (
    CONNECT_ESTABLISHED,
    ProxyRequest,
    error_response,
    find_head_end,
    parse_request_head,
)
from egressmail.gateway.metrics import GatewayMetrics
from egressmail.gateway.options import GatewayOptions
from egressmail.gateway.relay import Tunnel
from egressmail.gateway.resolver import Resolver
from egressmail.networking.model import EgressMap, PortForward
from egressmail.networking.routing import Allowed, Refused, WayIn, decide

log = logging.getLogger("egressmail.gateway")

EgressMapProvider = Callable[[], EgressMap]
"""Returns the egress map in force now (the CLI reads the store; tests return a fixed map)."""

PortBroker = Callable[[str], Awaitable[int]]
"""Given a listener's key (``forward:<portOrig>`` or ``proxy``) whose port is 0, returns the port
to bind instead: how the workers of ``gateway run --workers N`` agree on ephemeral ports."""

HTTP_PROXY_RULE = "http-proxy"
OVER_TOTAL_LIMIT = "over-connection-limit"
OVER_RULE_LIMIT = "over-rule-limit"
LISTEN_BACKLOG = 1024
DEFAULT_DRAIN_TIMEOUT_S = 30.0


def rule_label(forward: PortForward) -> str:
    """How a port-forward rule is named in the access log and the metrics: ``name:portDest``."""
    return f"{forward.name}:{forward.port_dest}"


def _format_peer(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    return "-"


@dataclass(slots=True)
class _Listener:
    forward: PortForward
    server: asyncio.Server
    port: int
    label: str = ""  # rule_label(forward), computed once per rule rather than per connection

    def __post_init__(self) -> None:
        self.label = rule_label(self.forward)


_Plan = tuple[Allowed, FixedTarget | DialFailure | None] | Refused
"""A port-forward rule's routing decision and, when its destination needs no resolution, where it
connects (both pure functions of the egress map: computed once per rule and map)."""


class _ForwardAccept(asyncio.Protocol):
    """Accepts one port-forward connection and hands it to the gateway (then steps aside)."""

    __slots__ = ("gateway", "listener")

    def __init__(self, gateway: Gateway, listener: _Listener) -> None:
        self.gateway = gateway
        self.listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        self.gateway._accept_forward(self.listener, transport)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        pass  # only reached for connections refused before a tunnel took them over


class _ProxyHead(asyncio.Protocol):
    """Reads an HTTP proxy request head, then hands the connection to its tunnel.

    A CONNECT tunnel takes the client connection over. A forwarded ``http://`` request does not:
    this protocol stays and passes on exactly the request's body (``body_left`` bytes), then
    drops whatever the client sends next, so a second request on a keep-alive connection (to
    another host, with a ``Proxy-Authorization``...) never reaches the first request's origin
    unrouted. The origin was asked to close after one answer (``Connection: close``).
    """

    __slots__ = ("gateway", "tunnel", "buffer", "timer", "done", "body_left")

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.tunnel: Tunnel | None = None
        self.buffer = bytearray()
        self.timer: asyncio.TimerHandle | None = None
        self.done = False
        self.body_left: int | None = None  # forwarded request, joined: body bytes still to pass on

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        self.gateway._accept_proxy(self, transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:  # noqa: D102
        if self.body_left is not None:
            self.forward_body(data)
            return
        if self.done or self.tunnel is None:
            return
        start = len(self.buffer)
        self.buffer += data
        end = find_head_end(self.buffer, start)
        limit = self.gateway.options.limits.max_request_head_bytes
        if end < 0:
            if len(self.buffer) > limit:
                self.fail(431, End.BAD_REQUEST, f"request head larger than {limit} bytes")
            return
        if end > limit:
            self.fail(431, End.BAD_REQUEST, f"request head larger than {limit} bytes")
            return
        self.done = True
        self.cancel_timer()
        transport = self.tunnel.client.transport
        assert transport is not None  # noqa: S101
        transport.pause_reading()
        head, rest = bytes(self.buffer[:end]), bytes(self.buffer[end:])
        self.buffer = bytearray()
        try:
            request = parse_request_head(head)
        except BadProxyRequest as exc:
            self.fail(exc.status, End.BAD_REQUEST, exc.message)
            return
        self.tunnel.client.nbytes = len(head)
        self.tunnel.task = asyncio.get_running_loop().create_task(
            self.gateway._connect_proxy(self.tunnel, request, rest, self))

    def forward_body(self, data: bytes) -> None:
        """Pass on what is left of the forwarded request's body; drop anything after it."""
        assert self.tunnel is not None and self.body_left is not None  # noqa: S101
        if self.body_left and (out := self.tunnel.client.out) is not None:
            chunk = data[:self.body_left]
            out.write(chunk)
            self.tunnel.client.nbytes += len(chunk)
            self.body_left -= len(chunk)

    def eof_received(self) -> bool:  # noqa: D102
        if self.body_left is not None and self.tunnel is not None:
            return self.tunnel.client.eof_received()
        if not self.done and self.tunnel is not None:
            self.done = True
            self.cancel_timer()
            self.tunnel.record.end = End.BAD_REQUEST
            self.tunnel.record.reason = "the client closed before sending a complete request head"
        return False  # close

    def pause_writing(self) -> None:  # noqa: D102
        if self.tunnel is not None:  # the answer flows to the client: backpressure as in a tunnel
            self.tunnel.client.pause_writing()

    def resume_writing(self) -> None:  # noqa: D102
        if self.tunnel is not None:
            self.tunnel.client.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self.cancel_timer()
        if self.tunnel is not None:
            self.tunnel.client.connection_lost(exc)

    def timed_out(self) -> None:
        """The request head did not arrive in time."""
        self.timer = None
        if not self.done:
            timeout = self.gateway.options.timeouts.request
            self.fail(408, End.IDLE_TIMEOUT, f"no complete request head within {timeout:g}s")

    def cancel_timer(self) -> None:
        """Stop waiting for the head."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def fail(self, status: int, end: End, reason: str) -> None:
        """Answer ``status`` with ``reason`` and close."""
        self.done = True
        self.cancel_timer()
        if self.tunnel is not None:
            self.gateway._answer_and_close(self.tunnel, status, end, reason, code=end.value)


class Gateway:
    """The egress gateway, embeddable: ``await start()``, traffic, ``await aclose()``.

    Args:
        egress_map: the map to enforce, or a provider called at start, on :meth:`reload` without
            a map, and every ``poll_interval`` seconds (from a worker thread: it may block briefly).
        options: how to listen and connect (:class:`~egressmail.gateway.options.GatewayOptions`).
        access_log: where each connection's line goes (``None`` = nowhere).
        metrics: the metrics to update (a fresh registry if ``None``).
        poll_interval: re-read the provider this often and reload when the map changed
            (``None`` = only on :meth:`reload`).
        port_broker: where a listener that would bind port 0 gets its port (``None`` = the
            kernel picks one); see :data:`PortBroker`.
        resolver: how names are looked up (``None`` = the system resolver, at most
            ``options.limits.max_lookups`` at once); closed by :meth:`aclose`.

    Example::

        gw = Gateway(egress_map, GatewayOptions(ephemeral_ports=True, http_proxy_port=0,
                     connect_to=(parse_connect_to("smtp.sendgrid.com:465=127.0.0.1:2465"),)))
        await gw.start()
        port = gw.listening_ports[30465]     # where portOrig 30465 really listens
        ...
        await gw.aclose()
    """

    def __init__(self, egress_map: EgressMap | EgressMapProvider, options: GatewayOptions | None = None,
                 *, access_log: AccessLog | None = None, metrics: GatewayMetrics | None = None,
                 poll_interval: float | None = None, port_broker: PortBroker | None = None,
                 resolver: Resolver | None = None) -> None:
        if isinstance(egress_map, EgressMap):
            fixed = egress_map
            self._provider: EgressMapProvider = lambda: fixed
            self._egress = fixed
        else:
            self._provider = egress_map
            self._egress = EgressMap(program="-", environment="-")
        self.options = options if options is not None else GatewayOptions()
        self.access_log = access_log
        self.metrics = metrics if metrics is not None else GatewayMetrics()
        self.metrics.bind_buffered(lambda: float(self.buffered_bytes()))
        self._poll_interval = poll_interval
        self._port_broker = port_broker
        self.resolver = resolver if resolver is not None else Resolver(self.options.limits.max_lookups)
        # Both pure functions of the map: memoised per map, rebuilt on every change.
        self._checks = AddressChecks(self._egress)
        self._plans: dict[int, _Plan] = {}
        self._listeners: dict[int, _Listener] = {}
        self._proxy_server: asyncio.Server | None = None
        self._proxy_port: int | None = None
        self._tunnels: set[Tunnel] = set()
        self._per_rule: dict[object, int] = {}
        self._open = 0
        self._idle_event = asyncio.Event()
        self._idle_event.set()
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- public state -------------------------------------------------------------------------

    @property
    def egress_map(self) -> EgressMap:
        """The map in force."""
        return self._egress

    @property
    def listening_ports(self) -> dict[int, int]:
        """``{portOrig: port actually listened on}`` for every port-forward rule in force."""
        return {port_orig: lst.port for port_orig, lst in self._listeners.items()}

    @property
    def http_proxy_port(self) -> int | None:
        """The HTTP proxy's actual port (``None`` without a proxy)."""
        return self._proxy_port

    @property
    def open_connections(self) -> int:
        """Connections open now (accepted and not yet finished)."""
        return self._open

    def buffered_bytes(self) -> int:
        """Bytes waiting in the write buffers of every open tunnel (bounded by backpressure)."""
        return sum(t.buffered_bytes() for t in list(self._tunnels))  # list(): scrapes run in a thread

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the map, open the listeners, start polling.

        Raises:
            GatewayBindError: a listener cannot bind its port.
            EgressMailError: the provider failed (e.g. the store cannot be read).
        """
        if self._started:
            raise RuntimeError("Gateway.start() called twice")
        self._started = True
        self._loop = asyncio.get_running_loop()
        egress = await asyncio.to_thread(self._provider)
        try:
            if self.options.http_proxy_port is not None:
                self._proxy_server = await self._bind(lambda: _ProxyHead(self), self.options.http_proxy_port,
                                                      what="the HTTP proxy", key="proxy")
                self._proxy_port = self._proxy_server.sockets[0].getsockname()[1]
            await self._apply(egress, strict=True)
        except BaseException:
            await self.aclose(drain_timeout=0)
            raise
        self._spawn(self._flush_loop())
        self._spawn(self._sweep_loop())
        if self._poll_interval is not None:
            self._spawn(self._watch(self._poll_interval))

    async def reload(self, egress_map: EgressMap | None = None) -> bool:
        """Apply a new map (or the provider's current one) without dropping established connections.

        Returns:
            True when something changed.

        Raises:
            EgressMailError: the provider failed; the map in force stays.
        """
        if egress_map is None:
            egress_map = await asyncio.to_thread(self._provider)
        if egress_map == self._egress and egress_map.generation == self._egress.generation:
            return False
        await self._apply(egress_map, strict=False)
        return True

    async def aclose(self, drain_timeout: float = DEFAULT_DRAIN_TIMEOUT_S) -> None:
        """Stop listening, let open connections finish for ``drain_timeout`` s, abort the rest."""
        if self._closing:
            return
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        servers = [lst.server for lst in self._listeners.values()]
        if self._proxy_server is not None:
            servers.append(self._proxy_server)
        for server in servers:
            server.close()
        self._listeners.clear()
        self.metrics.rules = 0
        if self._tunnels and drain_timeout > 0:
            try:
                async with asyncio.timeout(drain_timeout):
                    await self._idle_event.wait()
            except TimeoutError:
                pass
        for tunnel in list(self._tunnels):
            tunnel.abort(End.SHUTDOWN, "the gateway stopped")
        if self._tunnels:
            # Aborted transports report connection_lost on the next loop iterations.
            try:
                async with asyncio.timeout(1.0):
                    await self._idle_event.wait()
            except TimeoutError:  # pragma: no cover - defensive
                pass
        for server in servers:
            try:
                async with asyncio.timeout(1.0):
                    await server.wait_closed()
            except TimeoutError:  # pragma: no cover - defensive
                pass
        self.resolver.close()
        if self.access_log is not None:
            self.access_log.flush()

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose(drain_timeout=1.0)

    # -- listeners ----------------------------------------------------------------------------

    async def _bind(self, factory: Callable[[], asyncio.Protocol], port: int, *, what: str,
                    key: str) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        host = self.options.listen_host
        try:
            if port == 0 and self._port_broker is not None:
                port = await self._port_broker(key)
            return await loop.create_server(factory, host, port, reuse_address=True,
                                            reuse_port=self.options.reuse_port or None,
                                            backlog=LISTEN_BACKLOG)
        except OSError as exc:
            self.metrics.error("bind")
            raise GatewayBindError(f"{what} cannot listen on {host}:{port}: {exc.strerror or exc}",
                                   host=host, port=port,
                                   hint="stop what holds the port, or choose others "
                                        "(--listen, --http-proxy-port, --port-offset)") from exc

    async def _apply(self, egress: EgressMap, *, strict: bool) -> None:
        async with self._reload_lock:
            if self._closing:
                return
            # The new map decides every connection accepted from now on, including ones racing in
            # on a listener that is about to close (they are refused as undeclared).
            self._egress = egress
            self._checks = AddressChecks(egress)
            self._plans = {}
            self.metrics.generation = egress.generation
            wanted = {f.port_orig: f for f in egress.port_forwards}
            for port_orig in [p for p in self._listeners if p not in wanted]:
                lst = self._listeners.pop(port_orig)
                lst.server.close()  # stops accepting; its open tunnels carry on
                log.info("rule %s on %s removed: no longer listening on %s:%s", rule_label(lst.forward),
                         port_orig, self.options.listen_host, lst.port)
            for port_orig, forward in sorted(wanted.items()):
                existing = self._listeners.get(port_orig)
                if existing is not None:
                    if existing.forward != forward:
                        log.info("rule on %s now forwards to %s", port_orig, rule_label(forward))
                    existing.forward = forward
                    existing.label = rule_label(forward)
                    continue
                placeholder = _Listener(forward=forward, server=None, port=0)  # type: ignore[arg-type]
                try:
                    server = await self._bind(lambda lst=placeholder: _ForwardAccept(self, lst),  # type: ignore[misc]
                                              self.options.listen_port_for(port_orig),
                                              what=f"port forward {port_orig} → {rule_label(forward)}",
                                              key=f"forward:{port_orig}")
                except GatewayBindError as exc:
                    if strict:
                        raise
                    log.error("%s", exc.message)
                    continue
                placeholder.server = server
                placeholder.port = server.sockets[0].getsockname()[1]
                self._listeners[port_orig] = placeholder
                log.info("rule %s listening on %s:%s (portOrig %s)", rule_label(forward),
                         self.options.listen_host, placeholder.port, port_orig)
            self.metrics.rules = len(self._listeners)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reload()
            except Exception as exc:  # noqa: BLE001 - the store may be briefly unreadable; keep serving
                log.warning("reloading the egress map failed (keeping the rules in force): %s", exc)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.access_log is not None:
                self.access_log.flush()

    def _sweep_period(self) -> float:
        # A quarter of the shortest timeout the sweep enforces, between 50 ms and 1 s.
        timeouts = [t for t in (self.options.timeouts.connect, self.options.timeouts.idle) if t is not None]
        return min(1.0, max(0.05, min(timeouts, default=4.0) / 4))

    async def _sweep_loop(self) -> None:
        """Connect deadlines and idle cuts for every tunnel, in one periodic pass (see relay.py)."""
        loop = asyncio.get_running_loop()
        period = self._sweep_period()
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for tunnel in list(self._tunnels):
                tunnel.tick(now)

    # -- admission ----------------------------------------------------------------------------

    def _admit(self, rule_key: object) -> tuple[str, str] | None:
        limits = self.options.limits
        if self._open >= limits.max_connections:
            return (OVER_TOTAL_LIMIT,
                    f"over the gateway's limit of {limits.max_connections} open connections")
        per_rule = limits.max_connections_per_rule
        if per_rule is not None and self._per_rule.get(rule_key, 0) >= per_rule:
            return OVER_RULE_LIMIT, f"over the limit of {per_rule} open connections for this rule"
        return None

    def _new_tunnel(self, record: AccessRecord, rule_key: object,
                    transport: asyncio.Transport) -> Tunnel:
        limits = self.options.limits
        tunnel = Tunnel(record, rule_key, idle_timeout=self.options.timeouts.idle,
                        high_water=limits.high_water, low_water=limits.low_water,
                        on_finished=self._finished)
        tunnel.on_progress = self._progress
        tunnel.client.transport = transport
        self._tunnels.add(tunnel)
        self._idle_event.clear()
        self._open += 1
        self._per_rule[rule_key] = self._per_rule.get(rule_key, 0) + 1
        self.metrics.opened(record.rule)
        return tunnel

    def _refuse_early(self, record: AccessRecord, transport: asyncio.Transport, code: str,
                      reason: str, answer: bytes = b"") -> None:
        record.end = End.REFUSED
        record.reason = reason
        self.metrics.refuse(code)
        if answer:
            transport.write(answer)
            transport.close()
        else:
            transport.abort()
        if self.access_log is not None:
            self.access_log.write(record)

    def _finished(self, tunnel: Tunnel) -> None:
        self._tunnels.discard(tunnel)
        self._open -= 1
        key = tunnel.rule_key
        self._per_rule[key] -= 1
        if not self._per_rule[key]:
            del self._per_rule[key]
        record = tunnel.record
        self.metrics.closed(record.rule, record.end.value)
        if self.access_log is not None:
            self.access_log.write(record)
        if not self._tunnels:
            self._idle_event.set()

    def _progress(self, tunnel: Tunnel, up: int, down: int) -> None:
        self.metrics.add_bytes(tunnel.record.rule, up, down)

    # -- port forwards ------------------------------------------------------------------------

    def _plan(self, port_orig: int) -> _Plan:
        plan = self._plans.get(port_orig)
        if plan is None:
            decision = decide(self._egress, way_in=WayIn.PORT_FORWARD, listen_port=port_orig)
            if isinstance(decision, Refused):
                plan = decision
            else:
                plan = (decision, plan_fixed(self._checks, host=decision.host, port=decision.port,
                                             rule=decision.rule, pins=self.options.connect_to,
                                             local_address=self._local_address(decision)))
            self._plans[port_orig] = plan
        return plan

    def _local_address(self, decision: Allowed) -> str | None:
        return self.options.egress_address if decision.egress == "dedicated" else None

    def _accept_forward(self, listener: _Listener, transport: asyncio.Transport) -> None:
        # Reading is not paused while connecting: early bytes are held by the tunnel (bounded),
        # which saves two epoll changes per connection.
        forward = listener.forward
        port_orig = forward.port_orig
        record = AccessRecord(via=Via.PORT_FORWARD, rule=listener.label,
                              client=_format_peer(transport.get_extra_info("peername")),
                              listen_port=port_orig, started=time.time(), dest=listener.label)
        refusal = self._admit(port_orig)
        if refusal is not None:
            self._refuse_early(record, transport, *refusal)
            return
        plan = self._plan(port_orig)
        if isinstance(plan, Refused):
            self._refuse_early(record, transport, plan.code, plan.reason)
            return
        tunnel = self._new_tunnel(record, port_orig, transport)
        tunnel.attach_client(transport)
        loop = self._loop
        assert loop is not None  # noqa: S101
        now = loop.time()
        decision, fixed = plan
        # A planned target's deadline is the sweep's (no timer per connection); a name's is the
        # dial's own, which covers the lookup too and says which part ran out of time.
        tunnel.start_connect_timer(now, self.options.timeouts.connect if fixed is not None else None)
        tunnel.task = loop.create_task(self._connect_forward(tunnel, decision, fixed, now))

    async def _dial(self, tunnel: Tunnel, decision: Allowed, *, started: float | None = None,
                    fixed: FixedTarget | DialFailure | None = None) -> DialFailure | None:
        record = tunnel.record
        record.egress = "vpn" if decision.via_vpn else decision.egress
        assert self._loop is not None  # noqa: S101
        if isinstance(fixed, FixedTarget):  # planned: nothing to resolve or check
            result: tuple[asyncio.Transport, str] | DialFailure = await connect_fixed(
                self._loop, tunnel.upstream, fixed)
        elif fixed is not None:
            result = fixed
        else:
            result = await dial(self._loop, tunnel.upstream, checks=self._checks, resolver=self.resolver,
                                host=decision.host, port=decision.port, rule=decision.rule,
                                pins=self.options.connect_to, local_address=self._local_address(decision),
                                connect_timeout=self.options.timeouts.connect, started=started)
        if isinstance(result, DialFailure):
            if result.end is End.REFUSED:
                self.metrics.refuse(result.code)
            else:
                self.metrics.error(result.code)
            return result
        record.addr = result[1]
        return None

    async def _connect_forward(self, tunnel: Tunnel, decision: Allowed,
                               fixed: FixedTarget | DialFailure | None, started: float) -> None:
        failure = await self._dial(tunnel, decision, started=started, fixed=fixed)
        tunnel.task = None
        if failure is not None:
            tunnel.abort(failure.end, failure.reason)
            return
        if tunnel.is_finished:  # the client left while we connected
            if tunnel.upstream.transport is not None:
                tunnel.upstream.transport.abort()
            return
        tunnel.join()
        assert self._loop is not None  # noqa: S101
        tunnel.start_idle_timer(self._loop.time())

    # -- HTTP proxy ---------------------------------------------------------------------------

    def _accept_proxy(self, head: _ProxyHead, transport: asyncio.Transport) -> None:
        record = AccessRecord(via=Via.HTTP_CONNECT, rule=HTTP_PROXY_RULE,
                              client=_format_peer(transport.get_extra_info("peername")),
                              listen_port=self._proxy_port or 0, started=time.time())
        refusal = self._admit(HTTP_PROXY_RULE)
        if refusal is not None:
            code, reason = refusal
            self._refuse_early(record, transport, code, reason, error_response(503, reason))
            return
        head.tunnel = self._new_tunnel(record, HTTP_PROXY_RULE, transport)
        timeout = self.options.timeouts.request
        if timeout is not None:
            head.timer = asyncio.get_running_loop().call_later(timeout, head.timed_out)

    def _answer_and_close(self, tunnel: Tunnel, status: int, end: End, reason: str, *, code: str) -> None:
        tunnel.record.end = end
        tunnel.record.reason = reason
        if end is End.REFUSED:
            self.metrics.refuse(code)
        transport = tunnel.client.transport
        if transport is not None and not tunnel.client.lost:
            transport.write(error_response(status, reason))
            transport.close()  # flushes the answer; connection_lost then finishes the tunnel

    async def _connect_proxy(self, tunnel: Tunnel, request: ProxyRequest, rest: bytes,
                             head: _ProxyHead) -> None:
        record = tunnel.record
        record.via = Via.HTTP_CONNECT if request.is_connect else Via.HTTP_FORWARD
        record.dest = request.target
        way_in = WayIn.HTTP_CONNECT if request.is_connect else WayIn.HTTP_FORWARD
        decision = decide(self._egress, way_in=way_in, host=request.host, port=request.port)
        if isinstance(decision, Refused):
            tunnel.task = None
            self._answer_and_close(tunnel, 403, End.REFUSED, decision.reason, code=decision.code)
            return
        failure = await self._dial(tunnel, decision)
        tunnel.task = None
        if failure is not None:
            status = {End.REFUSED: 403, End.CONNECT_TIMEOUT: 504}.get(failure.end, 502)
            tunnel.record.end = failure.end
            tunnel.record.reason = failure.reason
            transport = tunnel.client.transport
            if transport is not None and not tunnel.client.lost:
                transport.write(error_response(status, failure.reason))
                transport.close()
            return
        upstream = tunnel.upstream.transport
        client = tunnel.client.transport
        assert upstream is not None and client is not None  # noqa: S101
        if tunnel.is_finished or tunnel.client.lost:
            upstream.abort()
            return
        tunnel.held_back = True  # the head reader paused the client
        if request.is_connect:
            tunnel.attach_client(client)
            tunnel.client.nbytes += len(rest)
            client.write(CONNECT_ESTABLISHED)
            if rest:
                upstream.write(rest)
        else:
            # The head reader stays the client's protocol: it passes on this request's body only.
            upstream.write(request.forward_head)
            head.body_left = request.body_length
        tunnel.join()
        if not request.is_connect and rest:
            head.forward_body(rest)
        assert self._loop is not None  # noqa: S101
        tunnel.start_idle_timer(self._loop.time())
