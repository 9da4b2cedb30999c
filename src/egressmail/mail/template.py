"""Mail templates in the original's format: header lines, an empty line, the body; ``${name}`` fills.

::

    From: Shop <shop@example.com>
    To: ${email}
    Subject: Your order ${order}

    Hello ${name}, your order ${order} has shipped.

The header block is split *before* placeholders are filled, so a value can never add a header line
(a value with a line break in a header is refused as header injection). ``From``, ``To``, ``Cc``,
``Bcc``, ``Reply-To`` and ``Subject`` become the message's fields; ``Content-Type: text/html`` makes
the body HTML (values inserted into an HTML body are HTML-escaped); any other header is carried as an
extra header. A ``${name}`` with no value is an error (the original left it in the text verbatim).
``$${name}`` writes a literal ``${name}``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from egressmail.mail.errors import MessageError
from egressmail.mail.message import Attachment, Message, escape_html, split_addresses

_PLACEHOLDER = re.compile(r"\$(\$?)\{([A-Za-z0-9_.-]+)\}")
_HEADER_LINE = re.compile(r"([!-9;-~]+):[ \t]*(.*)")
_ADDRESS_FIELDS = {"from": "sender", "to": "to", "cc": "cc", "bcc": "bcc", "reply-to": "reply_to"}


@dataclass(frozen=True, slots=True)
class MailTemplate:
    """A parsed template: its header lines and its body, placeholders not yet filled."""

    headers: tuple[tuple[str, str], ...]
    body: str
    name: str = "<template>"

    @classmethod
    def parse(cls, text: str, *, name: str = "<template>") -> MailTemplate:
        """Split a template into headers and body.

        Raises:
            MessageError: a header line is not ``Name: value`` or the empty line is missing.
        """
        text = text.replace("\r\n", "\n").lstrip("\ufeff")
        head, sep, body = text.partition("\n\n")
        if not sep:
            if head.strip() and all(_HEADER_LINE.fullmatch(line) for line in head.splitlines()):
                head, body = head, ""
            else:
                raise MessageError(
                    f"template {name}: no empty line between the headers and the body",
                    stage="message",
                    hint="start the template with header lines (Subject: ...), then an empty line, "
                         "then the body")
        headers: list[tuple[str, str]] = []
        for lineno, line in enumerate(head.splitlines(), start=1):
            if line[:1] in (" ", "\t") and headers:  # RFC 5322 folding: continue the previous header
                key, value = headers[-1]
                headers[-1] = (key, f"{value} {line.strip()}")
                continue
            m = _HEADER_LINE.fullmatch(line)
            if m is None:
                raise MessageError(f"template {name}, line {lineno}: {line!r} is not a header line",
                                   stage="message", hint="write headers as 'Name: value'")
            headers.append((m.group(1), m.group(2).strip()))
        return cls(headers=tuple(headers), body=body, name=name)

    @classmethod
    def load(cls, path: str | Path) -> MailTemplate:
        """Read and parse a UTF-8 template file.

        Raises:
            MessageError: the file cannot be read or is not a template.
        """
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeError) as exc:
            raise MessageError(f"cannot read template {str(p)!r}: {exc}", stage="message",
                               hint="give a UTF-8 text file") from exc
        return cls.parse(text, name=str(p))

    @property
    def is_html(self) -> bool:
        """True when a ``Content-Type: text/html`` header says the body is HTML."""
        return any(k.lower() == "content-type" and v.lower().startswith("text/html")
                   for k, v in self.headers)

    def placeholders(self) -> list[str]:
        """The names of the ``${name}`` placeholders, in order of first appearance."""
        seen: dict[str, None] = {}
        for text in (*(v for _, v in self.headers), self.body):
            for m in _PLACEHOLDER.finditer(text):
                if not m.group(1):
                    seen.setdefault(m.group(2))
        return list(seen)

    def _fill(self, text: str, lookup: Callable[[str], str | None], escape: bool) -> str:
        missing: list[str] = []

        def replace(m: re.Match[str]) -> str:
            if m.group(1):
                return "${" + m.group(2) + "}"
            value = lookup(m.group(2))
            if value is None:
                missing.append(m.group(2))
                return m.group(0)
            return escape_html(value) if escape else value

        out = _PLACEHOLDER.sub(replace, text)
        if missing:
            names = ", ".join(dict.fromkeys(missing))
            raise MessageError(f"template {self.name}: no value for {names}", stage="message",
                               hint="pass a value for each placeholder, e.g. --var name=value")
        return out

    def render(self, values: Mapping[str, str] | Callable[[str], str | None], *,
               attachments: tuple[Attachment, ...] = ()) -> Message:
        """Fill the placeholders and return the message.

        Raises:
            MessageError: a placeholder has no value, or a filled header is invalid (checked again
                when the message is built).
        """
        lookup = values.get if isinstance(values, Mapping) else values
        missing = [name for name in self.placeholders() if lookup(name) is None]
        if missing:
            raise MessageError(f"template {self.name}: no value for {', '.join(missing)}", stage="message",
                               hint="pass a value for each placeholder, e.g. --var name=value")
        fields: dict[str, list[str]] = {k: [] for k in _ADDRESS_FIELDS.values()}
        subject = ""
        extra: list[tuple[str, str]] = []
        for key, raw in self.headers:
            value = self._fill(raw, lookup, escape=False)
            lower = key.lower()
            if lower in _ADDRESS_FIELDS:
                fields[_ADDRESS_FIELDS[lower]].extend(split_addresses(value) if "," in value else [value])
            elif lower == "subject":
                subject = value
            elif lower in ("content-type", "mime-version", "content-transfer-encoding"):
                continue  # decided by the builder (is_html picks the body type)
            else:
                extra.append((key, value))
        body = self._fill(self.body, lookup, escape=self.is_html)
        senders = fields.pop("sender")
        if len(senders) > 1:
            raise MessageError(f"template {self.name}: more than one From address", stage="message",
                               hint="give one From address")
        return Message(
            to=fields["to"], cc=fields["cc"], bcc=fields["bcc"], reply_to=fields["reply_to"],
            sender=senders[0] if senders else None, subject=subject,
            text=None if self.is_html else body, html=body if self.is_html else None,
            attachments=attachments, headers=extra,
        )
