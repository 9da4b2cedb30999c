"""Variables and secrets as plain data, and the rules of the model (pure: no I/O).

The rules are Cloud Manager's (see docs/environments.md): a name is ``[a-zA-Z_][a-zA-Z_0-9]*`` of 2 to
100 characters; a value at most 2048 characters, a secret's under 500; at most 200 variables per
environment; ``service`` is ``author``, ``publish``, ``preview`` or absent (all services); the type of
an existing variable cannot change. Where the platform silently ignores reserved prefixes
(``INTERNAL_``, ``ADOBE_``, ``CONST_``) egressmail refuses them, and it refuses ``AEM_`` names, which
belong to the product (``AEM_PROXY_HOST``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from egressmail.environments.errors import VariableRuleError

NAME_MIN_LENGTH: Final = 2
NAME_MAX_LENGTH: Final = 100
VALUE_MAX_LENGTH: Final = 2048
SECRET_MAX_LENGTH: Final = 499  # "under 500 characters"
MAX_VARIABLES_PER_ENVIRONMENT: Final = 200
RESERVED_PREFIXES: Final = ("INTERNAL_", "ADOBE_", "CONST_")
PRODUCT_PREFIX: Final = "AEM_"
SECRET_MASK: Final = "****"  # noqa: S105 - the mask, not a password
STATUS_READY: Final = "ready"

_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z_0-9]*")


class VariableType(StrEnum):
    """The two kinds of variable; the API spells them ``string`` and ``secretString``."""

    STRING = "string"
    SECRET = "secretString"  # noqa: S105 - a type name


class Service(StrEnum):
    """The services a variable may be scoped to (case-sensitive, as in the API)."""

    AUTHOR = "author"
    PUBLISH = "publish"
    PREVIEW = "preview"


@dataclass(frozen=True, slots=True)
class Variable:
    """A stored variable as listings show it: a secret's value is never here (``value is None``)."""

    name: str
    type: VariableType
    value: str | None
    service: Service | None = None
    status: str = STATUS_READY

    @property
    def is_secret(self) -> bool:
        return self.type is VariableType.SECRET

    @property
    def shown_value(self) -> str:
        """The value as a listing shows it: ``****`` for a secret."""
        return SECRET_MASK if self.is_secret else (self.value or "")

    def as_api_dict(self) -> dict[str, str | None]:
        """The listing shape: exactly ``name, type, value, service, status`` (a secret's value masked)."""
        return {"name": self.name, "type": self.type.value, "value": self.shown_value,
                "service": self.service.value if self.service else None, "status": self.status}


@dataclass(frozen=True, slots=True)
class VariableUpdate:
    """One change in a batch: set ``value``, or delete the variable when ``value`` is ``None``.

    ``type`` of a delete is the variable's existing type when known (the original keeps it); the
    store ignores it. ``value`` is left out of ``repr()`` so a secret cannot reach a log or traceback.
    """

    name: str
    type: VariableType
    value: str | None = field(repr=False)
    service: Service | None = None

    @property
    def is_delete(self) -> bool:
        return self.value is None

    @property
    def key(self) -> tuple[str, Service | None]:
        return (self.name, self.service)


def describe(name: str, service: Service | None) -> str:
    """``NAME`` or ``NAME (publish)`` for messages."""
    return name if service is None else f"{name} ({service.value})"


def is_reserved_name(name: str) -> bool:
    """True for names the platform reserves for itself and ignores (``INTERNAL_``, ``ADOBE_``, ``CONST_``)."""
    return name.startswith(RESERVED_PREFIXES)


def check_name(name: str) -> None:
    """Check a variable name's syntax, length and that it is not the product's own.

    Reserved prefixes are checked separately (:func:`check_not_reserved`) because the Cloud Manager
    CLI turns them into a warning unless ``--strict``.

    Raises:
        VariableRuleError: ``INVALID_NAME``, ``NAME_TOO_SHORT``, ``NAME_TOO_LONG`` or ``PRODUCT_NAME``.
    """
    if len(name) < NAME_MIN_LENGTH:
        raise VariableRuleError("NAME_TOO_SHORT",
                                f"variable name {name!r} is too short: a name has {NAME_MIN_LENGTH} to "
                                f"{NAME_MAX_LENGTH} characters")
    if len(name) > NAME_MAX_LENGTH:
        raise VariableRuleError("NAME_TOO_LONG",
                                f"variable name {name[:20]!r}... is {len(name)} characters long: a name has "
                                f"{NAME_MIN_LENGTH} to {NAME_MAX_LENGTH} characters")
    if not _NAME_RE.fullmatch(name):
        raise VariableRuleError("INVALID_NAME",
                                f"invalid variable name {name!r}: use letters, digits and '_', "
                                "not starting with a digit (e.g. EMAIL_USERNAME)")
    if name.startswith(PRODUCT_PREFIX):
        raise VariableRuleError("PRODUCT_NAME",
                                f"variable name {name!r} is refused: names starting with {PRODUCT_PREFIX!r} "
                                "belong to the platform (e.g. AEM_PROXY_HOST)",
                                hint="choose a name without the AEM_ prefix")


def check_not_reserved(name: str) -> None:
    """Refuse a name with a reserved prefix.

    Raises:
        VariableRuleError: ``INTERNAL_VARIABLE_USAGE``.
    """
    if is_reserved_name(name):
        raise VariableRuleError(
            "INTERNAL_VARIABLE_USAGE",
            f"variable name {name!r} is reserved for internal usage: the platform ignores names "
            f"starting with {', '.join(RESERVED_PREFIXES)}",
            hint="choose another name")


def check_value(name: str, type_: VariableType, value: str) -> None:
    """Check a value's length for its type (the message gives lengths, never the value).

    Raises:
        VariableRuleError: ``BLANK_VARIABLE_VALUE``, ``VALUE_TOO_LONG``, ``SECRET_TOO_LONG`` or
            ``INVALID_VALUE`` (not Unicode text: a byte that is not UTF-8 arrives as a lone surrogate).
    """
    if value == "":
        raise VariableRuleError("BLANK_VARIABLE_VALUE",
                                f"variable {name!r} has an empty value",
                                hint="an empty value means delete: use the delete flag instead")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise VariableRuleError("INVALID_VALUE",
                                f"the value of variable {name!r} is not valid UTF-8 text",
                                hint="check the terminal's or the file's encoding") from None
    if type_ is VariableType.SECRET and len(value) > SECRET_MAX_LENGTH:
        raise VariableRuleError("SECRET_TOO_LONG",
                                f"the value of secret {name!r} has {len(value)} characters: a secret must "
                                f"be under {SECRET_MAX_LENGTH + 1} characters")
    if len(value) > VALUE_MAX_LENGTH:
        raise VariableRuleError("VALUE_TOO_LONG",
                                f"the value of variable {name!r} has {len(value)} characters: the limit "
                                f"is {VALUE_MAX_LENGTH}")


def parse_service(text: str | None) -> Service | None:
    """``author``/``publish``/``preview`` (case-sensitive), or ``None`` for all services.

    ``all`` and the empty string also mean all services.

    Raises:
        VariableRuleError: ``INVALID_SERVICE``.
    """
    if text is None or text in ("", "all"):
        return None
    try:
        return Service(text)
    except ValueError:
        raise VariableRuleError("INVALID_SERVICE",
                                f"invalid service {text!r}: use author, publish or preview "
                                "(lower case), or leave it out for all services") from None


def parse_type(text: str | None) -> VariableType:
    """``string`` (the default) or ``secretString``.

    Raises:
        VariableRuleError: ``INVALID_TYPE``.
    """
    if text is None:
        return VariableType.STRING
    try:
        return VariableType(text)
    except ValueError:
        raise VariableRuleError("INVALID_TYPE",
                                f"invalid variable type {text!r}: use string or secretString") from None


def check_update(update: VariableUpdate) -> None:
    """All the rules one update must follow on its own (reserved prefixes apart).

    Raises:
        VariableRuleError: the first rule it breaks.
    """
    check_name(update.name)
    if update.value is not None:
        check_value(update.name, update.type, update.value)
