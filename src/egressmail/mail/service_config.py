"""Reading the mail service's configuration the way the service runs it.

Configuration (run-mode folder, placeholders filled from the environment store, the process
environment and secrets directories) → parsed :class:`~egressmail.mail.settings.MailSettings`, the
environment's egress map, and the lint's findings. ``MailService``, ``egressmail doctor`` and
``egressmail demo`` all read it through :func:`load_service_config`, so they agree on what would run.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from egressmail.config import ResolvedConfiguration, Sources, load_configurations, resolve_configuration
from egressmail.config.errors import ConfigFileError
from egressmail.mail.lint import Finding, lint
from egressmail.mail.settings import (
    MAIL_PID,
    OAUTH_PID,
    MailSettings,
    parse_mail_settings,
    parse_oauth_settings,
)
from egressmail.networking.model import EgressMap
from egressmail.storage.sqlite import Database

__all__ = ["ServiceConfig", "load_service_config"]


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """What the mail service of one environment would run with.

    Attributes:
        settings: the parsed settings (the password is a :class:`~egressmail.mail.settings.Secret`).
        egress_map: the environment's egress map (``None`` when no program/environment was given).
        resolved: the interpolated properties with their provenance (``display_value()`` masks secrets).
        findings: the lint's findings against the egress map.
        path: the ``.cfg.json`` file that was used.
    """

    settings: MailSettings
    egress_map: EgressMap | None
    resolved: ResolvedConfiguration
    findings: tuple[Finding, ...]
    path: Path

    @property
    def errors(self) -> tuple[Finding, ...]:
        """The findings that stop the service."""
        return tuple(f for f in self.findings if f.severity == "error")


def load_service_config(config_path: Path | str, *, db: Database | None = None, program: str | None = None,
                        environment: str | None = None, run_modes: str | None = None,
                        service: str | None = None, environ: Mapping[str, str] | None = None,
                        environ_label: str | None = None, secret_dirs: Iterable[Path] = ()) -> ServiceConfig:
    """Read the mail service's configuration the way the service would, and lint it.

    Args:
        config_path: a ``.cfg.json`` file or a config root (``.../osgiconfig``).
        db: the store holding the environment's variables, secrets and networking.
        program / environment: which environment's values and egress map to use (both or neither).
        run_modes: active run modes (default: ``service``'s, else none).
        service: ``author``, ``publish`` or ``preview`` (scoped variables; default run mode).
        environ: what ``$[env:X]`` falls back to after the store (default: the process environment).
        environ_label: how provenance names ``environ`` (default: "process environment").
        secret_dirs: folders of secret files for ``$[secret:X]``.

    Raises:
        ConfigError: the file or folder is missing or malformed, or holds no mail service configuration.
        MailConfigError: a property has the wrong type (e.g. ``smtp.port`` not a number).
        StoreError: the environment does not exist or its secrets cannot be read.
    """
    if (program is None) != (environment is None):
        raise ValueError("program and environment go together")
    if run_modes is None and service is not None:
        run_modes = "publish" if service == "preview" else service
    fallback = dict(os.environ) if environ is None else dict(environ)
    if program is not None and environment is not None:
        if db is None:
            raise ValueError("program/environment need the store (db)")
        from egressmail.environments.sources import store_sources

        sources = store_sources(db, program, environment, service, env_fallback=fallback,
                                secret_dirs=secret_dirs)
    else:
        sources = Sources(env_fallback=fallback, secret_dirs=list(secret_dirs))
    if environ_label is not None:
        sources = dataclasses.replace(sources, labels={**sources.labels, "env_fallback": environ_label})
    files = load_configurations(config_path, run_modes)
    mail = files.get(MAIL_PID)
    if mail is None:
        modes = f" for run modes {run_modes}" if run_modes else ""
        raise ConfigFileError(f"no {MAIL_PID} configuration here{modes}", file=Path(config_path),
                              hint=f"the folder needs config/{MAIL_PID}.cfg.json (or a config.<runmode> "
                                   "variant), or pass the file itself")
    resolved = resolve_configuration(mail.properties, sources, types=mail.types, pid=MAIL_PID, path=mail.path)
    source = str(mail.path)
    secret_props = [name for name, prop in resolved.properties.items() if prop.is_secret]
    unresolved = {name: prop.unresolved for name, prop in resolved.properties.items() if prop.unresolved}
    oauth = None
    oauth_file = files.get(OAUTH_PID)
    if oauth_file is not None:
        oauth_resolved = resolve_configuration(oauth_file.properties, sources, types=oauth_file.types,
                                               pid=OAUTH_PID, path=oauth_file.path)
        oauth = parse_oauth_settings(
            oauth_resolved.values(), source=str(oauth_file.path),
            secret_properties=[n for n, p in oauth_resolved.properties.items() if p.is_secret],
            unresolved={n: p.unresolved for n, p in oauth_resolved.properties.items() if p.unresolved})
    settings = parse_mail_settings(resolved.values(), source=source, secret_properties=secret_props,
                                   unresolved=unresolved, oauth=oauth)
    egress_map = None
    if program is not None and environment is not None and db is not None:
        from egressmail.networking.store import load_egress_map

        egress_map = load_egress_map(db, program, environment)
    findings = tuple(lint(settings, egress_map))
    return ServiceConfig(settings=settings, egress_map=egress_map, resolved=resolved, findings=findings,
                         path=Path(mail.path))
