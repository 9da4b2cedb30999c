"""`egressmail config`: read .cfg.json configuration and explain where each value comes from.

Parsing and printing only; the work is :func:`egressmail.config.load_configurations` and
:func:`egressmail.config.resolve_configuration`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from egressmail.cli.context import AppContext, pass_app
from egressmail.cli.output import stderr, stdout
from egressmail.config import (
    ConfigError,
    ResolvedConfiguration,
    Sources,
    load_configurations,
    resolve_configuration,
)
from egressmail.config.explain import explain_document, property_rows


@click.group()
def config() -> None:
    """Read .cfg.json configuration and explain where each value comes from.

    \b
    Example:
      egressmail config explain ui.config/src/jcr_root/apps/wknd-examples/osgiconfig \\
          --run-modes author,dev --secrets-dir ./secrets
    """


def _split_dirs(values: tuple[str, ...]) -> list[Path]:
    return [Path(part.strip()) for value in values for part in value.split(",") if part.strip()]


def _store_sources(app: AppContext, program: str, environment: str, service: str | None,
                   secret_dirs: list[Path], env_fallback: Mapping[str, str]) -> Sources:
    from egressmail.environments.sources import store_sources

    return store_sources(app.database(), program, environment, service, env_fallback=env_fallback,
                         secret_dirs=secret_dirs)


def _print_table(config: ResolvedConfiguration, reveal: bool) -> None:
    title = f"{config.pid}" + (f"  ({config.path})" if config.path else "")
    table = Table(title=Text(title), title_justify="left", show_lines=False)
    for column in ("property", "value", "type", "source"):
        table.add_column(column, overflow="fold")
    for row in property_rows(config, reveal=reveal):
        table.add_row(*(Text(cell) for cell in row))  # Text: values are not rich markup
    stdout.print(table)


@config.command("explain")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--run-modes", "run_modes", metavar="MODES", default=None,
              help="Active run modes, comma-separated (e.g. author,dev). Only for a config root.")
@click.option("--secrets-dir", "secrets_dirs", metavar="DIR", multiple=True,
              help="Directory of secret files for $[secret:NAME] (repeatable or comma-separated).")
@click.option("--program", metavar="P", default=None, help="Take variables and secrets from this program…")
@click.option("--environment", metavar="E", default=None, help="…and this environment of the store.")
@click.option("--service", type=click.Choice(["author", "publish", "preview"]), default=None,
              help="Service whose scoped variables apply (also the default run mode).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (stable shape).")
@click.option("--strict", is_flag=True, help="Exit 2 when a placeholder is left unresolved or a "
                                              "type= is unknown.")
@click.option("--reveal", is_flag=True, help="Show values that came from secrets instead of ****.")
@pass_app
def explain(app: AppContext, path: Path, run_modes: str | None, secrets_dirs: tuple[str, ...],
            program: str | None, environment: str | None, service: str | None, as_json: bool,
            strict: bool, reveal: bool) -> None:
    """Show every property's final value, its type and where it came from.

    PATH is one .cfg.json file (used as it is) or a config root such as `.../osgiconfig`, whose
    `config`, `config.<mode>` and `config.<mode1>.<mode2>` folders are chosen by --run-modes: for
    each PID the folder with the most modes, all active, wins.

    $[env:X] reads the process environment (and, with --program/--environment, first the
    environment's variables); $[secret:X] reads the store's secrets and the --secrets-dir files.
    Values that came from a secret are shown as **** unless --reveal. Placeholders Felix would
    leave as they are are listed as warnings; --strict makes them an error (exit 2).

    \b
    Examples:
      egressmail config explain osgiconfig --run-modes author,dev --secrets-dir /mnt/secrets
      AEM_PROXY_HOST=127.0.0.1 egressmail config explain path/to/X.cfg.json --json
      egressmail config explain osgiconfig --program 1001 --environment 2002 --service publish --strict
    """
    if (program is None) != (environment is None):
        raise click.UsageError("--program and --environment go together")
    if service is not None and program is None:
        raise click.UsageError("--service needs --program and --environment")
    if run_modes is None and service is not None:
        run_modes = "publish" if service == "preview" else service  # preview takes the publish values
    dirs = _split_dirs(secrets_dirs)
    for directory in dirs:
        if not directory.is_dir():
            raise ConfigError(f"secrets directory {directory} does not exist or is not a directory",
                              hint="pass the folder that holds one file per secret")
    fallback = dict(os.environ)
    if program is not None and environment is not None:
        sources = _store_sources(app, program, environment, service, dirs, fallback)
    else:
        sources = Sources(secret_dirs=dirs, env_fallback=fallback)
    files = load_configurations(path, run_modes)
    resolved = [resolve_configuration(f.properties, sources, types=f.types, pid=pid, path=f.path)
                for pid, f in files.items()]
    blocking = any(c.has_blocking_warnings for c in resolved)
    if as_json:
        document = explain_document(resolved, reveal=reveal, strict=strict)
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        for config in resolved:
            _print_table(config, reveal)
        for config in resolved:
            for warning in config.warnings:
                label = "error" if strict and warning.blocking else "warning"
                stderr.print(f"{label}: {config.pid}: {warning.property}: {warning.message}", markup=False)
    if strict and blocking:
        count = sum(1 for c in resolved for w in c.warnings if w.blocking)
        raise ConfigError(f"{count} placeholder problem(s) under --strict",
                          hint="set the missing variables or secrets, or give the placeholders a default=")
