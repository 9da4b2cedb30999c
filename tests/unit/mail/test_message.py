from __future__ import annotations

import email
from email import policy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from egressmail.mail.errors import MessageError
from egressmail.mail.message import (
    Attachment,
    Message,
    build_envelope,
    check_address,
    html_to_text,
    split_addresses,
)

FROM = "noreply@wknd.site"


def parse(data: bytes) -> email.message.EmailMessage:
    # Parse as a receiver would after un-doing the wire's CRLF line endings.
    msg = email.message_from_bytes(data.replace(b"\r\n", b"\n"), policy=policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def test_text_message_has_headers_and_crlf_body() -> None:
    env = build_envelope(Message("a@example.com", "Hi", text="Hello\n"), FROM)
    assert env.sender == FROM
    assert env.recipients == ("a@example.com",)
    assert b"\r\n" in env.data and b"\n" not in env.data.replace(b"\r\n", b"")
    msg = parse(env.data)
    assert msg["From"] == FROM
    assert msg["To"] == "a@example.com"
    assert msg["Subject"] == "Hi"
    assert msg["Message-ID"] == env.message_id
    assert env.message_id.endswith("@wknd.site>")
    assert msg["Date"]
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content() == "Hello\n"


def test_bcc_is_in_the_envelope_never_in_the_bytes() -> None:
    env = build_envelope(Message("a@example.com", "s", text="x", cc="c@example.com",
                                 bcc=["secret-bcc@example.org"]), FROM)
    assert env.recipients == ("a@example.com", "c@example.com", "secret-bcc@example.org")
    assert b"secret-bcc" not in env.data
    assert b"Bcc" not in env.data


def test_sender_override_reply_to_and_extra_headers() -> None:
    env = build_envelope(Message("a@example.com", "s", text="x", sender="Shop <shop@example.com>",
                                 reply_to="help@example.com", headers={"X-Campaign": "spring"}), FROM)
    msg = parse(env.data)
    assert env.sender == "shop@example.com"
    assert msg["From"] == "Shop <shop@example.com>"
    assert msg["Reply-To"] == "help@example.com"
    assert msg["X-Campaign"] == "spring"


def test_html_gets_a_text_alternative() -> None:
    env = build_envelope(Message("a@example.com", "s", html="<p>Hello <b>you</b></p><p>bye</p>"), FROM)
    msg = parse(env.data)
    assert msg.get_content_type() == "multipart/alternative"
    text, html = msg.get_payload()
    assert text.get_content_type() == "text/plain"
    assert "Hello you" in text.get_content()
    assert html.get_content_type() == "text/html"


def test_attachments_and_inline_images() -> None:
    png = b"\x89PNG\r\n\x1a\nfake"
    env = build_envelope(Message(
        "a@example.com", "s", text="t", html='<img src="cid:logo">',
        inline=[Attachment("logo.png", png, "image/png", content_id="logo")],
        attachments=[Attachment("r.pdf", b"%PDF-1.4", "application/pdf")]), FROM)
    msg = parse(env.data)
    assert msg.get_content_type() == "multipart/mixed"
    parts = {p.get_content_type(): p for p in msg.walk()}
    assert parts["image/png"]["Content-ID"] == "<logo>"
    assert parts["image/png"].get_content() == png
    assert "multipart/related" in parts
    assert parts["application/pdf"].get_filename() == "r.pdf"


def test_attachment_from_path(tmp_path) -> None:
    f = tmp_path / "data.csv"
    f.write_text("a,b\n")
    att = Attachment.from_path(f)
    assert att.content_type == "text/csv" and att.content == b"a,b\n"
    with pytest.raises(MessageError, match="cannot read attachment"):
        Attachment.from_path(tmp_path / "missing.bin")


@pytest.mark.parametrize("field", ["to", "cc", "bcc", "reply_to", "sender"])
def test_crlf_in_an_address_is_refused(field: str) -> None:
    kwargs: dict[str, object] = {"to": "a@example.com", "subject": "s", "text": "x"}
    kwargs[field] = "a@example.com\r\nBcc: victim@example.org"
    with pytest.raises(MessageError, match="line break") as info:
        build_envelope(Message(**kwargs), FROM)  # type: ignore[arg-type]
    assert info.value.stage == "message"


@pytest.mark.parametrize("subject", ["hi\r\nBcc: x@y.z", "hi\nX: y", "hi\rX", "nul\x00"])
def test_crlf_in_subject_is_refused(subject: str) -> None:
    with pytest.raises(MessageError, match="header injection"):
        build_envelope(Message("a@example.com", subject, text="x"), FROM)


def test_crlf_in_extra_header_value_or_name_is_refused() -> None:
    with pytest.raises(MessageError, match="X-A"):
        build_envelope(Message("a@example.com", "s", text="x", headers={"X-A": "v\r\nBcc: e@x.y"}), FROM)
    with pytest.raises(MessageError, match="field name"):
        build_envelope(Message("a@example.com", "s", text="x", headers={"X-A\r\nBcc": "v"}), FROM)
    with pytest.raises(MessageError, match="replace"):
        build_envelope(Message("a@example.com", "s", text="x", headers={"Bcc": "e@x.y"}), FROM)


@pytest.mark.parametrize("bad", ["not-an-address", "a@", "@b.c", "a b@c.d", "a@b..c", "<a@b.c",
                                 "a@b.c, ", "ä@b.c", "a@-b.c", '"a@b"@c.d', "a@b.c>x"])
def test_invalid_addresses_are_refused(bad: str) -> None:
    with pytest.raises(MessageError, match="not a valid email address"):
        build_envelope(Message(bad, "s", text="x"), FROM)


def test_invalid_default_sender_names_from_address() -> None:
    with pytest.raises(MessageError, match="from.address"):
        build_envelope(Message("a@example.com", "s", text="x"), "nobody")


def test_no_recipient_or_body_is_refused() -> None:
    with pytest.raises(MessageError, match="no recipient"):
        build_envelope(Message([], "s", text="x"), FROM)
    with pytest.raises(MessageError, match="no body"):
        build_envelope(Message("a@example.com", "s"), FROM)
    with pytest.raises(MessageError, match="inline images"):
        build_envelope(Message("a@example.com", "s", text="x",
                               inline=[Attachment("a.png", b"x", "image/png")]), FROM)


def test_address_lists_and_display_names() -> None:
    assert split_addresses('"Doe, John" <j@x.org>, k@y.org') == ['"Doe, John" <j@x.org>', "k@y.org"]
    assert check_address('"Doe, John" <j@x.org>').name == "Doe, John"
    env = build_envelope(Message('"Doe, John" <j@x.org>, k@y.org, J@X.org', "s", text="x"), FROM)
    assert env.recipients == ("j@x.org", "k@y.org")  # duplicates (case-insensitive) are sent once


def test_non_ascii_subject_and_name_are_encoded() -> None:
    env = build_envelope(Message("Åsa Öberg <asa@example.se>", "Hej på dig", text="Hallå\n"), FROM)
    env.data.decode("ascii")  # everything on the wire is 7-bit clean
    msg = parse(env.data)
    assert msg["Subject"] == "Hej på dig"
    assert "Åsa Öberg" in str(msg["To"])
    assert msg.get_content() == "Hallå\n"


def test_html_to_text_skips_scripts() -> None:
    assert html_to_text("<style>x{}</style><p>a</p><script>evil()</script><p>b</p>") == "a\n\nb\n"


@given(st.text(min_size=1, max_size=30))
def test_no_subject_can_add_a_header(subject: str) -> None:
    try:
        env = build_envelope(Message("a@example.com", subject, text="x"), FROM)
    except MessageError:
        assert len((subject + "x").splitlines()) > 1 or any(
            (ord(c) < 32 and c != "\t") or c == "\x7f" for c in subject)
        return
    msg = parse(env.data)
    assert msg.get_all("Bcc") is None
    assert len(msg.keys()) == len({"From", "To", "Subject", "Date", "Message-ID", "MIME-Version",
                                   "Content-Type", "Content-Transfer-Encoding"})
