"""The Cloud Manager CLI's arguments, parsed the way oclif parses them (pure: no I/O).

``aio cloudmanager:set-environment-variables --programId=1001 2002 --secret A 1 B 2 -v C 3`` must
work verbatim, so this module re-creates oclif's flag semantics rather than bending click's:

- ``--name VALUE``, ``--name=VALUE``, ``-x VALUE``, ``-x=VALUE``, ``-xVALUE`` (single-value flags);
- a *multiple* flag (``-v``, ``-s``, ``-d`` and their ``author…``/``publish…``/``preview…`` forms) takes
  every following word up to the next known flag, and may be repeated: all its words are joined,
  then read as ``NAME VALUE`` pairs (so ``-v A 1 B 2`` and ``-v A 1 -v B 2`` are the same);
- a word after ``--`` is never a flag;
- the one positional argument is the environment id (put it before the multiple flags, or after ``--``).

Then the original's value rules (``createKeyValueObjectFromFlag``): an odd number of words is
``MALFORMED_NAME_VALUE_PAIR``; a value that parses as JSON is taken as parsed, except that a number
keeps its original text; a blank value is ``BLANK_VARIABLE_VALUE``. Error messages never repeat a word
the user typed after a value flag: it could be a secret.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from egressmail.environments.errors import CloudManagerInputError
from egressmail.environments.model import Service, VariableType, VariableUpdate

FlagKind = Literal["pairs", "names", "string", "bool"]


@dataclass(frozen=True, slots=True)
class FlagSpec:
    """One flag of a command: its long name, optional short letter and what it takes."""

    name: str
    kind: FlagKind
    short: str | None = None
    type: VariableType | None = None  # for "pairs"
    service: Service | None = None  # for "pairs"/"names"
    help: str = ""


def _set_flags() -> tuple[FlagSpec, ...]:
    flags = [
        FlagSpec("programId", "string", "p", help="the program id (or $AIO_CLOUDMANAGER_PROGRAMID)"),
        FlagSpec("variable", "pairs", "v", VariableType.STRING, help="variable values in NAME VALUE format"),
        FlagSpec("secret", "pairs", "s", VariableType.SECRET, help="secret values in NAME VALUE format"),
        FlagSpec("delete", "names", "d", help="variables/secrets to delete"),
    ]
    for service in Service:
        flags += [
            FlagSpec(f"{service.value}Variable", "pairs", None, VariableType.STRING, service,
                     help=f"variable values in NAME VALUE format for the {service.value} service"),
            FlagSpec(f"{service.value}Secret", "pairs", None, VariableType.SECRET, service,
                     help=f"secret values in NAME VALUE format for the {service.value} service"),
            FlagSpec(f"{service.value}Delete", "names", None, None, service,
                     help=f"variables/secrets to delete for the {service.value} service"),
        ]
    flags += [
        FlagSpec("jsonFile", "string", help="read variables from a JSON array in a file; flags win"),
        FlagSpec("jsonStdin", "bool", help="read variables from a JSON array on standard input; flags win"),
        FlagSpec("yamlFile", "string", help="read variables from a YAML array in a file; flags win"),
        FlagSpec("yamlStdin", "bool", help="read variables from a YAML array on standard input; flags win"),
        FlagSpec("strict", "bool", help="a reserved name prefix is an error instead of a warning"),
        *_OUTPUT_FLAGS,
    ]
    return tuple(flags)


_OUTPUT_FLAGS = (
    FlagSpec("json", "bool", "j", help="output in JSON format"),
    FlagSpec("yaml", "bool", "y", help="output in YAML format"),
    FlagSpec("help", "bool", "h", help="show this help"),
)
SET_FLAGS: tuple[FlagSpec, ...] = _set_flags()
LIST_FLAGS: tuple[FlagSpec, ...] = (
    FlagSpec("programId", "string", "p", help="the program id (or $AIO_CLOUDMANAGER_PROGRAMID)"),
    *_OUTPUT_FLAGS,
)


@dataclass(frozen=True, slots=True)
class ParsedArgs:
    """The words of a command line sorted by flag. ``words`` may hold secrets: not in ``repr()``."""

    positional: tuple[str, ...]
    words: Mapping[str, tuple[str, ...]] = field(repr=False)
    switches: frozenset[str] = frozenset()

    def single(self, name: str) -> str | None:
        """The value of a single-value flag (the last one given wins, as in oclif)."""
        values = self.words.get(name)
        return values[-1] if values else None

    def has(self, name: str) -> bool:
        return name in self.switches


def _usage_error(message: str, *, hint: str | None = None) -> CloudManagerInputError:
    return CloudManagerInputError("INVALID_ARGUMENTS", message, hint=hint)


def parse_argv(argv: Sequence[str], flags: Sequence[FlagSpec]) -> ParsedArgs:
    """Sort ``argv`` into flags and positional arguments, oclif style.

    Raises:
        CloudManagerInputError: ``INVALID_ARGUMENTS`` for an unknown flag, a flag missing its value,
            or a value given to a switch.
    """
    by_long = {f.name: f for f in flags}
    by_short = {f.short: f for f in flags if f.short}
    positional: list[str] = []
    words: dict[str, list[str]] = {}
    switches: set[str] = set()
    collecting: FlagSpec | None = None  # the multiple flag that takes the following words
    only_positional = False
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if only_positional:
            positional.append(word)
            continue
        if word == "--":
            only_positional = True
            collecting = None
            continue
        spec, inline = _match(word, by_long, by_short)
        if spec is None:
            if collecting is not None:
                words.setdefault(collecting.name, []).append(word)
            elif word.startswith("-") and len(word) > 1:
                flag_text = word.split("=", 1)[0]
                raise _usage_error(f"unknown flag {flag_text!r}",
                                   hint="see --help for the flags; values after -v/-s/-d are taken up to "
                                        "the next flag")
            else:
                positional.append(word)
            continue
        collecting = None
        if spec.kind == "bool":
            if inline is not None:
                raise _usage_error(f"flag --{spec.name} takes no value")
            switches.add(spec.name)
        elif spec.kind == "string":
            if inline is None:
                if i >= len(argv) or _match(argv[i], by_long, by_short)[0] is not None:
                    raise _usage_error(f"flag --{spec.name} expects a value")
                inline = argv[i]
                i += 1
            words.setdefault(spec.name, []).append(inline)
        else:
            words.setdefault(spec.name, [])
            if inline is not None:
                words[spec.name].append(inline)
            collecting = spec
    return ParsedArgs(tuple(positional), {k: tuple(v) for k, v in words.items()}, frozenset(switches))


def _match(word: str, by_long: Mapping[str, FlagSpec],
           by_short: Mapping[str, FlagSpec]) -> tuple[FlagSpec | None, str | None]:
    """The flag ``word`` names, and its inline value (``--x=V``, ``-x=V``, ``-xV``), if any."""
    if word.startswith("--") and len(word) > 2:
        name, eq, value = word[2:].partition("=")
        spec = by_long.get(name)
        return (spec, value if eq else None) if spec else (None, None)
    if word.startswith("-") and len(word) >= 2 and word[1] != "-":
        spec = by_short.get(word[1])
        if spec is None:
            return None, None
        rest = word[2:]
        if not rest:
            return spec, None
        if rest.startswith("="):
            return spec, rest[1:]
        # "-p1001" is oclif's attached value; only for single-value flags, so that "-value" words
        # after a multiple flag stay values.
        return (spec, rest) if spec.kind == "string" else (None, None)
    return None, None


def parse_flag_value(text: str) -> str:
    """The original's value rule: JSON-parsed when it parses, but a number keeps its original text.

    ``'"quoted"'`` gives ``quoted``; ``4566206088344615922`` stays every digit; ``true``, objects and
    arrays keep their text (the store keeps text).
    """
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):  # nested too deeply for the parser: not a JSON string either
        return text
    return parsed if isinstance(parsed, str) else text


def pairs_to_values(flag: str, words: Sequence[str]) -> dict[str, str]:
    """Read ``NAME VALUE NAME VALUE …`` into a dict (a repeated name: the last value wins).

    Raises:
        CloudManagerInputError: ``MALFORMED_NAME_VALUE_PAIR`` (odd number of words, or none) or
            ``BLANK_VARIABLE_VALUE`` (a value that is empty once parsed).
    """
    if not words or len(words) % 2:
        raise CloudManagerInputError(
            "MALFORMED_NAME_VALUE_PAIR", "Please provide correct values for flags",
            hint=f"--{flag} takes NAME VALUE pairs ({len(words)} word(s) given); quote a value that has "
                 "spaces, and put the environment id before the flags")
    values: dict[str, str] = {}
    for name, raw in zip(words[0::2], words[1::2], strict=True):
        values[name] = parse_flag_value(raw)
    blank = [name for name, value in values.items() if value == ""]
    if blank:
        raise CloudManagerInputError(
            "BLANK_VARIABLE_VALUE",
            "Blank variable values are not allowed. Use the proper flag if you intend to delete a "
            f"variable (--{flag} {blank[0]}).",
            hint=f"to delete it: --delete {blank[0]}")
    return values


def updates_from_flags(parsed: ParsedArgs, flags: Sequence[FlagSpec] = SET_FLAGS) -> list[VariableUpdate]:
    """The updates the set/delete flags ask for, in the original's order (flags, then services).

    A delete carries type ``string``; the store keeps the existing type (deletes ignore it).

    Raises:
        CloudManagerInputError: see :func:`pairs_to_values`; ``INVALID_ARGUMENTS`` for a delete flag
            without a name.
    """
    updates: list[VariableUpdate] = []
    for spec in flags:
        words = parsed.words.get(spec.name)
        if words is None:
            continue
        if spec.kind == "pairs":
            assert spec.type is not None  # noqa: S101 - every pairs flag has a type
            for name, value in pairs_to_values(spec.name, words).items():
                updates.append(VariableUpdate(name, spec.type, value, spec.service))
        elif spec.kind == "names":
            if not words:
                raise _usage_error(f"flag --{spec.name} expects a variable name")
            for name in dict.fromkeys(words):
                updates.append(VariableUpdate(name, VariableType.STRING, None, spec.service))
    return updates


def merge_file_updates(from_flags: Sequence[VariableUpdate],
                       from_file: Sequence[VariableUpdate]) -> list[VariableUpdate]:
    """Flags win over file items of the same name and service."""
    named = {u.key for u in from_flags}
    merged = list(from_flags)
    for u in from_file:
        if u.key not in named:
            merged.append(u)
            named.add(u.key)
    return merged
