"""Connecting to a destination: pins, resolution, the address check, the egress address, the timeout.

The order matters for deny-by-default: the routing decision is taken before this module is called;
here every address the name resolves to is checked (:func:`check_resolved_address`) *before* any
connection is attempted, so a name that resolves to 127.0.0.1 or 10.x cannot be used to reach
the gateway's own network, unless a ``--connect-to`` pin sends it there on purpose. A pin applies
to the exact name and port it names (a pin without a port: to port-forward rules only), and the
HTTP proxy refuses a pinned name on any other port (``pinned-name``) instead of resolving it.

One deadline covers the whole attempt: waiting for a lookup slot, the lookup
(:class:`~egressmail.gateway.resolver.Resolver`) and the connect; the access log says which of
them it ran out in.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from egressmail.gateway.accesslog import End
from egressmail.gateway.options import ConnectTo, find_pin, pinned_elsewhere
from egressmail.gateway.resolver import IPAddress, Resolver, literal_address
from egressmail.networking.model import EgressMap, PortForward
from egressmail.networking.routing import Refused, check_resolved_address

PINNED_NAME = "pinned-name"
"""Refusal code: the HTTP proxy was asked for a pinned name on a port no pin covers."""
RESOLVE_TIMEOUT = "resolve-timeout"
"""Error code: the connect deadline passed while waiting for a lookup slot or a DNS answer."""


@dataclass(frozen=True, slots=True)
class DialFailure:
    """Why no connection was made: how it ends in the access log, and a one-line reason."""

    end: End
    reason: str
    code: str  # metric label: a routing refusal code, or connect-failed / connect-timeout / resolve-failed


class AddressChecks:
    """Memo of :func:`check_resolved_address` for one egress map (the check is pure).

    The gateway makes a new one whenever the map changes.
    """

    __slots__ = ("egress", "_memo")

    def __init__(self, egress: EgressMap) -> None:
        self.egress = egress
        self._memo: dict[tuple[IPAddress, bool, PortForward | None], Refused | None] = {}

    def check(self, address: IPAddress, pinned: bool, rule: PortForward | None) -> Refused | None:
        """``check_resolved_address`` for this map, memoised."""
        key = (address, pinned, rule)
        try:
            return self._memo[key]
        except KeyError:
            pass
        result = check_resolved_address(self.egress, address, pinned=pinned, rule=rule)
        if len(self._memo) < 10_000:
            self._memo[key] = result
        return result


@dataclass(frozen=True, slots=True)
class FixedTarget:
    """A destination known without resolving (a literal address, or a name pinned to one), checked.

    Both the pin lookup and the address check are pure functions of the egress map, so the
    gateway computes this once per port-forward rule and map (:func:`plan_fixed`) and a connection
    then only connects (:func:`connect_fixed`).
    """

    host: str  # the literal, as written
    port: int
    local_addr: tuple[str, int] | None
    addr: str  # "ip:port" for the access log


def plan_fixed(checks: AddressChecks, *, host: str, port: int, rule: PortForward | None,
               pins: tuple[ConnectTo, ...], local_address: str | None,
               ) -> FixedTarget | DialFailure | None:
    """Where ``host:port`` goes when that needs no resolution; ``None`` when it is a name.

    Returns:
        a :class:`FixedTarget`, or the :class:`DialFailure` every connection to it would get
        (a refused address, an egress address of the other family), or ``None``.
    """
    pin = find_pin(pins, host, port, port_forward=rule is not None)
    target_host, target_port = pin if pin is not None else (host, port)
    address = literal_address(target_host)
    if address is None:
        return None
    refused = checks.check(address, pin is not None, rule)
    if refused is not None:
        return DialFailure(End.REFUSED, f"{host}:{port} → {refused.reason}", refused.code)
    local = literal_address(local_address) if local_address is not None else None
    if local is not None and local.version != address.version:
        return DialFailure(End.CONNECT_FAILED,
                           f"{target_host} has no address of the egress address's family ({local_address})",
                           "connect-failed")
    return FixedTarget(host=target_host, port=target_port,
                       local_addr=(local_address, 0) if local_address is not None else None,
                       addr=f"[{target_host}]:{target_port}" if address.version == 6
                       else f"{target_host}:{target_port}")


async def connect_fixed(loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol,
                        target: FixedTarget) -> tuple[asyncio.Transport, str] | DialFailure:
    """Connect to a planned target (no resolution, no check: :func:`plan_fixed` did both).

    The caller enforces the deadline.

    Returns:
        ``(transport, "ip:port")``, or a :class:`DialFailure` (``connect-failed``).
    """
    try:
        transport, _ = await loop.create_connection(lambda: protocol, target.host, target.port,
                                                    local_addr=target.local_addr)
    except OSError as exc:
        return DialFailure(End.CONNECT_FAILED, f"connecting to {target.host}:{target.port}: "
                           f"{exc.strerror or exc}", "connect-failed")
    return transport, target.addr


def pinned_name_refusal(pin: ConnectTo, host: str, port: int) -> DialFailure:
    """The HTTP proxy's answer to ``host:port`` when ``pin`` names ``host`` but not that port.

    The reason shows the pin's left side only: where it points is the operator's business.
    """
    if pin.port is None:
        why = (f"{host} is pinned with --connect-to {pin.name}=… without a port, which applies to "
               f"port forwards only, not to the HTTP proxy")
    else:
        why = (f"{host} is pinned with --connect-to {pin.name}:{pin.port}=… for that port only, "
               f"not on port {port}")
    return DialFailure(End.REFUSED, f"{host}:{port} → {why}", PINNED_NAME)


class _Phase:
    """Where an attempt is, for the reason of a timeout: ``queue`` (for a lookup slot),
    ``lookup`` or ``connect``."""

    __slots__ = ("where",)

    def __init__(self) -> None:
        self.where = "connect"

    def lookup_started(self) -> None:
        self.where = "lookup"


async def dial(loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol, *, checks: AddressChecks,
               resolver: Resolver, host: str, port: int, rule: PortForward | None,
               pins: tuple[ConnectTo, ...], local_address: str | None, connect_timeout: float | None,
               started: float | None = None) -> tuple[asyncio.Transport, str] | DialFailure:
    """Resolve, check and connect ``host:port`` (after pins), binding ``local_address`` if given.

    ``rule`` is the port-forward rule being followed, ``None`` for an HTTP proxy request (which
    follows only pins for its exact ``host:port`` and is refused a pinned name on other ports).
    The deadline is ``started`` (loop time; default now) plus ``connect_timeout`` (``None`` = no
    limit) and covers waiting for a lookup slot, the lookup and the connect.

    Returns:
        ``(transport, "ip:port")`` on success (``protocol`` is its protocol), else a
        :class:`DialFailure` saying why; this function does not raise for network problems.
    """
    port_forward = rule is not None
    pin = find_pin(pins, host, port, port_forward=port_forward)
    if pin is None and not port_forward:
        other = pinned_elsewhere(pins, host, port)
        if other is not None:
            return pinned_name_refusal(other, host, port)
    target_host, target_port = pin if pin is not None else (host, port)
    phase = _Phase()
    try:
        if connect_timeout is None:
            return await _dial(loop, protocol, checks, resolver, phase, host, port, rule, target_host,
                               target_port, pin is not None, local_address)
        async with asyncio.timeout_at((loop.time() if started is None else started) + connect_timeout):
            return await _dial(loop, protocol, checks, resolver, phase, host, port, rule, target_host,
                               target_port, pin is not None, local_address)
    except TimeoutError:
        if phase.where == "queue":
            return DialFailure(End.CONNECT_TIMEOUT,
                               f"resolving {target_host}: no lookup slot free within {connect_timeout:g}s "
                               f"(all {resolver.max_lookups} lookups busy: a slow or unanswering DNS server)",
                               RESOLVE_TIMEOUT)
        if phase.where == "lookup":
            return DialFailure(End.CONNECT_TIMEOUT,
                               f"resolving {target_host}: no answer from DNS within {connect_timeout:g}s",
                               RESOLVE_TIMEOUT)
        return DialFailure(End.CONNECT_TIMEOUT,
                           f"connecting to {target_host}:{target_port}: "
                           f"no answer within {connect_timeout:g}s",
                           "connect-timeout")


async def _dial(loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol, checks: AddressChecks,
                resolver: Resolver, phase: _Phase, host: str, port: int, rule: PortForward | None,
                target_host: str, target_port: int, pinned: bool, local_address: str | None,
                ) -> tuple[asyncio.Transport, str] | DialFailure:
    phase.where = "queue"
    try:
        addresses = await resolver.resolve(target_host, target_port, on_start=phase.lookup_started)
    except OSError as exc:
        return DialFailure(End.CONNECT_FAILED, f"cannot resolve {target_host}: {exc}", "resolve-failed")
    phase.where = "connect"
    candidates: list[IPAddress] = []
    refusal: Refused | None = None
    local = literal_address(local_address) if local_address is not None else None
    for address in addresses:
        refused = checks.check(address, pinned, rule)
        if refused is not None:
            refusal = refusal or refused
            continue
        if local is not None and local.version != address.version:
            continue  # the egress address cannot reach the other family
        candidates.append(address)
    if not candidates:
        if refusal is not None:
            return DialFailure(End.REFUSED, f"{host}:{port} → {refusal.reason}", refusal.code)
        return DialFailure(End.CONNECT_FAILED,
                           f"{target_host} has no address of the egress address's family ({local_address})",
                           "connect-failed")
    # A literal is connected as written (no str() of the address per connection); a name is never
    # handed to create_connection, which would resolve it again, past the check above.
    is_literal = literal_address(target_host) is not None
    last: OSError | None = None
    for address in candidates:
        text = target_host if is_literal else str(address)
        try:
            transport, _ = await loop.create_connection(
                lambda: protocol, text, target_port,
                local_addr=(local_address, 0) if local_address is not None else None)
        except OSError as exc:
            last = exc
            continue
        return transport, f"[{text}]:{target_port}" if address.version == 6 else f"{text}:{target_port}"
    assert last is not None  # noqa: S101 - candidates was not empty
    return DialFailure(End.CONNECT_FAILED, f"connecting to {target_host}:{target_port}: "
                       f"{last.strerror or last}", "connect-failed")
