"""Where placeholder values come from: environment, secrets (store and directories), properties.

The lookups follow Felix's ``InterpolationConfigurationPlugin``:

* ``env:`` an environment variable. egressmail looks in :attr:`Sources.env` (the environment's
  variables), then :attr:`Sources.secret_env` (a *secret* of the store asked for with ``env:``: it
  resolves, the value counts as secret, and a hint says to write ``$[secret:X]``), then
  :attr:`Sources.env_fallback` (the process environment).
* ``secret:`` a name with ``..`` is refused before anything is read. Then :attr:`Sources.secrets`
  (the store), then the files of :attr:`Sources.secret_dirs` with Felix's rules: the name is a path
  *inside* each directory (an absolute name is looked up inside it too, as ``java.io.File`` does);
  the first directory where the path exists decides, and it must be a regular file. The content is
  decoded as UTF-8 and trimmed with ``String.trim()`` (characters up to U+0020 only).
  One addition for safety: a file that is a symbolic link leaving every secrets directory is
  refused (Felix would read it).
* ``prop:`` :attr:`Sources.props` (framework, then system properties in Felix).
* ``conf:`` another property of the same configuration, as text.

Then ``default=`` when there is no value, then ``type=`` / ``delimiter=`` conversion.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from egressmail.config.conversion import KNOWN_TYPES, ConversionFailure, convert_text, java_trim
from egressmail.config.placeholders import Event, Lookup

__all__ = ["Sources", "SourceProvider", "read_secret_file"]

_EMPTY: Mapping[str, str] = MappingProxyType({})

#: how each source is named in provenance unless :attr:`Sources.labels` says otherwise
DEFAULT_LABELS: Mapping[str, str] = MappingProxyType({
    "env": "environment variables",
    "secret_env": "environment secrets",
    "env_fallback": "process environment",
    "secrets": "environment secrets",
    "secret_dirs": "secrets directory",
    "props": "properties",
    "conf": "this configuration",
})


@dataclass(frozen=True, repr=False)
class Sources:
    """Everything placeholders may draw on. ``repr`` shows names of sources, never values.

    Attributes:
        env: looked up first for ``$[env:X]``.
        secrets: looked up first for ``$[secret:X]``; values are secret (trimmed like a file).
        secret_dirs: then files in these directories (Felix's rules).
        props: ``$[prop:X]``.
        env_fallback: ``$[env:X]`` after ``env`` and ``secret_env`` (usually ``os.environ``).
        secret_env: ``$[env:X]`` where X is a secret of the store: resolves, marks the value secret
            and adds a hint to use ``$[secret:X]``.
        labels: how to name each source (keys as in :data:`DEFAULT_LABELS`) in provenance.
    """

    env: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)
    secret_dirs: Sequence[Path] = ()
    props: Mapping[str, str] = field(default_factory=dict)
    env_fallback: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"Sources(env={len(self.env)} names, secrets={len(self.secrets)} names, "
                f"secret_dirs={[str(d) for d in self.secret_dirs]!r}, props={len(self.props)} names, "
                f"env_fallback={len(self.env_fallback)} names, secret_env={len(self.secret_env)} names)")

    def label(self, source: str) -> str:
        """The display name of one source (``env``, ``secrets``, ``secret_dirs``, ...)."""
        return self.labels.get(source) or DEFAULT_LABELS.get(source, source)


def _java_file(directory: Path, name: str) -> Path:
    """``new File(directory, name)`` on Unix: the name is appended, even when it starts with '/'."""
    return Path(directory, *[part for part in name.split("/") if part])


def _inside(path: Path, directories: Sequence[Path]) -> bool:
    try:
        real = path.resolve()
        return any(real.is_relative_to(d.resolve()) for d in directories)
    except (OSError, RuntimeError):
        return False


def read_secret_file(directories: Sequence[Path], name: str) -> tuple[str | None, str]:
    """Read secret ``name`` from ``directories`` as Felix does: (trimmed text or None, reason).

    Never raises: every failure is a ``None`` with the reason Felix would log.
    """
    if not directories:
        return None, "no secrets directory is configured (--secrets-dir)"
    if ".." in name:
        return None, f"secret name {name!r} contains '..': going up is not allowed"
    if "\x00" in name:
        return None, "secret name contains a NUL character"
    try:
        existing = [p for p in (_java_file(d, name) for d in directories) if p.exists()]
        if not existing:
            where = ", ".join(str(d) for d in directories)
            return None, f"no file {name!r} in the secrets directory ({where})"
        if not any(p.is_file() for p in existing):
            return None, f"{name!r} is not a regular file in the secrets directory"
        first = existing[0]  # Felix reads the first existing path, even if a later one is the file
        if not _inside(first, directories):
            return None, f"{name!r} is a link that leaves the secrets directory"
        data = first.read_bytes()
    except (OSError, ValueError) as exc:
        return None, f"cannot read secret file {name!r}: {exc.__class__.__name__}"
    return java_trim(data.decode("utf-8", errors="replace")), ""


class SourceProvider:
    """The plugin's provider: one lookup per placeholder, with provenance events.

    Args:
        sources: where values come from.
        conf: the other properties of the configuration, as text (``$[conf:X]``).
    """

    def __init__(self, sources: Sources, conf: Mapping[str, str] | None = None) -> None:
        self._sources = sources
        self._conf = conf if conf is not None else _EMPTY
        self._secret_cache: dict[str, tuple[str | None, str]] = {}

    def __call__(self, source: str, name: str, directives: Mapping[str, str]) -> Lookup:
        """Look up ``source:name``, apply ``default=`` and ``type=``.

        Raises:
            ConversionFailure: the value does not convert (or an array type with an empty delimiter).
        """
        lookup = self._lookup(source, name)
        if lookup.value is None and "default" in directives:
            lookup.value = directives["default"]
            lookup.used_default = True
            lookup.secret = False
            lookup.events = [e for e in lookup.events if e.kind == "warning"]
            lookup.events.append(Event("default", source=source, name=name))
        if lookup.value is not None and "type" in directives:
            type_name = directives["type"]
            text = lookup.value
            assert isinstance(text, str)  # noqa: S101 - sources only give text
            if type_name not in KNOWN_TYPES:
                lookup.events.append(Event(
                    "warning", code="unknown-type", source=source, name=name,
                    reason=f"type={type_name!r} is not a type Felix knows; the text is left unconverted"))
                return lookup
            try:
                converted = convert_text(type_name, text, directives.get("delimiter"))
            except ConversionFailure as exc:
                shown = "the secret's value" if lookup.secret else repr(text)
                raise ConversionFailure(f"{shown} does not convert to {type_name}: {exc}") from exc
            if converted is None:
                lookup.events = [e for e in lookup.events if e.kind == "warning"]
                lookup.value = None
                lookup.reason = (f"an element of the value does not convert to {type_name}; Felix "
                                 "leaves the placeholder as it is")
                return lookup
            lookup.value = converted
        return lookup

    def _lookup(self, source: str, name: str) -> Lookup:
        s = self._sources
        if source == "env":
            if name in s.env:
                return Lookup(s.env[name], [Event("found", "env", name, s.label("env"))])
            if name in s.secret_env:
                return Lookup(s.secret_env[name], [
                    Event("found", "env", name, s.label("secret_env"), secret=True),
                    Event("warning", code="env-is-secret", name=name,
                          reason=f"{name} is a secret: write $[secret:{name}] (on the platform "
                                 f"$[env:{name}] does not see secrets)")], secret=True)
            if name in s.env_fallback:
                return Lookup(s.env_fallback[name], [Event("found", "env", name, s.label("env_fallback"))])
            return Lookup(None, reason=f"environment variable {name!r} is not set")
        if source == "secret":
            return self._lookup_secret(name)
        if source == "prop":
            if name in s.props:
                return Lookup(s.props[name], [Event("found", "prop", name, s.label("props"))])
            return Lookup(None, reason=f"property {name!r} is not set")
        if source == "conf":
            if name not in self._conf:
                # Felix: properties.get(name).getClass() -> NullPointerException
                raise ConversionFailure(
                    f"$[conf:{name}] names a property this configuration does not have "
                    "(Felix fails with a NullPointerException)")
            text = self._conf[name]
            if text.startswith("$[conf:"):
                # Felix's cycle guard: a reference to a $[conf: value yields the name
                return Lookup(name, [Event("found", "conf", name, "cycle guard: the name itself")])
            return Lookup(text, [Event("found", "conf", name, s.label("conf"))])
        return Lookup(None, reason=f"unknown source {source!r} (Felix knows env, secret, prop, conf)")

    def _lookup_secret(self, name: str) -> Lookup:
        s = self._sources
        if ".." in name:
            return Lookup(None, reason=f"secret name {name!r} contains '..': going up is not allowed")
        events: list[Event] = []
        if name.startswith("/"):
            events.append(Event("warning", code="absolute-secret-name", name=name,
                                reason=f"secret name {name!r} is absolute; Felix looks it up inside "
                                       "the secrets directory"))
        if name in s.secrets:
            raw = s.secrets[name]
            trimmed = java_trim(raw)
            if trimmed != raw:
                events.append(Event("warning", code="secret-whitespace", name=name,
                                    reason=f"secret {name} has leading or trailing whitespace; "
                                           "Felix trims it"))
            events.append(Event("found", "secret", name, s.label("secrets"), secret=True))
            return Lookup(trimmed, events, secret=True)
        if name not in self._secret_cache:
            self._secret_cache[name] = read_secret_file(list(s.secret_dirs), name)
        text, reason = self._secret_cache[name]
        if text is None:
            return Lookup(None, events, reason=reason)
        events.append(Event("found", "secret", name, s.label("secret_dirs"), secret=True))
        return Lookup(text, events, secret=True)


def process_environment() -> Mapping[str, str]:
    """The process environment (what ``$[env:]`` falls back to)."""
    return dict(os.environ)
