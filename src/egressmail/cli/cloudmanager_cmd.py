"""The Cloud Manager CLI's commands, verbatim: ``egressmail cloudmanager:set-environment-variables …``.

The argument words are handed, unparsed by click, to :mod:`egressmail.environments.cloudmanager_args`,
which follows oclif's rules (a multiple flag takes several pairs). This module only reads files and
standard input, calls the store and prints.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from egressmail.cli.context import AppContext
from egressmail.cli.env_cmd import OutputFormat, print_variables, report_batch
from egressmail.cli.output import stdout
from egressmail.environments import EnvironmentStore, key_provider_for
from egressmail.environments.cloudmanager_args import (
    LIST_FLAGS,
    SET_FLAGS,
    FlagSpec,
    ParsedArgs,
    merge_file_updates,
    parse_argv,
    updates_from_flags,
)
from egressmail.environments.errors import CloudManagerInputError
from egressmail.environments.items import load_array, updates_from_items
from egressmail.errors import EgressMailError

PROGRAM_ID_ENV_VAR = "AIO_CLOUDMANAGER_PROGRAMID"

SET_HELP = """Sets variables and secrets on an environment (Cloud Manager's command, verbatim).

These are runtime variables, read by `$[env:NAME]` and `$[secret:NAME]` placeholders. The update
is partial: only the named variables change, all in one transaction.

\b
Examples:
  egressmail cloudmanager:set-environment-variables --programId=1001 2002 \\
      --secret EMAIL_USERNAME "apikey" --secret EMAIL_PASSWORD "password123"
  egressmail cloudmanager:environment:set-variables e2002 -p 1001 -v SMTP_PORT 30002 LOG_LEVEL debug
  egressmail cloudmanager:set-environment-variables -p 1001 2002 --publishVariable CDN on -d OLD_NAME
  egressmail cloudmanager:set-environment-variables -p 1001 2002 --jsonFile vars.json --json

\b
Argument:
  ENVIRONMENTID   the environment id (an `e` prefix is allowed: e2002 = 2002)

\b
Flags (a flag marked … takes several words up to the next flag, and may be repeated):
  -p, --programId=ID            the program id [default: $AIO_CLOUDMANAGER_PROGRAMID]
  -v, --variable NAME VALUE …   set string variables
  -s, --secret NAME VALUE …     set secrets (secretString: encrypted, never shown again)
  -d, --delete NAME …           delete variables or secrets (a missing name only warns)
  --authorVariable, --authorSecret, --authorDelete     the same, for the author service only
  --publishVariable, --publishSecret, --publishDelete  the same, for the publish service only
  --previewVariable, --previewSecret, --previewDelete  the same, for the preview service only
  --jsonFile=PATH, --jsonStdin  read a JSON array of {name, value, type?, service?}; flags win
  --yamlFile=PATH, --yamlStdin  the same in YAML
  --strict                      a reserved prefix (INTERNAL_, ADOBE_, CONST_) is an error; without it
                                such a variable is left out with a warning
  -j, --json / -y, --yaml       output format of the listing printed after the update

\b
Values: a value that parses as JSON is taken as parsed ('"a b"' gives a b), except numbers, which
keep their text (every digit of 4566206088344615922). An empty value is refused
(BLANK_VARIABLE_VALUE): use --delete. An odd number of words is MALFORMED_NAME_VALUE_PAIR.
Exit codes: 1 general, 2 configuration, 3 validation.
"""

LIST_HELP = """Lists the variables of an environment (Cloud Manager's command, verbatim).

Secrets are listed by name with the value `****`.

\b
Examples:
  egressmail cloudmanager:list-environment-variables --programId=1001 2002
  egressmail cloudmanager:environment:list-variables e2002 -p 1001 --json

\b
Flags:
  -p, --programId=ID   the program id [default: $AIO_CLOUDMANAGER_PROGRAMID]
  -j, --json           output an array of {name, type, value, service, status}
  -y, --yaml           output YAML
"""


class RawArgvCommand(click.Command):
    """A click command that hands its words, untouched, to the callback (oclif parses differently)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["raw_argv"] = list(args)
        return []

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, "ENVIRONMENTID [FLAGS]")
        self.format_help_text(ctx, formatter)


def _context() -> tuple[click.Context, AppContext, list[str]]:
    ctx = click.get_current_context()
    app = ctx.find_object(AppContext) or AppContext()
    return ctx, app, list(ctx.meta.get("raw_argv", []))


def _store(app: AppContext) -> EnvironmentStore:
    return EnvironmentStore(app.database(), key_provider_for(app.home))


def _common(parsed: ParsedArgs, ctx: click.Context) -> tuple[str, str, OutputFormat] | None:
    """Program, environment and output format; ``None`` after printing help."""
    if parsed.has("help"):
        click.echo(ctx.get_help())
        return None
    if not parsed.positional:
        raise CloudManagerInputError("MISSING_ENVIRONMENT_ID", "Missing 1 required arg: environmentId",
                                     hint="give the environment id, e.g. 2002 or e2002")
    if len(parsed.positional) > 1:
        # The extra words are not repeated: a mis-placed secret value could be among them.
        raise CloudManagerInputError(
            "INVALID_ARGUMENTS", f"{len(parsed.positional) - 1} unexpected argument(s) after the "
            "environment id", hint="values belong after -v/-s NAME; quote values with spaces")
    program = parsed.single("programId") or os.environ.get(PROGRAM_ID_ENV_VAR)
    if not program:
        raise CloudManagerInputError(
            "MISSING_PROGRAM_ID", "Program ID must be specified either as --programId flag or through "
            f"the {PROGRAM_ID_ENV_VAR} environment variable.")
    fmt: OutputFormat = "json" if parsed.has("json") else "yaml" if parsed.has("yaml") else "table"
    return program, parsed.positional[0], fmt


def _read_source(parsed: ParsedArgs) -> tuple[str, str | bytes, str] | None:
    """(format, text, where) of the one file/stdin source asked for, if any."""
    sources = [n for n in ("jsonFile", "jsonStdin", "yamlFile", "yamlStdin")
               if n in parsed.words or parsed.has(n)]
    if len(sources) > 1:
        raise CloudManagerInputError("INVALID_ARGUMENTS",
                                     f"--{sources[0]} and --{sources[1]} cannot be used together",
                                     hint="read the variables from one file or from standard input")
    if not sources:
        return None
    source = sources[0]
    fmt = "json" if source.startswith("json") else "yaml"
    if source.endswith("Stdin"):
        return fmt, sys.stdin.buffer.read(), "standard input"
    path = parsed.single(source) or ""
    try:
        return fmt, Path(path).read_bytes(), path
    except OSError as exc:
        raise EgressMailError(f"cannot read --{source} {path}: {exc.strerror}",
                              hint="check the path and that the file is readable") from None


def _run_set(flags: Sequence[FlagSpec]) -> None:
    ctx, app, argv = _context()
    parsed = parse_argv(argv, flags)
    common = _common(parsed, ctx)
    if common is None:
        return
    program, environment, fmt = common
    updates = updates_from_flags(parsed, flags)
    source = _read_source(parsed)
    if source is not None:
        kind, text, where = source
        from_file = updates_from_items(load_array(text, kind, source=where), source=where)
        updates = merge_file_updates(updates, from_file.updates)
    store = _store(app)
    if updates:
        result = store.apply(program, environment, updates,
                             reserved="refuse" if parsed.has("strict") else "skip")
        report_batch(result, cloudmanager=True)
    else:
        stdout.print("No variables to set or delete.", markup=False)
    print_variables(store.list(program, environment), fmt)


def _run_list() -> None:
    ctx, app, argv = _context()
    parsed = parse_argv(argv, LIST_FLAGS)
    common = _common(parsed, ctx)
    if common is None:
        return
    program, environment, fmt = common
    print_variables(_store(app).list(program, environment), fmt)


def _make(name: str, help_text: str, run: Any) -> click.Command:
    return RawArgvCommand(name=name, help=help_text, callback=run, add_help_option=False,
                          short_help=help_text.splitlines()[0],
                          context_settings={"ignore_unknown_options": True, "allow_extra_args": True})


def commands() -> list[click.Command]:
    """The ``cloudmanager:*`` commands and their aliases."""
    return [
        _make("cloudmanager:environment:set-variables", SET_HELP, lambda: _run_set(SET_FLAGS)),
        _make("cloudmanager:set-environment-variables", SET_HELP, lambda: _run_set(SET_FLAGS)),
        _make("cloudmanager:environment:list-variables", LIST_HELP, _run_list),
        _make("cloudmanager:list-environment-variables", LIST_HELP, _run_list),
    ]
