"""The gateway part: the deny-by-default egress gateway behind ``proxy.tunnel`` (see docs/gateway.md).

Other parts import from here only::

    from egressmail.gateway import Gateway, GatewayOptions, Timeouts, Limits, parse_connect_to
"""

from egressmail.gateway.accesslog import AccessLog, AccessRecord, End, Via, format_json, format_text
from egressmail.gateway.errors import BadProxyRequest, GatewayBindError, InvalidGatewayOption
from egressmail.gateway.metrics import GatewayMetrics
from egressmail.gateway.options import (
    PROXY_HOST_NAME,
    ConnectTo,
    GatewayOptions,
    Limits,
    Timeouts,
    parse_connect_to,
)
from egressmail.gateway.resolver import Resolver
from egressmail.gateway.server import EgressMapProvider, Gateway, rule_label

__all__ = [
    "PROXY_HOST_NAME",
    "AccessLog",
    "AccessRecord",
    "BadProxyRequest",
    "ConnectTo",
    "EgressMapProvider",
    "End",
    "Gateway",
    "GatewayBindError",
    "GatewayMetrics",
    "GatewayOptions",
    "InvalidGatewayOption",
    "Limits",
    "Resolver",
    "Timeouts",
    "Via",
    "format_json",
    "format_text",
    "parse_connect_to",
    "rule_label",
]
