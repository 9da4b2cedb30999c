"""Type conversion the way the OSGi Converter does it, and Java's text forms of values.

Theory of operation
-------------------
Felix's interpolation plugin converts a placeholder's text with ``type=T`` through the OSGi
standard converter (``org.osgi.util.converter``). For a source that is a ``String`` the converter
ends up in one of three places:

* a *rule* of the standard converter: ``String -> Character`` takes the first UTF-16 unit (``\\0``
  for the empty text), ``String -> char[]`` / ``String -> Character[]`` split the text into its
  UTF-16 units. Rules are looked up by the exact target class, so the primitive ``char`` element of
  a ``char[]`` does *not* get the rule;
* the target's ``valueOf(String)``: ``Integer.valueOf`` (no trimming, optional sign, decimal digits
  only, range checked), ``Float.valueOf`` / ``Double.valueOf`` (trimmed, Java's floating literal
  syntax), ``Boolean.valueOf`` (true only for "true" in any case, never fails);
* arrays: each element is converted, and *any* failure makes the whole array ``null``
  (``ConvertingImpl.convertToArray`` catches it). The plugin then sees no value and leaves the
  placeholder as it was. A scalar that does not convert throws instead.

Typed results are kept as :class:`Typed` (value plus Java type) so that Java's ``toString`` can be
reproduced where Felix concatenates a typed value into a larger text.

Everything here is pure.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

__all__ = [
    "ARRAY_TYPES",
    "KNOWN_TYPES",
    "ConversionFailure",
    "Typed",
    "convert_text",
    "element_to_string",
    "java_chars",
    "java_float_to_string",
    "java_parse_float",
    "java_parse_int",
    "java_to_string",
    "java_trim",
    "python_type_name",
    "split_delimited",
]

#: scalar type name -> canonical (boxed) Java type, as the plugin's TYPE_MAP has them.
_SCALARS: dict[str, str] = {
    "String": "String",
    "Integer": "Integer", "int": "Integer",
    "Long": "Long", "long": "Long",
    "Float": "Float", "float": "Float",
    "Double": "Double", "double": "Double",
    "Byte": "Byte", "byte": "Byte",
    "Short": "Short", "short": "Short",
    "Character": "Character", "char": "Character",
    "Boolean": "Boolean", "boolean": "Boolean",
}
#: array type name -> (element type, element is primitive)
ARRAY_TYPES: dict[str, tuple[str, bool]] = {
    "String[]": ("String", False),
    "Integer[]": ("Integer", False), "int[]": ("Integer", True),
    "Long[]": ("Long", False), "long[]": ("Long", True),
    "Float[]": ("Float", False), "float[]": ("Float", True),
    "Double[]": ("Double", False), "double[]": ("Double", True),
    "Byte[]": ("Byte", False), "byte[]": ("Byte", True),
    "Short[]": ("Short", False), "short[]": ("Short", True),
    "Boolean[]": ("Boolean", False), "boolean[]": ("Boolean", True),
    "Character[]": ("Character", False), "char[]": ("Character", True),
}
#: every ``type=`` the plugin knows; anything else is left unconverted (with a warning in Felix's log).
KNOWN_TYPES: frozenset[str] = frozenset(_SCALARS) | frozenset(ARRAY_TYPES)

_INT_BITS = {"Byte": 8, "Short": 16, "Integer": 32, "Long": 64}


class ConversionFailure(ValueError):
    """A text that the OSGi converter cannot turn into the requested type (Felix throws)."""


@dataclass(frozen=True, slots=True)
class Typed:
    """A converted value and its Java type (``Integer``, ``Float``, ``String[]``, ...)."""

    value: Any
    java_type: str


# ---------------------------------------------------------------------------------------------
# Java text helpers
# ---------------------------------------------------------------------------------------------

def java_trim(text: str) -> str:
    """``String.trim()``: drop leading and trailing characters up to U+0020 (not Unicode spaces)."""
    start, end = 0, len(text)
    while start < end and text[start] <= " ":
        start += 1
    while end > start and text[end - 1] <= " ":
        end -= 1
    return text[start:end]


def java_chars(text: str) -> list[str]:
    """The UTF-16 code units of ``text`` (what Java's ``charAt`` sees), one string each."""
    units: list[str] = []
    for ch in text:
        cp = ord(ch)
        if cp > 0xFFFF:
            cp -= 0x10000
            units.append(chr(0xD800 + (cp >> 10)))
            units.append(chr(0xDC00 + (cp & 0x3FF)))
        else:
            units.append(ch)
    return units


def _java_digit(ch: str) -> int:
    """``Character.digit(ch, 10)`` for one UTF-16 unit: any Unicode decimal digit counts."""
    if ord(ch) > 0xFFFF:  # Java sees two surrogate units, neither a digit
        return -1
    if "0" <= ch <= "9":
        return ord(ch) - 48
    if ch.isdecimal():
        import unicodedata

        return unicodedata.decimal(ch, -1)
    return -1


def java_parse_int(text: str, bits: int) -> int:
    """``Integer.parseInt`` / ``Long.parseLong`` / ``Short`` / ``Byte``: no trimming, range checked.

    Raises:
        ConversionFailure: ``NumberFormatException`` in Java.
    """
    if not text:
        raise ConversionFailure("empty text is not a number")
    sign = 1
    body = text
    if text[0] in "+-":
        sign = -1 if text[0] == "-" else 1
        body = text[1:]
        if not body:
            raise ConversionFailure("a sign alone is not a number")
    value = 0
    for ch in body:
        digit = _java_digit(ch)
        if digit < 0:
            raise ConversionFailure("not a whole number")
        value = value * 10 + digit
        if value > (1 << (bits - 1)):  # stop early on absurdly long input
            raise ConversionFailure(f"out of range for a {bits}-bit integer")
    value *= sign
    if not -(1 << (bits - 1)) <= value < (1 << (bits - 1)):
        raise ConversionFailure(f"out of range for a {bits}-bit integer")
    return value


_DEC_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[fFdD]?", re.ASCII)
_HEX_FLOAT = re.compile(
    r"([+-]?)0[xX]((?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?[0-9]+)[fFdD]?", re.ASCII)
_SPECIAL_FLOAT = re.compile(r"([+-]?)(NaN|Infinity)", re.ASCII)
_F32_MAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]


def _f32_bits(x: float) -> int:
    return int(struct.unpack("<I", struct.pack("<f", x))[0])


def _f32_from_bits(bits: int) -> float:
    return float(struct.unpack("<f", struct.pack("<I", bits & 0xFFFFFFFF))[0])


def _to_f32(x: float) -> float:
    try:
        return float(struct.unpack("<f", struct.pack("<f", x))[0])
    except OverflowError:
        return math.copysign(math.inf, x)


def _round_exact_to_f32(exact: Fraction, approx: float) -> float:
    """Round an exact rational to float32, avoiding the double-rounding trap of double -> float."""
    f = _to_f32(approx)
    if math.isinf(f) or math.isnan(f) or f == approx:
        return f
    # ``approx`` rounded to ``f``; only a tie in float32 terms can have gone the wrong way.
    bits = _f32_bits(f)
    step = 1 if (approx > f) == (f >= 0) else -1
    other = _f32_from_bits(bits + step) if f != 0 else _to_f32(math.copysign(1.4e-45, approx))
    if math.isinf(other) or (f + other) / 2 != approx:
        return f
    exact_mid = Fraction(approx)
    if exact == exact_mid:
        return f  # a real tie: struct already rounded half to even
    towards_other = (exact > exact_mid) == (other > f)
    return other if towards_other else f


def java_parse_float(text: str, *, single: bool) -> float:
    """``Float.valueOf`` / ``Double.valueOf``: trimmed, Java floating literal syntax.

    Raises:
        ConversionFailure: ``NumberFormatException`` in Java.
    """
    s = java_trim(text)
    special = _SPECIAL_FLOAT.fullmatch(s)
    if special:
        if special.group(2) == "NaN":
            return math.nan
        return -math.inf if special.group(1) == "-" else math.inf
    hexm = _HEX_FLOAT.fullmatch(s)
    if hexm:
        try:
            value = float.fromhex(hexm.group(1) + "0x" + hexm.group(2))
        except OverflowError:
            value = -math.inf if hexm.group(1) == "-" else math.inf
        return _to_f32(value) if single else value
    if not _DEC_FLOAT.fullmatch(s):
        raise ConversionFailure("not a floating-point number")
    literal = s[:-1] if s[-1] in "fFdD" else s
    # Exponents beyond any float are clamped so that Fraction/Decimal stay cheap.
    mantissa, _, exponent = literal.lower().partition("e")
    if exponent and abs(int(exponent)) > 100_000:
        zero = float(Decimal(mantissa)) == 0.0
        negative = mantissa.startswith("-")
        if zero or int(exponent) < 0:
            return -0.0 if negative else 0.0
        return -math.inf if negative else math.inf
    value = float(literal)
    if not single:
        return value
    if value == 0.0 or math.isinf(value):
        return _to_f32(value)
    return _round_exact_to_f32(Fraction(Decimal(literal)), value)


def _shortest_digits(x: float, *, single: bool) -> tuple[str, int]:
    """Shortest decimal digits that read back as ``x`` (as float or double) and the exponent E.

    ``x == 0.d1d2...`` is not used; the result means ``d1.d2d3... * 10**E``.
    """
    if single:
        for precision in range(1, 10):
            text = f"{x:.{precision - 1}e}"
            if _to_f32(float(text)) == x:
                break
    else:
        text = repr(x)
    d = Decimal(text)
    sign, digits, exponent = d.as_tuple()
    digit_text = "".join(map(str, digits)).rstrip("0") or "0"
    sci_exp = len(digits) + int(exponent) - 1
    return digit_text, sci_exp


def java_float_to_string(x: float, *, single: bool = False) -> str:
    """``Double.toString`` / ``Float.toString`` (the shortest-digits form of JDK 19 and later)."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0.0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    sign = "-" if x < 0 else ""
    digits, exp = _shortest_digits(abs(x), single=single)
    if 1e-3 <= abs(x) < 1e7:
        if exp >= 0:
            whole = digits[: exp + 1].ljust(exp + 1, "0")
            frac = digits[exp + 1:] or "0"
        else:
            whole = "0"
            frac = "0" * (-exp - 1) + digits
        return f"{sign}{whole}.{frac}"
    return f"{sign}{digits[0]}.{digits[1:] or '0'}E{exp}"


def java_to_string(value: object) -> str:
    """``String.valueOf`` of a configuration value (arrays as ``Arrays.toString``: ``[a, b]``).

    Raises:
        ConversionFailure: for a typed array, whose ``toString`` in Java is an identity hash
            (``[Ljava.lang.Integer;@1b6d3586``) that no one can use.
    """
    if isinstance(value, Typed):
        if value.java_type.endswith("[]"):
            raise ConversionFailure(
                f"a {value.java_type} value inside a larger text becomes a Java object identity in Felix")
        if value.java_type == "Float":
            return java_float_to_string(float(value.value), single=True)
        return java_to_string(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return java_float_to_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(java_to_string(v) for v in value) + "]"
    return str(value)


# ---------------------------------------------------------------------------------------------
# The converter
# ---------------------------------------------------------------------------------------------

def _convert_scalar(element_type: str, text: str, *, primitive: bool = False) -> Any:
    """Convert one text to a scalar Java type as the standard converter does.

    Raises:
        ConversionFailure: the converter throws ``ConversionException``.
    """
    if element_type == "String":
        return text
    if element_type in _INT_BITS:
        return java_parse_int(text, _INT_BITS[element_type])
    if element_type in ("Float", "Double"):
        return java_parse_float(text, single=element_type == "Float")
    if element_type == "Boolean":
        # Boolean.valueOf: String.equalsIgnoreCase("true"), compared one UTF-16 unit at a time.
        return len(text) == 4 and all(
            c.lower() == t or c.upper() == t.upper() for c, t in zip(text, "true", strict=True))
    if element_type == "Character":
        if primitive:
            # The String -> Character rule is keyed on Character.class; char.class has no rule and
            # Character has no valueOf(String), so the converter gives up.
            raise ConversionFailure("a text does not convert to a primitive char")
        units = java_chars(text)
        return units[0] if units else "\x00"
    raise ConversionFailure(f"unknown type {element_type}")  # pragma: no cover - guarded by callers


def split_delimited(value: str, delimiter: str) -> list[str]:
    """The plugin's ``split``: ``\\`` before the delimiter keeps it, ``\\\\`` is one backslash and splits.

    Quirk kept from Felix: a backslash at index 0 does not escape a delimiter at index 1.

    Raises:
        ConversionFailure: for an empty delimiter (Felix loops forever there).
    """
    if delimiter == "":
        raise ConversionFailure("an empty delimiter= splits forever in Felix")
    result: list[str] | None = None
    start = -1
    while start < len(value):
        start = value.find(delimiter, start + 1)
        if start == -1:
            start = len(value)
            if result is not None:
                result.append(value)
        else:
            do_split = True
            if start > 1 and value[start - 1] == "\\":
                if value[start - 2] != "\\":
                    do_split = False
                else:
                    value = value[: start - 2] + value[start - 1:]
                    start -= 1
            if do_split:
                if result is None:
                    result = []
                result.append(value[:start])
                value = value[start + len(delimiter):]
                start = -1
            else:
                value = value[: start - 1] + value[start:]
                start -= 1
    if result is None:
        return [value]
    return result


def element_to_string(value: Typed, index: int) -> str:
    """``Array.get(array, i).toString()`` for element ``index`` of a typed array."""
    element_type = ARRAY_TYPES[value.java_type][0]
    return java_to_string(Typed(value.value[index], element_type)) if element_type != "String" \
        else str(value.value[index])


def convert_text(type_name: str, value: str, delimiter: str | None) -> Typed | str | None:
    """The plugin's ``convertType``: the typed value, the text itself, or ``None``.

    Returns:
        a :class:`Typed`; the unchanged text when ``type_name`` is not a type the plugin knows;
        ``None`` when an array conversion fails (Felix then leaves the placeholder verbatim).

    Raises:
        ConversionFailure: a scalar that does not convert, or an empty delimiter for an array type.
    """
    if type_name in _SCALARS:
        java_type = _SCALARS[type_name]
        if java_type == "String":
            return value  # a String result is plain text to the interpolator (re-interpolated)
        return Typed(_convert_scalar(java_type, value), java_type)
    if type_name not in ARRAY_TYPES:
        return value
    element_type, primitive = ARRAY_TYPES[type_name]
    if delimiter is not None:
        parts: Sequence[str] = split_delimited(value, delimiter)
    elif element_type == "Character":
        # Rules String -> char[] and String -> Character[]: the text's UTF-16 units.
        return Typed(java_chars(value), type_name)
    else:
        parts = [value]
    try:
        converted = [_convert_scalar(element_type, part, primitive=primitive) for part in parts]
    except ConversionFailure:
        return None  # convertToArray swallows the exception and returns null
    return Typed(converted, type_name)


def python_type_name(value: object) -> str:
    """The Python type of a final value: ``str``, ``int``, ``float``, ``bool``, ``list[int]``, ..."""
    if isinstance(value, list):
        inner = sorted({type(v).__name__ for v in value})
        if not inner:
            return "list"
        return f"list[{'|'.join(inner)}]"
    return type(value).__name__
