"""`egressmail doctor`: check every layer from configuration to SMTP AUTH (parsing and printing only).

The work is :func:`egressmail.mail.doctor.diagnose`; this module prints one line per layer and exits
non-zero naming the first layer that failed.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click
from rich.text import Text

from egressmail.cli.context import AppContext, pass_app
from egressmail.cli.options import environment_options
from egressmail.cli.output import stdout
from egressmail.mail.doctor import DoctorFailed, DoctorOptions, DoctorReport, Status, diagnose

_MARKS = {Status.OK: ("✔", "green"), Status.FAILED: ("✘", "red"), Status.SKIPPED: ("–", "dim")}


def _print_report(report: DoctorReport, header: str) -> None:
    stdout.print(Text(header, style="bold"))
    width = max(len(r.title) for r in report.results)
    for r in report.results:
        mark, style = _MARKS[r.status]
        detail_style = "dim" if r.status is Status.SKIPPED else ""
        stdout.print(Text.assemble((f"  {mark} ", style), (f"{r.layer.value:<9} ", "bold"),
                                   f"{r.title:<{width}}  ", (r.detail, detail_style)))
        if r.status is Status.FAILED and r.hint:
            stdout.print(Text(f"      hint: {r.hint}", style="yellow"))


@click.command()
@click.option("--config", "config_path", metavar="PATH", required=True, type=click.Path(path_type=Path),
              help="The config root (…/osgiconfig) or the DefaultMailService .cfg.json file.")
@environment_options(required=True)
@click.option("--gateway", metavar="HOST", default=None,
              help="Dial HOST instead of smtp.host (e.g. 127.0.0.1 where proxy.tunnel does not resolve); "
                   "the certificate is still checked for the provider's name.")
@click.option("--cafile", metavar="FILE", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Trust this CA bundle (else egressmail.tls.cafile, else $SSL_CERT_FILE, else the "
                   "system's).")
@click.option("--secrets-dir", "secrets_dirs", metavar="DIR", multiple=True, type=click.Path(path_type=Path),
              help="Directory of secret files for $[secret:NAME] (repeatable).")
@click.option("--timeout", type=click.FloatRange(min=0.1, max=600), default=None,
              help="Seconds per phase (connect, each reply) [default: the configuration's].")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_app
def doctor(app: AppContext, config_path: Path, program: str, environment: str, run_modes: str | None,
           service: str | None, gateway: str | None, cafile: Path | None, secrets_dirs: tuple[Path, ...],
           timeout: float | None, as_json: bool) -> None:
    """Check every layer from configuration to SMTP AUTH, naming the first that fails.

    \b
    Layers, in order (each ✔ ok, ✘ failed, – skipped):
      config    the .cfg.json resolves (run modes, placeholders) and passes the lint
      forward   smtp.port is the portOrig of one of the environment's port forwards
      gateway   smtp.host (the gateway) resolves
      tcp       a TCP connection to smtp.host:smtp.port opens
      tls       implicit TLS: handshake, certificate valid for the provider's name
      greeting  the server's 220 arrives through the tunnel
      ehlo      EHLO is answered (capabilities listed)
      starttls  STARTTLS mode: offered and verified
      auth      the credentials are accepted (no message is sent)

    Secrets are never printed. Exit 0 when every layer passes, 1 naming the first that failed.

    \b
    Examples:
      egressmail doctor --config ui.config/src/jcr_root/apps/wknd-examples/osgiconfig \\
          --program 1001 --environment 2002 --gateway 127.0.0.1
      AEM_PROXY_HOST=127.0.0.1 egressmail doctor --config osgiconfig --program 1001 --environment 2002 \\
          --service publish --cafile ./ca.pem --json
    """
    options = DoctorOptions(gateway=gateway, cafile=str(cafile) if cafile else None,
                            connect_timeout=timeout, read_timeout=timeout)
    db = app.database()
    report = asyncio.run(diagnose(config_path, db=db, program=program, environment=environment,
                                  run_modes=run_modes, service=service, options=options,
                                  secret_dirs=list(secrets_dirs)))
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        _print_report(report, f"egressmail doctor: {config_path} for program {program}, "
                              f"environment {environment}")
    if not report.ok:
        raise DoctorFailed(report)
