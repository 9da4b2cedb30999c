"""``gateway run --workers N``: N gateway processes sharing every port with ``SO_REUSEPORT``.

Theory of operation
-------------------
One Python process relays a few thousand connections a second (each costs Python work in the
event loop: accept, routing, connect, access log). To use more cores, the parent process starts N
*workers*, each an ordinary ``egressmail gateway run`` with the same options plus a control
socket, and each binding every listener itself with ``SO_REUSEPORT``: the kernel spreads incoming
connections over the workers' listening sockets (Linux), with no hand-off between processes.

Each worker reads the store, polls it for changes (``--poll-interval``), reloads on ``SIGHUP``,
drains on ``SIGTERM``, and appends to the shared access log (whole lines per ``write``, each
line with ``worker=PID``). The parent (:func:`supervise`) does four things only:

- **Ephemeral ports.** ``--ephemeral-ports`` and ``--http-proxy-port 0`` must give every worker the
  *same* port. A worker about to bind port 0 asks the parent (:class:`WorkerControl.ask_port`);
  the parent binds port 0 once with ``SO_REUSEPORT`` (without listening: that socket gets no
  connections), keeps that socket to hold the port while the gateway runs, and answers its
  number to every worker that asks for the same listener.
- **Metrics.** Workers send a snapshot of their counters about once a second; the parent serves
  their sum at ``--metrics`` (so a scrape is at most about a second old). The counters of a
  worker that exits are kept, so totals never go down.
- **Signals.** ``SIGHUP`` is forwarded to every worker; ``SIGTERM``/``SIGINT`` too, then the parent
  waits for them all (each drains for ``--drain-timeout``) and exits 0 if they all did.
- **Dead workers.** A worker that exits on its own while the gateway runs is restarted (its open
  connections are lost; the others are untouched). A worker that fails before it is ready (a
  port taken, an unreadable store), or more than :data:`MAX_RESTARTS` restarts within
  :data:`RESTART_WINDOW_S` seconds, stops the gateway: the parent stops the other workers and
  exits with the worker's status (1 if that was 0).

If the parent dies, each worker sees its control socket close and stops by itself.

The wire format on the control socket is one JSON object per line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from egressmail.gateway.errors import InvalidGatewayOption
from egressmail.gateway.metrics import GatewayCollector, MetricsServer, merge_snapshots

log = logging.getLogger("egressmail.gateway")

CONTROL_FD_ENV = "EGRESSMAIL_GATEWAY_CONTROL_FD"
"""Set in a worker's environment: the descriptor of its control socket to the parent."""
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
SNAPSHOT_INTERVAL_S = 1.0


def parse_workers(text: str) -> int:
    """``--workers``: a number from 1, or ``auto`` for the CPUs this process may run on.

    Raises:
        InvalidGatewayOption: anything else, or more than one worker where ``SO_REUSEPORT`` does
            not spread connections (not Linux).
    """
    if text == "auto":
        count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    elif text.isdigit() and int(text) >= 1:
        count = int(text)
    else:
        raise InvalidGatewayOption(f"--workers {text!r}: expected a number from 1, or auto",
                                   hint="e.g. --workers 2, or --workers auto for one per CPU")
    if count > 1 and not sys.platform.startswith("linux"):
        raise InvalidGatewayOption(f"--workers {text}: several workers need Linux (SO_REUSEPORT "
                                   "spreading connections over processes)", hint="run with --workers 1")
    return count


# -- the worker's side ------------------------------------------------------------------------


class WorkerControl:
    """A worker's end of its control socket: ask for ports, report ready, send metrics.

    Args:
        reader / writer: the socket's streams (see :meth:`connect`).
        on_parent_gone: called once when the parent closes the socket (it died or stopped).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 on_parent_gone: Callable[[], None]) -> None:
        self._reader = reader
        self._writer = writer
        self._on_gone = on_parent_gone
        self._answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._ask_lock = asyncio.Lock()
        self._task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, fd: int, on_parent_gone: Callable[[], None]) -> WorkerControl:
        """Wrap the inherited control socket ``fd``."""
        sock = socket.socket(fileno=fd)
        reader, writer = await asyncio.open_connection(sock=sock)
        return cls(reader, writer, on_parent_gone)

    async def _read(self) -> None:
        try:
            while line := await self._reader.readline():
                await self._answers.put(json.loads(line))
        except (OSError, ValueError):
            pass
        self._on_gone()
        await self._answers.put({"error": "the parent process is gone"})

    def send(self, message: dict[str, Any]) -> None:
        """Send one message (no answer expected)."""
        if not self._writer.is_closing():
            self._writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    async def ask_port(self, key: str) -> int:
        """The port every worker binds for listener ``key`` (a :data:`~egressmail.gateway.server.PortBroker`).

        Raises:
            OSError: the parent could not reserve a port, or is gone.
        """
        async with self._ask_lock:
            self.send({"port": key})
            answer = await self._answers.get()
        if "is" not in answer:
            raise OSError(answer.get("error", "no port from the parent process"))
        return int(answer["is"])

    async def aclose(self) -> None:
        """Close the socket."""
        self._task.cancel()
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


# -- the parent's side ------------------------------------------------------------------------


@dataclass
class _Worker:
    index: int
    proc: asyncio.subprocess.Process
    started: float
    ready: dict[str, Any] | None = None
    snapshot: dict[str, Any] = field(default_factory=dict)
    reader_task: asyncio.Task[None] | None = None
    writer: asyncio.StreamWriter | None = None


class _PortReservations:
    """Ports the parent holds (bound with SO_REUSEPORT, never listening) for ephemeral listeners."""

    def __init__(self, host: str) -> None:
        self._host = host
        self._held: dict[str, socket.socket] = {}

    def port_for(self, key: str) -> int:
        held = self._held.get(key)
        if held is None:
            family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
            held = socket.socket(family, socket.SOCK_STREAM)
            try:
                held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                held.bind((self._host, 0))
            except OSError:
                held.close()
                raise
            self._held[key] = held
        return int(held.getsockname()[1])

    def close(self) -> None:
        for held in self._held.values():
            held.close()
        self._held.clear()


class Supervisor:
    """Starts, watches, signals and restarts the workers (see the module's docstring).

    Args:
        argv: the worker's command line (``egressmail … gateway run …`` without ``--workers``).
        count: how many workers.
        listen_host: where the workers listen (for reserving ephemeral ports).
        metrics_address: serve the workers' summed metrics there.
        on_ready: called once when every worker is ready, with the first worker's ready report
            and the metrics port.
    """

    def __init__(self, argv: Sequence[str], count: int, *, listen_host: str,
                 metrics_address: tuple[str, int] | None,
                 on_ready: Callable[[dict[str, Any], int | None], None]) -> None:
        self._argv = list(argv)
        self._count = count
        self._ports = _PortReservations(listen_host)
        self._metrics_address = metrics_address
        self._on_ready = on_ready
        self._workers: dict[int, _Worker] = {}
        self._retired: dict[str, Any] = merge_snapshots([])
        self._restarts: list[float] = []
        self._respawning = 0
        self._stopping = False
        self._announced = False
        self._exit_code = 0
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._metrics_port: int | None = None

    def snapshot(self) -> dict[str, Any]:
        """The sum of the live workers' last snapshots and of the retired workers' counters."""
        return merge_snapshots([self._retired, *(w.snapshot for w in list(self._workers.values()))])

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (0) or a failure (the failing worker's status).

        Raises:
            InvalidGatewayOption: the metrics address cannot be served.
        """
        loop = asyncio.get_running_loop()
        metrics_server: MetricsServer | None = None
        try:
            if self._metrics_address is not None:
                registry = CollectorRegistry()
                registry.register(GatewayCollector(self.snapshot))
                metrics_server = MetricsServer(registry, *self._metrics_address)
            self._metrics_port = metrics_server.port if metrics_server is not None else None
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
            loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)
            for index in range(self._count):
                await self._spawn(index)
            while self._workers or self._respawning:
                self._changed.clear()
                await self._changed.wait()
            return self._exit_code
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            for worker in list(self._workers.values()):  # only after an unexpected error
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()
            if metrics_server is not None:
                metrics_server.close()
            self._ports.close()

    def stop(self, code: int = 0) -> None:
        """Ask every worker to drain and stop; :meth:`run` returns ``code`` once they all have."""
        if not self._stopping:
            self._stopping = True
            self._exit_code = code
            log.info("stopping %d worker(s)", len(self._workers))
            self._forward(signal.SIGTERM)
        self._changed.set()

    def _forward(self, sig: int) -> None:
        for worker in self._workers.values():
            if worker.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(sig)

    async def _spawn(self, index: int) -> None:
        parent_end, child_end = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv, env=dict(os.environ, **{CONTROL_FD_ENV: str(child_end.fileno())}),
                pass_fds=(child_end.fileno(),), stdin=asyncio.subprocess.DEVNULL)
        finally:
            child_end.close()
        reader, writer = await asyncio.open_connection(sock=parent_end)
        worker = _Worker(index=index, proc=proc, started=time.monotonic(), writer=writer)
        self._workers[proc.pid] = worker
        worker.reader_task = asyncio.get_running_loop().create_task(self._serve(worker, reader))
        log.info("worker %d started (pid %d)", index, proc.pid)
        if self._stopping:  # stopped while this one was starting
            proc.send_signal(signal.SIGTERM)

    async def _serve(self, worker: _Worker, reader: asyncio.StreamReader) -> None:
        assert worker.writer is not None  # noqa: S101
        try:
            while line := await reader.readline():
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                self._handle(worker, message)
        except OSError:
            pass
        finally:
            worker.writer.close()
        await worker.proc.wait()
        self._exited(worker)

    def _handle(self, worker: _Worker, message: dict[str, Any]) -> None:
        assert worker.writer is not None  # noqa: S101
        if "port" in message:
            try:
                answer: dict[str, Any] = {"is": self._ports.port_for(str(message["port"]))}
            except OSError as exc:
                answer = {"error": exc.strerror or str(exc)}
            worker.writer.write(json.dumps(answer).encode() + b"\n")
        elif "metrics" in message:
            worker.snapshot = message["metrics"]
        elif "ready" in message:
            worker.ready = message["ready"]
            if not self._announced and all(w.ready is not None for w in self._workers.values()) \
                    and len(self._workers) == self._count:
                self._announced = True
                self._on_ready(worker.ready, self._metrics_port)

    def _exited(self, worker: _Worker) -> None:
        del self._workers[worker.proc.pid]
        # Its counters stay counted; what was open with it is gone.
        self._retired = merge_snapshots([self._retired, {**worker.snapshot, "open": {}, "buffered": 0.0}])
        code = worker.proc.returncode
        if self._stopping:
            if code not in (0, None):
                log.warning("worker %d (pid %d) exited with status %s", worker.index, worker.proc.pid, code)
                self._exit_code = self._exit_code or 1
            self._changed.set()
            return
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_S] + [now]
        if worker.ready is None:
            log.error("worker %d (pid %d) failed to start (status %s): stopping the gateway",
                      worker.index, worker.proc.pid, code)
            self.stop(code or 1)
        elif len(self._restarts) > MAX_RESTARTS:
            log.error("worker %d (pid %d) exited with status %s; %d workers exited within %gs: "
                      "stopping the gateway", worker.index, worker.proc.pid, code, len(self._restarts),
                      RESTART_WINDOW_S)
            self.stop(code or 1)
        else:
            log.warning("worker %d (pid %d) exited with status %s: restarting it", worker.index,
                        worker.proc.pid, code)
            self._respawning += 1
            task = asyncio.get_running_loop().create_task(self._respawn(worker.index))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._changed.set()

    async def _respawn(self, index: int) -> None:
        try:
            await self._spawn(index)
        except OSError as exc:
            log.error("cannot restart worker %d: %s: stopping the gateway", index, exc)
            self.stop(1)
        finally:
            self._respawning -= 1
            self._changed.set()
