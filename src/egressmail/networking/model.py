"""Advanced networking as plain data: kinds, port forwards, nonProxyHosts (no I/O here).

These types are the contract between the networking store (who writes them), the gateway (who
enforces them) and the mail service (who reads the forward map to know the provider's TLS name).
Validation of the API payloads lives in ``networking/validation.py``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Kind(StrEnum):
    """The program's network infrastructure kind (one per program)."""

    FLEXIBLE_PORT_EGRESS = "flexiblePortEgress"
    DEDICATED_EGRESS_IP = "dedicatedEgressIp"
    VPN = "vpn"


@dataclass(frozen=True, slots=True)
class PortForward:
    """``proxy.tunnel:port_orig`` is forwarded as plain TCP to ``name:port_dest``."""

    name: str
    port_dest: int
    port_orig: int


@dataclass(frozen=True, slots=True)
class Infrastructure:
    """A program's network infrastructure."""

    kind: Kind
    region: str = "local"
    address_space: tuple[IPNetwork, ...] = ()  # VPN only
    dns: tuple[str, ...] = ()  # VPN only
    status: str = "ready"


@dataclass(frozen=True, slots=True)
class EnvironmentNetworking:
    """An environment's advanced-networking configuration (the API's payload, validated)."""

    port_forwards: tuple[PortForward, ...] = ()
    non_proxy_hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EgressMap:
    """Everything that decides what may leave one environment, and where to.

    ``infrastructure`` is ``None`` when the program has no advanced networking; ``networking`` is
    ``None`` when the environment has it disabled. Either way no port forward applies.
    """

    program: str
    environment: str
    infrastructure: Infrastructure | None = None
    networking: EnvironmentNetworking | None = None
    generation: int = 0
    _by_port: dict[int, PortForward] = field(default_factory=dict, init=False, repr=False,
                                             compare=False)

    def __post_init__(self) -> None:
        if self.is_enabled and self.networking is not None:
            self._by_port.update({f.port_orig: f for f in self.networking.port_forwards})

    @property
    def kind(self) -> Kind | None:
        """The infrastructure kind, or ``None`` without advanced networking."""
        return self.infrastructure.kind if self.infrastructure is not None else None

    @property
    def is_enabled(self) -> bool:
        """True when the program has an infrastructure and this environment has networking enabled."""
        return self.infrastructure is not None and self.networking is not None

    @property
    def port_forwards(self) -> tuple[PortForward, ...]:
        """The forwards in force (none unless enabled)."""
        return tuple(self._by_port.values())

    def forward_for(self, port_orig: int) -> PortForward | None:
        """The forward listening on ``port_orig``, or ``None`` if no rule declares it."""
        return self._by_port.get(port_orig)
