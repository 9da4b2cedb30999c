"""Checking advanced-networking payloads and infrastructure settings (pure: values in, values out).

The environment payload is the Cloud Manager API's, taken as is::

    {"portForwards": [{"name": "smtp.sendgrid.com", "portDest": 465, "portOrig": 30002}],
     "nonProxyHosts": ["*.example.com", "example.net"]}

Every rule of docs/networking.md is checked, and the first broken one is reported with the field in
the API's spelling (``portForwards[0].portOrig: 29999 is outside 30000–30999``). JSON types are
strict: ``true`` is not a port (Python's ``bool`` is an ``int``, JSON's is not), ``"465"`` is not
either, and ``null`` is not an empty list. Unknown keys are refused, with a suggestion when the key is
a near miss, because a misspelt ``portForward`` silently ignored would enable networking with no rules.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from typing import NoReturn

from egressmail.networking.errors import (
    InvalidInfrastructure,
    InvalidNetworkingPayload,
    InvalidPayloadJSON,
)
from egressmail.networking.model import (
    EnvironmentNetworking,
    Infrastructure,
    IPNetwork,
    Kind,
    PortForward,
)

# The API's own pattern for a port forward's destination (an IPv4 literal matches it too).
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_NAME_RE = re.compile(NAME_PATTERN)
# DNS limits (RFC 1035 §2.3.4): the API pattern does not state them, but a longer name cannot resolve.
MAX_NAME_LENGTH = 253
MAX_LABEL_LENGTH = 63

PORT_DEST_MIN, PORT_DEST_MAX = 1, 65535
# The API text says up to 31000, Adobe's docs say 30999; we take the narrower docs range.
PORT_ORIG_MIN, PORT_ORIG_MAX = 30000, 30999

PAYLOAD_KEYS = ("portForwards", "nonProxyHosts")
PORT_FORWARD_KEYS = ("name", "portDest", "portOrig")

#: Kinds whose environments may list ``nonProxyHosts`` (hosts that skip the dedicated egress address).
NON_PROXY_HOST_KINDS = frozenset({Kind.DEDICATED_EGRESS_IP, Kind.VPN})

_REGION_RE = re.compile(r"[a-z][a-z0-9-]{0,31}")
_MAX_SHOWN_VALUE = 60


def describe_json_type(value: object) -> str:
    """The JSON name of a value's type (``boolean``, not ``int``, for ``True``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, Sequence):
        return "array"
    return type(value).__name__


def show_value(value: object) -> str:
    """A value as JSON text for an error message, shortened when long."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > _MAX_SHOWN_VALUE:
        text = text[: _MAX_SHOWN_VALUE - 1] + "…"
    return text


def _fail(field: str, problem: str, hint: str | None = None) -> NoReturn:
    raise InvalidNetworkingPayload(field, problem, hint=hint)


def _unknown_key(field: str, key: str, expected: Sequence[str]) -> NoReturn:
    close = difflib.get_close_matches(key, expected, n=1, cutoff=0.6)
    problem = f"unknown key {show_value(key)} (expected {', '.join(expected)})"
    hint = f"did you mean {close[0]!r}?" if close else None
    _fail(field, problem, hint)


def _require_object(field: str, value: object) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        _fail(field, f"expected a JSON object, got {describe_json_type(value)} {show_value(value)}")
    for key in value:
        if not isinstance(key, str):
            _fail(field, f"object keys must be strings, got {describe_json_type(key)} {show_value(key)}")
    return value


def _require_array(field: str, value: object) -> Sequence[object]:
    # A str is a Sequence too: refuse it explicitly, "a" is not ["a"].
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        _fail(field, f"expected a JSON array, got {describe_json_type(value)} {show_value(value)}")
    return value


def _require_int(field: str, value: object) -> int:
    # bool is a subclass of int in Python; in JSON `true` is not a number.
    if isinstance(value, bool) or not isinstance(value, int):
        hint = None
        if isinstance(value, str) and value.strip().isdigit():
            hint = f"write the port as a JSON number: {value.strip()} (no quotes)"
        elif isinstance(value, float) and value.is_integer():
            hint = f"write the port as a whole number: {int(value)}"
        _fail(field, f"expected an integer, got {describe_json_type(value)} {show_value(value)}", hint)
    return value


def host_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid port-forward destination, or ``None`` when it is.

    Valid names are lower-case DNS labels joined by dots (the API's pattern, which an IPv4 literal also
    matches), at most 253 characters with labels of at most 63.
    """
    if not name:
        return "must not be empty"
    # Length first: it also bounds the regular expression's work on hostile input.
    if len(name) > MAX_NAME_LENGTH:
        return f"{show_value(name)} is longer than {MAX_NAME_LENGTH} characters"
    if not _NAME_RE.fullmatch(name):
        if _NAME_RE.fullmatch(name.lower()):
            return f"{show_value(name)} must be lower case ({name.lower()!r})"
        if name.endswith(".") and _NAME_RE.fullmatch(name[:-1]):
            return f"{show_value(name)} must not end with a dot ({name[:-1]!r})"
        return (f"{show_value(name)} is not a host name: use lower-case letters, digits and '-' "
                "in labels joined by '.', e.g. smtp.sendgrid.net")
    for label in name.split("."):
        if len(label) > MAX_LABEL_LENGTH:
            return f"label {label[:20]!r}… of {show_value(name)} is longer than {MAX_LABEL_LENGTH} characters"
    return None


def non_proxy_host_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid ``nonProxyHosts`` entry, or ``None`` when it is.

    Valid patterns are ``example.com`` (that host) or ``*.example.com`` (its subdomains); DNS names
    are case-insensitive, so upper case is accepted here and matched without regard to case.
    """
    if not pattern:
        return "must not be empty"
    host = pattern[2:] if pattern.startswith("*.") else pattern
    if "*" in host:
        return (f"{show_value(pattern)} is not a pattern: use 'example.com' for one host or "
                "'*.example.com' for its subdomains ('*' only as the whole first label)")
    problem = host_name_problem(host.lower())
    if problem is not None:
        return f"{show_value(pattern)} is not a pattern: {problem}"
    return None


def _parse_port_forward(field: str, item: object) -> PortForward:
    obj = _require_object(field, item)
    for key in obj:
        if key not in PORT_FORWARD_KEYS:
            _unknown_key(field, key, PORT_FORWARD_KEYS)
    for key in PORT_FORWARD_KEYS:
        if key not in obj:
            _fail(field, f"missing required key {key!r}",
                  'a port forward is {"name": "smtp.example.com", "portDest": 465, "portOrig": 30465}')

    name = obj["name"]
    if not isinstance(name, str):
        _fail(f"{field}.name", f"expected a string, got {describe_json_type(name)} {show_value(name)}")
    if (problem := host_name_problem(name)) is not None:
        _fail(f"{field}.name", problem)

    port_dest = _require_int(f"{field}.portDest", obj["portDest"])
    if not PORT_DEST_MIN <= port_dest <= PORT_DEST_MAX:
        _fail(f"{field}.portDest", f"{port_dest} is outside {PORT_DEST_MIN}–{PORT_DEST_MAX}")

    port_orig = _require_int(f"{field}.portOrig", obj["portOrig"])
    if not PORT_ORIG_MIN <= port_orig <= PORT_ORIG_MAX:
        hint = None
        if PORT_ORIG_MIN <= 30000 + port_dest <= PORT_ORIG_MAX:
            hint = f"pick a meaningful port in range, e.g. {30000 + port_dest} for {port_dest}"
        _fail(f"{field}.portOrig", f"{port_orig} is outside {PORT_ORIG_MIN}–{PORT_ORIG_MAX}", hint)
    return PortForward(name=name, port_dest=port_dest, port_orig=port_orig)


def parse_networking_payload(payload: object, *, kind: Kind | None) -> EnvironmentNetworking:
    """Validate an environment's advanced-networking payload (the API's JSON, already decoded).

    Args:
        payload: the decoded JSON document: ``{"portForwards": [...], "nonProxyHosts": [...]}``;
            ``{}`` is valid (networking enabled with no rules).
        kind: the program's infrastructure kind, for the rules that depend on it
            (``nonProxyHosts`` only with dedicatedEgressIp or vpn); ``None`` skips those rules
            (to check a file's syntax before any infrastructure exists).

    Returns:
        The configuration, rules in the payload's order.

    Raises:
        InvalidNetworkingPayload: the first broken rule, naming the field
            (e.g. ``portForwards[1].portOrig: 30002 is already used by portForwards[0]``).
    """
    obj = _require_object("payload", payload)
    for key in obj:
        if key not in PAYLOAD_KEYS:
            _unknown_key("payload", key, PAYLOAD_KEYS)

    forwards: list[PortForward] = []
    seen_ports: dict[int, int] = {}
    for index, item in enumerate(_require_array("portForwards", obj.get("portForwards", []))):
        field = f"portForwards[{index}]"
        forward = _parse_port_forward(field, item)
        if (first := seen_ports.get(forward.port_orig)) is not None:
            _fail(f"{field}.portOrig",
                  f"{forward.port_orig} is already used by portForwards[{first}] (portOrig must be unique)",
                  "give each forward its own portOrig, e.g. 30465 for 465 and 30587 for 587")
        seen_ports[forward.port_orig] = index
        forwards.append(forward)

    patterns: list[str] = []
    seen_patterns: dict[str, int] = {}
    raw_patterns = _require_array("nonProxyHosts", obj.get("nonProxyHosts", []))
    if raw_patterns and kind is not None and kind not in NON_PROXY_HOST_KINDS:
        _fail("nonProxyHosts",
              f"not available with kind {kind.value} (only {Kind.DEDICATED_EGRESS_IP.value} and "
              f"{Kind.VPN.value} have a dedicated address to bypass)",
              "remove nonProxyHosts, or recreate the infrastructure with --kind dedicatedEgressIp")
    for index, item in enumerate(raw_patterns):
        field = f"nonProxyHosts[{index}]"
        if not isinstance(item, str):
            _fail(field, f"expected a string, got {describe_json_type(item)} {show_value(item)}")
        if (problem := non_proxy_host_problem(item)) is not None:
            _fail(field, problem)
        folded = item.lower()
        if (first := seen_patterns.get(folded)) is not None:
            _fail(field, f"{show_value(item)} repeats nonProxyHosts[{first}]")
        seen_patterns[folded] = index
        patterns.append(item)

    return EnvironmentNetworking(port_forwards=tuple(forwards), non_proxy_hosts=tuple(patterns))


def networking_to_payload(networking: EnvironmentNetworking) -> dict[str, object]:
    """The API payload for a configuration; :func:`parse_networking_payload` reads it back unchanged."""
    return {
        "portForwards": [
            {"name": f.name, "portDest": f.port_dest, "portOrig": f.port_orig}
            for f in networking.port_forwards
        ],
        "nonProxyHosts": list(networking.non_proxy_hosts),
    }


def _reject_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r} in one object")
        result[key] = value
    return result


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def decode_payload_json(text: str, *, source: str = "payload") -> object:
    """Decode one JSON document strictly (no duplicate keys, no NaN/Infinity).

    Args:
        text: the JSON text.
        source: where it came from (a file name or ``<stdin>``), for the message.

    Raises:
        InvalidPayloadJSON: not one JSON document, naming the source, line and column.
    """
    text = text.removeprefix("\ufeff")  # a byte-order mark from Windows editors is not content
    if not text.strip():
        raise InvalidPayloadJSON(source, "is empty, expected a JSON object",
                                 hint='use {} to enable advanced networking with no rules')
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicate_keys,
                          parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InvalidPayloadJSON(source, f"not valid JSON at line {exc.lineno} column {exc.colno}: "
                                         f"{exc.msg}") from None
    except ValueError as exc:  # from the hooks above
        raise InvalidPayloadJSON(source, f"not valid JSON: {exc}") from None


def parse_kind(value: Kind | str) -> Kind:
    """The :class:`Kind` named ``value`` (exact API spelling).

    Raises:
        InvalidInfrastructure: not a kind; the hint names the closest one.
    """
    if isinstance(value, Kind):
        return value
    try:
        return Kind(value)
    except ValueError:
        names = [k.value for k in Kind]
        by_fold = {n.lower(): n for n in names}
        close = by_fold.get(str(value).lower()) or next(
            iter(difflib.get_close_matches(str(value), names, n=1, cutoff=0.5)), None)
        raise InvalidInfrastructure(
            "kind", f"{show_value(value)} is not a kind (expected {', '.join(names)})",
            hint=f"did you mean {close!r}?" if close else None) from None


def parse_infrastructure(kind: Kind | str, *, region: str = "local", address_space: Sequence[str] = (),
                         dns: Sequence[str] = ()) -> Infrastructure:
    """Validate a program's infrastructure settings.

    ``addressSpace`` (CIDRs, host bits clear) is required for ``vpn`` and refused for the other kinds;
    ``dns`` (IP addresses) is optional for ``vpn`` and refused for the other kinds.

    Raises:
        InvalidInfrastructure: the first broken rule, naming the field (``addressSpace[1]``...).
    """
    the_kind = parse_kind(kind)
    if not isinstance(region, str) or not _REGION_RE.fullmatch(region):
        raise InvalidInfrastructure(
            "region", f"{show_value(region)} is not a region name (lower-case letters, digits and "
                      "'-', starting with a letter, at most 32 characters, e.g. va7 or local)")
    if isinstance(address_space, str) or isinstance(dns, str):
        raise TypeError("address_space and dns are sequences of strings, not one string")
    if the_kind is not Kind.VPN:
        if address_space:
            raise InvalidInfrastructure("addressSpace", f"only kind vpn has an address space, "
                                                        f"not {the_kind.value}")
        if dns:
            raise InvalidInfrastructure("dns", f"only kind vpn has DNS servers, not {the_kind.value}")
        return Infrastructure(kind=the_kind, region=region)
    if not address_space:
        raise InvalidInfrastructure("addressSpace", "a vpn needs at least one CIDR",
                                    hint="e.g. --address-space 10.20.0.0/16")
    networks: list[IPNetwork] = []
    for index, cidr in enumerate(address_space):
        field = f"addressSpace[{index}]"
        try:
            net = ipaddress.ip_network(cidr.strip(), strict=True)
        except ValueError as exc:
            hint = None
            try:
                hint = f"did you mean {ipaddress.ip_network(cidr.strip(), strict=False)}?"
            except ValueError:
                pass
            raise InvalidInfrastructure(field, f"{show_value(cidr)} is not a CIDR: {exc}",
                                        hint=hint) from None
        if net in networks:
            raise InvalidInfrastructure(field, f"{net} is listed twice")
        networks.append(net)
    servers: list[str] = []
    for index, server in enumerate(dns):
        try:
            servers.append(str(ipaddress.ip_address(server.strip())))
        except ValueError:
            raise InvalidInfrastructure(f"dns[{index}]", f"{show_value(server)} is not an IP address",
                                        hint="e.g. --dns 10.20.0.2") from None
    return Infrastructure(kind=the_kind, region=region, address_space=tuple(networks), dns=tuple(servers))


def infrastructure_to_dict(infrastructure: Infrastructure) -> dict[str, object]:
    """The infrastructure in the API's spelling (``addressSpace``/``dns`` only for a vpn)."""
    result: dict[str, object] = {
        "kind": infrastructure.kind.value,
        "region": infrastructure.region,
        "status": infrastructure.status,
    }
    if infrastructure.kind is Kind.VPN:
        result["addressSpace"] = [str(n) for n in infrastructure.address_space]
        result["dns"] = list(infrastructure.dns)
    return result
