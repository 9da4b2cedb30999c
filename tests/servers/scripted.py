"""Tiny scripted SMTP servers (asyncio.start_server) for behaviour aiosmtpd will not produce.

Each script is one coroutine ``(reader, writer) -> None``; :func:`scripted_server` runs it on an
ephemeral loopback port inside the test's own event loop and closes everything afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def scripted_server(script: Script) -> AsyncIterator[int]:
    """Serve ``script`` on 127.0.0.1; yields the port."""
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)  # type: ignore[arg-type]
        try:
            await script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def greet_then_silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Greets, then never answers (a stuck server or tunnel): the client's read timeout must fire."""
    writer.write(b"220 silent.example ESMTP\r\n")
    await writer.drain()
    await reader.read()  # until the client gives up and closes


async def refuse_greeting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers the connection with 554 (a provider refusing this client) and closes."""
    writer.write(b"554 5.7.1 Your IP is not allowed\r\n")
    await writer.drain()


async def busy_greeting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers the connection with 421 (too busy, try later) and closes."""
    writer.write(b"421 4.3.2 Too many connections, try later\r\n")
    await writer.drain()


async def close_immediately(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts and closes at once (what a gateway does when it cannot reach the destination)."""
    writer.close()
