"""HTTP proxy requests, parsed and rewritten without I/O.

The proxy understands exactly two forms (RFC 9110 §9.3.6, RFC 9112 §3.2):

- ``CONNECT host:port HTTP/1.1`` (authority form): a tunnel; the bytes after the head are the
  client's (usually a TLS ClientHello) and are passed on untouched.
- ``GET http://host[:port]/path HTTP/1.1`` (absolute form): one request forwarded to the origin. The
  head is rewritten to origin form, its ``Host`` is taken from the URI (a proxy must not let a
  second ``Host`` header pick another destination), hop-by-hop and ``Proxy-*`` headers are
  dropped, and ``Connection: close`` is added so the origin closes after one response. Only that
  request's body (its ``Content-Length``) is passed on; what the client sends after it is dropped,
  so a client cannot reuse the connection to reach a host the routing table was never asked
  about. ``Transfer-Encoding`` is refused (411): the proxy does not decode chunks.

Control characters are refused anywhere in the head: a bare LF passed on to an origin that ends
lines there would let a client smuggle headers (a second ``Host``) past the proxy.

Anything else (``https://`` without CONNECT, origin-form requests, bad syntax) is a
:class:`~egressmail.gateway.errors.BadProxyRequest`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from egressmail.gateway.errors import BadProxyRequest

HEAD_END = b"\r\n\r\n"
# \Z, not $: "$" also matches before a final newline, which would let b"GET\n" pass as a token.
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_CONTROL = re.compile(rb"[\x00-\x20\x7f]")
_CONTROL_IN_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # HTAB and SP are allowed in a value
_DNS_NAME = re.compile(r"^[a-z0-9_]([-a-z0-9_]*[a-z0-9_])?(\.[a-z0-9_]([-a-z0-9_]*[a-z0-9_])?)*\.?$")
# Hop-by-hop headers (RFC 9110 §7.6.1) and the proxy's own; never forwarded.
_DROPPED = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization",
                      b"proxy-authenticate", b"te", b"trailer", b"upgrade", b"host"})


@dataclass(frozen=True, slots=True)
class ProxyRequest:
    """One parsed proxy request.

    Attributes:
        method: ``CONNECT``, ``GET``, …
        host: the destination host, lower case, without brackets for IPv6.
        port: the destination port (80 when an ``http://`` URI names none).
        is_connect: a tunnel (``CONNECT``) rather than a forwarded request.
        forward_head: for a forwarded request, the head to send to the origin; empty for CONNECT.
        body_length: for a forwarded request, the bytes of body after the head (its
            ``Content-Length``); whatever the client sends after them is not forwarded.
    """

    method: str
    host: str
    port: int
    is_connect: bool
    forward_head: bytes = b""
    body_length: int = 0

    @property
    def target(self) -> str:
        """``host:port`` as it would be written in a request (IPv6 in brackets)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def find_head_end(buffer: bytes | bytearray, start: int = 0) -> int:
    """Index just past the blank line ending the head, or -1 while it is incomplete."""
    i = buffer.find(HEAD_END, max(0, start - 3))
    return -1 if i < 0 else i + len(HEAD_END)


def _parse_host(text: str) -> str:
    if text.startswith("["):
        if not text.endswith("]"):
            raise BadProxyRequest(f"host {text!r} opens '[' without closing it")
        try:
            return str(ipaddress.IPv6Address(text[1:-1]))
        except ValueError:
            raise BadProxyRequest(f"host {text!r} is not an IPv6 address") from None
    host = text.lower()
    if not host or len(host) > 253 or not _DNS_NAME.match(host):
        raise BadProxyRequest(f"host {text!r} is not a DNS name or an IP address")
    return host.rstrip(".")


def parse_authority(text: str, *, default_port: int | None) -> tuple[str, int]:
    """Split ``host:port`` / ``[v6]:port`` (port required unless ``default_port`` is given).

    Raises:
        BadProxyRequest: no usable host, a missing or bad port, or user information (``a@b``).
    """
    if "@" in text:
        raise BadProxyRequest(f"{text!r}: user information in the authority is not accepted")
    if text.startswith("["):
        end = text.find("]")
        host_part, rest = (text, "") if end < 0 else (text[:end + 1], text[end + 1:])
        if rest and not rest.startswith(":"):
            raise BadProxyRequest(f"{text!r}: unexpected text after ']'")
        port_text = rest[1:] if rest else None
    else:
        host_part, sep, port_text_raw = text.rpartition(":")
        if not sep:
            host_part, port_text = text, None
        else:
            port_text = port_text_raw
    if port_text is None or port_text == "":
        if default_port is None:
            raise BadProxyRequest(f"{text!r}: a port is required (host:port)")
        port = default_port
    else:
        # At most 5 ASCII digits: int() of thousands of digits raises ValueError, not a refusal.
        if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5) \
                or not 1 <= int(port_text) <= 65535:
            raise BadProxyRequest(f"{text!r}: port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    return _parse_host(host_part), port


def parse_request_head(head: bytes) -> ProxyRequest:
    """Parse a complete request head (through the blank line) received by the HTTP proxy.

    Raises:
        BadProxyRequest: the head is not a CONNECT or an absolute-form ``http://`` request
            (status 400), or uses a version other than HTTP/1.x (status 505).
    """
    if not head.endswith(HEAD_END):
        raise BadProxyRequest("the request head does not end with an empty line")
    lines = head[:-len(HEAD_END)].split(b"\r\n")
    request_line = lines[0]
    parts = request_line.split(b" ")
    if len(parts) != 3:
        raise BadProxyRequest(f"malformed request line {request_line[:200]!r}")
    method_b, target_b, version_b = parts
    if not _TOKEN.match(method_b):
        raise BadProxyRequest(f"malformed method {method_b[:50]!r}")
    if version_b not in (b"HTTP/1.1", b"HTTP/1.0"):
        if version_b.startswith(b"HTTP/"):
            raise BadProxyRequest(f"HTTP version {version_b[:20].decode('latin-1')} is not supported",
                                  status=505)
        raise BadProxyRequest(f"malformed request line {request_line[:200]!r}")
    if _CONTROL.search(target_b):
        raise BadProxyRequest(f"control character in the request target {target_b[:200]!r}")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(name):
            # Also rejects obsolete line folding (a line starting with whitespace), a smuggling vector.
            raise BadProxyRequest(f"malformed header line {line[:200]!r}")
        if _CONTROL_IN_VALUE.search(value):
            # A bare LF or CR would be forwarded, and many origins end a line there: a header the
            # proxy never saw (a second Host, a Transfer-Encoding) could be smuggled past it.
            raise BadProxyRequest(f"control character in header line {line[:200]!r}")
        headers.append((name, value.strip(b" \t")))
    try:
        method = method_b.decode("ascii")
        target = target_b.decode("ascii")
    except UnicodeDecodeError:
        raise BadProxyRequest("the request line is not ASCII") from None

    if method == "CONNECT":
        host, port = parse_authority(target, default_port=None)
        return ProxyRequest(method=method, host=host, port=port, is_connect=True)

    scheme, sep, rest = target.partition("://")
    if not sep:
        raise BadProxyRequest(f"{method} {target[:200]}: a proxy request needs an absolute URI "
                              "(http://host/path) or CONNECT host:port")
    if scheme.lower() != "http":
        raise BadProxyRequest(f"scheme {scheme!r} is not forwarded: use CONNECT for https")
    slash = len(rest)
    for stop in "/?#":
        i = rest.find(stop)
        if 0 <= i < slash:
            slash = i
    authority, path = rest[:slash], rest[slash:]
    path = path.split("#", 1)[0]
    if not path.startswith("/"):
        path = "/" + path
    host, port = parse_authority(authority, default_port=80)
    body_length = _body_length(headers)
    host_header = host if ":" not in host else f"[{host}]"
    if port != 80:
        host_header = f"{host_header}:{port}"
    out = [f"{method} {path} ".encode("ascii") + version_b, b"Host: " + host_header.encode("ascii")]
    out.extend(name + b": " + value for name, value in headers if name.lower() not in _DROPPED)
    out.append(b"Connection: close")
    forward_head = b"\r\n".join(out) + HEAD_END
    return ProxyRequest(method=method, host=host, port=port, is_connect=False, forward_head=forward_head,
                        body_length=body_length)


def _body_length(headers: list[tuple[bytes, bytes]]) -> int:
    """The body's length of a forwarded request: its ``Content-Length``, or 0.

    The proxy forwards exactly one request per connection, so it must know where that request
    ends. ``Transfer-Encoding`` is refused (411): with ``Content-Length`` too it is the classic
    smuggling pair (RFC 9112 §6.1), and alone its end is only known by decoding chunks.
    """
    lengths: set[bytes] = set()
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            raise BadProxyRequest("Transfer-Encoding in a forwarded request is not accepted: "
                                  "send a Content-Length", status=411)
        if lowered == b"content-length":
            lengths.update(part.strip(b" \t") for part in value.split(b","))
    if not lengths:
        return 0
    if len(lengths) > 1:
        raise BadProxyRequest(f"conflicting Content-Length values {sorted(lengths)!r}")
    (length,) = lengths
    if not length.isdigit() or len(length) > 15:
        raise BadProxyRequest(f"Content-Length {length[:30]!r} is not a number of bytes")
    return int(length)


_REASONS = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout", 505: "HTTP Version Not Supported", 431: "Request Header Fields Too Large",
            408: "Request Timeout", 411: "Length Required"}


def error_response(status: int, reason: str) -> bytes:
    """A complete ``Connection: close`` answer whose body is ``reason`` on one line."""
    body = (reason.replace("\r", " ").replace("\n", " ") + "\n").encode("utf-8", "replace")
    return (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n"
            "\r\n").encode("ascii") + body


CONNECT_ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
