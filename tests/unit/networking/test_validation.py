"""The advanced-networking payload and infrastructure checks: every rule, every error names its field."""

from __future__ import annotations

import ipaddress
import json
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egressmail.errors import NetworkingError
from egressmail.networking import (
    EnvironmentNetworking,
    InvalidInfrastructure,
    InvalidNetworkingPayload,
    InvalidPayloadJSON,
    Kind,
    PortForward,
    decode_payload_json,
    infrastructure_to_dict,
    networking_to_payload,
    parse_infrastructure,
    parse_networking_payload,
)
from tests.conftest import SEED_NETWORKING

FLEX, DEDICATED, VPN = Kind.FLEXIBLE_PORT_EGRESS, Kind.DEDICATED_EGRESS_IP, Kind.VPN


def fwd(name: object = "smtp.example.com", dest: object = 465, orig: object = 30465) -> dict[str, object]:
    return {"name": name, "portDest": dest, "portOrig": orig}


def test_seed_payload_is_accepted_as_is() -> None:
    payload = json.loads(SEED_NETWORKING.read_text())
    for kind in (None, *Kind):
        result = parse_networking_payload(payload, kind=kind)
        assert result == EnvironmentNetworking(
            port_forwards=(PortForward("smtp.sendgrid.com", 465, 30002),), non_proxy_hosts=())


def test_empty_object_enables_with_no_rules() -> None:
    assert parse_networking_payload({}, kind=FLEX) == EnvironmentNetworking()


def test_full_payload_keeps_order() -> None:
    payload = {"nonProxyHosts": ["*.example.com", "example.net", "Example.ORG"],
               "portForwards": [fwd("smtp.sendgrid.net", 587, 30587), fwd("10.0.0.5", 5432, 30000),
                                fwd("a", 1, 30999), fwd("smtp.sendgrid.net", 465, 30465)]}
    result = parse_networking_payload(payload, kind=DEDICATED)
    assert [f.port_orig for f in result.port_forwards] == [30587, 30000, 30999, 30465]
    assert result.non_proxy_hosts == ("*.example.com", "example.net", "Example.ORG")
    assert parse_networking_payload(networking_to_payload(result), kind=DEDICATED) == result


@pytest.mark.parametrize(("payload", "field", "text"), [
    # the document itself
    ([], "payload", "expected a JSON object, got array"),
    (None, "payload", "expected a JSON object, got null"),
    ("{}", "payload", "expected a JSON object, got string"),
    ({"portForward": []}, "payload", 'unknown key "portForward"'),
    ({"portForwards": [], "extra": 1}, "payload", 'unknown key "extra"'),
    ({1: []}, "payload", "object keys must be strings"),
    # wrong container types
    ({"portForwards": None}, "portForwards", "expected a JSON array, got null"),
    ({"portForwards": {}}, "portForwards", "expected a JSON array, got object"),
    ({"portForwards": "smtp"}, "portForwards", "expected a JSON array, got string"),
    ({"nonProxyHosts": "example.com"}, "nonProxyHosts", "expected a JSON array, got string"),
    ({"portForwards": [[]]}, "portForwards[0]", "expected a JSON object, got array"),
    # keys of one rule
    ({"portForwards": [{"name": "a", "portDest": 1}]}, "portForwards[0]", "missing required key 'portOrig'"),
    ({"portForwards": [{"portDest": 1, "portOrig": 30000}]}, "portForwards[0]",
     "missing required key 'name'"),
    ({"portForwards": [{**fwd(), "protocol": "tcp"}]}, "portForwards[0]", 'unknown key "protocol"'),
    # name
    ({"portForwards": [fwd(name="SMTP.example.com")]}, "portForwards[0].name", "must be lower case"),
    ({"portForwards": [fwd(name="smtp.example.com.")]}, "portForwards[0].name", "must not end with a dot"),
    ({"portForwards": [fwd(name="smtp_relay.example.com")]}, "portForwards[0].name", "is not a host name"),
    ({"portForwards": [fwd(name="-smtp.example.com")]}, "portForwards[0].name", "is not a host name"),
    ({"portForwards": [fwd(name="smtp..example.com")]}, "portForwards[0].name", "is not a host name"),
    ({"portForwards": [fwd(name="smtp.example.com:465")]}, "portForwards[0].name", "is not a host name"),
    ({"portForwards": [fwd(name="::1")]}, "portForwards[0].name", "is not a host name"),
    ({"portForwards": [fwd(name="")]}, "portForwards[0].name", "must not be empty"),
    ({"portForwards": [fwd(name="a" * 64 + ".com")]}, "portForwards[0].name", "longer than 63"),
    ({"portForwards": [fwd(name=".".join(["a" * 60] * 5))]}, "portForwards[0].name", "longer than 253"),
    ({"portForwards": [fwd(name=7)]}, "portForwards[0].name", "expected a string, got integer"),
    # portDest
    ({"portForwards": [fwd(dest=0)]}, "portForwards[0].portDest", "0 is outside 1–65535"),
    ({"portForwards": [fwd(dest=65536)]}, "portForwards[0].portDest", "65536 is outside 1–65535"),
    ({"portForwards": [fwd(dest=-465)]}, "portForwards[0].portDest", "-465 is outside"),
    ({"portForwards": [fwd(dest=True)]}, "portForwards[0].portDest", "expected an integer, got boolean true"),
    ({"portForwards": [fwd(dest="465")]}, "portForwards[0].portDest",
     'expected an integer, got string "465"'),
    ({"portForwards": [fwd(dest=465.0)]}, "portForwards[0].portDest", "expected an integer, got number"),
    ({"portForwards": [fwd(dest=None)]}, "portForwards[0].portDest", "expected an integer, got null"),
    # portOrig
    ({"portForwards": [fwd(orig=29999)]}, "portForwards[0].portOrig", "29999 is outside 30000–30999"),
    ({"portForwards": [fwd(orig=31000)]}, "portForwards[0].portOrig", "31000 is outside 30000–30999"),
    ({"portForwards": [fwd(orig=False)]}, "portForwards[0].portOrig", "expected an integer, got boolean"),
    ({"portForwards": [fwd(orig="30002")]}, "portForwards[0].portOrig", "expected an integer, got string"),
    ({"portForwards": [fwd(orig=30002), fwd("b.example", 587, 30002)]}, "portForwards[1].portOrig",
     "30002 is already used by portForwards[0]"),
    # nonProxyHosts entries
    ({"nonProxyHosts": [3]}, "nonProxyHosts[0]", "expected a string, got integer"),
    ({"nonProxyHosts": [""]}, "nonProxyHosts[0]", "must not be empty"),
    ({"nonProxyHosts": ["*"]}, "nonProxyHosts[0]", "is not a pattern"),
    ({"nonProxyHosts": ["*example.com"]}, "nonProxyHosts[0]", "is not a pattern"),
    ({"nonProxyHosts": ["a.*.example.com"]}, "nonProxyHosts[0]", "is not a pattern"),
    ({"nonProxyHosts": ["*.*.example.com"]}, "nonProxyHosts[0]", "is not a pattern"),
    ({"nonProxyHosts": ["http://example.com"]}, "nonProxyHosts[0]", "is not a pattern"),
    ({"nonProxyHosts": ["example.com", "x.org", "EXAMPLE.com"]}, "nonProxyHosts[2]",
     "repeats nonProxyHosts[0]"),
])
def test_each_rule_is_checked_and_names_its_field(payload: object, field: str, text: str) -> None:
    with pytest.raises(InvalidNetworkingPayload) as info:
        parse_networking_payload(payload, kind=DEDICATED)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert text in str(info.value)
    assert info.value.exit_code == 3


def test_the_example_message_of_the_issue() -> None:
    with pytest.raises(InvalidNetworkingPayload, match=r"^portForwards\[0\]\.portOrig: 29999 is outside "
                                                        r"30000–30999$"):
        parse_networking_payload({"portForwards": [fwd(orig=29999)]}, kind=FLEX)


def test_hints_suggest_the_fix() -> None:
    with pytest.raises(InvalidNetworkingPayload) as info:
        parse_networking_payload({"portforwards": []}, kind=FLEX)
    assert info.value.hint == "did you mean 'portForwards'?"
    with pytest.raises(InvalidNetworkingPayload) as info:
        parse_networking_payload({"portForwards": [fwd(dest="465")]}, kind=FLEX)
    assert info.value.hint is not None and "465 (no quotes)" in info.value.hint
    with pytest.raises(InvalidNetworkingPayload) as info:
        parse_networking_payload({"portForwards": [fwd(dest=587, orig=587)]}, kind=FLEX)
    assert info.value.hint is not None and "30587" in info.value.hint


@pytest.mark.parametrize("kind", [FLEX])
def test_non_proxy_hosts_need_a_dedicated_address(kind: Kind) -> None:
    with pytest.raises(InvalidNetworkingPayload) as info:
        parse_networking_payload({"nonProxyHosts": ["example.com"]}, kind=kind)
    assert info.value.field == "nonProxyHosts"
    assert "not available with kind flexiblePortEgress" in str(info.value)
    assert info.value.hint is not None and "dedicatedEgressIp" in info.value.hint
    # An empty list asks for nothing: allowed with every kind.
    assert parse_networking_payload({"nonProxyHosts": []}, kind=kind) == EnvironmentNetworking()


@pytest.mark.parametrize("kind", [DEDICATED, VPN, None])
def test_non_proxy_hosts_allowed_with_dedicated_vpn_or_unknown_kind(kind: Kind | None) -> None:
    result = parse_networking_payload({"nonProxyHosts": ["*.example.com", "example.net"]}, kind=kind)
    assert result.non_proxy_hosts == ("*.example.com", "example.net")


def test_ipv4_literal_names_match_the_api_pattern() -> None:
    result = parse_networking_payload({"portForwards": [fwd(name="192.0.2.10")]}, kind=FLEX)
    assert result.port_forwards[0].name == "192.0.2.10"


def test_long_hostile_names_fail_fast_and_cleanly() -> None:
    with pytest.raises(InvalidNetworkingPayload, match="longer than 253"):
        parse_networking_payload({"portForwards": [fwd(name="a" * 100_000 + "!")]}, kind=FLEX)


# --- JSON text -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "problem"), [
    ("", "is empty"),
    ("   \n", "is empty"),
    ("{", "not valid JSON at line 1 column 2"),
    ('{"portForwards": []}\n{}', "not valid JSON at line 2 column 1: Extra data"),
    ('{"portForwards": [], "portForwards": []}', "duplicate key 'portForwards'"),
    ('{"portForwards": [{"name": "a", "portDest": NaN, "portOrig": 30000}]}', "NaN is not JSON"),
])
def test_bad_json_text_names_the_source(text: str, problem: str) -> None:
    with pytest.raises(InvalidPayloadJSON) as info:
        decode_payload_json(text, source="net.json")
    assert info.value.field == "net.json"
    assert problem in str(info.value)


def test_json_text_with_a_byte_order_mark_is_read() -> None:
    assert decode_payload_json("\ufeff{}", source="x") == {}


# --- infrastructure --------------------------------------------------------------------------------

def test_infrastructure_kinds() -> None:
    assert parse_infrastructure("flexiblePortEgress").kind is FLEX
    assert parse_infrastructure(DEDICATED, region="va7").region == "va7"
    vpn = parse_infrastructure("vpn", address_space=["10.20.0.0/16", "fd00::/64"], dns=["10.20.0.2"])
    assert vpn.address_space == (ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("fd00::/64"))
    assert infrastructure_to_dict(vpn) == {
        "kind": "vpn", "region": "local", "status": "ready",
        "addressSpace": ["10.20.0.0/16", "fd00::/64"], "dns": ["10.20.0.2"]}


@pytest.mark.parametrize(("kwargs", "field", "text", "hint"), [
    ({"kind": "flexibleportegress"}, "kind", "is not a kind", "did you mean 'flexiblePortEgress'?"),
    ({"kind": "dedicatedIp"}, "kind", "is not a kind", "did you mean 'dedicatedEgressIp'?"),
    ({"kind": "none"}, "kind", "expected flexiblePortEgress, dedicatedEgressIp, vpn", None),
    ({"kind": "vpn", "region": "VA 7", "address_space": ["10.0.0.0/8"]}, "region", "not a region", None),
    ({"kind": "flexiblePortEgress", "address_space": ["10.0.0.0/8"]}, "addressSpace",
     "only kind vpn has an address space", None),
    ({"kind": "dedicatedEgressIp", "dns": ["10.0.0.2"]}, "dns", "only kind vpn has DNS servers", None),
    ({"kind": "vpn"}, "addressSpace", "a vpn needs at least one CIDR", "e.g. --address-space 10.20.0.0/16"),
    ({"kind": "vpn", "address_space": ["10.20.0.1/16"]}, "addressSpace[0]", "has host bits set",
     "did you mean 10.20.0.0/16?"),
    ({"kind": "vpn", "address_space": ["10.0.0.0/8", "banana"]}, "addressSpace[1]", "is not a CIDR", None),
    ({"kind": "vpn", "address_space": ["10.0.0.0/8", "10.0.0.0/8"]}, "addressSpace[1]", "listed twice", None),
    ({"kind": "vpn", "address_space": ["10.0.0.0/8"], "dns": ["dns.internal"]}, "dns[0]",
     "is not an IP address", None),
])
def test_bad_infrastructure_names_its_field(kwargs: dict[str, object], field: str, text: str,
                                            hint: str | None) -> None:
    kind = kwargs.pop("kind")
    with pytest.raises(InvalidInfrastructure) as info:
        parse_infrastructure(kind, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert text in str(info.value)
    if hint is not None:
        assert info.value.hint == hint


# --- properties ------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children,
                                                                       max_size=4),
    max_leaves=20,
)
near_payloads = st.fixed_dictionaries({}, optional={
    "portForwards": st.lists(
        st.fixed_dictionaries({}, optional={
            "name": st.one_of(st.text(alphabet=string.ascii_letters + string.digits + ".-_*", max_size=20),
                              json_values),
            "portDest": st.one_of(st.integers(-5, 70000), json_values),
            "portOrig": st.one_of(st.integers(29990, 31010), json_values),
        }), max_size=4) | json_values,
    "nonProxyHosts": st.lists(st.one_of(st.from_regex(r"(\*\.)?[a-zA-Z0-9.*-]{0,12}", fullmatch=True),
                                        json_values), max_size=4) | json_values,
})


@settings(max_examples=300, deadline=None)
@given(payload=st.one_of(json_values, near_payloads), kind=st.sampled_from([None, *Kind]))
def test_any_json_gives_a_configuration_or_a_networking_error(payload: object, kind: Kind | None) -> None:
    try:
        result = parse_networking_payload(payload, kind=kind)
    except NetworkingError as exc:
        assert isinstance(exc, InvalidNetworkingPayload)
        assert str(exc).startswith(exc.field + ": ")
        return
    assert isinstance(result, EnvironmentNetworking)
    # What was accepted goes back to the same payload and is accepted again.
    assert parse_networking_payload(networking_to_payload(result), kind=kind) == result
    assert len({f.port_orig for f in result.port_forwards}) == len(result.port_forwards)
    assert all(30000 <= f.port_orig <= 30999 and 1 <= f.port_dest <= 65535 for f in result.port_forwards)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=60))
def test_any_text_decodes_or_gives_an_invalid_json_error(text: str) -> None:
    try:
        decode_payload_json(text, source="f.json")
    except InvalidPayloadJSON as exc:
        assert str(exc).startswith("f.json: ")
