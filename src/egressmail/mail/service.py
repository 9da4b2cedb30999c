"""``MailService``: the facade applications use, like AEM's ``DefaultMailService``.

Built from the ``com.day.cq.mailer.DefaultMailService`` configuration (run-mode folders, placeholders
filled from an environment's variables and secrets, the environment's egress map), or from a plain
property dict for applications that do not use the store. It lints the settings before anything
connects (an error finding stops it), builds messages with the stdlib ``email`` package, and sends
them over the aiosmtplib transport, one connection per call or one per batch.

When built from the store, the service compares the environment's change counter (``generation``)
before each send and re-resolves the configuration when it moved: a rotated secret is used by the
next send, without a restart.

With an ``outbox`` the send is durable (``mail/outbox_send.py``): queued on disk first, then
delivered in the caller's task; otherwise it goes straight to the server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from egressmail.mail.envelope import Envelope, SendResult
from egressmail.mail.errors import MailError, TransientDeliveryError
from egressmail.mail.lint import Finding, lint, raise_for_errors
from egressmail.mail.message import Message, build_envelope
from egressmail.mail.oauth import OAuthTokenProvider
from egressmail.mail.settings import (
    DEFAULT_PROXY_PORT,
    MailSettings,
    OAuthSettings,
    parse_mail_settings,
    parse_oauth_settings,
)
from egressmail.mail.transport import AioSmtpSession, SmtpTransport, TransportConfig
from egressmail.networking.model import EgressMap

if TYPE_CHECKING:
    from egressmail.mail.outbox import Outbox
    from egressmail.mail.outbox_send import Queued
    from egressmail.storage.sqlite import Database

log = logging.getLogger("egressmail.mail.service")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Loaded:
    """Settings and egress map of one resolution, with the generation they were resolved at."""

    settings: MailSettings
    egress_map: EgressMap | None
    generation: int | None = None


def oauth_proxy_url(settings: MailSettings, egress_map: EgressMap | None,
                    environ: Mapping[str, str] | None = None) -> str | None:
    """The HTTP proxy for the OAuth2 token request.

    ``egressmail.oauth.proxy`` if set; else, when the service goes out through the gateway (an egress
    map with a forward for ``smtp.port``), the gateway's HTTP proxy at ``smtp.host`` (which is what
    ``AEM_PROXY_HOST`` resolved to) on ``$AEM_HTTPS_PROXY_PORT`` (3128); else no proxy.
    """
    if settings.oauth_proxy:
        return settings.oauth_proxy
    env = os.environ if environ is None else environ
    if egress_map is not None and egress_map.forward_for(settings.port) is not None:
        port = env.get("AEM_HTTPS_PROXY_PORT") or str(DEFAULT_PROXY_PORT)
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        return f"http://{host}:{port}"
    return None


class MailService:
    """Sends messages with one mail service configuration.

    Prefer :meth:`from_config` or :meth:`from_properties`; the constructor takes parsed settings.

    Args:
        settings: the parsed settings.
        egress_map: the environment's egress map (``None``: connect straight to ``smtp.host``).
        outbox: when given, sends are durable (queued on disk first).
        reload: re-resolves settings and egress map (used when ``generation`` reports a change).
        generation: reads the environment's change counter.

    Raises:
        MailConfigError: the lint found an error (an unresolved placeholder, the provider's port instead
            of a ``portOrig``, ``smtp.ssl`` that does not match the forward, a secret with stray
            whitespace, an environment without advanced networking...).
    """

    def __init__(self, settings: MailSettings, egress_map: EgressMap | None = None, *,
                 outbox: Outbox | None = None, reload: Callable[[], Loaded] | None = None,
                 generation: Callable[[], int] | None = None, loaded_generation: int | None = None) -> None:
        self.outbox = outbox
        self._reload = reload
        self._generation = generation
        self._tokens: OAuthTokenProvider | None = None
        self._lock = threading.Lock()
        self._apply(Loaded(settings, egress_map, loaded_generation))

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def from_properties(cls, properties: Mapping[str, object], *, egress_map: EgressMap | None = None,
                        oauth_properties: Mapping[str, object] | None = None, source: str = "<properties>",
                        outbox: Outbox | None = None) -> MailService:
        """A service from a plain dict of the ``DefaultMailService`` properties (values already final).

        Example::

            MailService.from_properties({"smtp.host": "smtp.example.com", "smtp.port": 465,
                                         "smtp.ssl": True, "smtp.user": "apikey",
                                         "smtp.password": key, "from.address": "noreply@example.com"})

        Raises:
            MailConfigError: a value has the wrong type, or the lint found an error.
        """
        oauth: OAuthSettings | None = None
        if oauth_properties is not None:
            oauth = parse_oauth_settings(oauth_properties, source=f"{source} (oauth)")
        settings = parse_mail_settings(properties, source=source, oauth=oauth)
        return cls(settings, egress_map, outbox=outbox)

    @classmethod
    def from_config(cls, config: str | os.PathLike[str], *, program: str | None = None,
                    environment: str | None = None, run_modes: str | None = None,
                    service: str | None = None, home: str | os.PathLike[str] | None = None,
                    db: Database | None = None, environ: Mapping[str, str] | None = None,
                    secret_dirs: Iterable[Path] = (), outbox: Outbox | None = None) -> MailService:
        """A service from the ``.cfg.json`` configuration, the way the platform would run it.

        Args:
            config: the ``com.day.cq.mailer.DefaultMailService.cfg.json`` file or a config root
                (``.../osgiconfig`` with ``config``/``config.<runmode>`` folders).
            program / environment: the environment whose variables, secrets and egress map apply.
            run_modes: the active run modes, e.g. ``"publish,prod"``.
            service: ``author``, ``publish`` or ``preview`` (service-scoped variables).
            home: the egressmail home folder holding the store (default: ``$EGRESSMAIL_HOME``...).
            db: the store itself (instead of ``home``).
            environ: what ``$[env:X]`` falls back to (default: the process environment).
            secret_dirs: folders of secret files for ``$[secret:X]``.
            outbox: send durably through this outbox.

        Raises:
            ConfigError: the file or folder is missing or malformed.
            MailConfigError: a property has the wrong type, or the lint found an error.
            StoreError: the environment does not exist or its secrets cannot be read.
        """
        from egressmail.mail.service_config import load_service_config

        if (program is None) != (environment is None):
            raise ValueError("program and environment go together")
        if program is not None and environment is not None and db is None:
            from egressmail.storage.home import resolve_home
            from egressmail.storage.sqlite import Database

            db = Database(resolve_home(home))
        dirs = tuple(secret_dirs)

        def reload() -> Loaded:
            gen = read_generation() if read_generation is not None else None
            loaded = load_service_config(Path(config), db=db, program=program, environment=environment,
                                         run_modes=run_modes, service=service, environ=environ,
                                         secret_dirs=dirs)
            return Loaded(loaded.settings, loaded.egress_map, gen)

        read_generation: Callable[[], int] | None = None
        if program is not None and environment is not None and db is not None:
            read_generation = _generation_reader(db, program, environment)
        first = reload()
        return cls(first.settings, first.egress_map, outbox=outbox, reload=reload,
                   generation=read_generation, loaded_generation=first.generation)

    # -- state -----------------------------------------------------------------------------------

    def _apply(self, loaded: Loaded) -> None:
        settings, egress_map = loaded.settings, loaded.egress_map
        findings = lint(settings, egress_map)
        raise_for_errors(findings, settings.source)
        for finding in findings:
            log.warning("%s: %s", settings.source, finding)
        tokens: OAuthTokenProvider | None = None
        if settings.oauth_flow and settings.oauth is not None:
            proxy = oauth_proxy_url(settings, egress_map)
            old = self._tokens
            # Keep the cached access token unless the OAuth configuration (or its secrets) changed.
            same = (old is not None and old.settings == settings.oauth and old.proxy == proxy)
            tokens = old if same else OAuthTokenProvider(settings.oauth, proxy=proxy, cafile=settings.cafile)
        secrets = tokens.secrets if tokens is not None else ()
        transport = SmtpTransport(TransportConfig.from_settings(settings, egress_map, tokens=tokens),
                                  secrets=secrets)
        self._tokens = tokens
        self._settings = settings
        self._egress_map = egress_map
        self._findings = tuple(findings)
        self._transport = transport
        self._loaded_generation = loaded.generation

    def refresh(self) -> bool:
        """Re-resolve the configuration if the environment changed since it was read.

        Returns:
            True when it was re-resolved.

        Raises:
            MailConfigError: the changed configuration no longer passes the lint (the old one stays).
        """
        if self._reload is None or self._generation is None:
            return False
        with self._lock:
            current = self._generation()
            if current == self._loaded_generation:
                return False
            self._apply(self._reload())
            log.info("mail service configuration re-resolved (environment generation %s)", current)
            return True

    @property
    def settings(self) -> MailSettings:
        """The settings in force (the password is a masked ``Secret``)."""
        return self._settings

    @property
    def egress_map(self) -> EgressMap | None:
        """The egress map in force."""
        return self._egress_map

    @property
    def findings(self) -> tuple[Finding, ...]:
        """The lint's findings (warnings only: errors stop the service)."""
        return self._findings

    @property
    def transport(self) -> SmtpTransport:
        """The transport in force (refreshing first when the environment changed)."""
        self.refresh()
        return self._transport

    def session_factory(self) -> AbstractAsyncContextManager[AioSmtpSession]:
        """A ``SessionFactory`` that always uses the current configuration (for the outbox worker)."""
        return self.transport()

    def envelope(self, message: Message | Envelope) -> Envelope:
        """The envelope for ``message`` (``from.address`` unless the message names a sender).

        Raises:
            MessageError: the message is invalid (bad address, header injection, no body...).
        """
        if isinstance(message, Envelope):
            return message
        return build_envelope(message, self._settings.from_address)

    # -- sending ---------------------------------------------------------------------------------

    async def asend(self, message: Message | Envelope, *,
                    idempotency_key: str | None = None) -> SendResult:
        """Send one message and return the server's answer.

        With an outbox, ``idempotency_key`` makes a second send with the same key return the first
        message's outcome instead of queueing a copy.

        Raises:
            MessageError: the message is invalid; nothing was sent.
            MailConfigError: the configuration (re-resolved after a change) does not pass the lint.
            TransientDeliveryError: a 4xx reply, a connection problem or a timeout (with an outbox:
                the message stays queued and is retried).
            PermanentDeliveryError: a 5xx reply.
            DeliveryUnknown: the connection was lost after the final ``.``.
            MailTLSError, TLSRequiredError: the connection could not be secured; nothing was sent.
        """
        transport = self.transport
        envelope = self.envelope(message)
        if self.outbox is not None:
            from egressmail.mail.outbox_send import send_durably

            queued = await send_durably(self.outbox, envelope, self.session_factory, wait=True,
                                        idempotency_key=idempotency_key)
            if queued.result is not None:
                return queued.result
            return SendResult(message_id=envelope.message_id, accepted={}, refused={}, session_id="",
                              reply=(250, f"already sent (outbox {queued.id})"))
        async with transport() as session:
            return await session.send(envelope)

    async def aqueue(self, message: Message | Envelope, *,
                     idempotency_key: str | None = None) -> Queued:
        """Queue one message durably and return at once (``egressmail send --no-wait``); a worker
        (``egressmail worker run``) delivers it. The receipt's id is the outbox id.

        Raises:
            MessageError: the message is invalid; nothing was queued.
            OutboxError: the service has no outbox, or it cannot be written.
        """
        from egressmail.mail.outbox_model import OutboxError
        from egressmail.mail.outbox_send import send_durably

        if self.outbox is None:
            raise OutboxError("this mail service has no outbox to queue into",
                              hint="build it with outbox=Outbox(home)")
        return await send_durably(self.outbox, self.envelope(message), self.session_factory,
                                  wait=False, idempotency_key=idempotency_key)

    async def asend_many(self, messages: Sequence[Message | Envelope]) -> list[SendResult | MailError]:
        """Send several messages over one connection (reconnecting once if it breaks).

        Each message gets its result or its error, in order; an invalid message does not stop the
        others; a message left over when the re-opened connection breaks too gets a
        ``TransientDeliveryError``. A failure to connect at all is raised.

        Raises:
            MailConfigError: the configuration does not pass the lint.
            TransientDeliveryError, PermanentDeliveryError, MailTLSError, TLSRequiredError: the connection
                (or its re-opening) failed.
        """
        transport = self.transport
        results: list[SendResult | MailError | None] = [None] * len(messages)
        envelopes: list[tuple[int, Envelope]] = []
        for i, message in enumerate(messages):
            try:
                envelopes.append((i, self.envelope(message)))
            except MailError as exc:
                results[i] = exc
        pending = envelopes
        for _attempt in (1, 2):
            if not pending:
                break
            async with transport() as session:
                remaining: list[tuple[int, Envelope]] = []
                for i, env in pending:
                    if not session.is_open:
                        remaining.append((i, env))
                        continue
                    try:
                        results[i] = await session.send(env)
                    except MailError as exc:
                        results[i] = exc
                pending = remaining
        for i, _env in pending:
            # The re-opened connection broke too: say so per message rather than leave a hole.
            results[i] = TransientDeliveryError(
                f"not sent: the connection to {transport.config.where} was lost twice in this batch",
                stage="connect", host=transport.config.host, port=transport.config.port,
                forward=transport.config.forward, hint="send it again later")
        final: list[SendResult | MailError] = []
        for r in results:
            assert r is not None  # noqa: S101 - every index is filled above or left pending
            final.append(r)
        return final

    def send(self, message: Message | Envelope, *, idempotency_key: str | None = None) -> SendResult:
        """Synchronous :meth:`asend` (also callable from a thread whose event loop is running).

        Raises:
            The same errors as :meth:`asend`.
        """
        return _run_sync(self.asend(message, idempotency_key=idempotency_key))

    def queue(self, message: Message | Envelope, *, idempotency_key: str | None = None) -> Queued:
        """Synchronous :meth:`aqueue`.

        Raises:
            The same errors as :meth:`aqueue`.
        """
        return _run_sync(self.aqueue(message, idempotency_key=idempotency_key))

    def send_many(self, messages: Sequence[Message | Envelope]) -> list[SendResult | MailError]:
        """Synchronous :meth:`asend_many`."""
        return _run_sync(self.asend_many(messages))


def _generation_reader(db: Database, program: str, environment: str) -> Callable[[], int]:
    from egressmail.storage.ids import normalize_environment_id, normalize_program_id
    from egressmail.storage.sqlite import generation

    prog, env = normalize_program_id(program), normalize_environment_id(environment)

    def read() -> int:
        with db.reading() as conn:
            return generation(conn, prog, env)

    return read


def _run_sync(coro: Awaitable[_T]) -> _T:
    async def main() -> _T:
        return await coro

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    # A loop already runs in this thread (a notebook, an async framework calling sync code): run
    # ours in a helper thread rather than fail.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()
