from __future__ import annotations

import email
from email import policy

import pytest

from egressmail.mail.errors import MessageError
from egressmail.mail.message import build_envelope
from egressmail.mail.template import MailTemplate

TEMPLATE = """From: Shop <shop@example.com>
To: ${email}
CC: boss@example.com
Subject: Order ${order}
X-Order: ${order}

Hello ${name}, order ${order} has shipped. Cost: $${price}.
"""


def test_headers_empty_line_body_and_placeholders() -> None:
    tpl = MailTemplate.parse(TEMPLATE)
    assert tpl.placeholders() == ["email", "order", "name"]
    msg = tpl.render({"email": "a@example.com", "order": "42", "name": "Ann"})
    assert msg.to == ("a@example.com",)
    assert msg.cc == ("boss@example.com",)
    assert msg.sender == "Shop <shop@example.com>"
    assert msg.subject == "Order 42"
    assert msg.headers == (("X-Order", "42"),)
    assert msg.text == "Hello Ann, order 42 has shipped. Cost: ${price}.\n"
    assert msg.html is None


def test_missing_value_is_an_error_naming_it() -> None:
    with pytest.raises(MessageError, match="no value for email, name"):
        MailTemplate.parse(TEMPLATE, name="order.txt").render({"order": "1"})


def test_a_value_cannot_inject_a_header() -> None:
    msg = MailTemplate.parse(TEMPLATE).render(
        {"email": "a@example.com", "order": "1\r\nBcc: evil@example.org", "name": "x"})
    with pytest.raises(MessageError, match="header injection"):
        build_envelope(msg, "noreply@example.com")


def test_html_template_escapes_values() -> None:
    tpl = MailTemplate.parse("Subject: s\nContent-Type: text/html; charset=utf-8\n\n<p>Hi ${name}</p>\n")
    msg = tpl.render({"name": "<script>x</script>"})
    assert msg.html == "<p>Hi &lt;script&gt;x&lt;/script&gt;</p>\n"
    assert msg.headers == ()
    env = build_envelope(msg.__class__("a@example.com", msg.subject, html=msg.html), "n@example.com")
    parsed = email.message_from_bytes(env.data, policy=policy.default)
    assert parsed.get_content_type() == "multipart/alternative"


def test_bad_templates_are_refused_with_the_line() -> None:
    with pytest.raises(MessageError, match="line 2"):
        MailTemplate.parse("Subject: s\nnot a header\n\nbody")
    with pytest.raises(MessageError, match="no empty line"):
        MailTemplate.parse("just a body without headers")


def test_folded_header_and_crlf_file(tmp_path) -> None:
    f = tmp_path / "t.txt"
    f.write_bytes(b"Subject: a\r\n  long subject\r\nTo: x@example.com, y@example.com\r\n\r\nbody\r\n")
    msg = MailTemplate.load(f).render({})
    assert msg.subject == "a long subject"
    assert msg.to == ("x@example.com", "y@example.com")
    assert msg.text == "body\n"
    with pytest.raises(MessageError, match="cannot read template"):
        MailTemplate.load(tmp_path / "missing.txt")
