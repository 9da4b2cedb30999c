"""The connect timeout bounds the whole connect step, against a listener that never answers.

A loopback listener with a backlog of 0 whose one slot is taken drops further SYNs (Linux), so a
connect to it hangs: the same as a provider or gateway that does not answer, without leaving
loopback.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from egressmail.mail.errors import TransientDeliveryError
from egressmail.mail.settings import Secret, parse_mail_settings
from egressmail.mail.transport import SmtpTransport, TransportConfig


@pytest.fixture
def unanswering_port() -> Iterator[int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=2)  # takes the only slot
    try:
        yield port
    finally:
        filler.close()
        listener.close()


async def test_a_server_that_never_answers_fails_at_connect_within_the_timeout(unanswering_port: int) -> None:
    settings = parse_mail_settings({
        "smtp.host": "127.0.0.1", "smtp.port": unanswering_port, "from.address": "noreply@wknd.site",
        "smtp.ssl": True, "smtp.user": "apikey", "smtp.password": "s3cret-never-shown",
        "egressmail.timeout.connect": "0.3", "egressmail.tls.servername": "smtp.example.test",
    })
    assert isinstance(settings.password, Secret)
    with pytest.raises(TransientDeliveryError) as caught:
        async with SmtpTransport(TransportConfig.from_settings(settings))():
            pass
    err = caught.value
    assert err.stage == "connect"
    assert "0.3 s" in str(err) and "egressmail.timeout.connect" in str(err)
    assert "s3cret-never-shown" not in str(err)
