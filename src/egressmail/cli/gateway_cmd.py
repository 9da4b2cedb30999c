"""`egressmail gateway`: the proxy.tunnel egress gateway (run it; print the app's variables).

Parsing and printing only: ``run`` calls :func:`egressmail.gateway.daemon.serve`, ``env`` reads the
egress map.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

import click

from egressmail.cli.context import AppContext, pass_app
from egressmail.gateway.accesslog import AccessLog
from egressmail.gateway.daemon import ready_lines, ready_report, run_in_loop, serve
from egressmail.gateway.errors import InvalidGatewayOption
from egressmail.gateway.metrics import parse_host_port
from egressmail.gateway.options import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_HTTP_PROXY_PORT,
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_LISTEN_HOST,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_REQUEST_TIMEOUT_S,
    GatewayOptions,
    Limits,
    Timeouts,
    parse_connect_to,
)
from egressmail.gateway.server import Gateway
from egressmail.gateway.workers import CONTROL_FD_ENV, Supervisor, parse_workers
from egressmail.networking.store import load_egress_map


@click.group()
def gateway() -> None:
    """The proxy.tunnel egress gateway: deny-by-default port forwards and HTTP proxy.

    The gateway listens on each port forward's portOrig and forwards plain TCP to the rule's
    name:portDest, and runs an HTTP proxy (CONNECT and http:// forwarding) that follows the
    program's kind. Nothing else is reachable through it.

    \b
    Typical use:
      egressmail gateway run 1001 2002 --connect-to smtp.sendgrid.com:465=127.0.0.1:2465
      eval "$(egressmail gateway env 1001 2002)"   # AEM_PROXY_HOST, AEM_HTTP_PROXY_PORT, ...
    """


def _positive(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and value <= 0:
        raise click.BadParameter("must be a positive number of seconds (0 is not allowed)")
    return value


@gateway.command("run")
@click.argument("program")
@click.argument("environment")
@click.option("--listen", "listen", metavar="HOST", default=DEFAULT_LISTEN_HOST, show_default=True,
              help="Address every listener binds.")
@click.option("--http-proxy-port", type=click.IntRange(0, 65535), default=DEFAULT_HTTP_PROXY_PORT,
              show_default=True, help="The HTTP proxy's port (0 = any free port).")
@click.option("--no-http-proxy", is_flag=True, help="Run without the HTTP proxy.")
@click.option("--connect-to", "connect_to", metavar="NAME:PORT=HOST:PORT", multiple=True,
              help="Send connections for NAME:PORT to HOST:PORT instead of resolving NAME "
                   "(curl's --connect-to; repeatable). The client's TLS name does not change. "
                   "A pin covers that exact NAME:PORT only (NAME=HOST without a port: port "
                   "forwards only); the HTTP proxy refuses a pinned NAME on any other port.")
@click.option("--egress-address", metavar="ADDR", default=None,
              help="The dedicated egress IP: outgoing connections bind it (kinds dedicatedEgressIp, vpn).")
@click.option("--metrics", "metrics", metavar="HOST:PORT", default=None,
              help="Serve Prometheus metrics at http://HOST:PORT/metrics.")
@click.option("--access-log", "access_log", metavar="FILE|-", default=None,
              help="Append one line per connection to FILE ('-' = stdout).")
@click.option("--access-log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="key=value lines or JSON objects.")
@click.option("--connect-timeout", type=float, default=DEFAULT_CONNECT_TIMEOUT_S, show_default=True,
              callback=_positive, help="Seconds to resolve and connect to a destination.")
@click.option("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT_S, show_default=True,
              callback=_positive, help="Cut a connection after this many seconds without a byte.")
@click.option("--request-timeout", type=float, default=DEFAULT_REQUEST_TIMEOUT_S, show_default=True,
              callback=_positive, help="HTTP proxy: seconds to receive the request head.")
@click.option("--max-connections", type=click.IntRange(1), default=DEFAULT_MAX_CONNECTIONS,
              show_default=True, help="Open connections in total; beyond it new ones are dropped.")
@click.option("--max-connections-per-rule", type=click.IntRange(1), default=None,
              help="Open connections per port-forward rule (the HTTP proxy counts as one rule).")
@click.option("--port-offset", type=int, default=0, show_default=True,
              help="Listen on portOrig + OFFSET (e.g. to run beside the real ports).")
@click.option("--ephemeral-ports", is_flag=True,
              help="Listen on free ports instead of portOrig (tests); the mapping is printed on stderr.")
@click.option("--poll-interval", type=float, default=1.0, show_default=True, callback=_positive,
              help="Seconds between checks of the store for rule changes (SIGHUP checks at once).")
@click.option("--drain-timeout", type=float, default=10.0, show_default=True,
              help="On SIGTERM, seconds to let open connections finish before cutting them.")
@click.option("--workers", "workers_text", metavar="N|auto", default="1", show_default=True,
              help="Gateway processes sharing every port with SO_REUSEPORT (Linux): the kernel "
                   "spreads connections over them. 'auto' = one per CPU. Limits such as "
                   "--max-connections apply per worker.")
@pass_app
@click.pass_context
def run(ctx: click.Context, app: AppContext, program: str, environment: str, listen: str,
        http_proxy_port: int, no_http_proxy: bool, connect_to: tuple[str, ...], egress_address: str | None,
        metrics: str | None, access_log: str | None, access_log_format: str, connect_timeout: float,
        idle_timeout: float, request_timeout: float, max_connections: int,
        max_connections_per_rule: int | None, port_offset: int, ephemeral_ports: bool,
        poll_interval: float, drain_timeout: float, workers_text: str) -> None:
    """Run the egress gateway of PROGRAM's ENVIRONMENT until SIGTERM.

    Listens on every port forward's portOrig (nothing else), plus the HTTP proxy port. Rule
    changes in the store apply within --poll-interval (or at once on SIGHUP) without dropping
    established connections. SIGTERM stops listening, drains and exits 0. Diagnostics go to
    stderr; the line "gateway ready" says it is serving.

    With --workers N, N processes serve the same ports (each polls the store and drains on
    SIGTERM; the parent forwards SIGHUP/SIGTERM, restarts a worker that dies, sums the metrics;
    access-log lines carry worker=PID).

    \b
    Examples:
      egressmail gateway run 1001 2002
      egressmail gateway run 1001 2002 --connect-to smtp.sendgrid.com:465=127.0.0.1:2465 \\
          --access-log - --metrics 127.0.0.1:9464
      egressmail gateway run 1001 2002 --egress-address 127.0.0.2 --access-log gw.log \\
          --access-log-format json
      egressmail gateway run 1001 2002 --workers auto --access-log gw.log
    """
    workers = parse_workers(workers_text)
    control_text = os.environ.get(CONTROL_FD_ENV)
    control_fd = int(control_text) if control_text and control_text.isdigit() else None
    pins = tuple(parse_connect_to(text) for text in connect_to)
    metrics_address = parse_host_port(metrics, "--metrics") if metrics is not None else None
    try:
        options = GatewayOptions(
            listen_host=listen, http_proxy_port=None if no_http_proxy else http_proxy_port,
            connect_to=pins, egress_address=egress_address, port_offset=port_offset,
            ephemeral_ports=ephemeral_ports,
            timeouts=Timeouts(connect=connect_timeout, idle=idle_timeout, request=request_timeout),
            limits=Limits(max_connections=max_connections, max_connections_per_rule=max_connections_per_rule),
            reuse_port=control_fd is not None)
    except ValueError as exc:
        raise InvalidGatewayOption(str(exc)) from exc
    db = app.database()
    load_egress_map(db, program, environment)  # fail fast on malformed ids or an unreadable store
    say = logging.getLogger("egressmail.gateway").info
    if workers > 1 and control_fd is None:
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="egressmail gateway: %(message)s")

        def all_ready(report: dict[str, Any], metrics_port: int | None) -> None:
            for line in ready_lines(report, listen, metrics_address, metrics_port, workers):
                say("%s", line)

        supervisor = Supervisor(_worker_argv(ctx, app), workers, listen_host=listen,
                                metrics_address=metrics_address, on_ready=all_ready)
        code = asyncio.run(supervisor.run())
        say("stopped")
        sys.exit(code)

    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="egressmail gateway: %(message)s" if control_fd is None
                        else "egressmail gateway[%(process)d]: %(message)s")
    log = None
    if access_log is not None:
        try:
            log = AccessLog.open(access_log, json_lines=access_log_format == "json",
                                 worker=os.getpid() if control_fd is not None else None)
        except OSError as exc:
            raise InvalidGatewayOption(f"--access-log {access_log}: cannot open: {exc.strerror or exc}",
                                       hint="give a writable file, or '-' for stdout") from exc

    def ready(gw: Gateway, metrics_port: int | None) -> None:
        if control_fd is None:  # a worker's parent prints these for all of them
            for line in ready_lines(ready_report(gw), listen, metrics_address, metrics_port):
                say("%s", line)

    run_in_loop(serve(lambda: load_egress_map(db, program, environment), options, access_log=log,
                      metrics_address=None if control_fd is not None else metrics_address,
                      poll_interval=poll_interval, drain_timeout=drain_timeout, on_ready=ready,
                      control_fd=control_fd))


def _worker_argv(ctx: click.Context, app: AppContext) -> list[str]:
    """A worker's command line: this command with the same options, minus --workers and --metrics
    (the parent serves the summed metrics)."""
    argv = [sys.executable, "-m", "egressmail", "--home", str(app.home), "gateway", "run"]
    options: list[str] = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if isinstance(param, click.Argument):
            argv.append(str(value))
            continue
        if not isinstance(param, click.Option) or param.name in ("workers_text", "metrics") or value is None:
            continue
        flag = max(param.opts, key=len)
        if param.is_flag:
            if value:
                options.append(flag)
        elif param.multiple:
            for item in value:
                options += [flag, str(item)]
        else:
            options += [flag, str(value)]
    return argv + options


@gateway.command("env")
@click.argument("program")
@click.argument("environment")
@click.option("--proxy-host", metavar="HOST", default=DEFAULT_LISTEN_HOST, show_default=True,
              help="Where the apps reach the gateway (the gateway's --listen address; "
                   "proxy.tunnel on the platform).")
@click.option("--http-proxy-port", type=click.IntRange(1, 65535), default=DEFAULT_HTTP_PROXY_PORT,
              show_default=True, help="The gateway's --http-proxy-port.")
@click.option("--port-offset", type=int, default=0, show_default=True,
              help="The gateway's --port-offset (shifts the port forwards listed in comments).")
@pass_app
def env(app: AppContext, program: str, environment: str, proxy_host: str, http_proxy_port: int,
        port_offset: int) -> None:
    """Print the variables an application uses to reach the gateway (shell syntax).

    AEM_PROXY_HOST (and the older AEM_HTTP_PROXY_HOST / AEM_HTTPS_PROXY_HOST),
    AEM_HTTP_PROXY_PORT and AEM_HTTPS_PROXY_PORT, then one comment per port forward.

    \b
    Examples:
      egressmail gateway env 1001 2002
      eval "$(egressmail gateway env 1001 2002)"
    """
    egress = load_egress_map(app.database(), program, environment)
    lines = [f"AEM_PROXY_HOST={proxy_host}", f"AEM_HTTP_PROXY_HOST={proxy_host}",
             f"AEM_HTTPS_PROXY_HOST={proxy_host}", f"AEM_HTTP_PROXY_PORT={http_proxy_port}",
             f"AEM_HTTPS_PROXY_PORT={http_proxy_port}"]
    if not egress.is_enabled:
        lines.append(f"# {egress.program}/{egress.environment}: no advanced networking enabled, "
                     "so no port forwards")
    for forward in egress.port_forwards:
        lines.append(f"# port forward: $AEM_PROXY_HOST:{forward.port_orig + port_offset} → "
                     f"{forward.name}:{forward.port_dest}")
    click.echo("\n".join(lines))
