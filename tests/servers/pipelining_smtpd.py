"""A small SMTP server that offers PIPELINING (RFC 2920) and records how commands arrived.

aiosmtpd does not offer PIPELINING, so the transport's pipelined path needs a server of its own.
This one answers like Postfix's smtpd: the replies to the commands of one read are kept and sent in
one write when the input is drained (RFC 2920 server rules 2 and 7), which is exactly what a client
must cope with (several replies in one segment); DATA's 354 is never held back (rule 5).

What it records, per connection, in arrival order:

- ``reads``: the command lines of each read from the socket. A pipelined group (MAIL, RCPT...,
  DATA) arrives as one read; a client that waits for each reply sends one command per read.
- ``messages``: what was accepted (sender, recipients, the un-stuffed data).
- ``discarded``: data received for a transaction without a valid recipient (RFC 2920 section 3.1:
  the client ends a DATA accepted by mistake with an empty message, which is never delivered).
- ``verbs``: every command verb, e.g. ``["EHLO", "MAIL", "RCPT", "DATA", "RSET", "QUIT"]``.

Faults (:class:`PipeliningConfig`): the reply to MAIL, to each recipient, to DATA; 354 to DATA even
without a valid recipient; a 421 reply closes the connection after it is sent; ``hangup`` closes
the connection after the group's DATA without any reply, or after the final ``.`` without a reply;
``silent`` never answers MAIL/RCPT/DATA. Use::

    async with pipelining_smtpd(PipeliningConfig(rcpt_replies={"b@x.test": "550 5.1.1 no"})) as srv:
        ... dial 127.0.0.1:srv.port ...
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

NAME = "pipe.example.test"


@dataclass
class PipeliningConfig:
    """How the server behaves (see the module docstring)."""

    pipelining: bool = True  # offer PIPELINING after EHLO
    coalesce: bool = True  # send the replies to one read in one write (else one write each, spaced)
    mail_reply: str = "250 2.1.0 Ok"
    rcpt_replies: dict[str, str] = field(default_factory=dict)  # recipient → reply (default 250)
    data_reply: str | None = None  # None: 354 with a valid recipient, else 554 (Postfix's answer)
    data_without_recipients: bool = False  # answer 354 to DATA even without a valid recipient
    hangup: Literal["after-group", "after-dot"] | None = None
    silent: bool = False  # never answer MAIL, RCPT or DATA (a stuck server)


@dataclass(frozen=True)
class Accepted:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes


@dataclass
class PipeliningServer:
    """The running server: where to dial and what it saw."""

    config: PipeliningConfig
    port: int = 0
    reads: list[list[str]] = field(default_factory=list)
    messages: list[Accepted] = field(default_factory=list)
    discarded: list[bytes] = field(default_factory=list)
    verbs: list[str] = field(default_factory=list)

    def group_reads(self) -> list[list[str]]:
        """The reads that held a MAIL, RCPT or DATA command (what the test is about)."""
        return [r for r in self.reads if any(line.split(" ", 1)[0].upper() in ("MAIL", "RCPT", "DATA")
                                             for line in r)]


class _Connection:
    def __init__(self, server: PipeliningServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.s, self.c = server, server.config
        self.reader, self.writer = reader, writer
        self.out: list[bytes] = []
        self.closing = False
        self.hung_up = False
        self._reset()

    def _reset(self) -> None:
        self.sender: str | None = None
        self.rcpts: list[str] = []

    def reply(self, text: str) -> None:
        self.out.append(text.encode() + b"\r\n")
        if text.startswith("421"):
            self.closing = True

    async def flush(self) -> None:
        if self.c.coalesce:
            self.writer.write(b"".join(self.out))
        else:
            for i, line in enumerate(self.out):
                if i:
                    await asyncio.sleep(0.02)  # so the client reads them one at a time
                self.writer.write(line)
                await self.writer.drain()
        self.out.clear()
        await self.writer.drain()

    async def run(self) -> None:
        self.writer.write(f"220 {NAME} ESMTP\r\n".encode())
        buf = b""
        in_data = False
        pending = False  # complete input is still buffered: process it before reading again
        while not self.closing:
            if not pending:
                chunk = await self.reader.read(65536)
                if not chunk:
                    return
                buf += chunk
            pending = False
            lines: list[str] = []
            while not self.closing:
                if in_data:
                    # The data ends with CRLF.CRLF; an empty message is a lone ".\r\n".
                    end = (b"\r\n" + buf).find(b"\r\n.\r\n")
                    if end == -1:
                        break
                    data, buf = buf[:end], buf[end + 3:]
                    in_data = False
                    if self.c.hangup == "after-dot":
                        self.hung_up = True
                        return
                    self._message(data)
                    continue
                if (eol := buf.find(b"\r\n")) == -1:
                    break
                line, buf = buf[:eol].decode("utf-8", "replace"), buf[eol + 2:]
                lines.append(line)
                in_data = self._command(line)
                if line.upper() == "DATA":
                    pending = bool(buf)
                    break  # rule 5: DATA's reply is sent at once, not held for what follows
            if lines:
                self.s.reads.append(lines)
            if self.c.hangup == "after-group" and "DATA" in (v.upper() for v in lines):
                self.hung_up = True
                return
            await self.flush()

    def _command(self, line: str) -> bool:
        """Answer one command; True when the message data follows."""
        verb, _, arg = line.partition(" ")
        verb = verb.upper()
        self.s.verbs.append(verb)
        if verb in ("EHLO", "HELO"):
            ext = ["SIZE 10240000", *(["PIPELINING"] if self.c.pipelining else []), "8BITMIME"]
            if verb == "HELO":
                ext = []
            lines = [NAME, *ext]
            for i, text in enumerate(lines):
                self.reply(f"250{'-' if i < len(lines) - 1 else ' '}{text}")
        elif verb in ("MAIL", "RCPT", "DATA") and self.c.silent:
            pass
        elif verb == "MAIL":
            self.reply(self.c.mail_reply)
            self.sender = arg[5:].split(" ")[0].strip("<>") if self.c.mail_reply.startswith("250") else None
        elif verb == "RCPT":
            rcpt = arg[3:].strip("<>")
            text = (self.c.rcpt_replies.get(rcpt, "250 2.1.5 Ok") if self.sender is not None
                    else "503 5.5.1 Error: need MAIL command")
            self.reply(text)
            if text.startswith("25"):
                self.rcpts.append(rcpt)
        elif verb == "DATA":
            if self.c.data_reply is not None:
                text = self.c.data_reply
            elif self.sender is None:
                text = "503 5.5.1 Error: need RCPT command"
            elif self.rcpts or self.c.data_without_recipients:
                text = "354 End data with <CR><LF>.<CR><LF>"
            else:
                text = "554 5.5.1 Error: no valid recipients"
            self.reply(text)
            return text.startswith("354")
        elif verb == "RSET":
            self._reset()
            self.reply("250 2.0.0 Ok")
        elif verb == "NOOP":
            self.reply("250 2.0.0 Ok")
        elif verb == "QUIT":
            self.reply("221 2.0.0 Bye")
            self.closing = True
        else:
            self.reply("502 5.5.2 Error: command not recognized")
        return False

    def _message(self, data: bytes) -> None:
        data = b"\r\n".join(line[1:] if line.startswith(b".") else line for line in data.split(b"\r\n"))
        if self.sender is not None and self.rcpts:
            self.s.messages.append(Accepted(self.sender, tuple(self.rcpts), data))
            self.reply(f"250 2.0.0 Ok: queued as Q{len(self.s.messages)}")
        else:
            self.s.discarded.append(data)
            self.reply("554 5.5.1 Error: no valid recipients")
        self._reset()


@asynccontextmanager
async def pipelining_smtpd(config: PipeliningConfig | None = None, *,
                           tls: ssl.SSLContext | None = None) -> AsyncIterator[PipeliningServer]:
    """Serve on 127.0.0.1 (implicit TLS with ``tls``) in the running loop; yields the server."""
    state = PipeliningServer(config or PipeliningConfig())
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            conn = _Connection(state, reader, writer)
            await conn.run()
            if conn.out and not conn.hung_up:
                await conn.flush()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
