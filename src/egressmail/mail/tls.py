"""TLS identity through the tunnel: which name to verify, which CAs to trust, and what went wrong.

The SMTP client dials ``smtp.host:smtp.port``, which on the platform is the egress gateway
(``proxy.tunnel:30002``). The gateway relays bytes to the provider without touching TLS, so the
certificate that comes back is the *provider's*: it names ``smtp.sendgrid.com``, not
``proxy.tunnel``. The name sent as SNI and checked against the certificate is therefore, in order:

1. the extension property ``egressmail.tls.servername`` when set;
2. the ``name`` of the port forward whose ``portOrig`` is ``smtp.port`` (from the environment's egress map);
3. ``smtp.host`` itself (a direct connection, no gateway).

Verification is always on; there is no insecure mode. Trust comes from ``egressmail.tls.cafile`` if
set, else ``$SSL_CERT_FILE`` if set, else the system's default store.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

from egressmail.mail.errors import MailConfigError
from egressmail.mail.settings import EXT_TLS_CAFILE, MailSettings
from egressmail.networking.model import EgressMap, PortForward

SSL_CERT_FILE_ENV = "SSL_CERT_FILE"
_E = TypeVar("_E", bound=BaseException)


@dataclass(frozen=True, slots=True)
class TlsIdentity:
    """The name to verify and why it was chosen (``"override"``, ``"forward"`` or ``"host"``)."""

    name: str
    reason: str
    forward: PortForward | None = None


def tls_identity(settings: MailSettings, egress_map: EgressMap | None) -> TlsIdentity:
    """Decide the TLS name for ``settings`` (see the module docstring for the order)."""
    forward = egress_map.forward_for(settings.port) if egress_map is not None else None
    if settings.tls_server_name:
        return TlsIdentity(settings.tls_server_name, "override", forward)
    if forward is not None:
        return TlsIdentity(forward.name, "forward", forward)
    return TlsIdentity(settings.host.strip("[]").lower(), "host", None)


def trust_source(cafile: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The CA bundle file in force: the explicit one, else ``$SSL_CERT_FILE``, else ``None`` (system)."""
    env = os.environ if environ is None else environ
    return cafile or env.get(SSL_CERT_FILE_ENV) or None


@lru_cache(maxsize=16)
def _context_for(cafile: str | None, mtime_ns: int) -> ssl.SSLContext:
    # Keyed by the file's mtime so a replaced bundle is picked up without a restart.
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(cafile: str | None = None, environ: Mapping[str, str] | None = None) -> ssl.SSLContext:
    """A verifying client context (TLS 1.2+) trusting ``cafile``, else ``$SSL_CERT_FILE``, else the system.

    Raises:
        MailConfigError: the CA bundle cannot be read or holds no certificate.
    """
    path = trust_source(cafile, environ)
    if path is None:
        return _context_for(None, 0)
    where = EXT_TLS_CAFILE if cafile else f"${SSL_CERT_FILE_ENV}"
    try:
        mtime = os.stat(path).st_mtime_ns
        return _context_for(path, mtime)
    except (OSError, ssl.SSLError) as exc:
        raise MailConfigError(f"cannot load the CA bundle {path!r} ({where}): {exc}", stage="config",
                              hint="point it at a readable PEM file of CA certificates") from exc


def describe_tls_failure(exc: BaseException, connect: str, name: str) -> tuple[str, str]:
    """A sentence for a TLS failure and a hint, naming where we connected and which name we expected."""
    cert_error = _find(exc, ssl.SSLCertVerificationError)
    if cert_error is not None:
        reason = cert_error.verify_message or str(cert_error)
        hint = ("check that the port forward's name is the provider's host name, or set "
                "egressmail.tls.servername; for a private CA set egressmail.tls.cafile")
        if "expired" in reason:
            hint = "the server's certificate has expired: the provider must renew it"
        elif "self-signed" in reason or "self signed" in reason:
            hint = ("the server presented a self-signed certificate: if it is yours, give its CA in "
                    "egressmail.tls.cafile; otherwise something is intercepting the connection")
        return (f"the certificate presented at {connect} is not valid for {name!r}: {reason}", hint)
    ssl_error = _find(exc, ssl.SSLError)
    if ssl_error is not None and "WRONG_VERSION_NUMBER" in str(ssl_error).upper():
        return (f"the server at {connect} did not answer the TLS handshake with TLS (expected a "
                f"certificate for {name!r})",
                "the port speaks plain SMTP (STARTTLS, e.g. 587): set smtp.ssl to false")
    return (f"the TLS handshake with {connect} (expecting {name!r}) failed: {exc}",
            "check the port forward and that the server speaks TLS on this port")


def _find(exc: BaseException | None, kind: type[_E]) -> _E | None:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kind):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def is_tls_failure(exc: BaseException) -> bool:
    """True when ``exc`` (or its cause chain) is an ``ssl.SSLError``."""
    return _find(exc, ssl.SSLError) is not None
