"""The routing decision against every row of the kinds table (docs/networking.md), plus properties."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egressmail.networking import (
    REFUSAL_CODES,
    Allowed,
    EgressMap,
    EnvironmentNetworking,
    Infrastructure,
    Kind,
    PortForward,
    Refused,
    WayIn,
    check_resolved_address,
    decide,
    is_vpn_destination,
    matches_non_proxy_host,
)

FLEX, DEDICATED, VPN = Kind.FLEXIBLE_PORT_EGRESS, Kind.DEDICATED_EGRESS_IP, Kind.VPN
SMTP = PortForward("smtp.sendgrid.com", 465, 30002)
DB = PortForward("10.20.1.5", 5432, 30432)
VPN_SPACE = (ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("fd20::/64"))


def egress_for(kind: Kind | None, *, enabled: bool = True, forwards: tuple[PortForward, ...] = (SMTP, DB),
               non_proxy: tuple[str, ...] | None = None) -> EgressMap:
    """An egress map as the store would build it for a program of ``kind`` (None = no infrastructure)."""
    if kind is None:
        return EgressMap("1001", "2002")
    infra = Infrastructure(kind=kind, address_space=VPN_SPACE if kind is VPN else ())
    if non_proxy is None:
        non_proxy = ("*.example.com", "example.net") if kind in (DEDICATED, VPN) else ()
    networking = EnvironmentNetworking(port_forwards=forwards, non_proxy_hosts=non_proxy) if enabled else None
    return EgressMap("1001", "2002", infrastructure=infra, networking=networking, generation=3)


@dataclass(frozen=True)
class Case:
    way_in: WayIn
    listen_port: int | None = None
    host: str | None = None
    port: int | None = None


def ok(host: str, port: int, egress: str, rule: PortForward | None = None, via_vpn: bool = False) -> Allowed:
    return Allowed(host=host, port=port, rule=rule, egress=egress, via_vpn=via_vpn)  # type: ignore[arg-type]


# One row per line of the kinds table; one column per kind: the expected decision (a Refused is
# compared on its code only, the reason is free text).
TABLE: dict[str, tuple[Case, dict[Kind | None, Allowed | str]]] = {
    "https to 443": (Case(WayIn.HTTP_CONNECT, host="api.adobe.io", port=443), {
        None: ok("api.adobe.io", 443, "shared"), FLEX: ok("api.adobe.io", 443, "shared"),
        DEDICATED: ok("api.adobe.io", 443, "dedicated"), VPN: ok("api.adobe.io", 443, "dedicated")}),
    "http to 80": (Case(WayIn.HTTP_FORWARD, host="api.adobe.io", port=80), {
        None: ok("api.adobe.io", 80, "shared"), FLEX: ok("api.adobe.io", 80, "shared"),
        DEDICATED: ok("api.adobe.io", 80, "dedicated"), VPN: ok("api.adobe.io", 80, "dedicated")}),
    "https to another port via the proxy": (Case(WayIn.HTTP_CONNECT, host="api.adobe.io", port=8443), {
        None: "port-not-allowed", FLEX: ok("api.adobe.io", 8443, "shared"),
        DEDICATED: ok("api.adobe.io", 8443, "dedicated"), VPN: ok("api.adobe.io", 8443, "dedicated")}),
    "http to another port via the proxy": (Case(WayIn.HTTP_FORWARD, host="api.adobe.io", port=8080), {
        None: "port-not-allowed", FLEX: ok("api.adobe.io", 8080, "shared"),
        DEDICATED: ok("api.adobe.io", 8080, "dedicated"), VPN: ok("api.adobe.io", 8080, "dedicated")}),
    "non-HTTP via a declared forward": (Case(WayIn.PORT_FORWARD, listen_port=30002), {
        None: "no-kind", FLEX: ok("smtp.sendgrid.com", 465, "shared", SMTP),
        DEDICATED: ok("smtp.sendgrid.com", 465, "dedicated", SMTP),
        VPN: ok("smtp.sendgrid.com", 465, "dedicated", SMTP)}),
    "non-HTTP via an undeclared forward port": (Case(WayIn.PORT_FORWARD, listen_port=30003), {
        None: "no-kind", FLEX: "no-forward", DEDICATED: "no-forward", VPN: "no-forward"}),
    "non-HTTP (mail) through the proxy instead of a forward": (
        Case(WayIn.HTTP_CONNECT, host="smtp.sendgrid.com", port=465), {
            None: "non-http-port", FLEX: "non-http-port", DEDICATED: "non-http-port", VPN: "non-http-port"}),
    "nonProxyHosts match on 443 leaves from shared addresses": (
        Case(WayIn.HTTP_CONNECT, host="cdn.example.com", port=443), {
            None: ok("cdn.example.com", 443, "shared"), FLEX: ok("cdn.example.com", 443, "shared"),
            DEDICATED: ok("cdn.example.com", 443, "shared"), VPN: ok("cdn.example.com", 443, "shared")}),
    "nonProxyHosts exact match on 80": (Case(WayIn.HTTP_FORWARD, host="EXAMPLE.NET.", port=80), {
        None: ok("example.net", 80, "shared"), FLEX: ok("example.net", 80, "shared"),
        DEDICATED: ok("example.net", 80, "shared"), VPN: ok("example.net", 80, "shared")}),
    "nonProxyHosts match on another port is refused": (
        Case(WayIn.HTTP_CONNECT, host="cdn.example.com", port=8443), {
            None: "port-not-allowed", FLEX: ok("cdn.example.com", 8443, "shared"),
            DEDICATED: "port-not-allowed", VPN: "port-not-allowed"}),
    "destination inside the VPN address space (proxy)": (
        Case(WayIn.HTTP_CONNECT, host="10.20.3.4", port=8443), {
        None: "port-not-allowed", FLEX: ok("10.20.3.4", 8443, "shared"),
        DEDICATED: ok("10.20.3.4", 8443, "dedicated"),
        VPN: ok("10.20.3.4", 8443, "dedicated", via_vpn=True)}),
    "destination inside the VPN address space (forward)": (Case(WayIn.PORT_FORWARD, listen_port=30432), {
        None: "no-kind", FLEX: ok("10.20.1.5", 5432, "shared", DB),
        DEDICATED: ok("10.20.1.5", 5432, "dedicated", DB),
        VPN: ok("10.20.1.5", 5432, "dedicated", DB, via_vpn=True)}),
}


@pytest.mark.parametrize("kind", [None, FLEX, DEDICATED, VPN], ids=["none", "flexible", "dedicated", "vpn"])
@pytest.mark.parametrize("row", list(TABLE), ids=list(TABLE))
def test_kinds_table(row: str, kind: Kind | None) -> None:
    case, expectations = TABLE[row]
    result = decide(egress_for(kind), way_in=case.way_in, listen_port=case.listen_port, host=case.host,
                    port=case.port)
    expected = expectations[kind]
    if isinstance(expected, str):
        assert isinstance(result, Refused), result
        assert result.code == expected
        assert result.code in REFUSAL_CODES
        assert "\n" not in result.reason and result.reason
    else:
        assert result == expected


@pytest.mark.parametrize("kind", [FLEX, DEDICATED, VPN])
def test_an_infrastructure_without_enabled_networking_is_like_no_kind(kind: Kind) -> None:
    egress = egress_for(kind, enabled=False)
    refused = decide(egress, way_in=WayIn.PORT_FORWARD, listen_port=30002)
    assert isinstance(refused, Refused) and refused.code == "disabled"
    refused = decide(egress, way_in=WayIn.HTTP_CONNECT, host="api.adobe.io", port=8443)
    assert isinstance(refused, Refused) and refused.code == "port-not-allowed"
    assert "disabled" in refused.reason
    # ... and leaves from shared addresses even for a dedicated kind: the environment did not opt in.
    assert decide(egress, way_in=WayIn.HTTP_CONNECT, host="api.adobe.io", port=443) == ok(
        "api.adobe.io", 443, "shared")


def test_enabled_with_no_rules_forwards_nothing() -> None:
    egress = egress_for(FLEX, forwards=())
    refused = decide(egress, way_in=WayIn.PORT_FORWARD, listen_port=30002)
    assert isinstance(refused, Refused) and refused.code == "no-forward"
    assert "30002" in refused.reason and "1001/2002" in refused.reason


def test_a_forward_ignores_the_callers_host_and_port() -> None:
    result = decide(egress_for(FLEX), way_in=WayIn.PORT_FORWARD, listen_port=30002, host="evil.test", port=25)
    assert result == ok("smtp.sendgrid.com", 465, "shared", SMTP)


@pytest.mark.parametrize(("host", "port"), [
    ("", 443), ("exa mple.com", 443), ("a..b", 443), ("-a.com", 443), ("a.com:443", 443),
    ("http://a.com", 80), ("a" * 300, 443), ("a.com", 0), ("a.com", 65536), ("a.com", -1),
])
def test_bad_targets_are_refused(host: str, port: int) -> None:
    result = decide(egress_for(FLEX), way_in=WayIn.HTTP_CONNECT, host=host, port=port)
    assert isinstance(result, Refused) and result.code == "bad-target"


@pytest.mark.parametrize(("host", "normalized"), [
    ("[::1]", "::1"), ("2001:DB8::1", "2001:db8::1"), ("Api.Adobe.IO.", "api.adobe.io"),
    ("_acme.example.com", "_acme.example.com"), ("203.0.113.7", "203.0.113.7"),
])
def test_hosts_are_normalized(host: str, normalized: str) -> None:
    result = decide(egress_for(None), way_in=WayIn.HTTP_CONNECT, host=host, port=443)
    assert isinstance(result, Allowed) and result.host == normalized


def test_missing_arguments_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="listen_port"):
        decide(egress_for(FLEX), way_in=WayIn.PORT_FORWARD, host="a.com", port=443)
    with pytest.raises(ValueError, match="host and port"):
        decide(egress_for(FLEX), way_in=WayIn.HTTP_CONNECT, listen_port=30002)


# --- nonProxyHosts patterns ------------------------------------------------------------------------

@pytest.mark.parametrize(("pattern", "host", "expected"), [
    ("example.com", "example.com", True),
    ("example.com", "EXAMPLE.com.", True),
    ("example.com.", "example.com", True),
    ("example.com", "www.example.com", False),
    ("example.com", "badexample.com", False),
    ("*.example.com", "www.example.com", True),
    ("*.example.com", "a.b.example.com", True),
    ("*.Example.COM", "WWW.example.com.", True),
    ("*.example.com", "example.com", False),
    ("*.example.com", "badexample.com", False),
    ("*.example.com", "example.com.evil.test", False),
    ("*.", "anything.com", False),
    ("*", "anything.com", False),
    ("", "", False),
    ("a.*.com", "a.b.com", False),
])
def test_matches_non_proxy_host(pattern: str, host: str, expected: bool) -> None:
    assert matches_non_proxy_host(pattern, host) is expected


# --- resolved addresses ----------------------------------------------------------------------------

@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0", "224.0.0.1",
    "240.0.0.1", "100.64.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fc00::1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254",
    # 6to4 (2002::/16) carries an IPv4 address: a host with a 6to4 tunnel sends the packet to it.
    "2002:7f00:1::", "2002:a9fe:a9fe::1", "2002:a00:1::",
])
@pytest.mark.parametrize("kind", [None, FLEX, DEDICATED, VPN])
def test_non_public_addresses_are_refused(address: str, kind: Kind | None) -> None:
    refused = check_resolved_address(egress_for(kind), ipaddress.ip_address(address), pinned=False)
    assert isinstance(refused, Refused) and refused.code == "private-address"
    assert address.split(":")[-1] in refused.reason or str(ipaddress.ip_address(address)) in refused.reason


@pytest.mark.parametrize("address", ["203.0.113.7", "8.8.8.8", "2606:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    # 203.0.113.0/24 is a documentation range: Python counts it as not global, so use real ones too.
    ip = ipaddress.ip_address(address)
    if ip.is_global:
        assert check_resolved_address(egress_for(FLEX), ip, pinned=False) is None


def test_pinned_addresses_pass() -> None:
    assert check_resolved_address(egress_for(None), ipaddress.ip_address("127.0.0.1"), pinned=True) is None


def test_a_rule_naming_the_address_passes() -> None:
    egress = egress_for(FLEX)
    address = ipaddress.ip_address("10.20.1.5")
    assert check_resolved_address(egress, address, pinned=False, rule=DB) is None
    refused = check_resolved_address(egress, address, pinned=False, rule=SMTP)
    assert isinstance(refused, Refused) and refused.code == "private-address"


def test_vpn_address_space_passes_only_under_an_enabled_vpn() -> None:
    inside, outside = ipaddress.ip_address("10.20.9.9"), ipaddress.ip_address("10.21.0.1")
    inside6 = ipaddress.ip_address("fd20::5")
    vpn = egress_for(VPN)
    assert check_resolved_address(vpn, inside, pinned=False) is None
    assert check_resolved_address(vpn, inside6, pinned=False) is None
    assert check_resolved_address(vpn, ipaddress.ip_address("::ffff:10.20.9.9"), pinned=False) is None
    assert is_vpn_destination(vpn, inside) and not is_vpn_destination(vpn, outside)
    assert isinstance(check_resolved_address(vpn, outside, pinned=False), Refused)
    disabled = egress_for(VPN, enabled=False)
    assert not is_vpn_destination(disabled, inside)
    assert isinstance(check_resolved_address(disabled, inside, pinned=False), Refused)
    for kind in (FLEX, DEDICATED):
        assert isinstance(check_resolved_address(egress_for(kind), inside, pinned=False), Refused)


# --- properties ------------------------------------------------------------------------------------

forwards_strategy = st.lists(
    st.builds(PortForward, name=st.from_regex(r"[a-z][a-z0-9]{0,8}(\.[a-z]{2,4})?", fullmatch=True),
              port_dest=st.integers(1, 65535), port_orig=st.integers(30000, 30999)),
    max_size=6, unique_by=lambda f: f.port_orig,
).map(tuple)
kinds = st.sampled_from([None, FLEX, DEDICATED, VPN])


@settings(max_examples=200, deadline=None)
@given(kind=kinds, enabled=st.booleans(), forwards=forwards_strategy, listen_port=st.integers(0, 70000),
       host=st.none() | st.text(max_size=10), port=st.none() | st.integers(0, 70000))
def test_a_forward_goes_only_to_its_declared_rule(kind: Kind | None, enabled: bool,
                                                   forwards: tuple[PortForward, ...], listen_port: int,
                                                   host: str | None, port: int | None) -> None:
    egress = egress_for(kind, enabled=enabled, forwards=forwards)
    result = decide(egress, way_in=WayIn.PORT_FORWARD, listen_port=listen_port, host=host, port=port)
    declared = {f.port_orig: f for f in forwards}
    if isinstance(result, Allowed):
        assert kind is not None and enabled
        rule = declared[listen_port]
        assert (result.rule, result.host, result.port) == (rule, rule.name, rule.port_dest)
    else:
        assert kind is None or not enabled or listen_port not in declared
        assert result.code in REFUSAL_CODES


@settings(max_examples=200, deadline=None)
@given(kind=kinds, enabled=st.booleans(), host=st.from_regex(r"[a-z]{1,8}\.(com|net|example\.com)",
                                                             fullmatch=True),
       port=st.integers(1, 65535), way_in=st.sampled_from([WayIn.HTTP_CONNECT, WayIn.HTTP_FORWARD]))
def test_the_proxy_follows_the_kinds_table(kind: Kind | None, enabled: bool, host: str, port: int,
                                           way_in: WayIn) -> None:
    egress = egress_for(kind, enabled=enabled)
    result = decide(egress, way_in=way_in, host=host, port=port)
    effective = kind if enabled else None
    if port in (25, 465, 587, 2525):
        assert isinstance(result, Refused) and result.code == "non-http-port"
    elif port in (80, 443):
        assert isinstance(result, Allowed) and (result.host, result.port, result.rule) == (host, port, None)
    elif effective is None:
        assert isinstance(result, Refused) and result.code == "port-not-allowed"
    if isinstance(result, Allowed):
        bypass = any(matches_non_proxy_host(p, host) for p in ("*.example.com", "example.net"))
        dedicated = effective in (DEDICATED, VPN) and not bypass
        assert result.egress == ("dedicated" if dedicated else "shared")
        if bypass and effective in (DEDICATED, VPN):
            assert port in (80, 443)
