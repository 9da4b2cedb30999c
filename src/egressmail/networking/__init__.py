"""The networking part: advanced-networking rules, their store, and the pure routing decision.

Other parts import from here only::

    from egressmail.networking import NetworkStore, load_egress_map, decide, WayIn, Allowed, Refused

See docs/networking.md for the concepts (kinds, port forwards, nonProxyHosts).
"""

from egressmail.networking.errors import (
    InfrastructureExists,
    InfrastructureInUse,
    InfrastructureNotFound,
    InvalidInfrastructure,
    InvalidNetworkingPayload,
    InvalidPayloadJSON,
    NetworkingNotEnabled,
)
from egressmail.networking.model import (
    EgressMap,
    EnvironmentNetworking,
    Infrastructure,
    Kind,
    PortForward,
)
from egressmail.networking.routing import (
    REFUSAL_CODES,
    Allowed,
    Refused,
    WayIn,
    check_resolved_address,
    decide,
    effective_kind,
    is_vpn_destination,
    matches_non_proxy_host,
)
from egressmail.networking.store import NetworkStore, egress_map_to_dict, load_egress_map
from egressmail.networking.validation import (
    decode_payload_json,
    infrastructure_to_dict,
    networking_to_payload,
    parse_infrastructure,
    parse_networking_payload,
)

__all__ = [
    "REFUSAL_CODES",
    "Allowed",
    "EgressMap",
    "EnvironmentNetworking",
    "InfrastructureExists",
    "InfrastructureInUse",
    "InfrastructureNotFound",
    "Infrastructure",
    "InvalidInfrastructure",
    "InvalidNetworkingPayload",
    "InvalidPayloadJSON",
    "Kind",
    "NetworkStore",
    "NetworkingNotEnabled",
    "PortForward",
    "Refused",
    "WayIn",
    "check_resolved_address",
    "decide",
    "decode_payload_json",
    "effective_kind",
    "egress_map_to_dict",
    "infrastructure_to_dict",
    "is_vpn_destination",
    "load_egress_map",
    "matches_non_proxy_host",
    "networking_to_payload",
    "parse_infrastructure",
    "parse_networking_payload",
]
