"""egressmail: send email from locked-down networks.

The public API is re-exported here; everything else is an implementation detail.
"""

from egressmail.__about__ import __version__
from egressmail.errors import (
    ConfigError,
    DeliveryError,
    EgressError,
    EgressMailError,
    NetworkError,
    NetworkingError,
    NotFoundError,
    OperationTimeout,
    StoreError,
    ValidationError,
)

__all__ = [
    "ConfigError",
    "DeliveryError",
    "EgressError",
    "EgressMailError",
    "NetworkError",
    "NetworkingError",
    "NotFoundError",
    "OperationTimeout",
    "StoreError",
    "ValidationError",
    "__version__",
]
