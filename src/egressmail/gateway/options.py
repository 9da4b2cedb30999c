"""The gateway's settings as plain data: timeouts, limits, ``--connect-to`` pins, listen options.

Everything here is pure (no sockets): the CLI builds these objects from its flags, tests and the
demo build them directly, and :class:`~egressmail.gateway.server.Gateway` only reads them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from egressmail.gateway.errors import InvalidGatewayOption

DEFAULT_CONNECT_TIMEOUT_S = 10.0
"""Name lookup and TCP connect to the destination (all resolved addresses together)."""
DEFAULT_IDLE_TIMEOUT_S = 300.0
"""A tunnel with no byte moving in either direction for this long is cut."""
DEFAULT_REQUEST_TIMEOUT_S = 10.0
"""HTTP proxy: the client's request head (``CONNECT …`` or ``GET http://…``) must arrive in this time."""
DEFAULT_MAX_CONNECTIONS = 1000
"""The platform's figure: 1000 egress connections per instance; beyond it new ones are dropped."""
DEFAULT_MAX_REQUEST_HEAD_BYTES = 16 * 1024
DEFAULT_HIGH_WATER_BYTES = 1024 * 1024
"""Per direction: once this much waits to be written to one side, the other side stops being read."""
DEFAULT_LOW_WATER_BYTES = 256 * 1024
DEFAULT_MAX_LOOKUPS = 16
"""Name lookups running at once; beyond it lookups wait for a slot (inside their connect deadline)."""
DEFAULT_HTTP_PROXY_PORT = 3128
DEFAULT_LISTEN_HOST = "127.0.0.1"
PROXY_HOST_NAME = "proxy.tunnel"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """One field per phase of a connection, in seconds (``None`` = no limit).

    Attributes:
        connect: resolving and connecting to the destination, together (default 10 s): waiting for
            a lookup slot, the lookup and the TCP connect all count against this one deadline.
        idle: no byte moving in either direction (default 300 s); a client that connects and sends
            nothing is cut after this long too.
        request: HTTP proxy only, receiving the request head (default 10 s).
    """

    connect: float | None = DEFAULT_CONNECT_TIMEOUT_S
    idle: float | None = DEFAULT_IDLE_TIMEOUT_S
    request: float | None = DEFAULT_REQUEST_TIMEOUT_S

    def __post_init__(self) -> None:
        for name in ("connect", "idle", "request"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"Timeouts.{name} must be a positive number of seconds or None, "
                                 f"not {value!r}")


@dataclass(frozen=True, slots=True)
class Limits:
    """How much the gateway takes on.

    Attributes:
        max_connections: open connections in total (port forwards and HTTP proxy together); beyond
            it new connections are closed at once and counted as refused (default 1000).
        max_connections_per_rule: open connections per port-forward rule (the HTTP proxy counts as
            one rule); ``None`` = only the total applies.
        high_water / low_water: write-buffer marks per direction (backpressure): a side whose peer
            has ``high_water`` bytes waiting is not read until they drain below ``low_water``.
        max_request_head_bytes: HTTP proxy request head size.
        max_lookups: name lookups running at once (default 16); each is a thread that cannot be
            cancelled, so a slow DNS server holds its slot until it answers or gives up.
    """

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_connections_per_rule: int | None = None
    high_water: int = DEFAULT_HIGH_WATER_BYTES
    low_water: int = DEFAULT_LOW_WATER_BYTES
    max_request_head_bytes: int = DEFAULT_MAX_REQUEST_HEAD_BYTES
    max_lookups: int = DEFAULT_MAX_LOOKUPS

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError(f"Limits.max_connections must be at least 1, not {self.max_connections}")
        if self.max_connections_per_rule is not None and self.max_connections_per_rule < 1:
            raise ValueError("Limits.max_connections_per_rule must be at least 1 or None, "
                             f"not {self.max_connections_per_rule}")
        if not 0 <= self.low_water <= self.high_water:
            raise ValueError(f"Limits: need 0 <= low_water ({self.low_water}) <= high_water "
                             f"({self.high_water})")
        if self.max_request_head_bytes < 256:
            raise ValueError("Limits.max_request_head_bytes must be at least 256")
        if self.max_lookups < 1:
            raise ValueError(f"Limits.max_lookups must be at least 1, not {self.max_lookups}")


@dataclass(frozen=True, slots=True)
class ConnectTo:
    """A pin like curl's ``--connect-to``: connections for ``name:port`` go to ``host:target_port``.

    A pin sends the operator's own destinations somewhere else (tests and the demo: a provider's
    name onto a loopback server), and what it points at is exempt from the private-address check.
    So it applies to the exact pair it names and nothing more: ``port`` ``None`` (a pin without a
    port) applies to port-forward rules only, whose destinations the operator declared; the HTTP
    proxy, where a client chooses the port, follows only a pin for its exact ``name:port``.
    ``target_port`` ``None`` keeps the requested port. The TLS name a client verifies does not
    change (the gateway never sees TLS): only where the bytes go.
    """

    name: str
    port: int | None
    host: str
    target_port: int | None

    def names(self, name: str) -> bool:
        """True when this pin is for ``name`` (on whatever port)."""
        return self.name == name.lower().rstrip(".")

    def matches(self, name: str, port: int, *, port_forward: bool) -> bool:
        """True when this pin applies to a connection for ``name:port``.

        ``port_forward``: the destination is a port-forward rule's (else: an HTTP proxy request).
        """
        if self.port is None:
            return port_forward and self.names(name)
        return self.port == port and self.names(name)

    def __str__(self) -> str:
        left = self.name if self.port is None else f"{self.name}:{self.port}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        right = host if self.target_port is None else f"{host}:{self.target_port}"
        return f"{left}={right}"


def _parse_port(text: str, where: str) -> int:
    # ASCII and at most 5 digits: int() refuses "²" (which isdigit() accepts) and huge strings.
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or not 1 <= int(text) <= 65535:
        raise InvalidGatewayOption(f"--connect-to {where}: port {text!r} is not a number from 1 to 65535",
                                   hint="write NAME:PORT=HOST:PORT, e.g. "
                                        "smtp.sendgrid.com:465=127.0.0.1:2465")
    return int(text)


def _split_host_port(text: str, where: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise InvalidGatewayOption(f"--connect-to {where}: {text!r} opens '[' without closing it",
                                       hint="write an IPv6 address as [::1]:2465")
        host, rest = text[1:end], text[end + 1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidGatewayOption(f"--connect-to {where}: {host!r} in brackets is not an IPv6 "
                                       "address") from None
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise InvalidGatewayOption(f"--connect-to {where}: unexpected {rest!r} after ']'")
        return host, _parse_port(rest[1:], where)
    if text.count(":") > 1:
        raise InvalidGatewayOption(f"--connect-to {where}: {text!r} has more than one ':'",
                                   hint="write an IPv6 address in brackets, e.g. [::1]:2465")
    host, sep, port = text.partition(":")
    if not host:
        raise InvalidGatewayOption(f"--connect-to {where}: the host is empty",
                                   hint="write NAME:PORT=HOST:PORT, e.g. "
                                        "smtp.sendgrid.com:465=127.0.0.1:2465")
    return host.lower(), (_parse_port(port, where) if sep else None)


def parse_connect_to(text: str) -> ConnectTo:
    """Parse ``NAME[:PORT]=HOST[:PORT]`` (``--connect-to``).

    Curl's own spelling ``NAME:PORT:HOST:PORT`` is accepted too.

    Raises:
        InvalidGatewayOption: the text does not have that shape, or a port is not 1–65535.
    """
    text = text.strip()
    if "=" in text:
        left, _, right = text.partition("=")
    else:
        parts = text.split(":")
        if len(parts) != 4 or "[" in text:
            raise InvalidGatewayOption(f"--connect-to {text!r}: expected NAME:PORT=HOST:PORT",
                                       hint="e.g. --connect-to smtp.sendgrid.com:465=127.0.0.1:2465")
        left, right = f"{parts[0]}:{parts[1]}" if parts[1] else parts[0], \
            f"{parts[2]}:{parts[3]}" if parts[3] else parts[2]
    name, port = _split_host_port(left, f"{text!r} (left of '=')")
    host, target_port = _split_host_port(right, f"{text!r} (right of '=')")
    return ConnectTo(name=name.rstrip("."), port=port, host=host, target_port=target_port)


def find_pin(pins: tuple[ConnectTo, ...], name: str, port: int, *,
             port_forward: bool) -> tuple[str, int] | None:
    """The ``(host, port)`` the first applying pin sends ``name:port`` to, or ``None``.

    ``port_forward``: the destination is a port-forward rule's; for the HTTP proxy (``False``)
    only a pin for exactly ``name:port`` applies (see :class:`ConnectTo`).
    """
    for pin in pins:
        if pin.matches(name, port, port_forward=port_forward):
            return pin.host, pin.target_port if pin.target_port is not None else port
    return None


def pinned_elsewhere(pins: tuple[ConnectTo, ...], name: str, port: int) -> ConnectTo | None:
    """For the HTTP proxy: a pin for ``name`` when none applies to ``name:port``, else ``None``.

    The proxy refuses such a request rather than resolving the name: a pinned name is one the
    operator sends somewhere on purpose, for the pairs the pins name and no other.
    """
    if find_pin(pins, name, port, port_forward=False) is not None:
        return None
    return next((pin for pin in pins if pin.names(name)), None)


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    """How one gateway listens and connects.

    Attributes:
        listen_host: where every listener binds (default 127.0.0.1).
        http_proxy_port: the HTTP proxy's port (default 3128; 0 = any free port; ``None`` = no proxy).
        connect_to: destination pins (tests and the demo map provider names onto loopback).
        egress_address: the dedicated egress IP every outgoing connection binds (``None`` = the
            system's choice). Connections for ``nonProxyHosts`` leave from the shared address.
        port_offset: port-forward listeners bind ``portOrig + port_offset``.
        ephemeral_ports: each port-forward listener binds a free port instead (tests; see
            :attr:`Gateway.listening_ports` for the mapping).
        timeouts / limits: see :class:`Timeouts` and :class:`Limits`.
        reuse_port: bind every listener with ``SO_REUSEPORT`` so several processes share its
            port and the kernel spreads connections over them (``gateway run --workers N``;
            Linux). Off by default: a second gateway on the same ports is then an error.
    """

    listen_host: str = DEFAULT_LISTEN_HOST
    http_proxy_port: int | None = DEFAULT_HTTP_PROXY_PORT
    connect_to: tuple[ConnectTo, ...] = ()
    egress_address: str | None = None
    port_offset: int = 0
    ephemeral_ports: bool = False
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    reuse_port: bool = False

    def __post_init__(self) -> None:
        if self.http_proxy_port is not None and not 0 <= self.http_proxy_port <= 65535:
            raise ValueError(f"GatewayOptions.http_proxy_port must be 0–65535, not {self.http_proxy_port}")
        if self.egress_address is not None:
            try:
                ipaddress.ip_address(self.egress_address)
            except ValueError:
                raise InvalidGatewayOption(
                    f"--egress-address {self.egress_address!r} is not an IP address",
                    hint="give the dedicated egress IP as a literal, e.g. 127.0.0.2") from None
        if not -30000 <= self.port_offset <= 35535:
            raise ValueError(f"GatewayOptions.port_offset {self.port_offset} puts ports outside 0–65535")

    def listen_port_for(self, port_orig: int) -> int:
        """The port a rule's listener binds (0 when ephemeral)."""
        return 0 if self.ephemeral_ports else port_orig + self.port_offset
