"""`egressmail send`: send one message through the configured mail service and wait for the outcome."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from egressmail.cli.context import AppContext, pass_app
from egressmail.cli.options import environment_options
from egressmail.cli.output import stdout, warn

if TYPE_CHECKING:
    from egressmail.mail.envelope import SendResult
    from egressmail.mail.message import Message
    from egressmail.mail.outbox_send import Queued


@dataclass(frozen=True, slots=True)
class SendRequest:
    """What the command line asked for (kept apart so other front ends, e.g. ``--no-wait``, reuse it)."""

    config_path: Path
    program: str | None
    environment: str | None
    run_modes: str | None
    service: str | None
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    subject: str | None
    text: str | None
    html: str | None
    template: Path | None
    variables: tuple[str, ...]
    attachments: tuple[Path, ...]
    sender: str | None
    secret_dirs: tuple[Path, ...] = ()
    no_wait: bool = False
    idempotency_key: str | None = None


def _parse_vars(items: tuple[str, ...]) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--var")
        values[name.strip()] = value
    return values


def build_message(req: SendRequest) -> Message:
    """The message the request describes (template filled, attachments read).

    Raises:
        MessageError: a template or attachment cannot be read, or a placeholder has no value.
        click.UsageError: the body options do not fit together.
    """
    from egressmail.mail.message import Attachment, Message
    from egressmail.mail.template import MailTemplate

    attachments = tuple(Attachment.from_path(p) for p in req.attachments)
    if req.template is not None:
        if req.text is not None or req.html is not None:
            raise click.UsageError("--template cannot be combined with --text or --html")
        base = MailTemplate.load(req.template).render(_parse_vars(req.variables), attachments=attachments)
        return Message(
            to=(*base.to, *req.to), cc=(*base.cc, *req.cc), bcc=(*base.bcc, *req.bcc),
            reply_to=base.reply_to, subject=req.subject if req.subject is not None else base.subject,
            text=base.text, html=base.html, sender=req.sender or base.sender,
            attachments=base.attachments, headers=base.headers)
    if req.variables:
        raise click.UsageError("--var only applies to --template")
    if req.text is None and req.html is None:
        raise click.UsageError("give the body with --text, --html or --template")
    if req.subject is None:
        raise click.UsageError("--subject is required (unless the template has a Subject: line)")
    return Message(to=req.to, cc=req.cc, bcc=req.bcc, subject=req.subject, text=req.text, html=req.html,
                   sender=req.sender, attachments=attachments)


def send_request(app: AppContext, req: SendRequest) -> SendResult | Queued:
    """Build the service and the message, send, and return the server's answer (with
    ``no_wait``: the receipt of the message queued in the home's outbox).

    Raises:
        EgressMailError: configuration, message or delivery errors (the CLI prints them).
    """
    from egressmail.mail.outbox import Outbox
    from egressmail.mail.service import MailService

    message = build_message(req)  # message errors first: nothing to connect for a bad message
    db = app.database() if req.program is not None else None
    # Durable: the message is in the home's outbox (fsync'd) before anything is sent, so a failure
    # that can be retried leaves it there for `egressmail worker run`.
    outbox = Outbox(app.home)
    service = MailService.from_config(req.config_path, program=req.program, environment=req.environment,
                                      run_modes=req.run_modes, service=req.service, db=db,
                                      secret_dirs=req.secret_dirs, outbox=outbox)
    for finding in service.findings:
        warn(str(finding))
    if service.settings.debug:
        # debug.email: show the (redacted) transcript on stderr.
        from egressmail.mail.transcript import LOGGER_NAME

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("transcript: %(message)s"))
        transcript = logging.getLogger(LOGGER_NAME)
        transcript.addHandler(handler)
        transcript.setLevel(logging.INFO)
    try:
        if req.no_wait:
            return service.queue(message, idempotency_key=req.idempotency_key)
        return service.send(message, idempotency_key=req.idempotency_key)
    finally:
        outbox.close()


@click.command()
@click.option("--config", "config_path", metavar="PATH", required=True, type=click.Path(path_type=Path),
              help="The com.day.cq.mailer.DefaultMailService.cfg.json file, or a config root holding "
                   "config/ and config.<runmode>/ folders.")
@environment_options(required=False)
@click.option("--to", "to", metavar="ADDR", multiple=True, help="Recipient (repeatable).")
@click.option("--cc", metavar="ADDR", multiple=True, help="Cc recipient (repeatable).")
@click.option("--bcc", metavar="ADDR", multiple=True,
              help="Bcc recipient (repeatable; never in the headers).")
@click.option("--subject", metavar="TEXT", default=None, help="The subject.")
@click.option("--text", metavar="TEXT", default=None, help="Plain-text body.")
@click.option("--html", metavar="HTML", default=None, help="HTML body (a text alternative is added).")
@click.option("--template", metavar="FILE", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="A mail template: header lines, an empty line, the body; ${name} placeholders.")
@click.option("--var", "variables", metavar="NAME=VALUE", multiple=True,
              help="A value for a template placeholder (repeatable).")
@click.option("--attach", "attachments", metavar="FILE", multiple=True,
              type=click.Path(dir_okay=False, path_type=Path), help="Attach a file (repeatable).")
@click.option("--from", "sender", metavar="ADDR", default=None, help="Sender instead of from.address.")
@click.option("--secrets-dir", "secret_dirs", metavar="DIR", multiple=True, type=click.Path(path_type=Path),
              help="A folder of secret files for $[secret:NAME] (repeatable).")
@click.option("--no-wait", "no_wait", is_flag=True,
              help="Queue the message durably in the outbox, print its id and exit 0; "
                   "`egressmail worker run` delivers it.")
@click.option("--idempotency-key", "idempotency_key", metavar="KEY", default=None,
              help="A second send with the same KEY returns the first message's outcome instead "
                   "of sending a copy.")
@pass_app
def send(app: AppContext, /, **options: object) -> None:
    """Send one message through the configured mail service and wait for the outcome.

    The settings come from the DefaultMailService configuration, with $[env:] and $[secret:]
    placeholders filled from the environment's variables and secrets, and the TLS name from the
    environment's port forwards. The settings are checked first (e.g. smtp.port set to 465 instead
    of a portOrig); the command exits 0 only when the server accepted the message, otherwise it
    prints the stage (connect, tls, auth, rcpt, data...) and the reason.

    \b
    Examples:
      AEM_PROXY_HOST=127.0.0.1 egressmail send \\
          --config ui.config/src/jcr_root/apps/wknd-examples/osgiconfig \\
          --program 1001 --environment 2002 --run-modes publish \\
          --to someone@example.com --subject "Hello" --text "Hi from the app"
      egressmail send --config mail.cfg.json --to a@example.com --subject Report \\
          --html "<p>See attached</p>" --attach report.pdf
      egressmail send --config mail.cfg.json --template order.txt --var name=Ann --var order=42
      egressmail send --config mail.cfg.json --to a@example.com --subject Hi --text Hello --no-wait

    \b
    $[env:AEM_PROXY_HOST;default=proxy.tunnel] falls back to the process environment, so set
    AEM_PROXY_HOST to where the gateway listens. SSL_CERT_FILE names a CA bundle to trust.
    debug.email true in the configuration logs the (redacted) SMTP transcript.
    """
    if (options["program"] is None) != (options["environment"] is None):
        raise click.UsageError("--program and --environment go together")
    req = SendRequest(**options)  # type: ignore[arg-type]
    result = send_request(app, req)
    from egressmail.mail.outbox_send import Queued

    if isinstance(result, Queued):
        again = " (already queued with this idempotency key)" if result.receipt.duplicate else ""
        stdout.print(f"queued: {result.id} {result.receipt.message_id}{again}", markup=False)
        return
    stdout.print(f"sent: {result.message_id} accepted for {len(result.accepted)} recipient(s) "
                 f"(session {result.session_id}): {result.reply[0]} {result.reply[1]}", markup=False)
    for rcpt, (code, text) in result.refused.items():
        warn(f"recipient {rcpt} refused: {code} {text}")
