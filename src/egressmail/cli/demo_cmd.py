"""`egressmail demo`: run the seed's scenario end to end on this machine (parsing and printing only).

The work is :func:`egressmail.demo.run_demo`; this module shows each step as it completes and runs
the seed's ``egressmail`` command lines through this same command line, in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import click
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from egressmail.cli.output import stdout
from egressmail.demo import DemoError, DemoOptions, DemoResult, StepReport, run_demo
from egressmail.demo.scenario import DEFAULT_PROXY_HOST, DEFAULT_RECIPIENT, DEFAULT_TIMEOUT_S


def in_process_runner(home: Path, argv: Sequence[str]) -> tuple[int, str]:
    """Run ``egressmail --home HOME ARGV`` through this process's command line; capture its output."""
    from egressmail.cli.main import cli

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        try:
            code = cli.main(args=["--home", str(home), *argv], prog_name="egressmail", standalone_mode=False)
        except click.ClickException as exc:
            exc.show(buffer)
            code = exc.exit_code
        except click.exceptions.Exit as exc:  # pragma: no cover - standalone_mode=False returns it
            code = exc.exit_code
        except click.Abort:  # pragma: no cover - no prompt in these commands
            code = 1
    return (code if isinstance(code, int) else 0), buffer.getvalue()


class _Printer:
    """Shows each step as it completes (rich, plain text when not on a terminal)."""

    def __init__(self) -> None:
        self.number = 0

    def __call__(self, step: StepReport) -> None:
        self.number += 1
        stdout.print()
        stdout.print(Text.assemble(("✔ ", "green"), (f"{self.number}. ", "bold"), (step.title, "bold")))
        for run in step.commands:
            stdout.print(Text(f"  $ {run.line}", style="cyan"))
            for line in run.output.splitlines():
                stdout.print(Text(f"    {line}"))
        for line in step.lines:
            stdout.print(Text(f"  {line}"))
        if step.table:
            table = Table(show_lines=False, box=None, padding=(0, 2))
            for column in step.table[0]:
                table.add_column(column, overflow="fold")
            for row in step.table[1:]:
                table.add_row(*(Text(cell) for cell in row))
            stdout.print(Panel(table, expand=False, padding=(0, 1)))
        for label, text in step.blocks:
            # Not a panel: a panel crops long lines when not on a terminal, and these are logs.
            stdout.print(Text(f"  ┌─ {label}", style="dim"))
            for line in (text or "(empty)").splitlines() or [""]:
                stdout.print(Text.assemble(("  │ ", "dim"), line))
            stdout.print(Text("  └─", style="dim"))


@click.command()
@click.option("--keep-home", "keep_home", metavar="DIR", type=click.Path(path_type=Path), default=None,
              help="Keep the demo's home folder (store, key, demo CA) here; it must not exist or be empty. "
                   "Default: a temporary folder, removed at the end.")
@click.option("--seed", "seed", metavar="DIR", type=click.Path(path_type=Path), default=None,
              help="The seed folder (set-secrets.sh, advanced-networking.json, ui.config/). "
                   "Default: the copy of examples/wknd shipped with egressmail.")
@click.option("--proxy-host", metavar="ADDR", default=DEFAULT_PROXY_HOST, show_default=True,
              help="Loopback address standing in for proxy.tunnel (AEM_PROXY_HOST); the gateway listens "
                   "there on the forward's portOrig (30002).")
@click.option("--to", "recipient", metavar="ADDRESS", default=DEFAULT_RECIPIENT, show_default=True,
              help="Recipient of the demo message (it never leaves this machine).")
@click.option("--timeout", type=click.FloatRange(min=1), default=DEFAULT_TIMEOUT_S, show_default=True,
              help="Seconds the whole demo may take.")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON summary instead of the step-by-step story.")
def demo(keep_home: Path | None, seed: Path | None, proxy_host: str, recipient: str, timeout: float,
         as_json: bool) -> None:
    """Run the seed's scenario end to end on this machine, with no network.

    In a temporary home: runs the seed's set-secrets.sh command line, creates a flexiblePortEgress
    infrastructure and enables advanced-networking.json, starts a stand-in for smtp.sendgrid.com
    (an embedded SMTP server: implicit TLS with a certificate from a CA made for this run, AUTH
    apikey + the stored API key), starts the egress gateway on 127.0.0.1:30002 pinned to it, reads
    the seed's .cfg.json unchanged (AEM_PROXY_HOST=127.0.0.1 for the demo's own resolution) and
    sends one message. It shows the resolved configuration (masked), the SMTP transcript
    (redacted), the gateway's access-log line and the message as received, then stops everything.
    Exit 0 when the message arrived; otherwise the failing step is named.

    \b
    Examples:
      egressmail demo
      egressmail demo --keep-home ./demo-home      # then: egressmail --home ./demo-home env list 1001 2002
      egressmail demo --proxy-host 127.0.0.2       # when 127.0.0.1:30002 is taken
      egressmail demo --json | jq .access_log
    """
    options = DemoOptions(seed=seed, keep_home=keep_home, proxy_host=proxy_host, recipient=recipient,
                          timeout=timeout, runner=in_process_runner)
    printer = _Printer()
    try:
        result = asyncio.run(run_demo(options, on_step=(lambda step: None) if as_json else printer))
    except DemoError as exc:
        if as_json and isinstance(exc.result, DemoResult):
            click.echo(json.dumps(exc.result.to_dict(), indent=2))
        elif not as_json:
            stdout.print()
            stdout.print(Text.assemble(("✘ ", "red"), (f"step {exc.step!r} failed", "bold")))
        raise
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    stdout.print()
    stdout.print(Text("demo finished: the message went app → gateway → provider, TLS verified for the "
                      "provider's name, secrets never shown.", style="bold green"))
