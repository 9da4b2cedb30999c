"""Reading ``*.cfg.json`` files: one JSON object per PID, comments allowed, ``key:Type`` suffixes.

The format is the one AEM and the OSGi Configurator read:

* the file name minus ``.cfg.json`` is the PID (``com.day.cq.mailer.DefaultMailService``);
* ``//`` line and ``/* */`` block comments may appear wherever whitespace may;
* values are strings, numbers, booleans, or arrays of those; ``null`` and nested objects are
  refused;
* a key may carry an OSGi type after its last ``:`` (``"port:Integer": 25``,
  ``"hosts:String[]": [...]``, ``"ids:Collection<Long>"``); the value is converted to that type
  with the OSGi Converter's rules. Untyped values are ``String``, ``Long`` (whole numbers),
  ``Double``, ``Boolean`` or an array of the first element's type.

Errors name the file, the line and column, and what was expected.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from egressmail.config.conversion import (
    ConversionFailure,
    java_chars,
    java_parse_float,
    java_parse_int,
    java_to_string,
)
from egressmail.config.errors import ConfigFileError

__all__ = ["MAX_FILE_BYTES", "SUFFIX", "ConfigFile", "parse_cfg_json", "pid_of", "read_cfg_json"]

SUFFIX = ".cfg.json"
#: larger files are refused before they are parsed
MAX_FILE_BYTES = 1_048_576
_MAX_NESTING = 64

_SCALAR_TYPES = {
    "String": "String", "Integer": "Integer", "int": "Integer", "Long": "Long", "long": "Long",
    "Float": "Float", "float": "Float", "Double": "Double", "double": "Double", "Byte": "Byte",
    "byte": "Byte", "Short": "Short", "short": "Short", "Character": "Character", "char": "Character",
    "Boolean": "Boolean", "boolean": "Boolean",
}
_COLLECTION = re.compile(r"Collection<(\w+)>")
_INT_BITS = {"Byte": 8, "Short": 16, "Integer": 32, "Long": 64}


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """One configuration file: its PID and properties (in file order) with their OSGi types."""

    path: Path
    pid: str
    properties: Mapping[str, Any]
    types: Mapping[str, str] = field(default_factory=dict)


def pid_of(path: Path) -> str:
    """The PID of a ``.cfg.json`` file (its name without the suffix)."""
    return path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.stem


def _strip_comments(text: str, path: Path | str) -> str:
    """Replace comments with spaces (newlines kept) so JSON positions stay true."""
    out: list[str] = []
    i, n = 0, len(text)
    in_string = False
    while i < n:
        ch = text[i]
        if in_string:
            out.append(ch)
            if ch == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if ch == '"':
                in_string = False
            i += 1
            continue
        if ch == '"':
            in_string = True
            out.append(ch)
            i += 1
            continue
        if ch == "/" and i + 1 < n and text[i + 1] == "/":
            end = text.find("\n", i)
            end = n if end == -1 else end
            out.append(" " * (end - i))
            i = end
            continue
        if ch == "/" and i + 1 < n and text[i + 1] == "*":
            end = text.find("*/", i + 2)
            if end == -1:
                line = text.count("\n", 0, i) + 1
                col = i - (text.rfind("\n", 0, i) + 1) + 1
                raise ConfigFileError("unterminated /* comment: expected '*/'", file=path, line=line,
                                      column=col)
            chunk = text[i: end + 2]
            out.append("".join(c if c == "\n" else " " for c in chunk))
            i = end + 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _split_type(key: str) -> tuple[str, str | None]:
    name, sep, suffix = key.rpartition(":")
    if not sep or not name:
        return key, None
    return name, suffix


def java_type_name(value: Any) -> str:
    """The Java type Felix's Configurator gives an untyped JSON value (``5`` is a Long)."""
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Long"
    if isinstance(value, float):
        return "Double"
    if isinstance(value, (list, tuple)):
        return (java_type_name(value[0]) if value else "String") + "[]"
    return "String"


def _narrow(value: int, bits: int) -> int:
    """Java's narrowing of a long to ``bits`` (two's complement wrap-around)."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


def _d2l(value: float, bits: int) -> int:
    """Java's double -> int/long: truncation, saturation, NaN -> 0."""
    if math.isnan(value):
        return 0
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if math.isinf(value):
        return hi if value > 0 else lo
    return max(lo, min(hi, int(value)))


def _convert_scalar(value: Any, target: str) -> Any:
    """The OSGi Converter from a JSON scalar to ``target``.

    Raises:
        ConversionFailure: when the converter throws.
    """
    if isinstance(value, list):
        # array -> scalar: the first element, null for an empty array
        if not value:
            raise ConversionFailure("an empty array has no value for a scalar type")
        return _convert_scalar(value[0], target)
    if target == "String":
        return value if isinstance(value, str) else java_to_string(value)
    if target in _INT_BITS:
        bits = _INT_BITS[target]
        if isinstance(value, bool):
            return 1 if value else 0
        if isinstance(value, int):
            return _narrow(value, bits)
        if isinstance(value, float):
            # Number.byteValue()/shortValue() of a Double: to int first, then narrowed
            return _narrow(_d2l(value, 32), bits) if bits < 32 else _d2l(value, bits)
        return java_parse_int(value, bits)
    if target in ("Float", "Double"):
        single = target == "Float"
        if isinstance(value, bool):
            return 1.0 if value else 0.0
        if isinstance(value, (int, float)):
            return java_parse_float(repr(float(value)), single=single) if single else float(value)
        return java_parse_float(value, single=single)
    if target == "Boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)):
            return int(value) != 0
        return len(value) == 4 and value.lower() == "true"
    if target == "Character":
        if isinstance(value, bool):
            return "\x01" if value else "\x00"
        if isinstance(value, int):
            return chr(_narrow(value, 32) & 0xFFFF)
        if isinstance(value, float):
            return chr(_d2l(value, 32) & 0xFFFF)
        units = java_chars(value)
        return units[0] if units else "\x00"
    raise ConversionFailure(f"unknown type {target}")  # pragma: no cover


def _apply_type(value: Any, type_info: str) -> tuple[Any, str]:
    """Convert a JSON value to the declared OSGi type: (value, canonical type name).

    Raises:
        ConversionFailure: the value does not convert.
        KeyError: the type is not one the Configurator knows.
    """
    collection = _COLLECTION.fullmatch(type_info)
    if collection or type_info.endswith("[]"):
        element = collection.group(1) if collection else type_info[:-2]
        target = _SCALAR_TYPES[element]
        if isinstance(value, str) and target == "Character":
            items: list[Any] = java_chars(value)  # the String -> char[] rule
        else:
            items = value if isinstance(value, list) else [value]
        converted = [_convert_scalar(v, target) for v in items]
        return converted, (f"Collection<{target}>" if collection else f"{target}[]")
    target = _SCALAR_TYPES[type_info]
    return _convert_scalar(value, target), target


def _check_value(value: Any, key: str, path: Path | str, *, typed: bool) -> None:
    if value is None:
        raise ConfigFileError("null is not a configuration value", file=path, property=key,
                              hint="remove the property, or give it a value")
    if isinstance(value, dict):
        raise ConfigFileError("a nested object is not a configuration value", file=path, property=key,
                              hint="use a string, number, boolean or an array of those")
    if isinstance(value, list):
        for item in value:
            if isinstance(item, (list, dict)) or item is None:
                raise ConfigFileError("arrays may only hold strings, numbers and booleans", file=path,
                                      property=key)
        kinds = {java_type_name(item) for item in value}
        if len(kinds) > 1 and not typed:
            raise ConfigFileError(f"the array mixes {', '.join(sorted(kinds))}", file=path,
                                  property=key, hint="use one type, or add a type suffix such as "
                                                     f"\"{key}:String[]\"")
    if isinstance(value, int) and not isinstance(value, bool) and not -(1 << 63) <= value < (1 << 63):
        raise ConfigFileError("the number is out of range for a Long", file=path, property=key)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigFileError("the number is out of range for a Double", file=path, property=key)


def _describe(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_cfg_json(text: str, path: Path | str = "<text>") -> tuple[dict[str, Any], dict[str, str]]:
    """Parse the text of a ``.cfg.json`` file: (properties, OSGi types), both in file order.

    Raises:
        ConfigFileError: a syntax error (with line, column and what was expected), a file that is
            not one object, a duplicate key, a value that is not allowed or does not convert to
            its ``:Type``.
    """
    cleaned = _strip_comments(text, path)
    duplicates: list[str] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in pairs:
            if key in obj:
                duplicates.append(key)
            obj[key] = value
        return obj

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        data = json.loads(cleaned, object_pairs_hook=pairs_hook, parse_constant=no_constant)
    except json.JSONDecodeError as exc:
        expected = exc.msg
        if expected.startswith("Expecting value"):
            expected = "Expecting a value (string, number, true/false, array or object)"
        raise ConfigFileError(f"invalid JSON: {expected}", file=path, line=exc.lineno,
                              column=exc.colno, hint="check for a missing comma, quote or bracket") from exc
    except RecursionError as exc:
        raise ConfigFileError("invalid JSON: nested too deeply", file=path) from exc
    except ValueError as exc:  # NaN/Infinity, integers with too many digits
        raise ConfigFileError(f"invalid JSON: {exc}", file=path) from exc
    if not isinstance(data, dict):
        raise ConfigFileError(f"the file holds a JSON {type(data).__name__ if data is not None else 'null'}"
                              ", not an object", file=path,
                              hint='a .cfg.json file is one object: { "property": value, ... }')
    if duplicates:
        raise ConfigFileError(f"duplicate key {duplicates[0]!r}", file=path, property=duplicates[0],
                              hint="a property may appear only once; delete one of them")
    properties: dict[str, Any] = {}
    types: dict[str, str] = {}
    for key, value in data.items():
        name, type_info = _split_type(key)
        _check_value(value, key, path, typed=type_info is not None)
        if name in properties:
            raise ConfigFileError(f"property {name!r} appears twice (with and without a type)",
                                  file=path, property=name)
        if type_info is None:
            properties[name] = value
            types[name] = java_type_name(value)
            continue
        try:
            converted, canonical = _apply_type(value, type_info)
        except KeyError:
            raise ConfigFileError(f"unknown type suffix ':{type_info}'", file=path, property=key,
                                  hint="use String, Integer, Long, Float, Double, Byte, Short, Character, "
                                       "Boolean (or int, long, ...), an array of one (String[]) or "
                                       "Collection<String>") from None
        except ConversionFailure as exc:
            hint = None
            if isinstance(value, str) and "$[" in value:
                hint = (f"a placeholder cannot be converted before it is resolved: write \"{name}\": "
                        f"\"$[...;type={type_info}]\" without the key suffix")
            raise ConfigFileError(f"{_describe(value)} does not convert to {type_info}: {exc}",
                                  file=path, property=key, hint=hint) from exc
        properties[name] = converted
        types[name] = canonical
    return properties, types


def read_cfg_json(path: Path | str) -> ConfigFile:
    """Read one ``.cfg.json`` file.

    Raises:
        ConfigFileError: the file cannot be read, is larger than :data:`MAX_FILE_BYTES`, is not
            UTF-8, or does not parse (see :func:`parse_cfg_json`).
    """
    file = Path(path)
    try:
        size = file.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigFileError(f"the file is {size} bytes, more than the {MAX_FILE_BYTES} allowed",
                                  file=file, hint="a configuration file this large is a mistake; check it")
        with file.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigFileError(f"cannot read the file: {exc.strerror or exc}", file=file) from exc
    if len(data) > MAX_FILE_BYTES:
        raise ConfigFileError(f"the file is more than the {MAX_FILE_BYTES} bytes allowed", file=file)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigFileError("the file is not valid UTF-8", file=file, line=line, column=col) from exc
    properties, types = parse_cfg_json(text, file)
    return ConfigFile(file, pid_of(file), properties, types)
