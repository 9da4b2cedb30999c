"""``$[source:name;directive=value]`` placeholders, parsed and replaced exactly as Apache Felix does.

Theory of operation
-------------------
This is a port of Felix's ``Interpolator`` (configadmin-plugins/interpolation). Its quirks are kept
on purpose, because a configuration must mean the same here as on the platform:

* ``\\$[`` escapes a placeholder; the backslash is removed and the text kept. ``\\\\$[`` does *not*
  escape (and both backslashes stay). Inside a placeholder ``\\]`` and ``\\[`` are literal brackets
  (the backslash is removed), and brackets nest: ``$[env:A;default=[x]]`` ends at the last ``]``.
  Escapes are removed even where the placeholder later turns out to be unterminated.
* The key is split at the first ``:`` (source) and the first ``;`` after it (directives). The
  directive text and then the name are interpolated *before* the lookup; the looked-up value is
  interpolated *again* before it is inserted (so a variable holding ``$[env:X]`` expands X).
* A lookup without a value leaves the placeholder as it is and the scan goes on from two characters
  after the previous scan position (not after the placeholder): Felix's ``index + START.length()``.
* A typed (non-text) result replaces the whole value only when the placeholder *is* the whole value;
  otherwise its Java ``toString`` is inserted.

Felix recurses without bound; a value that refers to itself (``X=$[env:X]``) overflows the Java
stack there. Here nesting depth, the work done and the size of the result are bounded and exceeding
them raises :class:`PlaceholderError`, so nothing loops or hangs.

The lookups themselves (env, secret, prop, conf, default, type=) are not here: a *provider*
answers them (see :mod:`egressmail.config.sources`), which keeps this module pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from egressmail.config.conversion import ConversionFailure, Typed, java_to_string
from egressmail.config.errors import PlaceholderError

__all__ = [
    "MAX_NESTING_DEPTH",
    "MAX_VALUE_CHARS",
    "MAX_CHAR_WORK",
    "MAX_WORK",
    "Event",
    "Interpolator",
    "Lookup",
    "Provider",
    "parse_directives",
]

START = "$["
END = "]"
ESCAPE = "\\"

#: nested interpolations (name, directives, re-interpolated values) deeper than this are refused.
MAX_NESTING_DEPTH = 32
#: no interpolated text may grow beyond this many characters.
MAX_VALUE_CHARS = 1_048_576
#: an upper bound on the steps (scan positions visited, escapes removed, lookups) for one value.
MAX_WORK = 2_000_000
#: an upper bound on the characters copied or searched for one value (cheap work, done in C).
MAX_CHAR_WORK = 2_000_000_000

_BRACKET = re.compile(r"[\[\]]")

EventKind = Literal["found", "default", "unresolved", "warning"]


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened while a value was interpolated (for provenance and warnings).

    ``kind`` is ``found`` (a source gave a value: ``source``/``name``/``origin``), ``default``
    (``default=`` was used for ``source:name``), ``unresolved`` (``placeholder`` was left verbatim
    because of ``reason``) or ``warning`` (``code`` and ``reason``).
    """

    kind: EventKind
    source: str = ""
    name: str = ""
    origin: str = ""
    secret: bool = False
    placeholder: str = ""
    reason: str = ""
    code: str = ""


@dataclass(slots=True)
class Lookup:
    """A provider's answer: the value (``None`` = leave the placeholder) and what it used."""

    value: Typed | str | None
    events: list[Event] = field(default_factory=list)
    used_default: bool = False
    secret: bool = False
    reason: str = ""


Provider = Callable[[str, str, Mapping[str, str]], Lookup]
"""``(source, name, directives) -> Lookup``; may raise :class:`ConversionFailure`."""


def parse_directives(value: str) -> dict[str, str]:
    """Felix's ``parseDirectives``: ``k=v`` pairs split at ``;`` (``\\;`` keeps it; later keys win)."""
    directives: dict[str, str] = {}
    index = 0
    while index <= len(value):
        split = False
        if index == len(value):
            split = True
        elif value[index] == ";":
            if index > 0 and value[index - 1] == ESCAPE and (index == 1 or value[index - 2] != ESCAPE):
                value = value[: index - 1] + value[index:]
                index -= 1
            else:
                split = True
        if split:
            key, sep, val = value[:index].partition("=")
            directives[key] = val if sep else ""
            if index == len(value):
                break
            value = value[index + 1:]
            index = -1
        index += 1
    return directives


class Interpolator:
    """Replaces the placeholders of one value; collects :class:`Event` s on the way.

    Args:
        provider: answers each lookup.
        max_depth, max_work, max_chars: the bounds described in the module docstring.
    """

    def __init__(self, provider: Provider, *, max_depth: int = MAX_NESTING_DEPTH,
                 max_work: int = MAX_WORK, max_chars: int = MAX_VALUE_CHARS) -> None:
        self._provider = provider
        self._max_depth = max_depth
        self._max_work = max_work
        self._max_chars = max_chars
        self._work = 0
        self._char_work = 0
        self._modified = False
        self._frames: list[list[Event]] = [[]]

    @property
    def events(self) -> list[Event]:
        """Events kept so far (those under an unused ``default=`` are dropped)."""
        return self._frames[0]

    def replace(self, value: str) -> Typed | str:
        """Felix's ``Interpolator.replace`` for one text.

        Raises:
            PlaceholderError: a conversion Felix fails on, an empty delimiter for an array type, a
                typed array inside a larger text, or nesting/work/size beyond the bounds.
        """
        return self._replace(value, 0, False)

    # -- internals ----------------------------------------------------------------------------

    def _charge(self, amount: int, secret_ctx: bool = False) -> None:
        self._work += amount
        if self._work > self._max_work or self._char_work > MAX_CHAR_WORK:
            raise PlaceholderError(
                "interpolation does too much work (placeholders expanding into placeholders, or an "
                "enormous value)" + (" inside a value from a secret" if secret_ctx else ""),
                hint="simplify the value; Felix would take as long or run out of stack")

    def _emit(self, event: Event) -> None:
        self._frames[-1].append(event)

    def _text(self, value: Typed | str, secret_ctx: bool) -> str:
        if isinstance(value, str):
            return value
        try:
            return java_to_string(value)
        except ConversionFailure as exc:
            raise PlaceholderError(
                f"{exc}; put the typed placeholder alone in the value, or drop type=/delimiter=",
                hint="a typed array is only usable as the whole value of a property") from exc

    def _next_start(self, value: str, pos: int) -> tuple[str, int]:
        while True:
            start = value.find(START, max(pos, 0))
            self._char_work += (len(value) if start == -1 else start) - max(pos, 0)
            if start == -1:
                return value, -1
            if start > 0 and value[start - 1] == ESCAPE and (start == 1 or value[start - 2] != ESCAPE):
                # escaped: drop the backslash, keep "$[" as text, look further
                value = value[: start - 1] + value[start:]
                self._char_work += len(value)
                self._charge(1)
                self._modified = True
                pos = start + 1
                continue
            return value, start

    def _boundaries(self, value: str, pos: int) -> tuple[str, int, int]:
        """``getMarkerBoundaries``: (value with escapes removed, start, end); start -1 = none,
        end -1 = unterminated."""
        value, start = self._next_start(value, pos)
        if start == -1:
            return value, -1, -1
        index = start + len(START)
        end = -1
        count = 1
        while index < len(value) and count > 0:
            match = _BRACKET.search(value, index)
            if match is None:
                self._char_work += len(value) - index
                index = len(value)
                break
            self._char_work += match.start() - index
            self._charge(1)
            index = match.start()
            if value[index] == END:
                if value[index - 1] != ESCAPE or value[index - 2] == ESCAPE:
                    end = index
                    count -= 1
                else:
                    value = value[: index - 1] + value[index:]
                    self._char_work += len(value)
                    self._modified = True
                    index -= 1
            elif value[index - 1] != ESCAPE or value[index - 2] == ESCAPE:
                count += 1
            else:
                value = value[: index - 1] + value[index:]
                self._char_work += len(value)
                self._modified = True
                index -= 1
            index += 1
        if count > 0:
            return value, start, -1
        return value, start, end

    @staticmethod
    def _step_past(index: int, start: int, unchanged: bool) -> int:
        """Felix's ``index + START.length()`` after a placeholder it leaves as it is.

        Felix then scans again from two characters further on, finds the same placeholder and
        looks it up again, until the index passes it (quadratic on a long prefix). When the scan
        changed nothing (no escape removed), every one of those rounds has the same outcome, so
        they are skipped at once. Otherwise the rounds are played one by one, because a re-scan
        can then see different text (e.g. an escaped ``\\$[`` before it, now unescaped).
        """
        if not unchanged or index + len(START) > start:
            return index + len(START)
        rounds = (start - index) // len(START) + 1
        return index + rounds * len(START)

    def _replace(self, value: str, depth: int, secret_ctx: bool) -> Typed | str:
        if depth > self._max_depth:
            raise PlaceholderError(
                f"placeholders nest or expand more than {self._max_depth} levels deep "
                "(a value that refers to itself?)"
                + (" inside a value from a secret" if secret_ctx else ""),
                hint="check for a variable whose value contains a placeholder naming itself")
        result = value
        index = -1
        while index < len(result):
            self._charge(1, secret_ctx)
            self._modified = False
            result, b0, b1 = self._boundaries(result, index)
            unchanged = not self._modified
            self._charge(0, secret_ctx)
            if b0 == -1:
                index = len(result)
                continue
            if b1 == -1:
                self._emit(Event("unresolved", placeholder=result[b0:],
                                 reason="unterminated placeholder: no closing ']'"))
                index = len(result)
                continue
            placeholder = result[b0: b1 + 1]
            key = result[b0 + len(START): b1]
            sep = key.find(":")
            if sep == -1:
                self._emit(Event("unresolved", placeholder=placeholder,
                                 reason="no ':' between source and name"))
                index = self._step_past(index, b0, unchanged)
                continue
            source = key[:sep]
            postfix = key[sep + 1:]
            dir_pos = postfix.find(";")
            directive_events: list[Event] = []
            if dir_pos != -1:
                self._frames.append([])
                try:
                    directive_text = self._text(
                        self._replace(postfix[dir_pos + 1:], depth + 1, secret_ctx), secret_ctx)
                finally:
                    directive_events = self._frames.pop()
                directives = parse_directives(directive_text)
                name = postfix[:dir_pos]
            else:
                directives = {}
                name = postfix
            new_name = self._text(self._replace(name, depth + 1, secret_ctx), secret_ctx)
            self._char_work += len(new_name) + len(directives)
            self._charge(16, secret_ctx)
            try:
                lookup = self._provider(source, new_name, directives)
            except ConversionFailure as exc:
                shown = "a placeholder inside a secret's value" if secret_ctx else placeholder
                raise PlaceholderError(f"{shown}: {exc}") from exc
            if lookup.used_default or lookup.value is None:
                # directives only matter through the default they gave (or the reason they failed)
                for event in directive_events:
                    if lookup.used_default or event.kind in ("unresolved", "warning"):
                        self._emit(event)
            for event in lookup.events:
                self._emit(event)
            if lookup.value is None:
                self._emit(Event("unresolved", source=source, name=new_name, placeholder=placeholder,
                                 reason=lookup.reason or "no value"))
                index = self._step_past(index, b0, unchanged)
                continue
            replacement = lookup.value
            if isinstance(replacement, Typed) and b0 == 0 and b1 == len(result) - 1:
                return replacement
            expanded = self._replace(self._text(replacement, secret_ctx or lookup.secret), depth + 1,
                                     secret_ctx or lookup.secret)
            val = self._text(expanded, secret_ctx or lookup.secret)
            result = result[:b0] + val + result[b1 + 1:]
            self._char_work += len(result)
            if len(result) > self._max_chars:
                raise PlaceholderError(
                    f"the interpolated value grows beyond {self._max_chars} characters",
                    hint="a placeholder probably expands into copies of itself")
            index = b0 + len(val)
        return result
