"""The mail part: messages, settings and lints, the SMTP transport, OAuth2, the ``MailService``.

See docs/mail.md. The public API::

    from egressmail.mail import MailService, Message, Attachment, MailTemplate

    service = MailService.from_config("ui.config/.../osgiconfig", program="1001", environment="2002")
    service.send(Message("someone@example.com", "Hello", text="Hi!"))

Names are imported lazily, so ``import egressmail.mail.errors`` stays cheap (no aiosmtplib, no httpx).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Attachment": "egressmail.mail.message",
    "Message": "egressmail.mail.message",
    "build_envelope": "egressmail.mail.message",
    "MailTemplate": "egressmail.mail.template",
    "MailSettings": "egressmail.mail.settings",
    "Secret": "egressmail.mail.settings",
    "parse_mail_settings": "egressmail.mail.settings",
    "parse_oauth_settings": "egressmail.mail.settings",
    "Finding": "egressmail.mail.lint",
    "lint": "egressmail.mail.lint",
    "MailService": "egressmail.mail.service",
    "SmtpTransport": "egressmail.mail.transport",
    "TransportConfig": "egressmail.mail.transport",
    "OAuthTokenProvider": "egressmail.mail.oauth",
    "Envelope": "egressmail.mail.envelope",
    "SendResult": "egressmail.mail.envelope",
    "MailError": "egressmail.mail.errors",
    "MessageError": "egressmail.mail.errors",
    "MailConfigError": "egressmail.mail.errors",
    "TransientDeliveryError": "egressmail.mail.errors",
    "PermanentDeliveryError": "egressmail.mail.errors",
    "DeliveryUnknown": "egressmail.mail.errors",
    "MailTLSError": "egressmail.mail.errors",
    "TLSRequiredError": "egressmail.mail.errors",
}

__all__ = [
    "Attachment",
    "DeliveryUnknown",
    "Envelope",
    "Finding",
    "MailConfigError",
    "MailError",
    "MailService",
    "MailSettings",
    "MailTLSError",
    "MailTemplate",
    "Message",
    "MessageError",
    "OAuthTokenProvider",
    "PermanentDeliveryError",
    "Secret",
    "SendResult",
    "SmtpTransport",
    "TLSRequiredError",
    "TransientDeliveryError",
    "TransportConfig",
    "build_envelope",
    "lint",
    "parse_mail_settings",
    "parse_oauth_settings",
]

if TYPE_CHECKING:
    from egressmail.mail.envelope import Envelope, SendResult
    from egressmail.mail.errors import (
        DeliveryUnknown,
        MailConfigError,
        MailError,
        MailTLSError,
        MessageError,
        PermanentDeliveryError,
        TLSRequiredError,
        TransientDeliveryError,
    )
    from egressmail.mail.lint import Finding, lint
    from egressmail.mail.message import Attachment, Message, build_envelope
    from egressmail.mail.oauth import OAuthTokenProvider
    from egressmail.mail.service import MailService
    from egressmail.mail.settings import MailSettings, Secret, parse_mail_settings, parse_oauth_settings
    from egressmail.mail.template import MailTemplate
    from egressmail.mail.transport import SmtpTransport, TransportConfig


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'egressmail.mail' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
