"""Entry point of the ``egressmail`` command."""

from __future__ import annotations

import errno
import importlib
import os
import sys
import traceback
from pathlib import Path

import click

from egressmail.__about__ import __version__
from egressmail.cli import commands
from egressmail.cli.context import AppContext
from egressmail.cli.output import stderr
from egressmail.errors import EgressMailError

DEBUG_ENV_VAR = "EGRESSMAIL_DEBUG"
DEBUG_META_KEY = "egressmail.debug"


class EgressMailGroup(click.Group):
    """The top-level group: commands imported on first use; the package's errors become one clear
    line (and a hint) plus the error's exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        # The four cloudmanager:* names stay out of the listing (their long names would squeeze
        # every summary); the group's help text names them and `NAME --help` documents each.
        return list(commands.COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in commands.COMMANDS:
            module_name, attr = commands.COMMANDS[cmd_name].split(":")
            command = getattr(importlib.import_module(module_name), attr)
            if not isinstance(command, click.Command):
                raise TypeError(f"{commands.COMMANDS[cmd_name]} is not a click command")
            return command
        if cmd_name in commands.CLOUDMANAGER_COMMANDS:
            module = importlib.import_module(commands.CLOUDMANAGER_MODULE)
            return next((c for c in module.commands() if c.name == cmd_name), None)
        return None

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except EgressMailError as exc:
            stderr.print(f"error: {exc.message}", markup=False)
            if exc.hint:
                stderr.print(f"hint: {exc.hint}", markup=False)
            ctx.exit(exc.exit_code)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
                raise  # click's main() ends quietly when the reader of our output goes away
            if ctx.meta.get(DEBUG_META_KEY) or os.environ.get(DEBUG_ENV_VAR, "") not in ("", "0"):
                raise
            stderr.print(f"error: {describe_unexpected(exc)}", markup=False)
            stderr.print(f"hint: run again with --debug (or {DEBUG_ENV_VAR}=1) to see the traceback, "
                         "and report it if the cause is not yours to fix", markup=False)
            ctx.exit(1)


def _sqlite_error() -> type[Exception]:
    # Imported here: sqlite3 is loaded only by the commands that use a database.
    import sqlite3

    return sqlite3.Error


def describe_unexpected(exc: BaseException) -> str:
    """One line naming an exception we did not raise on purpose: its type, the file it concerns and
    where in egressmail it happened.

    The exception's own text is not used except for OS and SQLite errors, whose messages come from
    the operating system or the SQLite engine: others (``UnicodeEncodeError``, ``ValueError``, ...)
    may quote the value being processed, which may be a secret.
    """
    kind = type(exc).__name__
    if type(exc).__module__ not in ("builtins", "__main__"):
        kind = f"{type(exc).__module__}.{kind}"
    detail = ""
    if isinstance(exc, OSError):
        detail = f": {exc.strerror or 'OS error'}"
        if exc.filename is not None:
            detail += f": {os.fsdecode(exc.filename)}"
    elif isinstance(exc, _sqlite_error()):
        detail = f" ({exc.sqlite_errorname}): {exc}" if hasattr(exc, "sqlite_errorname") else ""
    location = ""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        parts = Path(frame.filename).parts
        if "egressmail" in parts:
            inner = "/".join(parts[len(parts) - 1 - parts[::-1].index("egressmail"):])
            location = f" (in {inner}:{frame.lineno})"
            break
    return f"unexpected {kind}{detail}{location}"


@click.group(cls=EgressMailGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="egressmail")
@click.option("--home", "home", metavar="DIR", envvar="EGRESSMAIL_HOME", default=None,
              help="Folder holding the store and master key "
                   "[default: $EGRESSMAIL_HOME, else the user's data folder].")
@click.option("--debug", is_flag=True, default=False,
              help=f"Show the Python traceback of an unexpected error (also ${DEBUG_ENV_VAR}=1).")
@click.pass_context
def cli(ctx: click.Context, home: str | None, debug: bool) -> None:
    """egressmail: send email from locked-down networks.

    Every part has its own group; `egressmail GROUP --help` teaches it.

    \b
    The Cloud Manager CLI's commands work verbatim too (`NAME --help` for each):
      cloudmanager:set-environment-variables  (alias cloudmanager:environment:set-variables)
      cloudmanager:list-environment-variables (alias cloudmanager:environment:list-variables)
    e.g. egressmail cloudmanager:set-environment-variables --programId=1001 2002 --secret NAME VALUE
    """
    ctx.meta[DEBUG_META_KEY] = debug
    ctx.obj = AppContext(home_option=home)


def main() -> None:
    """Run the command line (console-script entry point)."""
    cli(prog_name="egressmail")
    sys.exit(0)  # pragma: no cover - click exits itself
