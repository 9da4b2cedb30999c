"""Running a gateway as a process: the event loop (uvloop when installed), signals, metrics, drain.

``SIGHUP`` re-reads the store now (it is also polled every ``poll_interval`` seconds);
``SIGTERM``/``SIGINT`` stop listening, let open connections finish for ``drain_timeout`` seconds
and exit 0. As a worker of ``--workers N`` (``control_fd``), the process also takes ephemeral
ports from, and reports readiness and metrics to, its parent (:mod:`egressmail.gateway.workers`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from egressmail.gateway.accesslog import AccessLog
from egressmail.gateway.metrics import GatewayMetrics, MetricsServer
from egressmail.gateway.options import GatewayOptions
from egressmail.gateway.server import EgressMapProvider, Gateway, rule_label
from egressmail.gateway.workers import SNAPSHOT_INTERVAL_S, WorkerControl

log = logging.getLogger("egressmail.gateway")
T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when the ``speed`` extra is installed, else asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_in_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on the fastest available event loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


def ready_report(gateway: Gateway) -> dict[str, Any]:
    """What a started gateway listens on, as JSON-ready data (what a worker tells its parent)."""
    egress = gateway.egress_map
    forwards = []
    for port_orig, port in sorted(gateway.listening_ports.items()):
        forward = egress.forward_for(port_orig)
        forwards.append([port_orig, rule_label(forward) if forward else "?", port])
    return {"program": egress.program, "environment": egress.environment, "enabled": egress.is_enabled,
            "generation": egress.generation, "forwards": forwards, "proxy": gateway.http_proxy_port}


def ready_lines(report: dict[str, Any], listen_host: str, metrics_address: tuple[str, int] | None,
                metrics_port: int | None, workers: int = 1) -> list[str]:
    """The lines ``gateway run`` prints on stderr once it serves (the last is ``gateway ready``)."""
    lines = []
    if not report["enabled"]:
        lines.append(f"{report['program']}/{report['environment']} has no advanced networking enabled: "
                     "no port forwards (HTTP proxy: 80/443 only)")
    for port_orig, label, port in report["forwards"]:
        lines.append(f"port forward {port_orig} → {label} on {listen_host}:{port}")
    if report["proxy"] is not None:
        lines.append(f"http proxy on {listen_host}:{report['proxy']}")
    if metrics_port is not None and metrics_address is not None:
        lines.append(f"metrics on http://{metrics_address[0]}:{metrics_port}/metrics")
    more = f", {workers} workers" if workers > 1 else ""
    lines.append(f"gateway ready (generation {report['generation']}{more})")
    return lines


async def serve(provider: EgressMapProvider, options: GatewayOptions, *, access_log: AccessLog | None,
                metrics_address: tuple[str, int] | None, poll_interval: float,
                drain_timeout: float, on_ready: Callable[[Gateway, int | None], None],
                control_fd: int | None = None) -> None:
    """Start a gateway, report it ready, serve until SIGTERM/SIGINT, then drain and stop.

    ``control_fd`` makes this process a worker of ``--workers N`` (see
    :mod:`egressmail.gateway.workers`): it then also stops when its parent goes away.

    Raises:
        GatewayBindError: a listener cannot bind.
        InvalidGatewayOption: the metrics address cannot be served.
        EgressMailError: the store cannot be read at start.
    """
    loop = asyncio.get_running_loop()
    metrics = GatewayMetrics()
    stop = asyncio.Event()
    control = await WorkerControl.connect(control_fd, stop.set) if control_fd is not None else None
    gateway = Gateway(provider, options, access_log=access_log, metrics=metrics,
                      poll_interval=poll_interval,
                      port_broker=control.ask_port if control is not None else None)
    try:
        await gateway.start()
    except BaseException:
        if control is not None:
            await control.aclose()
        raise
    metrics_server: MetricsServer | None = None
    reloads: set[asyncio.Task[bool]] = set()
    reporter: asyncio.Task[None] | None = None

    async def report_metrics(control: WorkerControl) -> None:
        while True:
            control.send({"metrics": metrics.snapshot()})
            await asyncio.sleep(SNAPSHOT_INTERVAL_S)

    def on_hup() -> None:
        log.info("SIGHUP: reloading the egress map")
        task = loop.create_task(gateway.reload())
        reloads.add(task)
        task.add_done_callback(_reload_done)

    def _reload_done(task: asyncio.Task[bool]) -> None:
        reloads.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("reload failed (keeping the rules in force): %s", task.exception())

    try:
        if metrics_address is not None:
            metrics_server = MetricsServer(metrics.registry, *metrics_address)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, on_hup)
        on_ready(gateway, metrics_server.port if metrics_server is not None else None)
        if control is not None:
            control.send({"ready": ready_report(gateway)})
            reporter = loop.create_task(report_metrics(control))
        await stop.wait()
        log.info("stopping: draining %d open connection(s) for up to %gs", gateway.open_connections,
                 drain_timeout)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
            if control is not None:
                # A worker often gets the same stop twice (the parent forwards it, and a terminal
                # or a service manager signals the whole group): the drain must not die of it.
                signal.signal(sig, signal.SIG_IGN)
        for task in list(reloads):
            task.cancel()
        await gateway.aclose(drain_timeout=drain_timeout)
        if metrics_server is not None:
            metrics_server.close()
        if access_log is not None:
            access_log.close()
        if reporter is not None:
            reporter.cancel()
        if control is not None:
            control.send({"metrics": metrics.snapshot()})  # the final counts
            await control.aclose()
    log.info("stopped")
