"""`egressmail env`: Programs, environments, variables and secrets.

Parsing and printing only: every command calls one method of
:class:`egressmail.environments.EnvironmentStore`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import click
import yaml
from rich import box
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from egressmail.cli.context import AppContext, pass_app
from egressmail.cli.output import stdout, warn
from egressmail.environments import (
    BatchResult,
    EnvironmentStore,
    Variable,
    VariableType,
    VariableUpdate,
    key_provider_for,
)
from egressmail.environments.model import parse_service
from egressmail.errors import EgressMailError

OutputFormat = Literal["table", "json", "yaml"]


def print_variables(variables: Sequence[Variable], fmt: OutputFormat) -> None:
    """Print a listing: a table ``Name Type Value Service Status``, or JSON/YAML with those keys.

    A secret's value is always ``****``: :class:`Variable` does not even hold it.
    """
    rows = [v.as_api_dict() for v in variables]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if fmt == "yaml":
        click.echo(yaml.safe_dump(rows, sort_keys=False, allow_unicode=True), nl=False)
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("Name", "Type", "Value", "Service", "Status"):
        table.add_column(column, overflow="fold")
    for row in rows:
        # Text, not markup: a value like "[red]" is data, and must print as it is.
        table.add_row(*(Text(row[k] or "") for k in ("name", "type", "value", "service", "status")))
    if rows:
        stdout.print(table)
    else:
        stdout.print("No variables.", markup=False)


def report_batch(result: BatchResult, *, cloudmanager: bool = False) -> None:
    """Warnings for what an update did not do (names only, on stderr)."""
    for name in result.not_found:
        warn(f"Variable {name} not found. Will not try to delete." if cloudmanager
             else f"variable {name} does not exist: nothing to delete")
    for name in result.skipped_reserved:
        warn(f"[CloudManagerCLI:INTERNAL_VARIABLE_USAGE] The variable name {name} is reserved for "
             "internal usage and was not set (use --strict to make this an error).")


def _store(app: AppContext) -> EnvironmentStore:
    return EnvironmentStore(app.database(), key_provider_for(app.home))


_SERVICE_OPTION = click.option(
    "--service", "service", metavar="SERVICE", default=None,
    help="Scope to one service: author, publish or preview [default: all services].")


@click.group()
def env() -> None:
    """Programs, environments, variables and secrets.

    Variables feed `$[env:NAME]` placeholders and secrets `$[secret:NAME]`. Secrets are encrypted
    at rest (AES-256-GCM, key in `master.key` in the home folder or $EGRESSMAIL_MASTER_KEY) and are
    never shown again: listings show `****`.

    \b
    Examples:
      egressmail env set 1001 2002 -v SMTP_PORT 30002 -s EMAIL_PASSWORD 'p4ss'
      egressmail env list 1001 2002
      egressmail env diff 1001 2002 2003
      egressmail env export 1001 2002 > dev.json && egressmail env import 1001 2003 dev.json
      egressmail env rotate-key

    The Cloud Manager spelling works too: `egressmail cloudmanager:set-environment-variables --help`.
    """


@env.command("set")
@click.argument("program")
@click.argument("environment")
@click.option("-v", "--variable", "variables", nargs=2, multiple=True, metavar="NAME VALUE",
              help="Set a string variable (repeatable).")
@click.option("-s", "--secret", "secrets", nargs=2, multiple=True, metavar="NAME VALUE",
              help="Set a secret (repeatable). Its value is encrypted and never shown again.")
@_SERVICE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the listing as JSON.")
@pass_app
def set_(app: AppContext, program: str, environment: str, variables: tuple[tuple[str, str], ...],
         secrets: tuple[tuple[str, str], ...], service: str | None, as_json: bool) -> None:
    """Set variables and secrets of an environment in one transaction.

    Values are taken literally (no JSON parsing). The program and environment are created on
    first write. To remove a variable use `env delete`.

    \b
    Examples:
      egressmail env set 1001 2002 -v SMTP_HOST smtp.example.com -v SMTP_PORT 30002
      egressmail env set 1001 2002 -s EMAIL_PASSWORD "$PASSWORD" --service publish
    """
    if not variables and not secrets:
        raise click.UsageError("nothing to set: give -v NAME VALUE and/or -s NAME VALUE")
    svc = parse_service(service)
    updates = [VariableUpdate(n, VariableType.STRING, v, svc) for n, v in variables]
    updates += [VariableUpdate(n, VariableType.SECRET, v, svc) for n, v in secrets]
    store = _store(app)
    result = store.apply(program, environment, updates)
    report_batch(result)
    print_variables(store.list(program, environment), "json" if as_json else "table")


@env.command("list")
@click.argument("program")
@click.argument("environment")
@click.option("--json", "as_json", is_flag=True,
              help="Print an array of {name, type, value, service, status}.")
@pass_app
def list_(app: AppContext, program: str, environment: str, as_json: bool) -> None:
    """List an environment's variables; secrets show `****`.

    \b
    Example:
      egressmail env list 1001 2002 --json
    """
    print_variables(_store(app).list(program, environment), "json" if as_json else "table")


@env.command("delete")
@click.argument("program")
@click.argument("environment")
@click.argument("names", nargs=-1, required=True)
@_SERVICE_OPTION
@pass_app
def delete(app: AppContext, program: str, environment: str, names: tuple[str, ...],
           service: str | None) -> None:
    """Delete variables or secrets by name (a name that does not exist only warns).

    \b
    Example:
      egressmail env delete 1001 2002 OLD_TOKEN LEGACY_HOST
    """
    store = _store(app)
    result = store.delete(program, environment, names, parse_service(service))
    report_batch(result)
    if result.deleted:
        stdout.print(f"deleted: {', '.join(result.deleted)}", markup=False)


_DIFF_LABELS = {
    "only_a": "only in {a}",
    "only_b": "only in {b}",
    "same": "same",
    "differs": "value differs",
    "type_differs": "type differs",
    "secret": "secret in both (not compared)",
}


@env.command("diff")
@click.argument("program")
@click.argument("environment_a")
@click.argument("environment_b")
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
@pass_app
def diff(app: AppContext, program: str, environment_a: str, environment_b: str, as_json: bool) -> None:
    """Compare two environments: which names exist where, which non-secret values differ.

    Values are never printed, and secret values are never compared. Exits 0 whether or not they
    differ.

    \b
    Example:
      egressmail env diff 1001 2002 2003
    """
    result = _store(app).diff(program, environment_a, environment_b)
    a, b = result.environment_a, result.environment_b
    if as_json:
        click.echo(json.dumps([{"name": e.name, "service": e.service.value if e.service else None,
                                "typeA": e.type_a.value if e.type_a else None,
                                "typeB": e.type_b.value if e.type_b else None, "state": e.state}
                               for e in result.entries], indent=2))
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("Name", "Service", f"Type in {a}", f"Type in {b}", "Difference"):
        table.add_column(column)
    for e in result.entries:
        table.add_row(e.name, e.service.value if e.service else "",
                      e.type_a.value if e.type_a else "-", e.type_b.value if e.type_b else "-",
                      Text(_DIFF_LABELS[e.state].format(a=a, b=b)))
    stdout.print(table)
    if not result.has_differences:
        stdout.print(f"{a} and {b} have the same names and string values.", markup=False)


@env.command("export")
@click.argument("program")
@click.argument("environment")
@pass_app
def export(app: AppContext, program: str, environment: str) -> None:
    """Print the environment as the API's JSON array; secrets as names without a value.

    \b
    Example:
      egressmail env export 1001 2002 > 2002.json
    """
    click.echo(json.dumps(_store(app).export(program, environment), indent=2))


@env.command("import")
@click.argument("program")
@click.argument("environment")
@click.argument("file", metavar="FILE|-")
@pass_app
def import_(app: AppContext, program: str, environment: str, file: str) -> None:
    """Apply a JSON array of {name, value, type?, service?} (as `env export` writes) in one transaction.

    An empty value deletes; an item without a value (an exported secret) is left alone.

    \b
    Examples:
      egressmail env import 1001 2003 2002.json
      egressmail env export 1001 2002 | egressmail env import 1001 2003 -
    """
    if file == "-":
        text, where = sys.stdin.buffer.read(), "standard input"
    else:
        try:
            text, where = Path(file).read_bytes(), file
        except OSError as exc:
            raise EgressMailError(f"cannot read {file}: {exc.strerror}",
                                  hint="check the path and that the file is readable") from None
    result = _store(app).import_items(program, environment, text, source=where)
    for name in result.without_value:
        warn(f"{name} has no value in {escape(where)}: left as it is (secrets are exported without values; "
             f"set it with `egressmail env set {program} {environment} -s {name} VALUE`)")
    report_batch(result.batch)
    stdout.print(f"imported into {program}/{environment}: {len(result.batch.set)} set, "
                 f"{len(result.batch.deleted)} deleted", markup=False)


@env.command("rotate-key")
@pass_app
def rotate_key(app: AppContext) -> None:
    """Re-encrypt every secret under a new master key, then retire the old one.

    Safe to interrupt: the new key is stored before any secret is re-encrypted, the old one is
    kept until none uses it, and running the command again completes the rotation.

    \b
    Example:
      egressmail env rotate-key
    """
    result = _store(app).rotate_key()
    stdout.print(f"master key rotated: new key {result.new_key_id}, {result.resealed} secret(s) "
                 f"re-encrypted, {len(result.retired_key_ids)} old key(s) retired", markup=False)
