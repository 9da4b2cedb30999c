"""The byte pump: two asyncio protocols wired to each other's transports.

Theory of operation
-------------------
A :class:`Tunnel` joins a client connection and an upstream connection. Each side is a
:class:`Side` protocol whose ``data_received`` writes the chunk straight to the other side's
transport: no queue, no task, no per-byte Python work, the event loop (uvloop when installed)
does the reading and writing in C with its own large read buffer.

Backpressure. Every transport has write-buffer marks (``Limits.high_water``/``low_water``). When
the bytes waiting to be written to side B pass the high mark, the loop calls B's
``pause_writing``, which pauses *reading* side A (the producer); ``resume_writing`` resumes it. So
a reader that stops reading bounds the gateway's memory for that tunnel to about ``high_water``
plus one read chunk per direction, whatever the writer sends (TCP flow control then stalls the
writer itself).

Half-close. An EOF from one side (``eof_received``) becomes ``write_eof`` (a FIN, once the buffer
drained) on the other, and the side stays open for the answer: ``shutdown(SHUT_WR)`` is carried
through, as SMTP ``QUIT`` or ``nc -N`` need. When both directions have seen EOF, both transports
close. A side that is lost with an error (reset) aborts the other; a side that is lost cleanly
closes the other after flushing.

Timeouts without timers. A tunnel owns no timer handle: the gateway calls :meth:`Tunnel.tick`
on every open tunnel a few times a second (one sweep for all of them, see
``Gateway._sweep_loop``). While connecting, ``tick`` enforces the connect deadline; once joined,
it compares the byte counters with the previous look, and a tunnel whose counters did not move
for ``idle`` seconds is aborted. Counters are read, never written, by the sweep, so the hot path
stays one ``write`` and one addition; and a connection costs no timer creation or cancellation
(two libuv handles per connection before), which matters at thousands of connections a second.

The tunnel calls ``on_finished(tunnel)`` once, when both sides are gone; the gateway writes the
access-log line and updates the metrics there.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from egressmail.gateway.accesslog import AccessRecord, End


class Side(asyncio.Protocol):
    """One end of a tunnel: what it receives goes to :attr:`out` (the other side's transport)."""

    __slots__ = ("tunnel", "transport", "other", "out", "nbytes", "eof", "lost", "wakes", "pending")

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel
        self.transport: asyncio.Transport | None = None
        self.other: Side | None = None
        self.out: asyncio.Transport | None = None
        self.nbytes = 0  # received on this side (and written to the other)
        self.eof = False
        self.lost = False
        self.wakes = 0  # resume_writing calls: draining counts as activity for the idle timer
        self.pending: list[bytes] = []  # received before the tunnel was joined

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        self.transport = transport  # type: ignore[assignment]
        if self.tunnel.is_finished:  # connected just as the client left
            transport.abort()  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:  # noqa: D102
        # The hot path: one write, one addition.
        out = self.out
        if out is None:  # not joined yet (an early greeting; uvloop reads before a pause applies)
            self.tunnel.hold(self, data)
            return
        out.write(data)
        self.nbytes += len(data)

    def eof_received(self) -> bool:  # noqa: D102
        self.eof = True
        self.tunnel.side_eof(self)
        return True  # keep our sending half open for the other direction

    def pause_writing(self) -> None:  # noqa: D102
        # Our transport's buffer is full: stop reading what the other side sends us.
        other = self.other
        if other is not None and other.transport is not None and not other.eof:
            other.transport.pause_reading()

    def resume_writing(self) -> None:  # noqa: D102
        self.wakes += 1
        other = self.other
        if other is not None and other.transport is not None and not other.eof and not other.lost:
            other.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self.lost = True
        self.tunnel.side_lost(self, exc)


class Tunnel:
    """A client connection, its upstream connection once made, and the record the access log gets.

    Args:
        record: the access-log record (updated in place: bytes, end, duration).
        rule_key: the key the gateway counts per-rule limits with.
        idle_timeout: seconds without a byte moving before the tunnel is cut (``None`` = never).
        high_water / low_water: write-buffer marks applied to both transports.
        on_finished: called once when both sides are gone.
    """

    __slots__ = ("record", "rule_key", "client", "upstream", "_idle", "_high", "_low", "_on_finished",
                 "_deadline", "_connect_timeout", "_watching", "_last_count", "_last_change",
                 "_finished", "_t0", "_counted_up", "_counted_down", "task", "on_progress", "held_back",
                 "__weakref__")

    def __init__(self, record: AccessRecord, rule_key: object, *, idle_timeout: float | None,
                 high_water: int, low_water: int, on_finished: Callable[[Tunnel], None]) -> None:
        self.record = record
        self.rule_key = rule_key
        self.client = Side(self)
        self.upstream = Side(self)
        self.client.other = self.upstream
        self.upstream.other = self.client
        self._idle = idle_timeout
        self._high = high_water
        self._low = low_water
        self._on_finished = on_finished
        self._deadline = math.inf  # the connect deadline (loop time), while connecting
        self._connect_timeout = 0.0
        self._watching = False  # joined: the sweep watches for silence
        self._last_count = -1
        self._last_change = 0.0
        self._finished = False
        self._t0 = time.monotonic()
        self._counted_up = 0
        self._counted_down = 0
        self.task: asyncio.Task[None] | None = None  # the connect phase, while it runs
        self.on_progress: Callable[[Tunnel, int, int], None] | None = None
        self.held_back = False  # a side's reading was paused before the join

    # -- wiring -------------------------------------------------------------------------------

    def start_connect_timer(self, now: float, timeout: float | None) -> None:
        """Abort (``connect-timeout``) unless :meth:`join` happens within ``timeout`` seconds.

        ``now`` is the loop's time; the deadline is enforced by :meth:`tick`.
        """
        if timeout is not None:
            self._deadline = now + timeout
            self._connect_timeout = timeout

    def start_idle_timer(self, now: float) -> None:
        """Begin watching for silence (call once joined; ends the connect deadline)."""
        self._deadline = math.inf
        if self._idle is not None:
            self._watching = True
            self._last_change = now

    def tick(self, now: float) -> None:
        """The gateway's periodic sweep: enforce the connect deadline, then the idle timeout.

        Precision is the sweep's period (at most a quarter of the shortest timeout).
        """
        if self._finished:
            return
        if now >= self._deadline:
            self._deadline = math.inf
            if self.client.out is None:
                self.abort(End.CONNECT_TIMEOUT, f"connecting to {self.record.dest}: "
                                                f"no answer within {self._connect_timeout:g}s")
            return
        if not self._watching:
            return
        count = self.client.nbytes + self.upstream.nbytes + self.client.wakes + self.upstream.wakes
        if count != self._last_count:
            self._last_count = count
            self._last_change = now
            self.report_progress()
        elif self._idle is not None and now - self._last_change >= self._idle:
            self.abort(End.IDLE_TIMEOUT, f"no data in either direction for {self._idle:g}s")

    def attach_client(self, transport: asyncio.Transport) -> None:
        """Adopt an accepted client transport whose protocol was something else until now."""
        self.client.transport = transport
        transport.set_protocol(self.client)

    def hold(self, side: Side, data: bytes) -> None:
        """Keep bytes that arrived before :meth:`join`; stop reading that side past the high mark."""
        side.pending.append(data)
        if sum(map(len, side.pending)) > self._high and side.transport is not None:
            side.transport.pause_reading()
            self.held_back = True

    def join(self) -> None:
        """Both transports exist: wire them and start moving bytes (the client's reading resumes)."""
        client, upstream = self.client.transport, self.upstream.transport
        assert client is not None and upstream is not None  # noqa: S101 - programming error
        client.set_write_buffer_limits(self._high, self._low)
        upstream.set_write_buffer_limits(self._high, self._low)
        self.client.out = upstream
        self.upstream.out = client
        for side in (self.client, self.upstream):
            if side.pending:
                data = b"".join(side.pending)
                side.pending = []
                side.out.write(data)  # type: ignore[union-attr]
                side.nbytes += len(data)
            if side.eof:  # a FIN that came before the join, after its data
                self.side_eof(side)
        if self.held_back:  # reading was paused for early bytes (or by the caller): resume it
            if not self.client.lost and not self.client.eof:
                client.resume_reading()
            if not self.upstream.lost and not self.upstream.eof:
                upstream.resume_reading()

    # -- events from the sides ----------------------------------------------------------------

    def side_eof(self, side: Side) -> None:
        """One side sent FIN: pass it on, and close when both directions are done."""
        if side.out is None:
            return  # not joined yet: join() passes it on after the early bytes
        other = side.other
        assert other is not None  # noqa: S101
        out = other.transport
        if out is None or other.lost:
            self.close()
            return
        if other.eof:
            self.close()
        elif out.can_write_eof():
            out.write_eof()
        else:  # pragma: no cover - TCP transports can always write EOF
            self.close()

    def side_lost(self, side: Side, exc: Exception | None) -> None:
        """One side is gone: take the other down with it (abort on error, close otherwise)."""
        other = side.other
        assert other is not None  # noqa: S101
        if exc is not None and self.record.end is End.CLOSED:
            self.record.end = End.RESET
            self.record.reason = f"{'client' if side is self.client else 'destination'}: {exc}"
        if other.transport is not None and not other.lost:
            if exc is not None:
                other.transport.abort()
            else:
                other.transport.close()
        if other.transport is None or other.lost:
            if self.task is not None and not self.task.done():
                self.task.cancel()  # the client left while we were still connecting
            self.finish()

    def close(self) -> None:
        """Close both sides after flushing what they hold."""
        for side in (self.client, self.upstream):
            if side.transport is not None and not side.lost:
                side.transport.close()
        self._maybe_finish_unconnected()

    def abort(self, end: End, reason: str = "") -> None:
        """Drop both sides now (idle cut, shutdown), recording why."""
        if self.record.end is End.CLOSED:
            self.record.end = end
            if reason:
                self.record.reason = reason
        for side in (self.client, self.upstream):
            if side.transport is not None and not side.lost:
                side.transport.abort()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self._maybe_finish_unconnected()

    def _maybe_finish_unconnected(self) -> None:
        # A side that never got a transport never calls connection_lost.
        if (self.client.transport is None or self.client.lost) and \
                (self.upstream.transport is None or self.upstream.lost):
            self.finish()

    def report_progress(self) -> None:
        """Hand the bytes moved since the last report to ``on_progress`` (metrics)."""
        up, down = self.client.nbytes, self.upstream.nbytes
        if self.on_progress is not None and (up != self._counted_up or down != self._counted_down):
            self.on_progress(self, up - self._counted_up, down - self._counted_down)
        self._counted_up, self._counted_down = up, down

    def buffered_bytes(self) -> int:
        """Bytes waiting in this tunnel's write buffers (both directions)."""
        total = 0
        for side in (self.client, self.upstream):
            if side.transport is not None and not side.lost:
                total += side.transport.get_write_buffer_size()
        return total

    def finish(self) -> None:
        """Record the end once and tell the gateway."""
        if self._finished:
            return
        self._finished = True
        self._watching = False
        self.record.up = self.client.nbytes
        self.record.down = self.upstream.nbytes
        self.record.duration = time.monotonic() - self._t0
        self.report_progress()
        self._on_finished(self)

    @property
    def is_finished(self) -> bool:
        """The tunnel has ended and been accounted for."""
        return self._finished
