"""The gateway's resolver: literals are their own answer, lookups are bounded, a slot is held
until its lookup really ends (a lookup thread cannot be cancelled), the default lookup is real."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from egressmail.gateway.resolver import DEFAULT_MAX_LOOKUPS, IPAddress, Resolver


class Gate:
    """A lookup that waits for :attr:`release`, recording how many run at once."""

    def __init__(self, answer: str = "192.0.2.7") -> None:
        self.release = asyncio.Event()
        self.running = 0
        self.most = 0
        self.calls = 0
        self.answer = answer

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.calls += 1
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        if host == "nx.example.test":
            raise OSError(-2, "Name or service not known")
        return [ipaddress.ip_address(self.answer)]


async def test_concurrent_lookups_are_bounded():
    gate = Gate()
    resolver = Resolver(3, lookup=gate)
    tasks = [asyncio.create_task(resolver.resolve(f"h{i}.example.test", 443)) for i in range(10)]
    for _ in range(100):
        if gate.running == 3:
            break
        await asyncio.sleep(0.01)
    assert gate.running == 3 and resolver.running == 3 and resolver.saturated
    gate.release.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 3)
    assert results == [[ipaddress.ip_address("192.0.2.7")]] * 10
    assert gate.most == 3 and gate.calls == 10 and resolver.running == 0


async def test_a_caller_that_gives_up_keeps_its_slot_busy_until_the_lookup_ends():
    gate = Gate()
    resolver = Resolver(1, lookup=gate)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(resolver.resolve("slow.example.test", 443), 0.05)
    assert resolver.running == 1  # the lookup goes on, like a getaddrinfo thread would
    with pytest.raises(TimeoutError):  # no slot: this caller never starts a lookup
        await asyncio.wait_for(resolver.resolve("other.example.test", 443), 0.05)
    assert gate.calls == 1
    gate.release.set()
    assert await asyncio.wait_for(resolver.resolve("other.example.test", 443), 3) == \
        [ipaddress.ip_address("192.0.2.7")]
    assert gate.calls == 2 and resolver.running == 0


async def test_a_failing_lookup_raises_oserror_and_frees_its_slot():
    gate = Gate()
    gate.release.set()
    resolver = Resolver(1, lookup=gate)
    with pytest.raises(OSError, match="not known"):
        await resolver.resolve("nx.example.test", 25)
    assert resolver.running == 0 and not resolver.saturated


async def test_literals_are_never_looked_up():
    gate = Gate()
    resolver = Resolver(1, lookup=gate)
    assert await resolver.resolve("127.0.0.1", 1) == [ipaddress.ip_address("127.0.0.1")]
    assert await resolver.resolve("::1", 1) == [ipaddress.ip_address("::1")]
    assert gate.calls == 0


async def test_the_default_lookup_resolves_localhost_in_its_own_threads():
    resolver = Resolver()
    assert resolver.max_lookups == DEFAULT_MAX_LOOKUPS == 16
    try:
        addresses = await asyncio.wait_for(resolver.resolve("localhost", 25), 5)
    finally:
        resolver.close()
    assert addresses and all(a.is_loopback for a in addresses)
    assert len(set(addresses)) == len(addresses)


def test_max_lookups_must_be_positive():
    with pytest.raises(ValueError, match="max_lookups"):
        Resolver(0)
