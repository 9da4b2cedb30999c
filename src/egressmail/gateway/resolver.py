"""Name lookups for the gateway, bounded so that a slow or hostile DNS cannot stall it.

``getaddrinfo`` blocks, so it runs in a thread, and a thread cannot be cancelled: when a
connection's deadline passes, its task stops waiting but the lookup thread goes on until the
system resolver gives up. Left unbounded, a name whose DNS server never answers, asked for by many
clients, would occupy every thread of a shared pool and stall every other lookup (and everything
else that pool runs, such as reading the egress map).

So :class:`Resolver` runs lookups in a thread pool of its own with ``max_lookups`` threads and
admits at most ``max_lookups`` lookups at once. A lookup keeps its slot until it really ends, even
after its caller gave up: the count of slots in use is the count of busy threads. A caller that
finds every slot busy waits, and that wait is inside its connect deadline like the lookup itself,
so it ends as a clear timeout rather than a hang.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_MAX_LOOKUPS = 16
"""Name lookups running at once (each one a thread while it runs)."""

Lookup = Callable[[str, int], Awaitable[list[IPAddress]]]
"""Resolve a name (never a literal) for a port: its addresses in the resolver's order, no
duplicates. Raises :class:`OSError` when the name does not resolve."""


@functools.lru_cache(maxsize=4096)
def literal_address(host: str) -> IPAddress | None:
    """``host`` as an IP address if it is one (cached: pins and rules repeat the same few)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class Resolver:
    """Bounded name resolution (see the module's docstring).

    Args:
        max_lookups: lookups running at once (default 16).
        lookup: the lookup function; ``None`` = the system's ``getaddrinfo`` in this resolver's
            own threads. Tests pass a coroutine of their own to play a slow DNS server.

    Raises:
        ValueError: ``max_lookups`` is less than 1.
    """

    __slots__ = ("max_lookups", "_lookup", "_slots", "_executor", "_running")

    def __init__(self, max_lookups: int = DEFAULT_MAX_LOOKUPS, *, lookup: Lookup | None = None) -> None:
        if max_lookups < 1:
            raise ValueError(f"Resolver: max_lookups must be at least 1, not {max_lookups}")
        self.max_lookups = max_lookups
        self._lookup: Lookup = lookup if lookup is not None else self._getaddrinfo
        self._slots = asyncio.Semaphore(max_lookups)
        self._executor: ThreadPoolExecutor | None = None
        self._running: set[asyncio.Future[list[IPAddress]]] = set()

    @property
    def running(self) -> int:
        """Lookups in progress, including those whose caller stopped waiting."""
        return len(self._running)

    @property
    def saturated(self) -> bool:
        """Every slot is busy: a lookup asked for now waits for one to end."""
        return self._slots.locked()

    async def resolve(self, host: str, port: int, *,
                      on_start: Callable[[], object] | None = None) -> list[IPAddress]:
        """The addresses of ``host`` (a literal is its own answer, without a lookup).

        Waits for a free slot first; ``on_start`` is called when the lookup starts (so a caller
        can tell waiting for a slot from waiting for DNS). Cancelling the caller (its deadline)
        stops the wait, not the lookup: that keeps its slot until it ends.

        Raises:
            OSError: the name does not resolve.
        """
        literal = literal_address(host)
        if literal is not None:
            return [literal]
        await self._slots.acquire()
        try:
            if on_start is not None:
                on_start()
            lookup = asyncio.ensure_future(self._lookup(host, port))
        except BaseException:
            self._slots.release()
            raise
        self._running.add(lookup)
        lookup.add_done_callback(self._ended)
        return await asyncio.shield(lookup)

    def _ended(self, lookup: asyncio.Future[list[IPAddress]]) -> None:
        self._running.discard(lookup)
        self._slots.release()
        if not lookup.cancelled():
            lookup.exception()  # retrieved: an abandoned lookup's failure is no "never retrieved" error

    async def _getaddrinfo(self, host: str, port: int) -> list[IPAddress]:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.max_lookups,
                                                thread_name_prefix="egressmail-dns")
        infos = await asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(socket.getaddrinfo, host, port,
                                              type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP))
        out: list[IPAddress] = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            ip = ipaddress.ip_address(sockaddr[0])
            if ip not in out:
                out.append(ip)
        return out

    def close(self) -> None:
        """Stop waiting for the lookups in progress and let the threads go (they end by themselves)."""
        for lookup in list(self._running):
            lookup.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
