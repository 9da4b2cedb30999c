"""Errors of the config part: files that cannot be read, placeholders that cannot be resolved.

All derive from :class:`egressmail.errors.ConfigError` (exit code 2 in the CLI). A message names the
file, the line and column or the property, and never a secret value.
"""

from __future__ import annotations

from pathlib import Path

from egressmail.errors import ConfigError

__all__ = ["ConfigError", "ConfigFileError", "PlaceholderError", "RunModeError"]


class ConfigFileError(ConfigError):
    """A ``.cfg.json`` file that cannot be used (syntax, shape, size, duplicate keys, bad type).

    Attributes:
        file: the file, when known.
        line: 1-based line of the problem, when known.
        column: 1-based column of the problem, when known.
        property: the property concerned, when there is one.
    """

    def __init__(self, message: str, *, file: Path | str | None = None, line: int | None = None,
                 column: int | None = None, property: str | None = None,
                 hint: str | None = None) -> None:
        where = []
        if file is not None:
            where.append(str(file) + (f":{line}:{column}" if line is not None and column is not None else ""))
        if property is not None:
            where.append(f"property {property!r}")
        full = f"{', '.join(where)}: {message}" if where else message
        super().__init__(full, hint=hint)
        self.file = Path(file) if file is not None else None
        self.line = line
        self.column = column
        self.property = property


class PlaceholderError(ConfigError):
    """A ``$[...]`` placeholder that Felix would fail on (or never finish) and egressmail refuses.

    Attributes:
        property: the property whose value holds the placeholder, when known.
        file: the file of that property, when known.
    """

    def __init__(self, message: str, *, property: str | None = None,
                 file: Path | str | None = None, hint: str | None = None) -> None:
        where = []
        if file is not None:
            where.append(str(file))
        if property is not None:
            where.append(f"property {property!r}")
        full = f"{', '.join(where)}: {message}" if where else message
        super().__init__(full, hint=hint)
        self.property = property
        self.file = Path(file) if file is not None else None
        self.reason = message


class RunModeError(ConfigError):
    """Run-mode folders that do not give one answer (``config.preview``, two equally specific files)."""
