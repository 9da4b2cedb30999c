"""Connecting to a destination: pins, resolution, the address check, the egress address, the timeout.

The order matters for deny-by-default: the routing decision is taken before this module is called;
here every address the name resolves to is checked (:func:`check_resolved_address`) *before* any
connection is attempted, so a name that resolves to 127.0.0.1 or 10.x cannot be used to reach
the gateway's own network, unless a ``--connect-to`` pin sends it there on purpose.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

from egressmail.gateway.accesslog import End
from egressmail.gateway.options import ConnectTo, find_pin
from egressmail.networking.model import EgressMap, PortForward
from egressmail.networking.routing import Refused, check_resolved_address

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class DialFailure:
    """Why no connection was made: how it ends in the access log, and a one-line reason."""

    end: End
    reason: str
    code: str  # metric label: a routing refusal code, or connect-failed / connect-timeout / resolve-failed


async def resolve(loop: asyncio.AbstractEventLoop, host: str, port: int) -> list[IPAddress]:
    """The addresses of ``host`` (a literal is its own answer), in the resolver's order.

    Raises:
        OSError: the name does not resolve.
    """
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    out: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0])
        if ip not in out:
            out.append(ip)
    return out


async def dial(loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol, *, egress: EgressMap,
               host: str, port: int, rule: PortForward | None, pins: tuple[ConnectTo, ...],
               local_address: str | None, connect_timeout: float | None,
               ) -> tuple[asyncio.Transport, str] | DialFailure:
    """Resolve, check and connect ``host:port`` (after pins), binding ``local_address`` if given.

    Returns:
        ``(transport, "ip:port")`` on success (``protocol`` is its protocol), else a
        :class:`DialFailure` saying why; this function does not raise for network problems.
    """
    pin = find_pin(pins, host, port)
    target_host, target_port = pin if pin is not None else (host, port)
    try:
        async with asyncio.timeout(connect_timeout):
            try:
                addresses = await resolve(loop, target_host, target_port)
            except OSError as exc:
                return DialFailure(End.CONNECT_FAILED, f"cannot resolve {target_host}: {exc}",
                                   "resolve-failed")
            candidates: list[IPAddress] = []
            refusal: Refused | None = None
            for address in addresses:
                refused = check_resolved_address(egress, address, pinned=pin is not None, rule=rule)
                if refused is not None:
                    refusal = refusal or refused
                    continue
                if local_address is not None and \
                        ipaddress.ip_address(local_address).version != address.version:
                    continue  # the egress address cannot reach the other family
                candidates.append(address)
            if not candidates:
                if refusal is not None:
                    return DialFailure(End.REFUSED, f"{host}:{port} → {refusal.reason}", refusal.code)
                return DialFailure(End.CONNECT_FAILED,
                                   f"{target_host} has no address of the egress address's family "
                                   f"({local_address})", "connect-failed")
            last: OSError | None = None
            for address in candidates:
                try:
                    transport, _ = await loop.create_connection(
                        lambda: protocol, str(address), target_port,
                        local_addr=(local_address, 0) if local_address is not None else None)
                except OSError as exc:
                    last = exc
                    continue
                shown = f"[{address}]:{target_port}" if address.version == 6 else f"{address}:{target_port}"
                return transport, shown
            assert last is not None  # noqa: S101 - candidates was not empty
            return DialFailure(End.CONNECT_FAILED,
                               f"connecting to {target_host}:{target_port}: {last.strerror or last}",
                               "connect-failed")
    except TimeoutError:
        return DialFailure(End.CONNECT_TIMEOUT,
                           f"connecting to {target_host}:{target_port}: "
                           f"no answer within {connect_timeout:g}s",
                           "connect-timeout")
