from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from egressmail.gateway.errors import BadProxyRequest
from egressmail.gateway.httphead import (
    error_response,
    find_head_end,
    parse_authority,
    parse_request_head,
)


def test_connect_authority_form():
    req = parse_request_head(b"CONNECT API.Example.com:8443 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (req.method, req.host, req.port, req.is_connect) == ("CONNECT", "api.example.com", 8443, True)
    assert req.forward_head == b""


def test_connect_ipv6():
    req = parse_request_head(b"CONNECT [::1]:443 HTTP/1.1\r\n\r\n")
    assert (req.host, req.port, req.target) == ("::1", 443, "[::1]:443")


def test_absolute_form_rewritten_to_origin_form():
    head = (b"GET http://example.test:8080/a/b?q=1 HTTP/1.1\r\nHost: evil.test\r\n"
            b"Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic eA==\r\n"
            b"Connection: keep-alive\r\nAccept: */*\r\n\r\n")
    req = parse_request_head(head)
    assert (req.host, req.port, req.is_connect) == ("example.test", 8080, False)
    assert req.forward_head == (b"GET /a/b?q=1 HTTP/1.1\r\nHost: example.test:8080\r\nAccept: */*\r\n"
                                b"Connection: close\r\n\r\n")


def test_absolute_form_default_port_and_empty_path():
    req = parse_request_head(b"GET http://example.test HTTP/1.0\r\n\r\n")
    assert (req.port, req.forward_head.split(b"\r\n")[0]) == (80, b"GET / HTTP/1.0")
    assert b"Host: example.test\r\n" in req.forward_head


@pytest.mark.parametrize(("head", "fragment", "status"), [
    (b"CONNECT example.test HTTP/1.1\r\n\r\n", "port is required", 400),
    (b"CONNECT example.test:0 HTTP/1.1\r\n\r\n", "from 1 to 65535", 400),
    (b"CONNECT user@example.test:443 HTTP/1.1\r\n\r\n", "user information", 400),
    (b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n", "absolute URI", 400),
    (b"GET https://example.test/ HTTP/1.1\r\n\r\n", "use CONNECT for https", 400),
    (b"GET http://exa mple.test/ HTTP/1.1\r\n\r\n", "malformed request line", 400),
    (b"GET http://ex_ample..test/ HTTP/1.1\r\n\r\n", "not a DNS name", 400),
    (b"CONNECT example.test:443 HTTP/2.0\r\n\r\n", "not supported", 505),
    (b"CONNECT example.test:443 HTTP/1.1\r\n folded\r\n\r\n", "malformed header", 400),
    (b"CONNECT example.test:443 HTTP/1.1\r\nno-colon\r\n\r\n", "malformed header", 400),
    (b"CONNECT example.test:443 HTTP/1.1\r\n", "empty line", 400),
])
def test_bad_requests(head, fragment, status):
    with pytest.raises(BadProxyRequest) as info:
        parse_request_head(head)
    assert fragment in info.value.message
    assert info.value.status == status


def test_find_head_end_incremental():
    buf = bytearray(b"CONNECT a:1 HTTP/1.1\r\n\r")
    assert find_head_end(buf) == -1
    start = len(buf)
    buf += b"\nTLS"
    assert find_head_end(buf, start) == len(buf) - 3


def test_error_response_is_one_line_reason():
    resp = error_response(403, "no\r\nsmuggle")
    head, body = resp.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert body == b"no  smuggle\n"
    assert f"Content-Length: {len(body)}".encode() in head


@given(st.binary(max_size=300))
def test_parser_never_raises_anything_but_bad_request(data):
    try:
        parse_request_head(data + b"\r\n\r\n")
    except BadProxyRequest:
        pass


@given(st.text(max_size=60))
def test_authority_parser_total(text):
    try:
        host, port = parse_authority(text, default_port=None)
    except BadProxyRequest:
        return
    assert 1 <= port <= 65535 and host


@pytest.mark.parametrize(("head", "fragment", "status"), [
    # A bare LF/CR inside a value would reach the origin, which may end a line there.
    (b"GET http://a.test/ HTTP/1.1\r\nX: a\nHost: evil.test\r\n\r\n", "control character", 400),
    (b"GET http://a.test/ HTTP/1.1\r\nX: a\rTransfer-Encoding: chunked\r\n\r\n", "control character", 400),
    (b"GET http://a.test/ HTTP/1.1\r\nX: a\x00b\r\n\r\n", "control character", 400),
    (b"GET http://a.test/x\nHost:evil.test HTTP/1.1\r\n\r\n", "control character", 400),
    (b"GET http://a.test/x\tHTTP/1.0 HTTP/1.1\r\n\r\n", "control character", 400),
    (b"GET\n http://a.test/ HTTP/1.1\r\n\r\n", "malformed method", 400),
    (b"GET http://a.test/ HTTP/1.1\r\nX-A\n: b\r\n\r\n", "malformed header", 400),
    # The smuggling pair, and framing the proxy cannot follow (it forwards exactly one request).
    (b"POST http://a.test/ HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
     "Transfer-Encoding", 411),
    (b"POST http://a.test/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", "Transfer-Encoding", 411),
    (b"POST http://a.test/ HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", "conflicting", 400),
    (b"POST http://a.test/ HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n", "conflicting", 400),
    (b"POST http://a.test/ HTTP/1.1\r\nContent-Length: +5\r\n\r\n", "not a number", 400),
    (b"POST http://a.test/ HTTP/1.1\r\nContent-Length: \r\n\r\n", "not a number", 400),
    # Ports: signs, spaces, overflow, and more digits than int() parses.
    (b"CONNECT a.test:+443 HTTP/1.1\r\n\r\n", "from 1 to 65535", 400),
    (b"CONNECT a.test:65536 HTTP/1.1\r\n\r\n", "from 1 to 65535", 400),
    (b"CONNECT a.test:" + b"4" * 5000 + b" HTTP/1.1\r\n\r\n", "from 1 to 65535", 400),
    (b"GET http://a.test:" + b"8" * 5000 + b"/ HTTP/1.1\r\n\r\n", "from 1 to 65535", 400),
])
def test_smuggling_and_framing_are_refused(head, fragment, status):
    with pytest.raises(BadProxyRequest) as info:
        parse_request_head(head)
    assert fragment in info.value.message
    assert info.value.status == status


def test_body_length_of_a_forwarded_request():
    assert parse_request_head(b"GET http://a.test/ HTTP/1.1\r\n\r\n").body_length == 0
    req = parse_request_head(b"POST http://a.test/ HTTP/1.1\r\ncontent-length: 12\r\n"
                             b"Content-Length: 12\r\n\r\n")
    assert req.body_length == 12
    # A tab inside a value is allowed (RFC 9110 field-content), and forwarded.
    assert b"X: a\tb" in parse_request_head(b"GET http://a.test/ HTTP/1.1\r\nX: a\tb\r\n\r\n").forward_head


def test_authority_with_non_ascii_digits_is_refused():
    with pytest.raises(BadProxyRequest):
        parse_authority("a.test:\u00b2", default_port=None)  # "²".isdigit() is True, int() fails
