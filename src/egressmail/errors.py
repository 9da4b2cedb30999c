"""The one exception hierarchy of egressmail.

Every error the package raises on purpose derives from :class:`EgressMailError`. Each part has one
family; the parts add specific subclasses in their own modules (the tree below lists them)::

    EgressMailError
    ├── ConfigError                 config/: .cfg.json files, run modes, placeholders
    │   │   ConfigFileError(file, line, column, property), PlaceholderError(property, file),
    │   │   RunModeError   (config/errors.py)
    ├── StoreError                  environments/ and storage/: programs, environments, variables, secrets
    │   ├── NotFoundError           a program / environment / variable that does not exist
    │   └── ValidationError         a value that breaks a rule of the model (exit code 3 in the CLI)
    ├── NetworkingError             networking/: kinds, portForwards, nonProxyHosts
    │   │   InvalidNetworkingPayload(field) > InvalidPayloadJSON, InvalidInfrastructure(field),
    │   │   InfrastructureExists, InfrastructureInUse(environments), and (also NotFoundError, exit 2)
    │   │   InfrastructureNotFound, NetworkingNotEnabled   (networking/errors.py)
    ├── EgressError                 gateway/: a connection the gateway refuses or cannot make
    │   │   InvalidGatewayOption (exit 2), GatewayBindError(host, port), BadProxyRequest(status)
    │   │   (gateway/errors.py)
    ├── NetworkError (ConnectionError)   a connection problem seen by a client
    ├── OperationTimeout (TimeoutError)  a phase that ran out of time
    └── DeliveryError               mail/: a message that could not be delivered
            OutboxError > OutboxNotFound, InvalidTransition, OutboxStorageError; InvalidEnvelope
            (a MessageError)   (mail/outbox_model.py, mail/outbox_sqlite.py)

A message says what failed, where (file, property, variable, host:port, SMTP stage) and why.
It never contains a secret value. A remedy, when there is one, goes in ``hint``.
"""

from __future__ import annotations


class EgressMailError(Exception):
    """Base of every error this package raises on purpose.

    Attributes:
        hint: what the user can do about it, or ``None``.
    """

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(EgressMailError):
    """A configuration file, run-mode folder or placeholder that cannot be used."""

    exit_code = 2


class StoreError(EgressMailError):
    """The environment store refused or failed an operation."""


class NotFoundError(StoreError):
    """A program, environment or variable that does not exist."""

    exit_code = 2


class ValidationError(StoreError):
    """A value that breaks a rule of the model (name syntax, length, type change, ...)."""

    exit_code = 3


class NetworkingError(EgressMailError):
    """An advanced-networking configuration that breaks a rule."""

    exit_code = 3


class EgressError(EgressMailError):
    """A connection the gateway refuses or cannot make."""


class NetworkError(EgressMailError, ConnectionError):
    """A connection problem seen by a client (refused, reset, TLS failure)."""


class OperationTimeout(EgressMailError, TimeoutError):
    """A phase (connect, read, write, idle) that ran out of time."""


class DeliveryError(EgressMailError):
    """A message that could not be delivered."""
