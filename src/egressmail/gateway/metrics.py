"""Prometheus metrics of one gateway (its own registry, so several gateways can share a process).

| metric | type | labels |
|---|---|---|
| ``egressmail_gateway_connections_open`` | gauge | ``rule`` |
| ``egressmail_gateway_connections_total`` | counter | ``rule``, ``end`` |
| ``egressmail_gateway_connections_refused_total`` | counter | ``reason`` |
| ``egressmail_gateway_bytes_total`` | counter | ``rule``, ``direction`` (``up`` = client → destination) |
| ``egressmail_gateway_errors_total`` | counter | ``kind`` (connect-failed, connect-timeout, reset, bind, …) |
| ``egressmail_gateway_rules`` | gauge | — (port-forward listeners) |
| ``egressmail_gateway_generation`` | gauge | — (the egress map in force) |
| ``egressmail_gateway_buffered_bytes`` | gauge | — (bytes waiting in write buffers, all tunnels) |
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, start_http_server

from egressmail.gateway.errors import InvalidGatewayOption


class GatewayMetrics:
    """The gateway's metrics; children are cached so the hot path is one attribute add."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.open = Gauge("egressmail_gateway_connections_open", "Connections open now", ["rule"],
                          registry=r)
        self.total = Counter("egressmail_gateway_connections_total", "Connections finished",
                             ["rule", "end"], registry=r)
        self.refused = Counter("egressmail_gateway_connections_refused_total",
                               "Connections refused, by reason", ["reason"], registry=r)
        self.bytes = Counter("egressmail_gateway_bytes_total", "Bytes relayed",
                             ["rule", "direction"], registry=r)
        self.errors = Counter("egressmail_gateway_errors_total", "Errors, by kind", ["kind"], registry=r)
        self.rules = Gauge("egressmail_gateway_rules", "Port-forward listeners", registry=r)
        self.generation = Gauge("egressmail_gateway_generation", "Egress map generation in force",
                                registry=r)
        self.buffered = Gauge("egressmail_gateway_buffered_bytes",
                              "Bytes waiting in the gateway's write buffers", registry=r)
        self._open: dict[str, Any] = {}
        self._total: dict[tuple[str, str], Any] = {}
        self._bytes: dict[tuple[str, str], Any] = {}

    def bind_buffered(self, fn: Callable[[], float]) -> None:
        """Compute the buffered-bytes gauge at scrape time."""
        self.buffered.set_function(fn)

    def opened(self, rule: str) -> None:
        """A connection was accepted for ``rule``."""
        child = self._open.get(rule)
        if child is None:
            child = self._open[rule] = self.open.labels(rule)
        child.inc()

    def closed(self, rule: str, end: str) -> None:
        """A connection of ``rule`` finished (``end`` as in the access log)."""
        self._open[rule].dec()
        child = self._total.get((rule, end))
        if child is None:
            child = self._total[(rule, end)] = self.total.labels(rule, end)
        child.inc()

    def add_bytes(self, rule: str, up: int, down: int) -> None:
        """Count relayed bytes (called per tunnel now and then, not per chunk)."""
        if up:
            self._child_bytes(rule, "up").inc(up)
        if down:
            self._child_bytes(rule, "down").inc(down)

    def _child_bytes(self, rule: str, direction: str) -> Any:
        child = self._bytes.get((rule, direction))
        if child is None:
            child = self._bytes[(rule, direction)] = self.bytes.labels(rule, direction)
        return child

    def render(self) -> bytes:
        """The exposition text (what ``/metrics`` answers)."""
        return generate_latest(self.registry)


class MetricsServer:
    """``/metrics`` over HTTP in a thread of its own (prometheus-client's server)."""

    def __init__(self, metrics: GatewayMetrics, host: str, port: int) -> None:
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=metrics.registry)
        except OSError as exc:
            raise InvalidGatewayOption(f"--metrics {host}:{port}: cannot listen: {exc.strerror or exc}",
                                       hint="pick a free port, or 0 for any") from exc
        self.port: int = self._server.server_address[1]
        self.host = host

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        if isinstance(self._thread, threading.Thread):
            self._thread.join(timeout=5)


def parse_host_port(text: str, option: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``:PORT`` / ``PORT`` (host 127.0.0.1) for ``--metrics``.

    Raises:
        InvalidGatewayOption: no valid port.
    """
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidGatewayOption(f"{option} {text!r}: expected HOST:PORT with a port from 0 to 65535",
                                   hint=f"e.g. {option} 127.0.0.1:9464")
    return host, int(port)
