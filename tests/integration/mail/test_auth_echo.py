"""A server whose AUTH refusal echoes what the client sent must not put the secret into our errors.

Some servers quote the offending line in their reply (``535 ... bad credentials: <base64>``). The
transcript masks such replies; the error (printed by the CLI, stored in the outbox's history) must
too, and so must the traceback of the error (its cause chain).
"""

from __future__ import annotations

import asyncio
import base64
import traceback

import pytest

from egressmail.mail.errors import PermanentDeliveryError
from egressmail.mail.settings import Secret, Timeouts
from egressmail.mail.transport import PasswordAuth, SmtpTransport, TransportConfig
from tests.servers.scripted import scripted_server

PASSWORD = "echoed-Secret-77"


def echoing(mechanism: str):
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 echo.example ESMTP\r\n")
        await reader.readline()  # EHLO
        writer.write(f"250-echo.example\r\n250 AUTH {mechanism}\r\n".encode())
        line = (await reader.readline()).strip()  # AUTH PLAIN <b64>, or AUTH LOGIN <user b64>
        if mechanism == "LOGIN":
            writer.write(b"334 UGFzc3dvcmQ6\r\n")
            line = (await reader.readline()).strip()  # the password, base64
        decoded = base64.b64decode(line.split()[-1]).replace(b"\0", b" ").decode()
        writer.write(f"535-5.7.8 bad credentials: {line.decode()}\r\n"
                     f"535 5.7.8 (decoded: {decoded})\r\n".encode())
        await writer.drain()
        await reader.read()
    return script


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_a_refusal_echoing_the_credentials_does_not_leak_them(mechanism: str) -> None:
    async with scripted_server(echoing(mechanism)) as port:
        t = SmtpTransport(TransportConfig(
            host="127.0.0.1", port=port, tls_mode="starttls", tls_name="echo.example",
            allow_plaintext_auth=True, credentials=PasswordAuth("apikey", Secret(PASSWORD)),
            timeouts=Timeouts(connect=3, read=3)))
        with pytest.raises(PermanentDeliveryError) as info:
            async with t():
                pass
    error = info.value
    assert (error.stage, error.code) == ("auth", 535)
    shown = "\n".join([str(error), error.server_message or "",
                       "".join(traceback.format_exception(error))])
    encoded = base64.b64encode(PASSWORD.encode()).decode()
    plain = base64.b64encode(f"\0apikey\0{PASSWORD}".encode()).decode()
    for secret in (PASSWORD, encoded, plain):
        assert secret not in shown
    assert "bad credentials" in str(error)  # the rest of the server's reply is kept
