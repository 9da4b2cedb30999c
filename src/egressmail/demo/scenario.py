"""The demo's scenario: the seed's example, end to end, on this machine, with no network.

Theory of operation
-------------------
Everything runs in a temporary home folder (``--keep-home DIR`` keeps it) and on loopback:

``seed``      find the seed's files (the packaged copy of ``examples/wknd`` unless ``--seed``)
``secrets``   run the seed's ``set-secrets.sh`` line through the real command line: the
              environment's secrets are encrypted into the fresh store
``network``   ``egressmail network create PROGRAM --kind flexiblePortEgress`` and
              ``network enable PROGRAM ENVIRONMENT --json-file advanced-networking.json``
``config``    read the seed's ``.cfg.json`` unchanged, as the mail service would. ``smtp.host`` is
              ``$[env:AEM_PROXY_HOST;default=proxy.tunnel]``; ``proxy.tunnel`` only resolves on the
              platform, so the demo gives ``AEM_PROXY_HOST`` (to its own resolution only, never to
              the process environment) the loopback address its gateway listens on
``provider``  an embedded SMTP server plays the provider: implicit TLS with a certificate for the
              forward's name (``smtp.sendgrid.com``) from a CA minted for this run, AUTH with the
              provider's user and the API key the seed stored
``gateway``   the real gateway (in-process) listens on ``AEM_PROXY_HOST:portOrig`` (30002) and
              sends ``smtp.sendgrid.com:465`` to the embedded server (``--connect-to``)
``send``      the real SMTP client connects to the gateway, verifies the provider's name through
              the tunnel (trusting the demo CA), authenticates and sends one message; the transcript
              (``debug.email``, redacted) is captured
``received``  the message as the provider received it
``access-log`` the gateway's line for the connection (its ``client=`` is the transcript's session id)
``stop``      everything the demo started is stopped; the home is removed unless kept

A step that fails raises :class:`~egressmail.demo.errors.DemoError` naming it; whatever was started is
stopped first. Secret values never reach a :class:`StepReport`: command lines are masked, the
configuration table masks secrets, and the transcript is redacted by the mail client.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email
import email.policy
import io
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Protocol

from egressmail.config.explain import property_rows
from egressmail.demo.errors import DemoError
from egressmail.demo.seed import Seed, load_seed
from egressmail.errors import EgressMailError
from egressmail.gateway.accesslog import AccessLog
from egressmail.gateway.errors import GatewayBindError
from egressmail.gateway.options import GatewayOptions, parse_connect_to
from egressmail.gateway.server import Gateway
from egressmail.mail.embedded_server import EmbeddedSmtpServer, ReceivedMessage, local_tls
from egressmail.mail.errors import MailError
from egressmail.mail.message import Message, build_envelope
from egressmail.mail.service_config import ServiceConfig, load_service_config
from egressmail.mail.settings import Secret
from egressmail.mail.tls import tls_identity
from egressmail.mail.transcript import TranscriptCapture
from egressmail.mail.transport import SmtpTransport, TransportConfig
from egressmail.networking.model import PortForward
from egressmail.networking.store import load_egress_map
from egressmail.storage.sqlite import Database

DEFAULT_PROXY_HOST = "127.0.0.1"
DEFAULT_RECIPIENT = "someone@example.com"
DEFAULT_TIMEOUT_S = 30.0
PROVIDER_USER = "apikey"  # SendGrid's documented SMTP user name; the password is the API key
API_KEY_SECRET = "EMAIL_PASSWORD"  # noqa: S105 - a secret's name; the seed's secret holding the API key (smtp.password's placeholder)
PROXY_HOST_VARIABLE = "AEM_PROXY_HOST"
KIND = "flexiblePortEgress"


@dataclass(frozen=True, slots=True)
class CommandRun:
    """One ``egressmail …`` command the demo ran: the masked line, its exit code and its output."""

    line: str
    exit_code: int
    output: str


@dataclass(frozen=True, slots=True)
class StepReport:
    """What one step did, ready to show (no secret values anywhere).

    Attributes:
        key: the step's name (``secrets``, ``gateway``, …); a failure names the same key.
        title: a sentence for the heading.
        lines: facts, one per line.
        commands: the ``egressmail`` command lines run, with their output.
        table: a header row then rows (the resolved configuration).
        blocks: ``(label, text)`` shown verbatim (transcript, access log, message).
    """

    key: str
    title: str
    lines: tuple[str, ...] = ()
    commands: tuple[CommandRun, ...] = ()
    table: tuple[tuple[str, ...], ...] = ()
    blocks: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"key": self.key, "title": self.title, "lines": list(self.lines),
                "commands": [{"line": c.line, "exit_code": c.exit_code} for c in self.commands]}


class CommandRunner(Protocol):
    """Runs ``egressmail ARGV`` against ``home``; returns (exit code, stdout + stderr)."""

    def __call__(self, home: Path, argv: Sequence[str]) -> tuple[int, str]: ...


def subprocess_runner(home: Path, argv: Sequence[str]) -> tuple[int, str]:
    """Run ``python -m egressmail --home HOME ARGV`` as a child process (the real command line)."""
    proc = subprocess.run(  # noqa: S603 - our own interpreter and module, arguments from the seed
        [sys.executable, "-m", "egressmail", "--home", str(home), *argv],
        capture_output=True, text=True, timeout=60, check=False)
    return proc.returncode, proc.stdout + proc.stderr


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """How the demo runs.

    Attributes:
        seed: the seed folder (default: the packaged copy of ``examples/wknd``).
        keep_home: keep the home folder here (must not exist, or be empty); ``None`` = a temporary
            folder, removed at the end.
        proxy_host: the loopback address standing in for ``proxy.tunnel`` (``AEM_PROXY_HOST``).
        recipient: who the message is for (it never leaves the machine).
        timeout: the whole demo must finish in this many seconds.
        runner: how ``egressmail`` commands are run (the CLI passes an in-process runner).
    """

    seed: Path | None = None
    keep_home: Path | None = None
    proxy_host: str = DEFAULT_PROXY_HOST
    recipient: str = DEFAULT_RECIPIENT
    timeout: float = DEFAULT_TIMEOUT_S
    runner: CommandRunner = subprocess_runner


@dataclass
class DemoResult:
    """Everything the demo did (also attached to a :class:`DemoError` as far as it got)."""

    home: Path | None = None
    kept: bool = False
    steps: list[StepReport] = field(default_factory=list)
    message: ReceivedMessage | None = None
    access_log: list[str] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)
    failed_step: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` summary (no secrets)."""
        message = None
        if self.message is not None:
            message = {"mail_from": self.message.mail_from, "rcpt_tos": list(self.message.rcpt_tos),
                       "queue_id": self.message.queue_id, "tls": self.message.tls,
                       "authenticated": self.message.authenticated, "size": len(self.message.data)}
        return {"ok": self.failed_step is None, "failed_step": self.failed_step,
                "home": str(self.home) if self.home else None, "home_kept": self.kept,
                "steps": [s.to_dict() for s in self.steps], "message": message,
                "access_log": self.access_log, "transcript": self.transcript}


def _prepare_home(keep: Path | None) -> Path:
    if keep is None:
        return Path(tempfile.mkdtemp(prefix="egressmail-demo-"))
    if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
        raise DemoError("home", f"--keep-home {keep} exists and is not an empty folder",
                        hint="give a new folder name: the demo creates its own store there")
    keep.mkdir(parents=True, exist_ok=True)
    return keep


class _Demo:
    def __init__(self, options: DemoOptions, on_step: Callable[[StepReport], None]) -> None:
        self.options = options
        self.on_step = on_step
        self.result = DemoResult()
        self.step = "seed"

    def report(self, step: StepReport) -> None:
        self.result.steps.append(step)
        self.on_step(step)

    def run_command(self, seed: Seed, argv: Sequence[str], home: Path) -> CommandRun:
        from egressmail.demo.seed import mask_command

        line = mask_command(("egressmail", *argv), seed.secrets.values())
        code, output = self.options.runner(home, list(argv))
        for value in seed.secrets.values():  # belt and braces: the CLI never prints secrets anyway
            output = output.replace(value, "****") if value else output
        if code != 0:
            raise DemoError(self.step, f"`{line}` exited with {code}: {output.strip()}")
        return CommandRun(line=line, exit_code=code, output=output.rstrip())

    async def run(self, stack: contextlib.AsyncExitStack) -> None:
        opts = self.options
        seed = load_seed(opts.seed)
        self.report(StepReport("seed", "The seed's example", lines=(
            f"folder: {seed.root}",
            f"{seed.set_secrets.name}: program {seed.program}, environment {seed.environment}, "
            f"secrets {', '.join(seed.secrets) or '(none)'}",
            f"{seed.networking.name} and the mail service's configuration under {seed.config_root.name}/",
        )))

        self.step = "home"
        home = _prepare_home(opts.keep_home)
        self.result.home, self.result.kept = home, opts.keep_home is not None
        if opts.keep_home is None:
            stack.callback(shutil.rmtree, home, True)

        self.step = "secrets"
        run = self.run_command(seed, seed.argv, home)
        self.report(StepReport("secrets", "Set the environment's secrets (the seed's set-secrets.sh)",
                               lines=(f"home: {home} (a fresh store; secrets encrypted at rest)",),
                               commands=(run,)))

        self.step = "network"
        create = self.run_command(seed, ["network", "create", seed.program, "--kind", KIND], home)
        enable = self.run_command(seed, ["network", "enable", seed.program, seed.environment,
                                         "--json-file", str(seed.networking)], home)
        self.report(StepReport("network", "Create the network infrastructure and enable advanced networking",
                               commands=(create, enable)))

        self.step = "config"
        db = Database(home)
        loaded = load_service_config(seed.config_root, db=db, program=seed.program,
                                     environment=seed.environment,
                                     environ={PROXY_HOST_VARIABLE: opts.proxy_host},
                                     environ_label="set by the demo")
        forward = self._check_config(loaded)
        self.step = "provider"
        server, cafile = await self._start_provider(stack, seed, home, forward)
        self.step = "gateway"
        await self._start_gateway(stack, db, seed, loaded, forward, server)
        self.step = "send"
        await self._send(loaded, cafile)
        self.step = "received"
        try:
            async with asyncio.timeout(5.0):
                messages = await server.wait_for(1)
        except TimeoutError:
            raise DemoError("received", "the provider did not receive the message within 5 s") from None
        self._show_received(messages[0])

    def _check_config(self, loaded: ServiceConfig) -> PortForward:
        s = loaded.settings
        rows = (("property", "value", "type", "source"), *property_rows(loaded.resolved))
        egress = loaded.egress_map
        identity = tls_identity(s, egress)
        lines = [
            f"file: {loaded.path} (read unchanged)",
            f"{PROXY_HOST_VARIABLE}={self.options.proxy_host}: set by the demo for its own resolution "
            "(proxy.tunnel only resolves on the platform); your shell's environment is not used",
            f"connect to {s.host}:{s.port}, TLS {s.tls_mode}, verify the certificate for {identity.name!r} "
            f"({'the port forward' if identity.reason == 'forward' else identity.reason}'s name)",
        ]
        if not s.debug:
            lines.append("debug.email is false in the file: the demo turns the transcript on for this run")
        lines += [f"lint {f.severity}: {f.property or ''} {f.message}" for f in loaded.findings]
        report = StepReport("config", "Resolve the mail service's configuration (masked)",
                            lines=tuple(lines), table=tuple(rows))
        self.report(report)
        if loaded.errors:
            first = loaded.errors[0]
            raise DemoError("config", f"the lint refuses the configuration: {first.message}")
        forward = egress.forward_for(s.port) if egress is not None else None
        if forward is None:
            raise DemoError("config", f"no port forward declares portOrig {s.port}")
        return forward

    async def _start_provider(self, stack: contextlib.AsyncExitStack, seed: Seed, home: Path,
                              forward: PortForward) -> tuple[EmbeddedSmtpServer, Path]:
        api_key = seed.secrets.get(API_KEY_SECRET)
        if not api_key:
            raise DemoError("provider", f"the seed's command sets no secret {API_KEY_SECRET} (the API key)",
                            hint=f"set-secrets.sh must set --secret {API_KEY_SECRET} VALUE")
        tls = local_tls([forward.name], home / "demo-tls")
        server = EmbeddedSmtpServer(host="127.0.0.1", port=0, tls="implicit", ssl_context=tls.server_context,
                                    credentials=(PROVIDER_USER, Secret(api_key)), hostname=forward.name)
        await server.start()
        stack.push_async_callback(server.aclose)
        title = f"Start a stand-in for {forward.name} (embedded SMTP server)"
        self.report(StepReport("provider", title, lines=(
            f"listening on 127.0.0.1:{server.port}, implicit TLS like port {forward.port_dest}",
            f"certificate for {forward.name} from a CA made for this run: {tls.cafile}",
            f"AUTH: user {PROVIDER_USER}, password = the API key the seed stored as {API_KEY_SECRET}",
        )))
        return server, tls.cafile

    async def _start_gateway(self, stack: contextlib.AsyncExitStack, db: Database, seed: Seed,
                             loaded: ServiceConfig, forward: PortForward, server: EmbeddedSmtpServer) -> None:
        host = self.options.proxy_host
        pin = f"{forward.name}:{forward.port_dest}=127.0.0.1:{server.port}"
        self.access_buffer = io.StringIO()
        access_log = AccessLog(self.access_buffer)
        options = GatewayOptions(listen_host=host, http_proxy_port=None, connect_to=(parse_connect_to(pin),))
        gateway = Gateway(lambda: load_egress_map(db, seed.program, seed.environment), options,
                          access_log=access_log)
        try:
            await gateway.start()
        except GatewayBindError as exc:
            raise DemoError("gateway", exc.message,
                            hint=f"something else listens on {host}:{forward.port_orig} (another gateway or "
                                 f"demo?): stop it, or run the demo on another loopback address, e.g. "
                                 f"`egressmail demo --proxy-host 127.0.0.2`") from None
        self.gateway = gateway
        stack.push_async_callback(self._stop_gateway)
        command = (f"egressmail gateway run {seed.program} {seed.environment} --listen {host} "
                   f"--no-http-proxy --connect-to {pin}")
        self.report(StepReport("gateway", "Start the egress gateway (in-process)", lines=(
            f"listening on {host}:{forward.port_orig} (portOrig) → {forward.name}:{forward.port_dest}",
            f"{forward.name}:{forward.port_dest} is pinned to the stand-in: --connect-to {pin}",
            f"the same as: {command}",
        )))

    async def _stop_gateway(self) -> None:
        await self.gateway.aclose(drain_timeout=2.0)

    async def _send(self, loaded: ServiceConfig, cafile: Path) -> None:
        s = loaded.settings
        config = dataclasses.replace(TransportConfig.from_settings(s, loaded.egress_map), debug=True,
                                     cafile=str(cafile))
        envelope = build_envelope(Message(
            to=self.options.recipient, subject="Hello from the egressmail demo",
            text="This message left the app through the egress gateway, over TLS verified for the "
                 "provider's name, authenticated with the secret from set-secrets.sh.\n"),
            s.from_address)
        with TranscriptCapture() as capture:
            try:
                async with SmtpTransport(config)() as session:
                    result = await session.send(envelope)
            except MailError as exc:
                self.result.transcript = list(capture.lines)
                raise DemoError("send", exc.message, hint=exc.hint) from None
        self.result.transcript = list(capture.lines)
        self.session_id = result.session_id
        code, text = result.reply
        title = f"Send a message from {s.from_address} to {self.options.recipient}"
        self.report(StepReport("send", title, lines=(
            f"the client trusts the demo's CA ({cafile}) as egressmail.tls.cafile would",
            f"session {result.session_id}: {code} {text}",
        ), blocks=(("SMTP transcript (debug.email, redacted)", "\n".join(capture.lines)),)))

    def _show_received(self, message: ReceivedMessage) -> None:
        self.result.message = message
        text = readable_message(message.data)
        rcpts = ", ".join(f"<{r}>" for r in message.rcpt_tos)
        self.report(StepReport("received", "The message as the provider received it", lines=(
            f"from the gateway's connection {message.peer}: TLS {'yes' if message.tls else 'no'}, "
            f"authenticated {'yes' if message.authenticated else 'no'}, queued as {message.queue_id}",
            f"envelope: MAIL FROM:<{message.mail_from}> RCPT TO:{rcpts}",
        ), blocks=(("message", text),)))

    async def finish(self) -> None:
        """Stop the gateway first so that its access-log line is written, then report it."""
        await self._stop_gateway()
        self.result.access_log = [line for line in self.access_buffer.getvalue().splitlines() if line]
        client = self.session_id.split("@", 1)[1] if "@" in self.session_id else "?"
        self.report(StepReport("access-log", "The gateway's access log", lines=(
            f"client={client} is the transcript's session {self.session_id}: the two logs join on it",
        ), blocks=(("access log", "\n".join(self.result.access_log)),)))


def readable_message(data: bytes) -> str:
    """The message's header fields as received, then its text decoded (quoted-printable, base64)."""
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").replace("\r\n", "\n")
    body = ""
    if isinstance(parsed, EmailMessage):
        part = parsed.get_body(("plain", "html"))
        if part is not None and isinstance(part, EmailMessage):
            body = str(part.get_content()).rstrip()
    return f"{head}\n\n{body}" if body else head


async def run_demo(options: DemoOptions, on_step: Callable[[StepReport], None] = lambda step: None
                   ) -> DemoResult:
    """Run the scenario (see the module docstring); ``on_step`` is called as each step completes.

    Raises:
        DemoError: a step failed (``.step`` names it; ``.result`` holds what was done so far);
            everything started was stopped first.
    """
    demo = _Demo(options, on_step)
    try:
        async with asyncio.timeout(options.timeout):
            async with contextlib.AsyncExitStack() as stack:
                await demo.run(stack)
                await demo.finish()
    except DemoError as exc:
        demo.result.failed_step = exc.step
        exc.result = demo.result
        raise
    except TimeoutError:
        demo.result.failed_step = demo.step
        error = DemoError(demo.step, f"the demo did not finish within {options.timeout:g} s")
        error.result = demo.result
        raise error from None
    except EgressMailError as exc:
        demo.result.failed_step = demo.step
        error = DemoError(demo.step, exc.message, hint=exc.hint)
        error.result = demo.result
        raise error from None
    demo.report(StepReport("stop", "Stop everything the demo started", lines=(
        "the gateway, the stand-in provider and the client session are closed",
        f"home kept in {demo.result.home}" if demo.result.kept else "the temporary home was removed",
    )))
    return demo.result
