"""Programs, environments, variables and secrets (encrypted at rest).

Public API: :class:`EnvironmentStore` (set, delete, list, apply a batch, export, import, diff,
rotate the master key) and :func:`placeholder_values` (what ``$[env:]``/``$[secret:]`` see).
See docs/environments.md.
"""

from egressmail.environments.crypto import KeyFile, KeyProvider, KeyRing, key_provider_for
from egressmail.environments.errors import (
    CloudManagerInputError,
    MasterKeyError,
    SecretDecryptionError,
    VariableRuleError,
)
from egressmail.environments.model import Service, Variable, VariableType, VariableUpdate
from egressmail.environments.store import (
    BatchResult,
    EnvironmentDiff,
    EnvironmentStore,
    ImportResult,
    PlaceholderValues,
    RotationResult,
    placeholder_values,
)

__all__ = [
    "BatchResult",
    "CloudManagerInputError",
    "EnvironmentDiff",
    "EnvironmentStore",
    "ImportResult",
    "KeyFile",
    "KeyProvider",
    "KeyRing",
    "MasterKeyError",
    "PlaceholderValues",
    "RotationResult",
    "SecretDecryptionError",
    "Service",
    "Variable",
    "VariableRuleError",
    "VariableType",
    "VariableUpdate",
    "key_provider_for",
    "placeholder_values",
]
