"""OAuth2 access tokens for SASL XOAUTH2 (``oauth.flow: true``).

The refresh token (obtained once, by hand, with the authorization-code flow and stored as a secret)
is exchanged at ``refreshUrl`` with ``grant_type=refresh_token`` for an access token. The token is
cached until :data:`EXPIRY_MARGIN_S` before it expires; the transport asks for a *fresh* one once
when the SMTP server refuses the cached one. When the provider rotates the refresh token (Microsoft
does), the new one is used for the next exchange while the process runs; the stored secret is not
rewritten (rotate it with the CLI when the provider requires).

The token endpoint is HTTPS, so on the platform it is reached through the egress gateway's HTTP
proxy (``CONNECT``), never through a port forward. Certificates are verified with the same CA
bundle rules as SMTP (``egressmail.tls.cafile``, ``$SSL_CERT_FILE``, the system store).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from egressmail.mail.errors import MailError, PermanentDeliveryError, TransientDeliveryError
from egressmail.mail.settings import OAuthSettings, Secret
from egressmail.mail.tls import client_context

EXPIRY_MARGIN_S = 60.0  # renew this long before the provider's expiry
DEFAULT_EXPIRES_IN_S = 3600.0  # when the endpoint does not say
DEFAULT_TOKEN_TIMEOUT_S = 15.0


class OAuthTokenProvider:
    """Exchanges the refresh token for access tokens and caches them (a ``TokenSource``).

    Args:
        oauth: the OAuth provider configuration.
        proxy: HTTP proxy URL for the token request (the gateway's, e.g. ``http://proxy.tunnel:3128``),
            or ``None`` to connect directly.
        cafile: CA bundle for the endpoint's certificate (else ``$SSL_CERT_FILE``, else the system's).
        timeout: seconds for the whole token request.
        clock: monotonic clock (tests).
    """

    def __init__(self, oauth: OAuthSettings, *, proxy: str | None = None, cafile: str | None = None,
                 timeout: float = DEFAULT_TOKEN_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = oauth
        self.proxy = proxy
        self._oauth = oauth
        self._proxy = proxy
        self._verify = client_context(cafile)
        self._timeout = timeout
        self._clock = clock
        self._refresh_token = oauth.refresh_token
        self._token: Secret | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self.exchanges = 0  # how many times the endpoint was called (observability, tests)

    def __repr__(self) -> str:
        return f"OAuthTokenProvider(refresh_url={self._endpoint()!r}, proxy={self._shown_proxy()!r})"

    def _endpoint(self) -> str:
        # Scheme, host and path only: a query string or user:password@ could carry a credential.
        parts = urlsplit(self._oauth.refresh_url)
        return f"{parts.scheme}://{_host_port(parts.netloc)}{parts.path}"

    def _shown_proxy(self) -> str | None:
        if self._proxy is None:
            return None
        parts = urlsplit(self._proxy)
        return f"{parts.scheme}://{_host_port(parts.netloc)}" if parts.scheme else "<proxy>"

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values to mask in transcripts: the refresh token, client secret and current access token."""
        values = [self._refresh_token.reveal()]
        if self._oauth.client_secret is not None:
            values.append(self._oauth.client_secret.reveal())
        if self._token is not None:
            values.append(self._token.reveal())
        return tuple(v for v in values if v)

    async def token(self, *, fresh: bool = False) -> Secret:
        """A valid access token (cached unless ``fresh`` or about to expire).

        Raises:
            TransientDeliveryError: stage ``oauth``: the endpoint could not be reached, timed out or
                answered 5xx/429.
            PermanentDeliveryError: stage ``oauth``: the endpoint refused the exchange (4xx, e.g.
                ``invalid_grant`` for a revoked refresh token) or answered without an access token.
        """
        async with self._lock:
            if not fresh and self._token is not None and self._clock() < self._expires_at - EXPIRY_MARGIN_S:
                return self._token
            self._token, self._expires_at = await self._exchange()
            return self._token

    def _error(self, cls: type[MailError], text: str, hint: str | None = None) -> MailError:
        via = f" via proxy {self._shown_proxy()}" if self._proxy else ""
        return cls(f"OAuth2 token request to {self._endpoint()}{via} failed: {text}", stage="oauth",
                   hint=hint)

    async def _exchange(self) -> tuple[Secret, float]:
        o = self._oauth
        form = {"grant_type": "refresh_token", "refresh_token": self._refresh_token.reveal(),
                "client_id": o.client_id}
        if o.client_secret is not None and o.client_secret.reveal():
            form["client_secret"] = o.client_secret.reveal()
        if o.scopes:
            form["scope"] = " ".join(o.scopes)
        started = self._clock()
        self.exchanges += 1
        try:
            async with httpx.AsyncClient(proxy=self._proxy, verify=self._verify, timeout=self._timeout,
                                         trust_env=False, follow_redirects=False) as client:
                response = await client.post(o.refresh_url, data=form, headers={"Accept": "application/json"})
        except httpx.TimeoutException as exc:
            raise self._error(TransientDeliveryError, f"no answer within {self._timeout} s") from exc
        except httpx.HTTPError as exc:
            # httpx's messages name the URL or proxy, never the form body.
            raise self._error(TransientDeliveryError, f"{type(exc).__name__}: {exc}",
                              hint="check the proxy (the gateway's HTTP proxy) and the endpoint's "
                                   "certificate (egressmail.tls.cafile)") from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        payload = body if isinstance(body, dict) else {}
        if response.status_code != 200:
            code = payload.get("error")
            reason = f"HTTP {response.status_code}" + (f" {code}" if isinstance(code, str) else "")
            if response.status_code >= 500 or response.status_code == 429:
                raise self._error(TransientDeliveryError, reason)
            raise self._error(PermanentDeliveryError, reason,
                              hint="the refresh token may be expired or revoked: obtain a new one with "
                                   "the authorization-code flow and set the refreshToken secret again")
        access = payload.get("access_token")
        if not isinstance(access, str) or not access:
            raise self._error(PermanentDeliveryError, "the answer holds no access_token")
        expires_in = payload.get("expires_in", DEFAULT_EXPIRES_IN_S)
        try:
            lifetime = float(expires_in)
        except (TypeError, ValueError):
            lifetime = DEFAULT_EXPIRES_IN_S
        rotated = payload.get("refresh_token")
        if isinstance(rotated, str) and rotated:
            self._refresh_token = Secret(rotated)
        return Secret(access), started + lifetime


def _host_port(netloc: str) -> str:
    """``netloc`` without ``user:password@`` (a proxy or endpoint URL may carry credentials)."""
    return netloc.rpartition("@")[2]
