"""Running a gateway as a process: the event loop (uvloop when installed), signals, metrics, drain.

``SIGHUP`` re-reads the store now (it is also polled every ``poll_interval`` seconds);
``SIGTERM``/``SIGINT`` stop listening, let open connections finish for ``drain_timeout`` seconds
and exit 0.
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
from egressmail.gateway.server import EgressMapProvider, Gateway

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


async def serve(provider: EgressMapProvider, options: GatewayOptions, *, access_log: AccessLog | None,
                metrics_address: tuple[str, int] | None, poll_interval: float,
                drain_timeout: float, on_ready: Callable[[Gateway, int | None], None]) -> None:
    """Start a gateway, report it ready, serve until SIGTERM/SIGINT, then drain and stop.

    Raises:
        GatewayBindError: a listener cannot bind.
        InvalidGatewayOption: the metrics address cannot be served.
        EgressMailError: the store cannot be read at start.
    """
    loop = asyncio.get_running_loop()
    metrics = GatewayMetrics()
    gateway = Gateway(provider, options, access_log=access_log, metrics=metrics,
                      poll_interval=poll_interval)
    await gateway.start()
    metrics_server: MetricsServer | None = None
    stop = asyncio.Event()
    reloads: set[asyncio.Task[bool]] = set()

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
        await stop.wait()
        log.info("stopping: draining %d open connection(s) for up to %gs", gateway.open_connections,
                 drain_timeout)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        for task in list(reloads):
            task.cancel()
        await gateway.aclose(drain_timeout=drain_timeout)
        if metrics_server is not None:
            metrics_server.close()
        if access_log is not None:
            access_log.close()
    log.info("stopped")
