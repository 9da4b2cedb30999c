"""The environments part's errors (all under :class:`~egressmail.errors.StoreError`).

None of them ever carries a secret value: messages name the variable, the environment and the rule,
never what the user typed as a value.
"""

from __future__ import annotations

from egressmail.errors import StoreError, ValidationError


class VariableRuleError(ValidationError):
    """A variable that breaks a rule of the model (name, value length, type, limit, reserved name).

    Attributes:
        code: a stable identifier of the rule (``INVALID_NAME``, ``VALUE_TOO_LONG``, ...).
    """

    def __init__(self, code: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


class CloudManagerInputError(ValidationError):
    """Input the Cloud Manager CLI refuses; the message carries the original's error code.

    The text follows the original's format, ``[CloudManagerCLI:CODE] message``, so scripts that
    grep for the code keep working.
    """

    def __init__(self, code: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"[CloudManagerCLI:{code}] {message}", hint=hint)
        self.code = code


class MasterKeyError(StoreError):
    """The master key is missing, unreadable, malformed or not the one the secrets were sealed with."""

    exit_code = 2


class SecretDecryptionError(StoreError):
    """A stored secret failed authentication: altered, copied from another row, or wrong key."""
