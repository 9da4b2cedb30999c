"""The environment store as a source of placeholder values (the glue between store and config).

`config` is pure: it resolves placeholders from a :class:`~egressmail.config.Sources` it is given.
This module fills one from an environment: ``$[env:X]`` reads the environment's string variables
(service-scoped over all-service), then, as on the platform where a secret is also an OSGi
variable, its secrets (flagged so every output masks the value and suggests ``$[secret:X]``), then
the process environment; ``$[secret:X]`` reads its secrets, then any secrets directories.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from egressmail.config import Sources
from egressmail.environments.store import placeholder_values
from egressmail.storage.ids import normalize_environment_id, normalize_program_id
from egressmail.storage.sqlite import Database


def store_sources(db: Database, program: str, environment: str, service: str | None = None, *,
                  env_fallback: Mapping[str, str], secret_dirs: Iterable[Path] = ()) -> Sources:
    """Placeholder sources for one environment (and service) of the store.

    Raises:
        NotFoundError: the program or environment does not exist.
        MasterKeyError, SecretDecryptionError: a secret cannot be decrypted.
    """
    values = placeholder_values(db, program, environment, service)
    where = f"{normalize_program_id(program)}/{normalize_environment_id(environment)}"
    if service:
        where += f" {service}"
    return Sources(
        env=dict(values.variables),
        secrets=dict(values.secrets),
        secret_env=dict(values.secrets),
        secret_dirs=list(secret_dirs),
        env_fallback=env_fallback,
        labels={"env": f"environment {where} variable", "secrets": f"environment {where} secret",
                "secret_env": f"environment {where} secret"},
    )
