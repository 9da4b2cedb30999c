"""``MailService.send_many`` when the connection keeps breaking: every message gets a result or an error."""

from __future__ import annotations

from egressmail.mail.errors import TransientDeliveryError
from egressmail.mail.message import Message
from egressmail.mail.service import MailService
from tests.servers.pipelining_smtpd import PipeliningConfig, pipelining_smtpd


async def test_a_connection_that_breaks_on_every_message_yields_an_error_per_message() -> None:
    # 421 to MAIL closes the connection: the batch reconnects once, and the connection breaks again.
    async with pipelining_smtpd(PipeliningConfig(mail_reply="421 4.3.2 shutting down")) as srv:
        service = MailService.from_properties({
            "smtp.host": "127.0.0.1", "smtp.port": srv.port, "from.address": "noreply@wknd.site",
            "egressmail.timeout.connect": 3, "egressmail.timeout.read": 3})
        results = await service.asend_many(
            [Message(f"b{i}@example.test", f"batch {i}", text="x\n") for i in range(4)])
    assert len(results) == 4
    assert all(isinstance(r, TransientDeliveryError) for r in results), results
    assert [r.code for r in results[:2]] == [421, 421]  # type: ignore[union-attr]
    assert "not sent" in str(results[2]) and "not sent" in str(results[3])
    assert srv.messages == []
