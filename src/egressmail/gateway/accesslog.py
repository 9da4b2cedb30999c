"""One access-log line per connection: the record (pure), its two formats, and a buffered writer.

A text line reads::

    2026-05-09T10:12:01.532Z rule=smtp.sendgrid.com:465 via=port-forward listen=30465
    client=127.0.0.1:50412 dest=smtp.sendgrid.com:465 addr=127.0.0.1:2465 egress=dedicated
    up=1834 down=5120 duration=0.412s end=closed

(one line). ``client=IP:PORT`` is the client's source address: the mail client logs its local
address and port in its session id, so the two logs can be joined without touching the byte
stream. ``up`` counts bytes from the client towards the destination, ``down`` the other way.
``end`` says how the connection ended (:class:`End`); ``reason`` explains refusals and errors.
The JSON format has the same fields, one object per line. With ``gateway run --workers N`` every
line ends with ``worker=PID`` (the process that served the connection), and the workers append to
the same file: each flush is whole lines in ``write`` calls on an ``O_APPEND`` descriptor, so
lines from different workers never interleave (:class:`AppendFile`).
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import IO


class End(StrEnum):
    """How a connection ended."""

    CLOSED = "closed"  # both sides finished normally
    REFUSED = "refused"  # the routing table or a limit said no; nothing was connected
    CONNECT_FAILED = "connect-failed"  # the destination could not be resolved or connected
    CONNECT_TIMEOUT = "connect-timeout"
    IDLE_TIMEOUT = "idle-timeout"  # no byte moved for Timeouts.idle
    RESET = "reset"  # one side broke the connection (RST, error)
    BAD_REQUEST = "bad-request"  # HTTP proxy: an unusable request head
    SHUTDOWN = "shutdown"  # the gateway stopped before the connection finished


class Via(StrEnum):
    """How the connection reached the gateway (access-log spelling)."""

    PORT_FORWARD = "port-forward"
    HTTP_CONNECT = "connect"
    HTTP_FORWARD = "http"


@dataclass(slots=True)
class AccessRecord:
    """What the access log says about one connection (mutable while the connection lives)."""

    via: Via
    rule: str
    client: str
    listen_port: int
    started: float  # time.time()
    dest: str = "-"
    addr: str = "-"
    egress: str = "-"
    up: int = 0
    down: int = 0
    duration: float = 0.0
    end: End = End.CLOSED
    reason: str = ""

    def as_dict(self) -> dict[str, object]:
        """The record as JSON-ready values (``time`` in ISO 8601 UTC)."""
        out: dict[str, object] = {
            "time": iso_time(self.started), "rule": self.rule, "via": str(self.via),
            "listen": self.listen_port, "client": self.client, "dest": self.dest, "addr": self.addr,
            "egress": self.egress, "up": self.up, "down": self.down,
            "duration": round(self.duration, 6), "end": str(self.end),
        }
        if self.reason:
            out["reason"] = self.reason
        return out


_second_cache: tuple[int, str] = (-1, "")


def iso_time(epoch: float) -> str:
    """``2026-05-09T10:12:01.532Z``."""
    global _second_cache
    whole = int(epoch)
    if _second_cache[0] != whole:  # many connections share a second: format it once
        _second_cache = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_second_cache[1]}.{int((epoch - whole) * 1000):03d}Z"


_NEEDS_QUOTES = re.compile(r'[\s"=\\]')


def _quote(value: str) -> str:
    # Reasons carry spaces; destinations come from clients: keep one record on one line.
    return json.dumps(value) if (not value or _NEEDS_QUOTES.search(value)) else value


def format_text(record: AccessRecord) -> str:
    """One ``key=value`` line (no newline)."""
    line = (f"{iso_time(record.started)} rule={_quote(record.rule)} via={record.via} "
            f"listen={record.listen_port} client={record.client} dest={_quote(record.dest)} "
            f"addr={record.addr} egress={record.egress} up={record.up} down={record.down} "
            f"duration={record.duration:.3f}s end={record.end}")
    if record.reason:
        line += f" reason={_quote(record.reason)}"
    return line


def format_json(record: AccessRecord) -> str:
    """One JSON object (no newline)."""
    return json.dumps(record.as_dict(), separators=(",", ":"))


PIPE_BUF = 4096
"""POSIX: a write of at most this many bytes to a pipe is never interleaved with another's."""


class AppendFile:
    """A text sink writing whole batches of lines with ``os.write`` on a raw descriptor.

    Several processes can share one log: on a regular file opened ``O_APPEND`` each ``write`` lands
    whole at the end; on a pipe or terminal (``-``) writes are cut at line ends into pieces of at
    most :data:`PIPE_BUF` bytes, which POSIX keeps whole too.

    Args:
        fd: an open descriptor (closed by :meth:`close` only when ``owns_fd``).
    """

    def __init__(self, fd: int, *, owns_fd: bool) -> None:
        self._fd = fd
        self._owns = owns_fd
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
        self._chunk = 1 << 20 if regular else PIPE_BUF

    @classmethod
    def open(cls, path: str) -> AppendFile:
        """Open (create) ``path`` for appending.

        Raises:
            OSError: it cannot be opened.
        """
        return cls(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640), owns_fd=True)

    def write(self, text: str) -> int:
        """Write ``text`` (whole lines) now; returns its length."""
        data = text.encode("utf-8")
        start = 0
        while start < len(data):
            end = len(data)
            if end - start > self._chunk:  # cut after the last newline that fits
                cut = data.rfind(b"\n", start, start + self._chunk)
                end = cut + 1 if cut >= start else data.find(b"\n", start) + 1 or len(data)
            view = memoryview(data)[start:end]
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            start = end
        return len(text)

    def flush(self) -> None:
        """Nothing is buffered here."""

    def close(self) -> None:
        """Close the descriptor if this object opened it."""
        if self._owns:
            os.close(self._fd)


class AccessLog:
    """Writes records to a file or stdout, buffered; :meth:`flush` pushes them out.

    The gateway flushes about once a second and when it stops, so a connection storm costs one
    ``write`` per second rather than one per connection.

    Args:
        stream: an open text stream (the gateway does not close it unless ``owns_stream``).
        json_lines: write JSON objects instead of ``key=value`` lines.
        worker: add ``worker=WORKER`` to every line (the serving process with ``--workers N``).
    """

    def __init__(self, stream: IO[str] | AppendFile, *, json_lines: bool = False,
                 owns_stream: bool = False, worker: int | None = None) -> None:
        self._stream = stream
        self._json = json_lines
        self._format = format_json if json_lines else format_text
        self._owns = owns_stream
        self._pending: list[str] = []
        self._worker = worker
        self._suffix = f" worker={worker}" if worker is not None else ""

    @classmethod
    def open(cls, target: str, *, json_lines: bool = False, worker: int | None = None) -> AccessLog:
        """``-`` for stdout, else a file opened for appending (safe to share between processes).

        Raises:
            OSError: the file cannot be opened.
        """
        if target == "-":
            sys.stdout.flush()
            return cls(AppendFile(sys.stdout.fileno(), owns_fd=False), json_lines=json_lines,
                       worker=worker)
        return cls(AppendFile.open(target), json_lines=json_lines, owns_stream=True, worker=worker)

    def write(self, record: AccessRecord) -> None:
        """Queue one record's line."""
        if self._worker is None:
            self._pending.append(self._format(record))
        elif self._json:
            data = record.as_dict()
            data["worker"] = self._worker
            self._pending.append(json.dumps(data, separators=(",", ":")))
        else:
            self._pending.append(self._format(record) + self._suffix)
        if len(self._pending) >= 512:
            self.flush()

    def flush(self) -> None:
        """Write out the queued lines."""
        if self._pending:
            lines, self._pending = self._pending, []
            try:
                self._stream.write("\n".join(lines) + "\n")
                self._stream.flush()
            except (OSError, ValueError):
                pass  # a full disk or closed stdout must not stop the traffic

    def close(self) -> None:
        """Flush, and close the file if this log opened it."""
        self.flush()
        if self._owns:
            self._stream.close()
