"""`egressmail worker`: deliver the outbox's messages through the configured mail service."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import sys
from collections.abc import Coroutine
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import click

from egressmail.cli.context import AppContext, pass_app
from egressmail.cli.options import environment_options
from egressmail.cli.output import stderr
from egressmail.mail.envelope import SessionFactory, SmtpSession
from egressmail.mail.retry import parse_duration


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group()
def worker() -> None:
    """The delivery worker: takes messages from the outbox and sends them.

    \b
    Examples:
      egressmail worker run ui.config/.../osgiconfig --program 1001 --environment 2002
      egressmail worker run config.cfg.json --once
    """


@worker.command("run")
@click.argument("config", type=click.Path(exists=True, path_type=Path))
@environment_options(required=False)
@click.option("--connect-host", default=None, metavar="HOST",
              help="Dial HOST instead of smtp.host (e.g. 127.0.0.1 where proxy.tunnel does not "
                   "resolve); the certificate is still verified for the provider's name.")
@click.option("--concurrency", type=click.IntRange(1, 1000), default=4, show_default=True,
              help="SMTP sessions in parallel; each carries message after message.")
@click.option("--batch", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="Messages a session claims at a time.")
@click.option("--lease", callback=_duration, default="60s", show_default=True, metavar="DURATION",
              help="How long a claim lasts unrenewed: a killed worker's messages wait this long.")
@click.option("--poll", callback=_duration, default="1s", show_default=True, metavar="DURATION",
              help="How often an idle worker looks for due messages.")
@click.option("--min-delay", callback=_duration, default="60s", show_default=True, metavar="DURATION",
              help="First retry delay after a 4xx or a connection failure (doubles each time).")
@click.option("--max-delay", callback=_duration, default="1h", show_default=True, metavar="DURATION",
              help="Longest delay between two tries.")
@click.option("--max-lifetime", callback=_duration, default="5d", show_default=True, metavar="DURATION",
              help="A message undelivered after this fails as expired.")
@click.option("--on-unknown", type=click.Choice(["retry", "hold"]), default="retry", show_default=True,
              help="A message whose server may have it (reply lost after the final '.'): send it "
                   "again with the same Message-ID, or hold it for a human.")
@click.option("--max-crashes", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="Hold a message after this many workers died while holding it (poison message).")
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics.")
@click.option("-v", "--verbose", is_flag=True, help="Log every attempt (not only deferrals).")
@pass_app
def run(app: AppContext, config: Path, program: str | None, environment: str | None,
        run_modes: str | None, service: str | None, connect_host: str | None, concurrency: int, batch: int,
        lease: float, poll: float, min_delay: float, max_delay: float, max_lifetime: float,
        on_unknown: str, max_crashes: int, once: bool, metrics_port: int | None,
        verbose: bool) -> None:
    """Deliver the outbox of the home folder until SIGTERM (or, with --once, until nothing is due).

    CONFIG is the mail service's `.cfg.json` or a config root; its placeholders are filled from
    --program/--environment's variables and secrets, exactly as `egressmail send` does. SIGTERM
    or Ctrl-C finishes the messages being sent, gives the others back, and exits 0. Run several
    workers (processes or machines sharing the home) for more throughput: a message is never
    delivered by two at once. The line "worker ready" on stderr says it is serving.

    \b
    Examples:
      egressmail worker run ./osgiconfig --program 1001 --environment 2002
      egressmail worker run ./osgiconfig --program 1001 --environment 2002 \\
          --connect-host 127.0.0.1 --concurrency 8 --metrics-port 9464
      egressmail worker run ./DefaultMailService.cfg.json --once --on-unknown hold
    """
    from egressmail.mail.outbox import Outbox
    from egressmail.mail.outbox_metrics import OutboxMetrics
    from egressmail.mail.retry import RetryPolicy
    from egressmail.mail.worker import Worker, WorkerOptions

    if (program is None) != (environment is None):
        raise click.UsageError("--program and --environment go together")
    assert lease is not None and poll is not None  # noqa: S101 - defaults given
    assert min_delay is not None and max_delay is not None and max_lifetime is not None  # noqa: S101
    try:
        policy = RetryPolicy(min_delay_s=min_delay, max_delay_s=max_delay, max_lifetime_s=max_lifetime,
                             on_unknown="hold" if on_unknown == "hold" else "retry",
                             max_crashes=max_crashes)
        options = WorkerOptions(concurrency=concurrency, batch_size=batch, lease_s=lease,
                                poll_interval_s=poll)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose:
        logging.getLogger("egressmail.outbox").setLevel(logging.DEBUG)
    factory = session_factory(app, config, program, environment, run_modes, connect_host, service=service)
    with Outbox(app.home) as outbox:
        metrics = OutboxMetrics(outbox.counts, outbox.oldest_due)
        if metrics_port is not None:
            from prometheus_client import start_http_server

            start_http_server(metrics_port, addr="127.0.0.1", registry=metrics.registry)
        w = Worker(outbox, factory, policy, options=options, metrics=metrics)

        async def main() -> int:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, w.stop)
            stderr.print(f"worker ready: {w.name}, outbox {outbox.path}, {concurrency} session(s)",
                         markup=False)
            return await w.arun(until_idle=once)

        attempts = _run_loop(main())
        counts = outbox.counts()
    summary = ", ".join(f"{s.value} {n}" for s, n in counts.items() if n) or "empty"
    stderr.print(f"worker stopped after {attempts} attempt(s); outbox: {summary}", markup=False)


def _run_loop(coro: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop when installed (the ``speed`` extra): fewer CPU cycles per message."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    result: int = uvloop.run(coro)
    return result


def session_factory(app: AppContext, config: Path, program: str | None, environment: str | None,
                    run_modes: str | None, connect_host: str | None, *,
                    service: str | None = None) -> SessionFactory:
    """Sessions of the mail service built from its configuration, as `egressmail send` does: OAuth2
    tokens, and a rotated secret or a changed port forward picked up by the next session.

    Raises:
        ConfigError, MailConfigError, StoreError: the configuration cannot be used.
    """
    from egressmail.mail.service import MailService

    mail = MailService.from_config(config, program=program, environment=environment,
                                   run_modes=run_modes, service=service,
                                   db=app.database() if program else None)
    if not connect_host:
        return mail.session_factory
    from egressmail.mail.transport import SmtpTransport

    def dial_elsewhere() -> AbstractAsyncContextManager[SmtpSession]:
        # Same settings (and TLS name), another address to dial, e.g. 127.0.0.1 for proxy.tunnel.
        current = mail.transport
        config = dataclasses.replace(current.config, host=connect_host)
        return SmtpTransport(config)()

    return dial_elsewhere
