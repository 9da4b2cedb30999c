"""May this connection leave the environment, and where to? (pure: no sockets, no DNS).

Theory of operation. The gateway asks twice for every connection:

1. :func:`decide` before connecting, with the way the connection came in:

   - ``PORT_FORWARD``: the application connected to ``proxy.tunnel:portOrig``. Only a declared rule
     is followed, and only to its own ``name:portDest``; the caller's idea of a host is ignored, so a
     forward can never be turned into an open relay.
   - ``HTTP_CONNECT`` / ``HTTP_FORWARD``: the application used the HTTP proxy for ``host:port``.
     80 and 443 always go out (that is the platform's default, even without advanced networking);
     other ports need a kind. Mail ports never go through the proxy: non-HTTP traffic must use a
     declared port forward (otherwise a ``CONNECT smtp.example.com:465`` would bypass the rules).
     With a dedicated address (dedicatedEgressIp, vpn), hosts matching ``nonProxyHosts`` leave from
     the shared addresses instead, and then only on 80/443.

2. :func:`check_resolved_address` for every address the destination resolved to, just before
   connecting: private, loopback, link-local and other non-public addresses are refused unless they
   are inside the VPN's address space (kind vpn), named literally by the rule, or pinned explicitly
   (``--connect-to``, the way tests map provider names onto loopback servers).

The effective kind is the program's kind only while the environment has networking enabled: an
infrastructure alone changes nothing for an environment that has not opted in.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from egressmail.networking.model import EgressMap, Kind, PortForward

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Ports the HTTP proxy allows with no advanced networking at all (and the only ones nonProxyHosts get).
HTTP_PORTS = frozenset({80, 443})
#: SMTP ports (RFC 5321 relay, RFC 8314 implicit TLS, RFC 6409 submission, and SendGrid's 2525):
#: mail must leave through a declared port forward, never through the HTTP proxy.
MAIL_PORTS = frozenset({25, 465, 587, 2525})
#: Kinds with a dedicated egress address of their own.
DEDICATED_KINDS = frozenset({Kind.DEDICATED_EGRESS_IP, Kind.VPN})

# Stable refusal codes (metric labels, access-log field). Never rename one.
NO_FORWARD = "no-forward"
NO_KIND = "no-kind"
DISABLED = "disabled"
PORT_NOT_ALLOWED = "port-not-allowed"
NON_HTTP_PORT = "non-http-port"
PRIVATE_ADDRESS = "private-address"
BAD_TARGET = "bad-target"
REFUSAL_CODES = frozenset({NO_FORWARD, NO_KIND, DISABLED, PORT_NOT_ALLOWED, NON_HTTP_PORT,
                           PRIVATE_ADDRESS, BAD_TARGET})

# HTTP targets are whatever a client wrote in its request line: accept real-world host names
# (underscores appear in some), refuse anything else before it reaches a resolver.
_TARGET_LABEL = r"[a-z0-9_]([-a-z0-9_]{0,61}[a-z0-9_])?"
_TARGET_RE = re.compile(rf"{_TARGET_LABEL}(\.{_TARGET_LABEL})*")
_MAX_TARGET_LENGTH = 253


class WayIn(StrEnum):
    """How a connection reached the gateway."""

    PORT_FORWARD = "port-forward"  # proxy.tunnel:portOrig
    HTTP_CONNECT = "http-connect"  # CONNECT host:port (HTTPS and other tunnels)
    HTTP_FORWARD = "http-forward"  # GET http://host:port/... (plain HTTP)


@dataclass(frozen=True, slots=True)
class Allowed:
    """The connection may go out.

    Attributes:
        host: where to connect (the rule's ``name`` for a port forward; the normalized request host
            otherwise: lower case, no trailing dot, IPv6 without brackets).
        port: the destination port.
        rule: the port forward used (``PORT_FORWARD`` way in only).
        egress: ``dedicated`` = bind the dedicated egress address (dedicatedEgressIp/vpn), ``shared`` =
            the platform's shared addresses (no kind, flexiblePortEgress, or a nonProxyHosts match).
        via_vpn: the destination is a literal address inside the VPN's address space (for a host name
            the gateway learns it from :func:`is_vpn_destination` after resolving).
    """

    host: str
    port: int
    rule: PortForward | None
    egress: Literal["dedicated", "shared"]
    via_vpn: bool = False


@dataclass(frozen=True, slots=True)
class Refused:
    """The connection must not go out.

    Attributes:
        reason: one line for 403 bodies and the access log (no secrets: only hosts, ports, kinds).
        code: a stable label from :data:`REFUSAL_CODES`, for metrics.
    """

    reason: str
    code: str


def effective_kind(egress: EgressMap) -> Kind | None:
    """The kind that governs the environment: the program's, while the environment has networking enabled."""
    return egress.kind if egress.is_enabled else None


def normalize_target_host(host: str) -> str | None:
    """A request's host in canonical form (lower case, no trailing dot, IPv6 unbracketed), or ``None``."""
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    text = text.lower()
    text = text.removesuffix(".")
    if not text or len(text) > _MAX_TARGET_LENGTH or not _TARGET_RE.fullmatch(text):
        return None
    return text


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _unmapped(address: IPAddress) -> IPAddress:
    # ::ffff:127.0.0.1 reaches 127.0.0.1, and 2002:7f00:1:: (6to4) is sent to it by a host with a
    # 6to4 tunnel: judge the IPv4 address inside.
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address.sixtofour
        if inner is not None:
            return inner
    return address


def is_vpn_destination(egress: EgressMap, address: IPAddress) -> bool:
    """True when the environment's effective kind is vpn and ``address`` is inside its address space."""
    if effective_kind(egress) is not Kind.VPN or egress.infrastructure is None:
        return False
    address = _unmapped(address)
    return any(address.version == net.version and address in net
               for net in egress.infrastructure.address_space)


def matches_non_proxy_host(pattern: str, host: str) -> bool:
    """Whether ``host`` matches a ``nonProxyHosts`` pattern.

    ``example.com`` matches that host only; ``*.example.com`` matches its subdomains at any depth
    (``a.example.com``, ``a.b.example.com``) but not ``example.com`` itself. Case-insensitive; one
    trailing dot on either side is ignored. A malformed pattern matches nothing.
    """
    p = pattern.strip().lower().removesuffix(".")
    h = host.strip().lower().removesuffix(".")
    if not h or not p:
        return False
    if p.startswith("*."):
        suffix = p[1:]  # ".example.com"
        return len(suffix) > 1 and "*" not in suffix and len(h) > len(suffix) and h.endswith(suffix)
    return "*" not in p and h == p


def _decide_port_forward(egress: EgressMap, listen_port: int) -> Allowed | Refused:
    where = f"{egress.program}/{egress.environment}"
    if egress.infrastructure is None:
        return Refused(f"no port forward on {listen_port}: program {egress.program} has no advanced "
                       "networking", NO_KIND)
    if egress.networking is None:
        return Refused(f"no port forward on {listen_port}: advanced networking is disabled for {where}",
                       DISABLED)
    rule = egress.forward_for(listen_port)
    if rule is None:
        return Refused(f"no port forward declared on {listen_port} for {where}", NO_FORWARD)
    literal = _literal_address(rule.name)
    return Allowed(
        host=rule.name, port=rule.port_dest, rule=rule,
        egress="dedicated" if egress.kind in DEDICATED_KINDS else "shared",
        via_vpn=literal is not None and is_vpn_destination(egress, literal),
    )


def _decide_http(egress: EgressMap, raw_host: str, port: int) -> Allowed | Refused:
    host = normalize_target_host(raw_host)
    if host is None:
        return Refused(f"{raw_host[:80]!r} is not a host name or IP address", BAD_TARGET)
    if isinstance(port, bool) or not 1 <= port <= 65535:
        return Refused(f"port {port} of {host} is outside 1–65535", BAD_TARGET)
    if port in MAIL_PORTS:
        return Refused(f"{host}:{port} is a mail port: non-HTTP traffic must use a declared port "
                       "forward, not the HTTP proxy", NON_HTTP_PORT)
    kind = effective_kind(egress)
    if kind is None and port not in HTTP_PORTS:
        why = ("advanced networking is disabled for this environment" if egress.infrastructure
               else f"program {egress.program} has no advanced networking")
        return Refused(f"{host}:{port}: only ports 80 and 443 are open without a kind ({why})",
                       PORT_NOT_ALLOWED)
    if kind is None or kind not in DEDICATED_KINDS:
        return Allowed(host=host, port=port, rule=None, egress="shared")

    literal = _literal_address(host)
    if literal is not None and is_vpn_destination(egress, literal):
        return Allowed(host=host, port=port, rule=None, egress="dedicated", via_vpn=True)
    patterns = egress.networking.non_proxy_hosts if egress.networking is not None else ()
    for pattern in patterns:
        if matches_non_proxy_host(pattern, host):
            if port not in HTTP_PORTS:
                return Refused(f"{host}:{port} matches nonProxyHosts {pattern!r}: it leaves from shared "
                               "addresses, which open only ports 80 and 443", PORT_NOT_ALLOWED)
            return Allowed(host=host, port=port, rule=None, egress="shared")
    return Allowed(host=host, port=port, rule=None, egress="dedicated")


def decide(egress: EgressMap, *, way_in: WayIn, listen_port: int | None = None, host: str | None = None,
           port: int | None = None) -> Allowed | Refused:
    """Decide whether a connection may go out, and where to (see the module's theory of operation).

    Args:
        egress: the environment's egress map.
        way_in: how the connection reached the gateway.
        listen_port: the gateway port the client connected to (``PORT_FORWARD``; ``host``/``port``
            are ignored then).
        host: the requested host (``HTTP_CONNECT``/``HTTP_FORWARD``), as written by the client.
        port: the requested port (``HTTP_CONNECT``/``HTTP_FORWARD``).

    Returns:
        :class:`Allowed` with the destination, or :class:`Refused` with a reason and a code. The caller
        must still pass every resolved address through :func:`check_resolved_address`.

    Raises:
        ValueError: the arguments the way in needs are missing (a programming error, not a refusal).
    """
    if way_in is WayIn.PORT_FORWARD:
        if listen_port is None:
            raise ValueError("decide(way_in=PORT_FORWARD) needs listen_port")
        return _decide_port_forward(egress, listen_port)
    if host is None or port is None:
        raise ValueError(f"decide(way_in={way_in.value}) needs host and port")
    return _decide_http(egress, host, port)


def address_category(address: IPAddress) -> str | None:
    """Why ``address`` is not a public destination (``loopback``, ``private``...), or ``None`` if it is."""
    address = _unmapped(address)
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:  # e.g. 100.64.0.0/10 (carrier-grade NAT), 192.0.0.0/24
        return "non-public"
    return None


def check_resolved_address(egress: EgressMap, address: IPAddress, *, pinned: bool,
                           rule: PortForward | None = None) -> Refused | None:
    """Check one address a destination resolved to, just before connecting to it.

    Args:
        egress: the environment's egress map.
        address: the resolved (or literal) address.
        pinned: the address comes from an explicit pin (``--connect-to NAME:ADDRESS``), which is
            trusted like a rule naming the address.
        rule: the port forward being followed, if any: a rule whose ``name`` is this very address
            names it explicitly, so it is allowed even when private.

    Returns:
        ``None`` when the connection may proceed (use :func:`is_vpn_destination` to know whether it
        goes through the VPN), else :class:`Refused` with code ``private-address``.
    """
    category = address_category(address)
    if category is None or pinned or is_vpn_destination(egress, address):
        return None
    if rule is not None:
        literal = _literal_address(rule.name)
        if literal is not None and _unmapped(literal) == _unmapped(address):
            return None
    return Refused(f"{address} is a {category} address: refused unless a rule names it, it is pinned, "
                   "or it is inside the vpn's address space", PRIVATE_ADDRESS)
