"""Entry point of the ``egressmail`` command."""

from __future__ import annotations

import importlib
import sys

import click

from egressmail.__about__ import __version__
from egressmail.cli import commands
from egressmail.cli.context import AppContext
from egressmail.cli.output import stderr
from egressmail.errors import EgressMailError


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


@click.group(cls=EgressMailGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="egressmail")
@click.option("--home", "home", metavar="DIR", envvar="EGRESSMAIL_HOME", default=None,
              help="Folder holding the store and master key "
                   "[default: $EGRESSMAIL_HOME, else the user's data folder].")
@click.pass_context
def cli(ctx: click.Context, home: str | None) -> None:
    """egressmail: send email from locked-down networks.

    Every part has its own group; `egressmail GROUP --help` teaches it.

    \b
    The Cloud Manager CLI's commands work verbatim too (`NAME --help` for each):
      cloudmanager:set-environment-variables  (alias cloudmanager:environment:set-variables)
      cloudmanager:list-environment-variables (alias cloudmanager:environment:list-variables)
    e.g. egressmail cloudmanager:set-environment-variables --programId=1001 2002 --secret NAME VALUE
    """
    ctx.obj = AppContext(home_option=home)


def main() -> None:
    """Run the command line (console-script entry point)."""
    cli(prog_name="egressmail")
    sys.exit(0)  # pragma: no cover - click exits itself
