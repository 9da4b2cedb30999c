"""The mail service's settings: the ten ``DefaultMailService`` properties plus egressmail's extensions.

:func:`parse_mail_settings` turns the resolved property values (after placeholder interpolation)
into a frozen :class:`MailSettings`, accepting the JSON types the seed writes (``"30002"`` or
``30465`` as a port; ``true`` or ``"true"`` as a boolean). A value of the wrong type is a
:class:`~egressmail.mail.errors.MailConfigError` naming the file, the property and the value (never
the value of a secret). A placeholder left unresolved is *recorded*, not an error here: the lint
(``mail/lint.py``) reports it with what to change, and the service refuses to start.

Pure: no files, no sockets. ``SSL_CERT_FILE`` is read by ``mail/tls.py`` when contexts are built.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from egressmail.mail.errors import MailConfigError

MAIL_PID: Final = "com.day.cq.mailer.DefaultMailService"
OAUTH_PID: Final = "com.day.cq.mailer.oauth.impl.OAuthConfigurationProviderImpl"

# The ten properties of the original.
SMTP_HOST: Final = "smtp.host"
SMTP_PORT: Final = "smtp.port"
SMTP_USER: Final = "smtp.user"
SMTP_PASSWORD: Final = "smtp.password"  # noqa: S105 - a property name, not a password
FROM_ADDRESS: Final = "from.address"
SMTP_SSL: Final = "smtp.ssl"
SMTP_STARTTLS: Final = "smtp.starttls"
SMTP_REQUIRETLS: Final = "smtp.requiretls"
DEBUG_EMAIL: Final = "debug.email"
OAUTH_FLOW: Final = "oauth.flow"

# egressmail's extension properties (docs/mail.md lists them with their defaults).
EXT_TLS_SERVER_NAME: Final = "egressmail.tls.servername"
EXT_TLS_CAFILE: Final = "egressmail.tls.cafile"
EXT_CONNECT_TIMEOUT: Final = "egressmail.timeout.connect"
EXT_READ_TIMEOUT: Final = "egressmail.timeout.read"
EXT_ALLOW_PLAINTEXT_AUTH: Final = "egressmail.auth.allowplaintext"
EXT_EHLO_NAME: Final = "egressmail.ehlo.name"
EXT_OAUTH_PROXY: Final = "egressmail.oauth.proxy"
EXT_PIPELINING: Final = "egressmail.smtp.pipelining"

STANDARD_PROPERTIES: Final = (SMTP_HOST, SMTP_PORT, SMTP_USER, SMTP_PASSWORD, FROM_ADDRESS, SMTP_SSL,
                              SMTP_STARTTLS, SMTP_REQUIRETLS, DEBUG_EMAIL, OAUTH_FLOW)
EXTENSION_PROPERTIES: Final = (EXT_TLS_SERVER_NAME, EXT_TLS_CAFILE, EXT_CONNECT_TIMEOUT, EXT_READ_TIMEOUT,
                               EXT_ALLOW_PLAINTEXT_AUTH, EXT_EHLO_NAME, EXT_OAUTH_PROXY, EXT_PIPELINING)
# Properties whose values are credentials even when they do not come from a $[secret:] placeholder.
ALWAYS_SECRET: Final = frozenset({SMTP_PASSWORD})
# Name spaces we own: an unknown key there is probably a typo worth a lint warning.
_OWN_PREFIXES: Final = ("smtp.", "from.", "debug.", "oauth.", "egressmail.")

DEFAULT_CONNECT_TIMEOUT_S: Final = 10.0  # TCP connect + TLS handshake + greeting
DEFAULT_READ_TIMEOUT_S: Final = 30.0  # per reply (aiosmtplib semantics), incl. the reply to DATA's "."
DEFAULT_SMTP_PORT: Final = 25
DEFAULT_PROXY_PORT: Final = 3128  # AEM_HTTPS_PROXY_PORT on the platform

# A Felix placeholder that interpolation left in the value: $[env:X], $[secret:X;default=...], ...
UNRESOLVED_PLACEHOLDER: Final = re.compile(r"\$\[(env|secret|prop|conf):[^\]]*\]")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(\.{_LABEL})*|\[?[0-9A-Fa-f:.]+\]?")


class Secret:
    """A credential: its value is only available through :meth:`reveal`; ``repr`` and ``str`` mask it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The actual value (for the wire only: never log or print it)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('****')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-phase timeouts in seconds (``None`` = wait forever; never the default)."""

    connect: float | None = DEFAULT_CONNECT_TIMEOUT_S
    read: float | None = DEFAULT_READ_TIMEOUT_S


@dataclass(frozen=True, slots=True)
class OAuthSettings:
    """The ``OAuthConfigurationProviderImpl`` configuration (only ``refreshUrl``/``refreshToken`` and
    the client credentials are needed at run time; the rest is for the one-off authorization)."""

    refresh_url: str
    client_id: str
    client_secret: Secret | None
    refresh_token: Secret
    scopes: tuple[str, ...] = ()
    token_url: str | None = None
    auth_url: str | None = None
    redirect_url: str | None = None
    source: str = "<properties>"
    unresolved: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class MailSettings:
    """The effective settings of one mail service.

    ``starttls`` is the *effective* value, ``not ssl``, as the platform overrides it at run time;
    ``starttls_configured`` keeps what the file said. ``unresolved`` lists ``(property, placeholder)``
    pairs that interpolation could not fill; ``secret_properties`` names the properties whose values
    are credentials (never shown).
    """

    host: str
    port: int
    from_address: str
    user: str | None = None
    password: Secret | None = field(default=None, repr=False)
    ssl: bool = False
    starttls_configured: bool = False
    requiretls: bool = False
    debug: bool = False
    oauth_flow: bool = False
    tls_server_name: str | None = None
    cafile: str | None = None
    timeouts: Timeouts = Timeouts()
    allow_plaintext_auth: bool = False
    ehlo_name: str | None = None
    oauth_proxy: str | None = field(default=None, repr=False)  # a proxy URL may carry user:password@
    pipelining: bool = True
    oauth: OAuthSettings | None = None
    source: str = "<properties>"
    secret_properties: frozenset[str] = ALWAYS_SECRET
    unresolved: tuple[tuple[str, str], ...] = ()
    unknown_properties: tuple[str, ...] = ()

    @property
    def starttls(self) -> bool:
        """Whether STARTTLS is used: the platform's override, ``not smtp.ssl``."""
        return not self.ssl

    @property
    def tls_mode(self) -> str:
        """``"implicit"`` (TLS from the first byte) or ``"starttls"``."""
        return "implicit" if self.ssl else "starttls"


class _Reader:
    """Reads typed values from one property mapping, with errors that name the file and property."""

    def __init__(self, props: Mapping[str, object], source: str, secret_properties: frozenset[str],
                 unresolved: Mapping[str, Iterable[str]] | None) -> None:
        self.props = props
        self.source = source
        self.secret_properties = secret_properties
        self.unresolved: dict[str, list[str]] = {}
        if unresolved is not None:
            for key, items in unresolved.items():
                self.unresolved[key] = list(items)
        else:
            for key, value in props.items():
                for text in (value if isinstance(value, list | tuple) else [value]):
                    if isinstance(text, str):
                        found = [m.group(0) for m in UNRESOLVED_PLACEHOLDER.finditer(text)]
                        if found:
                            self.unresolved[key] = found

    def shown(self, key: str, value: object) -> str:
        return "****" if key in self.secret_properties else repr(value)

    def error(self, key: str, value: object, expected: str, example: str) -> MailConfigError:
        return MailConfigError(
            f"{self.source}: property {key!r} has the value {self.shown(key, value)}; expected {expected}",
            stage="config", hint=f"set {key!r} to {example}")

    def is_unresolved(self, key: str) -> bool:
        return key in self.unresolved

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.props.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.error(key, value, "a string", '"..."')
        return str(value)

    def boolean(self, key: str, default: bool = False) -> bool:
        value = self.props.get(key)
        if value is None or self.is_unresolved(key):
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise self.error(key, value, 'a boolean (true or false, or the strings "true"/"false")',
                         "true or false")

    def integer(self, key: str, default: int, lo: int, hi: int, example: str) -> int:
        value = self.props.get(key)
        if value is None:
            return default
        if self.is_unresolved(key):
            return 0
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and value.strip().isdigit():
            number = int(value.strip())
        if number is None or not lo <= number <= hi:
            raise self.error(key, value, f"a number from {lo} to {hi} (a JSON number or a numeric string)",
                             example)
        return number

    def seconds(self, key: str, default: float) -> float | None:
        value = self.props.get(key)
        if value is None or self.is_unresolved(key):
            return default
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        if number is None or not 0 < number <= 3600:
            raise self.error(key, value, "a number of seconds greater than 0 and at most 3600", str(default))
        return number

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.props.get(key)
        if value is None:
            return ()
        if isinstance(value, str):
            return tuple(s.strip() for s in value.split(",") if s.strip())
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise self.error(key, value, "a string array", '["scope-a", "scope-b"]')


def _flatten_unresolved(reader: _Reader) -> tuple[tuple[str, str], ...]:
    return tuple((k, p) for k, items in sorted(reader.unresolved.items()) for p in items)


def parse_mail_settings(props: Mapping[str, object], *, source: str = "<properties>",
                        secret_properties: Iterable[str] = (),
                        unresolved: Mapping[str, Iterable[str]] | None = None,
                        oauth: OAuthSettings | None = None) -> MailSettings:
    """Read the ``DefaultMailService`` properties (already interpolated) into settings.

    Args:
        props: property name → value as the ``.cfg.json`` holds it after interpolation.
        source: where the values come from (the file path), for error messages.
        secret_properties: properties whose values came from a secret (never shown in errors).
        unresolved: property → placeholders interpolation left in it; detected from the values
            when not given.
        oauth: the OAuth provider configuration, used when ``oauth.flow`` is true.

    Raises:
        MailConfigError: a value has the wrong type or is out of range (e.g. ``"smtp.port": "abc"``),
            or ``smtp.host`` / ``from.address`` is missing.
    """
    secrets = frozenset(secret_properties) | ALWAYS_SECRET
    r = _Reader(props, source, secrets, unresolved)
    host = r.text(SMTP_HOST)
    if host is None or not host.strip():
        raise MailConfigError(f"{source}: property {SMTP_HOST!r} is not set", stage="config",
                              hint='set it to "$[env:AEM_PROXY_HOST;default=proxy.tunnel]" '
                                   "(the egress gateway) or to the SMTP server's host")
    host = host.strip()
    if not r.is_unresolved(SMTP_HOST) and not _HOSTNAME.fullmatch(host):
        raise r.error(SMTP_HOST, host, "a host name or IP address", '"proxy.tunnel"')
    from_address = r.text(FROM_ADDRESS)
    if from_address is None or not from_address.strip():
        raise MailConfigError(f"{source}: property {FROM_ADDRESS!r} is blank", stage="config",
                              hint="set it to the default sender, e.g. \"noreply@example.com\"")
    password = r.text(SMTP_PASSWORD)
    user = r.text(SMTP_USER)
    tls_name = r.text(EXT_TLS_SERVER_NAME)
    if tls_name is not None and not r.is_unresolved(EXT_TLS_SERVER_NAME):
        tls_name = tls_name.strip().lower() or None
        if tls_name is not None and not _HOSTNAME.fullmatch(tls_name):
            raise r.error(EXT_TLS_SERVER_NAME, tls_name, "a DNS name", '"smtp.sendgrid.net"')
    ehlo = r.text(EXT_EHLO_NAME)
    if ehlo is not None and not _HOSTNAME.fullmatch(ehlo.strip()):
        raise r.error(EXT_EHLO_NAME, ehlo, "a host name", '"app.example.com"')
    cafile = r.text(EXT_TLS_CAFILE)
    known = set(STANDARD_PROPERTIES) | set(EXTENSION_PROPERTIES)
    unknown = tuple(sorted(k for k in props if k not in known and k.startswith(_OWN_PREFIXES)))
    return MailSettings(
        host=host,
        port=r.integer(SMTP_PORT, DEFAULT_SMTP_PORT, 1, 65535, '"30002" (the portOrig of your port forward)'),
        from_address=from_address.strip(),
        user=user if user else None,
        password=Secret(password) if password is not None else None,
        ssl=r.boolean(SMTP_SSL),
        starttls_configured=r.boolean(SMTP_STARTTLS),
        requiretls=r.boolean(SMTP_REQUIRETLS),
        debug=r.boolean(DEBUG_EMAIL),
        oauth_flow=r.boolean(OAUTH_FLOW),
        tls_server_name=tls_name,
        cafile=cafile.strip() if cafile and cafile.strip() else None,
        timeouts=Timeouts(connect=r.seconds(EXT_CONNECT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT_S),
                          read=r.seconds(EXT_READ_TIMEOUT, DEFAULT_READ_TIMEOUT_S)),
        allow_plaintext_auth=r.boolean(EXT_ALLOW_PLAINTEXT_AUTH),
        ehlo_name=ehlo.strip() if ehlo else None,
        oauth_proxy=(r.text(EXT_OAUTH_PROXY) or None),
        pipelining=r.boolean(EXT_PIPELINING, default=True),
        oauth=oauth,
        source=source,
        secret_properties=secrets,
        unresolved=_flatten_unresolved(r),
        unknown_properties=unknown,
    )


OAUTH_SECRET_KEYS: Final = frozenset({"clientSecret", "refreshToken"})


def parse_oauth_settings(props: Mapping[str, object], *, source: str = "<oauth properties>",
                         secret_properties: Iterable[str] = (),
                         unresolved: Mapping[str, Iterable[str]] | None = None) -> OAuthSettings:
    """Read the ``OAuthConfigurationProviderImpl`` properties (already interpolated).

    Raises:
        MailConfigError: ``refreshUrl``, ``clientId`` or ``refreshToken`` is missing, ``refreshUrl``
            is not an ``https://`` URL, or a value has the wrong type.
    """
    secrets = frozenset(secret_properties) | OAUTH_SECRET_KEYS
    r = _Reader(props, source, secrets, unresolved)
    values: dict[str, str] = {}
    for key in ("refreshUrl", "clientId", "refreshToken"):
        value = r.text(key)
        if value is None or not value.strip():
            raise MailConfigError(f"{source}: property {key!r} is not set (needed for oauth.flow)",
                                  stage="config",
                                  hint=f"set {key!r} in {OAUTH_PID}.cfg.json"
                                       + (' as "$[secret:NAME]"' if key in OAUTH_SECRET_KEYS else ""))
        values[key] = value
    refresh_url = values["refreshUrl"].strip()
    if not r.is_unresolved("refreshUrl") and not refresh_url.lower().startswith("https://"):
        raise r.error("refreshUrl", refresh_url, "an https:// URL",
                      '"https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token"')
    client_secret = r.text("clientSecret")
    return OAuthSettings(
        refresh_url=refresh_url,
        client_id=values["clientId"].strip(),
        client_secret=Secret(client_secret) if client_secret else None,
        refresh_token=Secret(values["refreshToken"]),
        scopes=r.strings("scopes"),
        token_url=r.text("tokenUrl"),
        auth_url=r.text("authUrl"),
        redirect_url=r.text("authCodeRedirectUrl"),
        source=source,
        unresolved=_flatten_unresolved(r),
    )
