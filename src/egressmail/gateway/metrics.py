"""Prometheus metrics of one gateway: plain counters on the hot path, turned into metrics at scrape.

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

Why plain dicts rather than ``prometheus_client`` counters: a connection used to cost five
locked ``inc()`` calls; now it costs five dict additions, and the exposition is built only when
``/metrics`` is scraped (:class:`GatewayCollector`). The same numbers serialise to a
:meth:`GatewayMetrics.snapshot`, which is how ``gateway run --workers N`` adds its workers up
(:class:`SnapshotCollector`, see :mod:`egressmail.gateway.workers`).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from egressmail.gateway.errors import InvalidGatewayOption

PREFIX = "egressmail_gateway_"
_SEP = "\x1f"  # joins two label values into one snapshot key (never in a rule name or an end)


class GatewayMetrics:
    """The gateway's counters (one process); :meth:`render` is what ``/metrics`` answers.

    Args:
        registry: where the collector is registered (a fresh one if ``None``), so several
            gateways can share a process.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.open: dict[str, int] = {}
        self.total: dict[tuple[str, str], int] = {}
        self.refused: dict[str, int] = {}
        self.bytes: dict[tuple[str, str], int] = {}
        self.errors: dict[str, int] = {}
        self.rules = 0
        self.generation = 0
        self._buffered: Callable[[], float] | None = None
        self.registry.register(GatewayCollector(self.snapshot))

    def bind_buffered(self, fn: Callable[[], float]) -> None:
        """Compute the buffered-bytes gauge at scrape time."""
        self._buffered = fn

    def opened(self, rule: str) -> None:
        """A connection was accepted for ``rule``."""
        self.open[rule] = self.open.get(rule, 0) + 1

    def closed(self, rule: str, end: str) -> None:
        """A connection of ``rule`` finished (``end`` as in the access log)."""
        self.open[rule] -= 1
        key = (rule, end)
        self.total[key] = self.total.get(key, 0) + 1

    def refuse(self, reason: str) -> None:
        """A connection was refused (a routing code or a limit)."""
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def error(self, kind: str) -> None:
        """Count an error (connect-failed, connect-timeout, bind, …)."""
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def add_bytes(self, rule: str, up: int, down: int) -> None:
        """Count relayed bytes (called per tunnel now and then, not per chunk)."""
        if up:
            key = (rule, "up")
            self.bytes[key] = self.bytes.get(key, 0) + up
        if down:
            key = (rule, "down")
            self.bytes[key] = self.bytes.get(key, 0) + down

    def snapshot(self) -> dict[str, Any]:
        """Every value as JSON-ready data (two-label keys joined with ``\\x1f``)."""
        def joined(d: Mapping[tuple[str, str], int]) -> dict[str, int]:
            return {f"{a}{_SEP}{b}": v for (a, b), v in list(d.items())}
        return {"open": dict(self.open), "total": joined(self.total), "refused": dict(self.refused),
                "bytes": joined(self.bytes), "errors": dict(self.errors), "rules": self.rules,
                "generation": self.generation,
                "buffered": self._buffered() if self._buffered is not None else 0.0}

    def render(self) -> bytes:
        """The exposition text (what ``/metrics`` answers)."""
        return generate_latest(self.registry)


def merge_snapshots(snapshots: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Add several processes' snapshots up (counters and open connections add; the generation is
    the highest; rules the highest, as every worker listens on the same rules)."""
    out: dict[str, Any] = {"open": {}, "total": {}, "refused": {}, "bytes": {}, "errors": {},
                           "rules": 0, "generation": 0, "buffered": 0.0}
    for snap in snapshots:
        for name in ("open", "total", "refused", "bytes", "errors"):
            target = out[name]
            for key, value in snap.get(name, {}).items():
                target[key] = target.get(key, 0) + value
        out["rules"] = max(out["rules"], snap.get("rules", 0))
        out["generation"] = max(out["generation"], snap.get("generation", 0))
        out["buffered"] += snap.get("buffered", 0.0)
    return out


def _families(snap: Mapping[str, Any]) -> Iterator[Metric]:
    def split(key: str) -> list[str]:
        return key.split(_SEP, 1)

    open_ = GaugeMetricFamily(PREFIX + "connections_open", "Connections open now", labels=["rule"])
    for rule, v in sorted(snap["open"].items()):
        open_.add_metric([rule], v)
    total = CounterMetricFamily(PREFIX + "connections", "Connections finished", labels=["rule", "end"])
    for key, v in sorted(snap["total"].items()):
        total.add_metric(split(key), v)
    refused = CounterMetricFamily(PREFIX + "connections_refused", "Connections refused, by reason",
                                  labels=["reason"])
    for reason, v in sorted(snap["refused"].items()):
        refused.add_metric([reason], v)
    nbytes = CounterMetricFamily(PREFIX + "bytes", "Bytes relayed", labels=["rule", "direction"])
    for key, v in sorted(snap["bytes"].items()):
        nbytes.add_metric(split(key), v)
    errors = CounterMetricFamily(PREFIX + "errors", "Errors, by kind", labels=["kind"])
    for kind, v in sorted(snap["errors"].items()):
        errors.add_metric([kind], v)
    yield from (open_, total, refused, nbytes, errors)
    yield GaugeMetricFamily(PREFIX + "rules", "Port-forward listeners", value=snap["rules"])
    yield GaugeMetricFamily(PREFIX + "generation", "Egress map generation in force",
                            value=snap["generation"])
    yield GaugeMetricFamily(PREFIX + "buffered_bytes", "Bytes waiting in the gateway's write buffers",
                            value=snap["buffered"])


class GatewayCollector(Collector):
    """Builds the metric families from a snapshot function at scrape time."""

    def __init__(self, snapshot: Callable[[], Mapping[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:  # noqa: D102
        return list(_families(self._snapshot()))


class SnapshotCollector(Collector):
    """The sum of the snapshot files (``*.json``) in a directory, plus ``retired`` totals.

    Workers of ``gateway run --workers N`` each write their snapshot there about once a second;
    the parent serves this sum. ``retired`` holds the counters of workers that exited, so a
    counter never goes down when a worker is replaced.
    """

    def __init__(self, directory: Path, retired: Callable[[], Mapping[str, Any]]) -> None:
        self._dir = directory
        self._retired = retired

    def collect(self) -> Iterable[Metric]:  # noqa: D102
        snaps = [self._retired()]
        for path in sorted(self._dir.glob("*.json")):
            snap = read_snapshot(path)
            if snap is not None:
                snaps.append(snap)
        return list(_families(merge_snapshots(snaps)))


def write_snapshot(path: Path, snap: Mapping[str, Any]) -> None:
    """Write ``snap`` to ``path`` atomically (a reader sees the old or the new file, never half)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(snap, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, path)


def read_snapshot(path: Path) -> dict[str, Any] | None:
    """A snapshot file's content, or ``None`` when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class MetricsServer:
    """``/metrics`` over HTTP in a thread of its own (prometheus-client's server)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=registry)
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
    if not (port.isascii() and port.isdigit() and len(port) <= 5) or not 0 <= int(port) <= 65535:
        raise InvalidGatewayOption(f"{option} {text!r}: expected HOST:PORT with a port from 0 to 65535",
                                   hint=f"e.g. {option} 127.0.0.1:9464")
    return host, int(port)
