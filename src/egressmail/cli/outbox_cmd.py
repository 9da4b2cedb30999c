"""`egressmail outbox`: look into the durable outbox and act on its messages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import click
from rich.table import Table

from egressmail.cli.context import AppContext, pass_app
from egressmail.cli.output import stdout
from egressmail.mail.outbox import Outbox
from egressmail.mail.outbox_metrics import OutboxMetrics
from egressmail.mail.outbox_model import MessageInfo, Status
from egressmail.mail.retry import parse_duration

STATES = [s.value for s in Status]


@contextmanager
def open_outbox(app: AppContext) -> Iterator[Outbox]:
    """The outbox of the home folder (``outbox.db``, created owner-only if missing)."""
    with Outbox(app.home) as box:
        yield box


def when(ts: float | None, now: float | None = None) -> str:
    """A local time with a relative hint: ``14:03:07 (in 2m)``, ``2024-05-01 09:00 (3d ago)``."""
    if ts is None:
        return "-"
    now = time.time() if now is None else now
    delta = ts - now
    span = abs(delta)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if span >= size or unit == "s":
            rel = f"{int(span // size)}{unit}"
            break
    rel = f"in {rel}" if delta > 0 else f"{rel} ago"
    fmt = "%H:%M:%S" if span < 12 * 3600 else "%Y-%m-%d %H:%M"
    return f"{time.strftime(fmt, time.localtime(ts))} ({rel})"


def _short(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _row(m: MessageInfo) -> list[str]:
    nxt = when(m.next_attempt_at) if m.next_attempt_at is not None else (
        when(m.sent_at) if m.sent_at else when(m.updated_at))
    last = f"{m.last_code} " if m.last_code else ""
    return [m.id, m.status.value, m.message_id, str(m.recipients), str(m.attempts), nxt,
            _short(last + (m.last_error or ""))]


@click.group()
def outbox() -> None:
    """The durable outbox of messages waiting for delivery.

    `egressmail send` and `MailService.send()` write each message here (fsync'd) before they
    return; `egressmail worker run` delivers them. States: queued, sending, sent, deferred
    (retried later), unknown (the server may have it; retried with the same Message-ID),
    failed, held (left alone until released).

    \b
    Examples:
      egressmail outbox list --status deferred
      egressmail outbox show 01HZX3K9R2M4V7T8B5N6C1D0QF
      egressmail outbox retry --failed
      egressmail outbox purge --sent --older-than 7d
    """


@outbox.command("list")
@click.option("--status", "status", type=click.Choice(STATES), default=None,
              help="Only messages in this state.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True,
              help="Show at most this many (newest first).")
@pass_app
def list_cmd(app: AppContext, status: str | None, limit: int) -> None:
    """List messages, newest first, with a count per state.

    \b
    Examples:
      egressmail outbox list
      egressmail outbox list --status failed --limit 200
    """
    with open_outbox(app) as box:
        rows = box.list(status=Status(status) if status else None, limit=limit)
        counts = box.counts()
    table = Table(title=f"outbox {box.path}", title_justify="left")
    for col in ("id", "state", "Message-ID", "rcpts", "tries", "next / last change", "last reply"):
        table.add_column(col, overflow="fold")
    for m in rows:
        table.add_row(*_row(m))
    stdout.print(table)
    stdout.print("  ".join(f"{s.value}: {n}" for s, n in counts.items() if n) or "the outbox is empty",
                 markup=False)


@outbox.command("show")
@click.argument("message_id", metavar="ID")
@click.option("--data", "with_data", is_flag=True, help="Also print the stored message bytes.")
@pass_app
def show_cmd(app: AppContext, message_id: str, with_data: bool) -> None:
    """Show one message: its recipients and every attempt with the server's reply codes.

    \b
    Example:
      egressmail outbox show 01HZX3K9R2M4V7T8B5N6C1D0QF
    """
    with open_outbox(app) as box:
        d = box.get(message_id, with_data=with_data)
    i = d.info
    stdout.print(f"id:          {i.id}", markup=False)
    stdout.print(f"state:       {i.status.value}", markup=False)
    stdout.print(f"Message-ID:  {i.message_id}", markup=False)
    stdout.print(f"sender:      {i.sender or '<>'}", markup=False)
    stdout.print(f"size:        {i.size} bytes", markup=False)
    stdout.print(f"queued:      {when(i.created_at)}", markup=False)
    if i.idempotency_key:
        stdout.print(f"idem. key:   {i.idempotency_key}", markup=False)
    if i.next_attempt_at is not None:
        stdout.print(f"next try:    {when(i.next_attempt_at)}", markup=False)
    if i.lease_owner:
        stdout.print(f"leased to:   {i.lease_owner}", markup=False)
    if i.sent_at:
        stdout.print(f"sent:        {when(i.sent_at)}", markup=False)
    if i.last_error and i.status is not Status.SENT:
        stdout.print(f"last error:  {i.last_error}", markup=False)
    rcpts = Table(title="recipients", title_justify="left")
    for col in ("address", "state", "code", "reply"):
        rcpts.add_column(col, overflow="fold")
    for r in d.recipients:
        rcpts.add_row(r.address, r.status.value, str(r.code or ""), _short(r.reply, 80))
    stdout.print(rcpts)
    attempts = Table(title="history", title_justify="left")
    for col in ("#", "when", "worker", "outcome", "code", "stage", "detail"):
        attempts.add_column(col, overflow="fold")
    for a in d.attempts:
        outcome = a.outcome + (" (late)" if a.late else "")
        attempts.add_row(str(a.number), when(a.finished_at), a.worker or "", outcome,
                         str(a.code or ""), a.stage or "", _short(a.detail or a.reply, 100))
    stdout.print(attempts)
    if with_data and d.data is not None:
        stdout.print(d.data.decode("utf-8", "replace"), markup=False, highlight=False)


@outbox.command("retry")
@click.argument("message_id", metavar="ID", required=False)
@click.option("--failed", "all_failed", is_flag=True, help="Retry every failed message.")
@pass_app
def retry_cmd(app: AppContext, message_id: str | None, all_failed: bool) -> None:
    """Queue a failed, deferred, unknown or held message for delivery now.

    The message gets a fresh lifetime and backoff; recipients refused before are tried again
    (those that accepted it are not).

    \b
    Examples:
      egressmail outbox retry 01HZX3K9R2M4V7T8B5N6C1D0QF
      egressmail outbox retry --failed
    """
    if bool(message_id) == all_failed:
        raise click.UsageError("give either a message ID or --failed (see `egressmail outbox list`)")
    with open_outbox(app) as box:
        if all_failed:
            n = box.retry_failed()
            stdout.print(f"queued {n} failed message(s) again", markup=False)
        else:
            assert message_id is not None  # noqa: S101 - checked above
            old = box.retry(message_id)
            stdout.print(f"{message_id}: {old.value} → queued", markup=False)


@outbox.command("hold")
@click.argument("message_id", metavar="ID")
@pass_app
def hold_cmd(app: AppContext, message_id: str) -> None:
    """Park a waiting message: workers leave it alone until `outbox release`.

    \b
    Example:
      egressmail outbox hold 01HZX3K9R2M4V7T8B5N6C1D0QF
    """
    with open_outbox(app) as box:
        old = box.hold(message_id)
    stdout.print(f"{message_id}: {old.value} → held", markup=False)


@outbox.command("release")
@click.argument("message_id", metavar="ID")
@pass_app
def release_cmd(app: AppContext, message_id: str) -> None:
    """Queue a held message for delivery now.

    Only recipients still pending are sent to: those refused for good (5xx) stay refused and
    those that accepted it are not sent to again. Use `outbox retry ID` to also ask the
    refused recipients again.

    \b
    Example:
      egressmail outbox release 01HZX3K9R2M4V7T8B5N6C1D0QF
    """
    with open_outbox(app) as box:
        old = box.release(message_id)
    stdout.print(f"{message_id}: {old.value} → queued", markup=False)


@outbox.command("purge")
@click.option("--sent", is_flag=True, help="Delete sent messages.")
@click.option("--failed", is_flag=True, help="Delete failed messages.")
@click.option("--older-than", "older_than", required=True, metavar="AGE",
              help="Only those last changed at least this long ago: 30m, 12h, 7d, 2w.")
@pass_app
def purge_cmd(app: AppContext, sent: bool, failed: bool, older_than: str) -> None:
    """Delete finished messages and their history from the outbox.

    \b
    Examples:
      egressmail outbox purge --sent --older-than 7d
      egressmail outbox purge --sent --failed --older-than 30d
    """
    if not (sent or failed):
        raise click.UsageError("say what to purge: --sent, --failed or both")
    try:
        age = parse_duration(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    statuses = [s for s, on in ((Status.SENT, sent), (Status.FAILED, failed)) if on]
    with open_outbox(app) as box:
        n = box.purge(statuses, older_than_s=age)
    stdout.print(f"purged {n} message(s)", markup=False)


@outbox.command("metrics")
@pass_app
def metrics_cmd(app: AppContext) -> None:
    """Print the queue depth by state in Prometheus' text format.

    For a node_exporter textfile collector, or a quick look; a running `egressmail worker run
    --metrics-port PORT` also serves latency and outcome counters.

    \b
    Example:
      egressmail outbox metrics > /var/lib/node_exporter/egressmail_outbox.prom
    """
    with open_outbox(app) as box:
        text = OutboxMetrics(box.counts, box.oldest_due).exposition().decode()
    click.echo(text, nl=False)
