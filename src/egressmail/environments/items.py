"""The API's JSON/YAML array of variables, ``[{name, value, type?, service?}, ...]`` (pure).

Used by ``--jsonFile``/``--yamlFile``/``--jsonStdin``/``--yamlStdin`` and ``env import``. Like the
original, an item without a ``name`` or without a ``value`` is passed over (an export lists secrets
as names only, so importing an export leaves existing secrets alone); an empty ``value`` deletes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from egressmail.environments.errors import CloudManagerInputError, VariableRuleError
from egressmail.environments.model import VALUE_MAX_LENGTH, VariableUpdate, parse_service, parse_type


@dataclass(frozen=True, slots=True)
class ParsedItems:
    """Updates read from an array, and the names passed over because they had no value."""

    updates: tuple[VariableUpdate, ...]
    without_value: tuple[str, ...] = ()


def load_array(text: str | bytes, fmt: str, *, source: str) -> list[Any]:
    """Parse ``text`` as a JSON (``fmt="json"``) or YAML array.

    The parser's own message is not repeated: it can quote the line it choked on, and that line
    may hold a secret. Only the position is reported.

    Raises:
        CloudManagerInputError: ``VARIABLES_JSON_PARSE_ERROR``/``VARIABLES_YAML_PARSE_ERROR`` or
            ``VARIABLES_JSON_NOT_ARRAY``/``VARIABLES_YAML_NOT_ARRAY``.
    """
    upper = fmt.upper()
    data: Any
    if fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CloudManagerInputError(
                "VARIABLES_JSON_PARSE_ERROR",
                f"Unable to parse variables from provided data ({source}: not JSON, at line {exc.lineno} "
                f"column {exc.colno}).") from None
        except UnicodeDecodeError:
            raise CloudManagerInputError("VARIABLES_JSON_PARSE_ERROR",
                                         f"Unable to parse variables from provided data ({source}: "
                                         "not UTF-8 text).") from None
        except RecursionError:
            raise _too_deep(upper, source) from None
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f", at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
            raise CloudManagerInputError(
                "VARIABLES_YAML_PARSE_ERROR",
                f"Unable to parse variables from provided data ({source}: not YAML{where}).") from None
        except RecursionError:
            raise _too_deep(upper, source) from None
    if not isinstance(data, list):
        raise CloudManagerInputError(f"VARIABLES_{upper}_NOT_ARRAY",
                                     f"Provided variables input was not an array ({source}).",
                                     hint='give a list such as [{"name": "A_NAME", "value": "a value"}]')
    return data


def _too_deep(upper: str, source: str) -> CloudManagerInputError:
    # The parsers recurse once per nesting level; Python's recursion limit ends a deep document.
    return CloudManagerInputError(f"VARIABLES_{upper}_PARSE_ERROR",
                                  f"Unable to parse variables from provided data ({source}: nested too "
                                  "deeply).")


def _longer_than(value: Any, limit: int) -> bool:
    """Whether a parsed structure has more than ``limit`` elements (then its JSON text does too).

    Counted without expanding it: YAML aliases share one object many times, so a few lines can
    stand for billions of elements that ``json.dumps`` would write out one by one.
    """
    count = 0
    stack = [value]
    while stack:
        node = stack.pop()
        count += 1
        if count > limit:
            return True
        if isinstance(node, dict):
            stack.extend(node.values())
            count += len(node)  # each key is at least one character of the text
        elif isinstance(node, list):
            stack.extend(node)
    return False


def _scalar_text(value: Any, where: str) -> str | None:
    """A value as the store keeps it (text); ``None`` for a missing/null value.

    Raises:
        VariableRuleError: ``VALUE_TOO_LONG`` for a structure too big to be a value.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if _longer_than(value, VALUE_MAX_LENGTH):
        raise VariableRuleError("VALUE_TOO_LONG",
                                f"{where}: the value has more than {VALUE_MAX_LENGTH} characters")
    return json.dumps(value, separators=(",", ":"))


def updates_from_items(data: Sequence[Any], *, source: str) -> ParsedItems:
    """Turn an API array into updates (rules of the model are checked later, by the store).

    Raises:
        VariableRuleError: an item that is not an object, or whose ``name``, ``type`` or
            ``service`` has the wrong shape (the message gives the item's position, never its value).
    """
    updates: list[VariableUpdate] = []
    skipped: list[str] = []
    for index, item in enumerate(data):
        where = f"{source}, item {index + 1}"
        if not isinstance(item, dict):
            raise VariableRuleError("INVALID_ITEM",
                                    f"{where} is not an object with name and value")
        name = item.get("name")
        if not name:
            continue  # as the original: an item without a name is passed over
        if not isinstance(name, str):
            raise VariableRuleError("INVALID_NAME", f"{where}: the name must be text")
        type_text = item.get("type")
        if type_text is not None and not isinstance(type_text, str):
            raise VariableRuleError("INVALID_TYPE", f"{where} ({name}): the type must be text")
        service_text = item.get("service")
        if service_text is not None and not isinstance(service_text, str):
            raise VariableRuleError("INVALID_SERVICE", f"{where} ({name}): the service must be text")
        try:
            type_ = parse_type(type_text)
            service = parse_service(service_text)
        except VariableRuleError as exc:
            raise VariableRuleError(exc.code, f"{where} ({name}): {exc.message}") from None
        value = _scalar_text(item.get("value"), f"{where} ({name})")
        if value is None:
            skipped.append(name)
            continue
        # An empty value deletes (the type is kept by the store).
        updates.append(VariableUpdate(name=name, type=type_, value=value or None, service=service))
    return ParsedItems(tuple(updates), tuple(skipped))
