"""Messages as plain data, and their conversion to the exact bytes sent (stdlib ``email``).

A :class:`Message` is what an application asks to send: recipients, subject, a text and/or HTML
body, attachments, inline images and extra headers. :func:`build_envelope` checks it (addresses,
header injection) and renders it into an :class:`~egressmail.mail.envelope.Envelope`: the SMTP
envelope (sender, every recipient including Bcc) plus the RFC 5322 bytes, which never contain Bcc.

Everything here is pure: no sockets, no clock except ``Date``/``Message-ID`` (both overridable).
"""

from __future__ import annotations

import html
import mimetypes
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formataddr, formatdate
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from egressmail.mail.envelope import Envelope
from egressmail.mail.errors import MessageError

# RFC 5322 atext plus dots: the local parts we accept (no quoted strings, no SMTPUTF8). A strict subset
# keeps every address safe to put on a MAIL/RCPT line unchanged.
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})*")
# RFC 5322 section 2.2: a field name is printable ASCII except the colon.
_FIELD_NAME = re.compile(r"[!-9;-~]+")
# Everything but TAB below 0x20, DEL, and what str.splitlines() also treats as a line break (NEL, LS, PS):
# the email package would split a header there, so any of them could start a new header line.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
# 7-bit clean output: bodies become quoted-printable/base64 so servers without 8BITMIME take them too.
_POLICY = SMTP.clone(cte_type="7bit")

# Headers the builder writes itself; an extra header may not replace them (use the field instead).
_RESERVED_HEADERS = frozenset({
    "from", "to", "cc", "bcc", "reply-to", "subject", "date", "message-id", "mime-version",
    "content-type", "content-transfer-encoding", "content-disposition", "sender",
})
MAX_ADDRESS_LENGTH = 254  # RFC 5321 section 4.5.3.1.3 (path limit minus the angle brackets)


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file carried by a message.

    With ``content_id`` set, the part is *inline* (``Content-Disposition: inline``) and an HTML body
    refers to it as ``<img src="cid:CONTENT_ID">``.
    """

    filename: str
    content: bytes = field(repr=False)
    content_type: str = "application/octet-stream"
    content_id: str | None = None

    @classmethod
    def from_path(cls, path: str | Path, *, content_type: str | None = None,
                  content_id: str | None = None) -> Attachment:
        """Read a file into an attachment; the type is guessed from its name unless given.

        Raises:
            MessageError: the file cannot be read.
        """
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise MessageError(f"cannot read attachment {str(p)!r}: {exc.strerror or exc}",
                               stage="message", hint="check the path and its permissions") from exc
        if content_type is None:
            content_type = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
        return cls(filename=p.name, content=data, content_type=content_type, content_id=content_id)


def _as_tuple(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    return tuple(value)


@dataclass(frozen=True, slots=True)
class Message:
    """One message to send.

    Address fields accept a single string or a sequence of strings (``"Name <a@example.com>"`` or a
    bare ``a@example.com``). ``sender`` overrides the service's ``from.address``. ``headers`` adds
    extra header fields (e.g. ``X-Campaign``); the builder's own fields cannot be replaced that way.
    ``text`` and ``html`` may both be given (a ``multipart/alternative``); with only ``html``, a text
    alternative is derived from it.
    """

    to: tuple[str, ...] = ()
    subject: str = ""
    text: str | None = None
    html: str | None = None
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    reply_to: tuple[str, ...] = ()
    sender: str | None = None
    attachments: tuple[Attachment, ...] = ()
    inline: tuple[Attachment, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    def __init__(self, to: str | Iterable[str] | None = None, subject: str = "", *,
                 text: str | None = None, html: str | None = None,
                 cc: str | Iterable[str] | None = None, bcc: str | Iterable[str] | None = None,
                 reply_to: str | Iterable[str] | None = None, sender: str | None = None,
                 attachments: Iterable[Attachment] = (), inline: Iterable[Attachment] = (),
                 headers: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        # A hand-written __init__ so callers may pass strings or lists; the stored fields are tuples.
        object.__setattr__(self, "to", _as_tuple(to))
        object.__setattr__(self, "subject", subject)
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "html", html)
        object.__setattr__(self, "cc", _as_tuple(cc))
        object.__setattr__(self, "bcc", _as_tuple(bcc))
        object.__setattr__(self, "reply_to", _as_tuple(reply_to))
        object.__setattr__(self, "sender", sender)
        object.__setattr__(self, "attachments", tuple(attachments))
        object.__setattr__(self, "inline", tuple(inline))
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        object.__setattr__(self, "headers", tuple((str(k), str(v)) for k, v in pairs))


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A checked address: the display name (may be empty) and the bare ``local@domain``."""

    name: str
    address: str

    def formatted(self) -> str:
        """The header form, ``Name <a@example.com>`` (RFC 2047-encoded later when not ASCII)."""
        return formataddr((self.name, self.address)) if self.name else self.address


def _check_no_control(what: str, value: str) -> None:
    if _CONTROL.search(value):
        raise MessageError(
            f"{what} contains a line break or control character: refused to prevent header injection",
            stage="message", hint="remove CR, LF and other control characters from the value")


_ANGLE_FORM = re.compile(r"(?P<name>[^<>]*?)\s*<(?P<addr>[^<>\s]*)>")


def _unquote_name(name: str) -> str:
    name = name.strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        return re.sub(r"\\(.)", r"\1", name[1:-1])
    return name


def check_address(value: str, *, field_name: str = "address") -> Mailbox:
    """Parse and check one address (``a@example.com`` or ``Name <a@example.com>``).

    The parser is deliberately small and strict (not ``email.utils.getaddresses``, whose lenient
    parsing can yield a different address than the one a user saw, CVE-2023-27043).

    Raises:
        MessageError: the value has a line break, is not exactly one address, or the address is not
            a plain ASCII ``local@domain`` (quoted local parts and SMTPUTF8 are not supported).
    """
    _check_no_control(f"the {field_name} {value!r}", value)
    text = value.strip()
    if m := _ANGLE_FORM.fullmatch(text):
        name, addr = _unquote_name(m.group("name")), m.group("addr")
    else:
        name, addr = "", text
    local, at, domain = addr.rpartition("@")
    if (not at or len(addr) > MAX_ADDRESS_LENGTH or not _LOCAL_PART.fullmatch(local)
            or not _DOMAIN.fullmatch(domain)):
        raise MessageError(
            f"the {field_name} {value!r} is not a valid email address",
            stage="message",
            hint="write one ASCII address as local@domain or 'Name <local@domain>' "
                 "(e.g. noreply@example.com)")
    return Mailbox(name=name, address=addr)


def split_addresses(value: str) -> list[str]:
    """Split a comma-separated address list, keeping commas inside quoted display names."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in value:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts]


def check_addresses(values: Iterable[str], field_name: str) -> tuple[Mailbox, ...]:
    """Check several addresses; each value may also hold a comma-separated list.

    Raises:
        MessageError: one of them is invalid (see :func:`check_address`).
    """
    out: list[Mailbox] = []
    for value in values:
        _check_no_control(f"the {field_name} {value!r}", value)
        out.extend(check_address(p, field_name=field_name) for p in split_addresses(value))
    return tuple(out)


class _TextExtractor(HTMLParser):
    """Turns HTML into readable plain text for the text alternative (tags dropped, blocks on lines)."""

    _BLOCK = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table"})
    _SKIP = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """A plain-text rendering of an HTML body (for the ``text/plain`` alternative)."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def _split_type(content_type: str, what: str) -> tuple[str, str]:
    maintype, slash, subtype = content_type.partition("/")
    if not slash or not _FIELD_NAME.fullmatch(maintype) or not _FIELD_NAME.fullmatch(subtype):
        raise MessageError(f"{what} has an invalid content type {content_type!r}", stage="message",
                           hint="use a MIME type such as image/png or application/pdf")
    return maintype, subtype


def _add_part(msg: EmailMessage, att: Attachment, *, inline: bool) -> None:
    what = f"the attachment {att.filename!r}"
    _check_no_control(what, att.filename)
    maintype, subtype = _split_type(att.content_type, what)
    kwargs: dict[str, Any] = {"maintype": maintype, "subtype": subtype, "filename": att.filename}
    if inline:
        cid = att.content_id or att.filename
        _check_no_control(f"the content id of {what}", cid)
        kwargs["cid"] = f"<{cid.strip('<>')}>"
        kwargs["disposition"] = "inline"
        msg.add_related(att.content, **kwargs)
    else:
        msg.add_attachment(att.content, **kwargs)


def new_message_id(domain: str) -> str:
    """A fresh ``<random@domain>`` Message-ID (128 random bits)."""
    return f"<{secrets.token_hex(16)}@{domain}>"


def build_email(message: Message, default_sender: str, *, message_id: str | None = None,
                date: str | None = None) -> tuple[EmailMessage, Mailbox, tuple[Mailbox, ...]]:
    """Check ``message`` and build the ``EmailMessage``; also return the sender and all recipients.

    Raises:
        MessageError: no recipient, no body, a bad address, a header with a line break, a reserved
            or malformed extra header, or an inline image without an HTML body.
    """
    sender = check_address(message.sender or default_sender,
                           field_name="sender" if message.sender else "from.address")
    to = check_addresses(message.to, "To address")
    cc = check_addresses(message.cc, "Cc address")
    bcc = check_addresses(message.bcc, "Bcc address")
    reply_to = check_addresses(message.reply_to, "Reply-To address")
    if not (to or cc or bcc):
        raise MessageError("the message has no recipient", stage="message",
                           hint="give at least one To, Cc or Bcc address")
    if message.text is None and message.html is None:
        raise MessageError("the message has no body", stage="message",
                           hint="give a text body, an HTML body or a template")
    if message.inline and message.html is None:
        raise MessageError("inline images need an HTML body that refers to them (cid:...)",
                           stage="message", hint="add an HTML body or send the images as attachments")
    _check_no_control("the subject", message.subject)
    for name, value in message.headers:
        if not _FIELD_NAME.fullmatch(name):
            raise MessageError(f"the extra header name {name!r} is not a valid header field name",
                               stage="message", hint="use printable ASCII without spaces or ':'")
        if name.lower() in _RESERVED_HEADERS:
            raise MessageError(f"the extra header {name!r} would replace a field the message sets itself",
                               stage="message", hint="use the message's own field (to, cc, subject, ...)")
        _check_no_control(f"the header {name!r}", value)

    msg = EmailMessage(policy=_POLICY)
    msg["From"] = sender.formatted()
    if to:
        msg["To"] = ", ".join(m.formatted() for m in to)
    if cc:
        msg["Cc"] = ", ".join(m.formatted() for m in cc)
    if reply_to:
        msg["Reply-To"] = ", ".join(m.formatted() for m in reply_to)
    # Bcc recipients are in the envelope only: the header would show them to everyone.
    msg["Subject"] = message.subject
    msg["Date"] = date or formatdate(localtime=False, usegmt=True)
    domain = sender.address.rpartition("@")[2]
    msg["Message-ID"] = message_id or new_message_id(domain)
    for name, value in message.headers:
        msg[name] = value

    text = message.text
    if text is None and message.html is not None:
        text = html_to_text(message.html)
    msg.set_content(text or "")
    if message.html is not None:
        msg.add_alternative(message.html, subtype="html")
        if message.inline:
            html_part = next(p for p in msg.iter_parts() if p.get_content_type() == "text/html")
            assert isinstance(html_part, EmailMessage)  # noqa: S101 - we built it just above
            for att in message.inline:
                _add_part(html_part, att, inline=True)
    for att in message.attachments:
        _add_part(msg, att, inline=False)

    recipients: dict[str, Mailbox] = {}
    for m in (*to, *cc, *bcc):
        recipients.setdefault(m.address.lower(), m)
    return msg, sender, tuple(recipients.values())


def build_envelope(message: Message, default_sender: str, *, message_id: str | None = None,
                   date: str | None = None) -> Envelope:
    """Check ``message`` and render it into the envelope and bytes to send.

    Args:
        message: what to send.
        default_sender: the service's ``from.address``, used unless ``message.sender`` is set.
        message_id: a fixed Message-ID (``<id@domain>``); a random one by default.
        date: a fixed ``Date`` header value; now by default.

    Raises:
        MessageError: the message is invalid (see :func:`build_email`); nothing was sent.
    """
    msg, sender, recipients = build_email(message, default_sender, message_id=message_id, date=date)
    try:
        data = msg.as_bytes(policy=_POLICY)
    except (ValueError, TypeError, UnicodeError) as exc:  # the email package's own header checks
        raise MessageError(f"the message cannot be rendered: {exc}", stage="message") from exc
    return Envelope(sender=sender.address, recipients=tuple(m.address for m in recipients),
                    data=data, message_id=str(msg["Message-ID"]))


def escape_html(value: str) -> str:
    """Escape a value for insertion into HTML (used by templates)."""
    return html.escape(value, quote=True)
