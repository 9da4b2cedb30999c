"""Resolving a configuration's properties: Felix's result plus where every value came from.

:func:`interpolate` is the small contract (one value in, Felix's value out);
:func:`resolve_configuration` does a whole configuration and keeps provenance and warnings for
``config explain`` and the mail service.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from egressmail.config.cfgjson import java_type_name
from egressmail.config.conversion import (
    Typed,
    element_to_string,
    java_to_string,
    python_type_name,
)
from egressmail.config.errors import PlaceholderError
from egressmail.config.placeholders import Event, Interpolator
from egressmail.config.sources import SourceProvider, Sources

__all__ = [
    "Provenance",
    "ResolutionWarning",
    "ResolvedConfiguration",
    "ResolvedProperty",
    "interpolate",
    "resolve_configuration",
]

SECRET_MASK = "****"  # noqa: S105 - the mask, not a password

ProvenanceKind = Literal["literal", "env", "secret", "prop", "conf", "default"]
WarningCode = Literal["unresolved", "unknown-type", "env-is-secret", "secret-whitespace",
                      "absolute-secret-name"]
#: warnings that ``--strict`` turns into a failure (Felix leaves text it could not use)
BLOCKING_CODES: frozenset[str] = frozenset({"unresolved", "unknown-type"})


@dataclass(frozen=True, slots=True)
class Provenance:
    """One contribution to a value: a literal, a source lookup, or a ``default=``."""

    kind: ProvenanceKind
    name: str = ""
    origin: str = ""

    def describe(self) -> str:
        """A short human form, e.g. ``env var AEM_PROXY_HOST (process environment)``."""
        if self.kind == "literal":
            return "literal"
        if self.kind == "default":
            return f"default of {self.name}"
        noun = {"env": "env var", "secret": "secret", "prop": "property", "conf": "conf"}[self.kind]
        return f"{noun} {self.name}" + (f" ({self.origin})" if self.origin else "")


@dataclass(frozen=True, slots=True)
class ResolutionWarning:
    """Something about a property a user should know; ``blocking`` ones fail ``--strict``."""

    code: WarningCode
    property: str
    message: str
    placeholder: str = ""

    @builtins.property
    def blocking(self) -> bool:
        """True for the warnings ``--strict`` turns into errors."""
        return self.code in BLOCKING_CODES


@dataclass(frozen=True, slots=True)
class ResolvedProperty:
    """One property after interpolation. ``repr`` masks the value when a secret contributed."""

    name: str
    value: Any
    raw: Any
    type_name: str
    provenance: tuple[Provenance, ...]
    is_secret: bool
    warnings: tuple[ResolutionWarning, ...] = ()

    @property
    def python_type(self) -> str:
        """The Python type of :attr:`value` (``str``, ``int``, ``list[str]``, ...)."""
        return python_type_name(self.value)

    @property
    def unresolved(self) -> tuple[str, ...]:
        """Placeholders Felix left verbatim in the value."""
        return tuple(w.placeholder for w in self.warnings if w.code == "unresolved")

    def display_value(self, *, reveal: bool = False) -> Any:
        """The value, or ``****`` when a secret contributed (unless ``reveal``)."""
        if self.is_secret and not reveal:
            return SECRET_MASK
        return self.value

    def __repr__(self) -> str:
        return (f"ResolvedProperty(name={self.name!r}, value={self.display_value()!r}, "
                f"type_name={self.type_name!r}, is_secret={self.is_secret})")


@dataclass(frozen=True, slots=True)
class ResolvedConfiguration:
    """Every property of one configuration (PID), in file order."""

    properties: Mapping[str, ResolvedProperty]
    pid: str | None = None
    path: Path | None = None
    warnings: tuple[ResolutionWarning, ...] = field(default=())

    def values(self) -> dict[str, Any]:
        """Property name -> final value (secrets included: for the code that uses them)."""
        return {name: prop.value for name, prop in self.properties.items()}

    @property
    def has_blocking_warnings(self) -> bool:
        """True when ``--strict`` would fail."""
        return any(w.blocking for w in self.warnings)


# ---------------------------------------------------------------------------------------------



def _is_string_array(value: Any, type_name: str) -> bool:
    return isinstance(value, list) and type_name == "String[]" and all(isinstance(v, str) for v in value)


def _interpolate_one(text: str, provider: SourceProvider) -> tuple[Typed | str, list[Event]]:
    interpolator = Interpolator(provider)
    result = interpolator.replace(text)
    return result, interpolator.events


def _value_of(result: Typed | str) -> Any:
    return result if isinstance(result, str) else result.value


def _interpolate_value(value: Any, type_name: str, provider: SourceProvider
                       ) -> tuple[Any, str, list[Event]]:
    """Felix's ``modifyConfiguration`` for one property: (value, type name, events)."""
    if type_name == "String" and isinstance(value, str):
        result, events = _interpolate_one(value, provider)
        if isinstance(result, Typed):
            return result.value, result.java_type, events
        return result, "String", events
    if _is_string_array(value, type_name):
        out: list[str] = []
        all_events: list[Event] = []
        for element in value:
            result, events = _interpolate_one(element, provider)
            all_events.extend(events)
            if isinstance(result, str):
                out.append(result)
            elif result.java_type.endswith("[]"):
                # an element that became an array is spliced in, each item as text
                out.extend(element_to_string(result, i) for i in range(len(result.value)))
            else:
                out.append(java_to_string(result))
        return out, "String[]", all_events
    return value, type_name, []


def interpolate(value: Any, *, env: Mapping[str, str], secrets: Mapping[str, str] | None = None,
                props: Mapping[str, str] | None = None, conf: Mapping[str, str] | None = None) -> Any:
    """Felix's interpolation of one configuration value.

    Args:
        value: a JSON value (``str``, ``int``, ``float``, ``bool``, or a ``list``). Strings and
            lists of strings are interpolated (lists element by element); anything else is
            returned unchanged, as Felix only touches ``String`` and ``String[]``.
        env: ``$[env:NAME]`` values.
        secrets: ``$[secret:NAME]`` values, each the raw content of the secret's file (trimmed
            here like Felix trims it).
        props: ``$[prop:NAME]`` values.
        conf: the other properties of the same configuration, as text (``$[conf:NAME]``).

    Returns:
        Felix's result: text with placeholders replaced (an unresolvable one left verbatim), or,
        when the placeholder is the whole value and has ``type=``, the converted value (Integer,
        Long, Short, Byte -> ``int``; Float, Double -> ``float``; Boolean -> ``bool``; Character
        -> one-character ``str``; arrays -> ``list``).

    Raises:
        PlaceholderError: where Felix fails (a value that does not convert, ``$[conf:X]`` for a
            missing X) or never returns (an empty ``delimiter=`` for an array type, a value that
            refers to itself).
    """
    sources = Sources(env=env, secrets=secrets or {}, props=props or {})
    provider = SourceProvider(sources, conf)
    if isinstance(value, str):
        return _value_of(_interpolate_one(value, provider)[0])
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return _interpolate_value(value, "String[]", provider)[0]
    return value


def _provenance(raw: Any, events: list[Event]) -> tuple[Provenance, ...]:
    items: list[Provenance] = []
    texts = raw if isinstance(raw, list) else [raw]
    has_literal = any(
        not isinstance(t, str) or "$[" not in t or not (t.startswith("$[") and t.endswith("]"))
        for t in texts)
    if has_literal:
        items.append(Provenance("literal"))
    for event in events:
        if event.kind == "found":
            item = Provenance(event.source, event.name, event.origin)  # type: ignore[arg-type]
        elif event.kind == "default":
            item = Provenance("default", f"{event.source}:{event.name}")
        else:
            continue
        if item not in items:
            items.append(item)
    return tuple(items)


def _warnings(prop: str, value: Any, events: list[Event]) -> tuple[ResolutionWarning, ...]:
    texts = [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)]
    seen: set[tuple[str, str]] = set()
    out: list[ResolutionWarning] = []
    for event in events:
        if event.kind == "unresolved":
            # only what is still in the final value matters (a default may have replaced it)
            if not any(event.placeholder in t for t in texts):
                continue
            message = f"{event.placeholder} left as is: {event.reason}"
            warning = ResolutionWarning("unresolved", prop, message, event.placeholder)
        elif event.kind == "warning":
            warning = ResolutionWarning(event.code, prop, event.reason)  # type: ignore[arg-type]
        else:
            continue
        key = (warning.code, warning.message)
        if key not in seen:
            seen.add(key)
            out.append(warning)
    return tuple(out)


def resolve_configuration(properties: Mapping[str, Any], sources: Sources, *,
                          types: Mapping[str, str] | None = None, pid: str | None = None,
                          path: Path | None = None) -> ResolvedConfiguration:
    """Interpolate every property of one configuration and record where each value came from.

    Args:
        properties: property name -> value as read from the file (after ``:Type`` conversion).
        sources: where placeholder values come from.
        types: the declared OSGi type of each property (``String``, ``String[]``, ``Integer``...);
            inferred from the Python value when missing. Only ``String`` and ``String[]`` values
            are interpolated, as in Felix.
        pid: the configuration's PID (also offered as ``$[conf:service.pid]``).
        path: the file, for messages.

    Raises:
        PlaceholderError: a value Felix fails on; the message names the property and the file.
    """
    declared = dict(types or {})
    conf = {name: java_to_string(value) for name, value in properties.items()}
    if pid is not None:
        conf.setdefault("service.pid", pid)
    provider = SourceProvider(sources, conf)
    resolved: dict[str, ResolvedProperty] = {}
    all_warnings: list[ResolutionWarning] = []
    for name, raw in properties.items():
        type_name = declared.get(name) or java_type_name(raw)
        try:
            value, final_type, events = _interpolate_value(raw, type_name, provider)
        except PlaceholderError as exc:
            raise PlaceholderError(exc.reason, property=name, file=path, hint=exc.hint) from exc
        warnings = _warnings(name, value, events)
        is_secret = any(e.kind == "found" and e.secret for e in events)
        prop = ResolvedProperty(name, value, raw, final_type, _provenance(raw, events), is_secret, warnings)
        resolved[name] = prop
        all_warnings.extend(warnings)
    return ResolvedConfiguration(resolved, pid=pid, path=path, warnings=tuple(all_warnings))
