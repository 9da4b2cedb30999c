"""Errors of the networking part: one family under :class:`~egressmail.errors.NetworkingError`.

Payload errors carry the ``field`` they are about, spelled as in the API's JSON
(``portForwards[0].portOrig``, ``nonProxyHosts[2]``, ``payload`` for the document itself), so the
CLI, a test or an API answer can point at the exact rule. Missing things (program, infrastructure,
environment) are also :class:`~egressmail.errors.NotFoundError`, so callers that only care about
"not there" can catch that one class.
"""

from __future__ import annotations

from egressmail.errors import NetworkingError, NotFoundError


class InvalidNetworkingPayload(NetworkingError):
    """An environment's advanced-networking payload breaks a rule.

    The message starts with the field, e.g. ``portForwards[0].portOrig: 29999 is outside 30000–30999``.

    Attributes:
        field: where in the payload, in the API's spelling (``payload`` for the whole document).
        problem: the message without the field prefix.
    """

    def __init__(self, field: str, problem: str, *, hint: str | None = None) -> None:
        super().__init__(f"{field}: {problem}", hint=hint)
        self.field = field
        self.problem = problem


class InvalidPayloadJSON(InvalidNetworkingPayload):
    """The payload file or stream is not one well-formed JSON document."""


class InvalidInfrastructure(NetworkingError):
    """A program-level infrastructure setting breaks a rule (kind, region, addressSpace, dns).

    Attributes:
        field: the setting, in the API's spelling (``kind``, ``region``, ``addressSpace[1]``, ``dns[0]``).
        problem: the message without the field prefix.
    """

    def __init__(self, field: str, problem: str, *, hint: str | None = None) -> None:
        super().__init__(f"{field}: {problem}", hint=hint)
        self.field = field
        self.problem = problem


class InfrastructureExists(NetworkingError):
    """The program already has a network infrastructure (one per program; it cannot be edited)."""

    exit_code = 1

    def __init__(self, message: str, *, program: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.program = program


class InfrastructureInUse(NetworkingError):
    """The infrastructure cannot be deleted while environments still have networking enabled.

    Attributes:
        environments: the environments that must be disabled first.
    """

    exit_code = 1

    def __init__(self, message: str, *, program: str, environments: tuple[str, ...],
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.program = program
        self.environments = environments


class InfrastructureNotFound(NotFoundError, NetworkingError):
    """The program has no network infrastructure (so nothing can be enabled or deleted)."""

    exit_code = 2


class NetworkingNotEnabled(NotFoundError, NetworkingError):
    """The environment has no advanced-networking configuration to disable."""

    exit_code = 2
