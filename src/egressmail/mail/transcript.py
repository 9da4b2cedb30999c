"""The SMTP session transcript (``debug.email``), redacted, through Python ``logging``.

Logger: ``egressmail.mail.transcript`` (level INFO). One line per command or reply::

    3f9a1c2e@127.0.0.1:53422 C: EHLO app.example.com
    3f9a1c2e@127.0.0.1:53422 S: 250 smtp.sendgrid.com Hello ...
    3f9a1c2e@127.0.0.1:53422 C: AUTH PLAIN ****
    3f9a1c2e@127.0.0.1:53422 C: <message data: 1834 bytes>

The session id is a random tag plus the *local* socket address, which the gateway's access log shows
as ``client=``, so one session can be followed through both logs. AUTH payloads, passwords and
tokens are written as ``****`` and message bodies are never logged; as a second line of defence,
every known secret value (and its base64 forms) is masked wherever it would appear.
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Iterable

LOGGER_NAME = "egressmail.mail.transcript"
MASK = "****"

logger = logging.getLogger(LOGGER_NAME)


def new_session_id(local_address: tuple[str, int] | None) -> str:
    """``<8 hex>@ip:port`` for a connection from ``local_address`` (``<8 hex>`` alone without one)."""
    tag = secrets.token_hex(4)
    if local_address is None:
        return tag
    host, port = local_address[0], local_address[1]
    host = f"[{host}]" if ":" in host else host
    return f"{tag}@{host}:{port}"


def _forms(value: str) -> set[str]:
    forms = {value}
    raw = value.encode("utf-8", "surrogateescape")
    # The value may sit at any offset inside a base64 payload (AUTH PLAIN packs user\0password),
    # so mask the three alignments' stable cores as well as the whole encoding.
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode("ascii")
        core = encoded[4 * ((shift + 2) // 3):]
        core = core[: len(core) - 4] if len(core) > 8 else core
        if len(core) >= 6:
            forms.add(core)
    forms.add(base64.b64encode(raw).decode("ascii").rstrip("="))
    return {f for f in forms if len(f) >= 3}


class Transcript:
    """Writes one session's transcript when enabled; every line goes through the masks.

    Args:
        session_id: the session's id (see :func:`new_session_id`).
        enabled: ``debug.email``; when false nothing is formatted or logged.
        secrets: values that must never appear (passwords, tokens); masked wherever they occur.
    """

    def __init__(self, session_id: str, *, enabled: bool, secrets: Iterable[str] = (),
                 log: logging.Logger | None = None) -> None:
        self.session_id = session_id
        self.enabled = enabled
        self._log = log or logger
        self._masks: list[str] = []
        for value in secrets:
            self.add_secret(value)

    def add_secret(self, value: str) -> None:
        """Mask ``value`` (and its base64 forms) from now on (e.g. a freshly fetched token)."""
        if value:
            self._masks.extend(_forms(value))
            self._masks.sort(key=len, reverse=True)

    def redact(self, text: str) -> str:
        """``text`` with every known secret (and its base64 forms) replaced by ``****``; used for
        error messages too, which may quote a server reply that echoed an AUTH payload."""
        return self._mask(text)

    def _mask(self, text: str) -> str:
        for value in self._masks:
            if value in text:
                text = text.replace(value, MASK)
        return text

    def _emit(self, direction: str, text: str) -> None:
        if not self.enabled:
            return
        for line in text.splitlines() or [""]:
            self._log.info("%s %s: %s", self.session_id, direction, self._mask(line))

    def client(self, line: str) -> None:
        """A command we sent (never an AUTH payload: use :meth:`client_auth`)."""
        self._emit("C", line)

    def client_auth(self, mechanism: str) -> None:
        """An AUTH command: the mechanism is shown, its payload is not."""
        self._emit("C", f"AUTH {mechanism} {MASK}")

    def client_data(self, size: int) -> None:
        """The message bytes after DATA: only their size is shown."""
        self._emit("C", f"<message data: {size} bytes>")

    def server(self, code: int, message: str) -> None:
        """A reply from the server (multi-line replies are logged line by line)."""
        lines = message.splitlines() or [""]
        for i, line in enumerate(lines):
            sep = "-" if i < len(lines) - 1 else " "
            self._emit("S", f"{code}{sep}{line}")

    def note(self, text: str) -> None:
        """An event that is not on the wire (connect, TLS established, connection lost)."""
        self._emit("*", text)


class TranscriptCapture(logging.Handler):
    """Collects the (already redacted) SMTP transcript lines while installed.

    ``with TranscriptCapture() as capture: ...`` attaches it to the transcript logger, lowers the
    logger to INFO and stops propagation (the lines are shown by the caller, not on the console),
    then restores everything.
    """

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self._saved: tuple[int, bool] | None = None

    def emit(self, record: logging.LogRecord) -> None:  # noqa: D102
        self.lines.append(record.getMessage())

    def __enter__(self) -> TranscriptCapture:
        logger = logging.getLogger(LOGGER_NAME)
        self._saved = (logger.level, logger.propagate)
        logger.addHandler(self)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        logger.propagate = False
        return self

    def __exit__(self, *exc_info: object) -> None:
        logger = logging.getLogger(LOGGER_NAME)
        logger.removeHandler(self)
        if self._saved is not None:
            logger.setLevel(self._saved[0])
            logger.propagate = self._saved[1]
