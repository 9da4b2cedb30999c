"""Program and environment identities.

Cloud Manager's ids are numbers, and its CLI accepts an environment id with an ``e`` prefix
(``e1234`` is ``1234``). egressmail also accepts plain names (``acme``, ``dev``) so that it is useful
outside Adobe's numbering; the ``e`` prefix is stripped only when digits follow it.
"""

from __future__ import annotations

import re

from egressmail.errors import ValidationError

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_E_PREFIXED = re.compile(r"[eE]([0-9]+)")


def normalize_program_id(program: str | int) -> str:
    """Return the canonical text of a program id.

    Raises:
        ValidationError: the id is empty or has characters other than letters, digits, ``_.-``.
    """
    text = str(program).strip()
    if not _ID_RE.fullmatch(text):
        raise ValidationError(
            f"invalid program id {text!r}: use 1 to 64 letters, digits, '_', '.' or '-' "
            "(Cloud Manager program ids are numbers, e.g. 1001)"
        )
    return text


def normalize_environment_id(environment: str | int) -> str:
    """Return the canonical text of an environment id (``e2002`` and ``2002`` are the same).

    Raises:
        ValidationError: the id is empty or has characters other than letters, digits, ``_.-``.
    """
    text = str(environment).strip()
    if m := _E_PREFIXED.fullmatch(text):
        text = m.group(1)
    if not _ID_RE.fullmatch(text):
        raise ValidationError(
            f"invalid environment id {text!r}: use 1 to 64 letters, digits, '_', '.' or '-' "
            "(Cloud Manager environment ids are numbers, e.g. 2002 or e2002)"
        )
    return text
