"""Errors of the gateway part, under :class:`~egressmail.errors.EgressError`.

Refusals of individual connections are not exceptions: they are answered on the wire (closed, or
a 403 line on the HTTP proxy) and written to the access log. These classes are for what stops the
gateway itself, or a bad option.
"""

from __future__ import annotations

from egressmail.errors import EgressError


class InvalidGatewayOption(EgressError):
    """A gateway option (``--connect-to``, ``--egress-address``, ``--metrics``…) that cannot be used."""

    exit_code = 2


class GatewayBindError(EgressError):
    """A listener cannot bind its address (port in use, address not on this host, permission).

    Attributes:
        host / port: the address that could not be bound.
    """

    def __init__(self, message: str, *, host: str, port: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.host = host
        self.port = port


class BadProxyRequest(EgressError):
    """An HTTP proxy request head that cannot be understood (answered with ``status``)."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
