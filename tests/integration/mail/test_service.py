"""MailService end to end: the seed's configuration, the store, the real gateway, rotation, OAuth2."""

from __future__ import annotations

import base64
import io
import json
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from egressmail.environments.store import EnvironmentStore
from egressmail.gateway.accesslog import AccessLog
from egressmail.gateway.options import GatewayOptions, parse_connect_to
from egressmail.gateway.server import Gateway
from egressmail.mail.errors import MailConfigError, MessageError, PermanentDeliveryError
from egressmail.mail.message import Message
from egressmail.mail.service import MailService
from egressmail.mail.transcript import LOGGER_NAME
from egressmail.networking.store import NetworkStore, load_egress_map
from egressmail.storage.sqlite import Database
from tests.conftest import SEED_CONFIG_ROOT, SEED_NETWORKING
from tests.servers.fake_smtpd import FakeSmtpd
from tests.servers.oauth_endpoint import TokenEndpoint, token_endpoint

PROGRAM, ENV = "1001", "2002"
SEED_PASSWORD = "password123"


def seed_store(home: Path, *, password: str | None = SEED_PASSWORD) -> Database:
    """A store holding what set-secrets.sh and advanced-networking.json put there."""
    db = Database(home)
    store = EnvironmentStore(db)
    store.set(PROGRAM, ENV, "EMAIL_USERNAME", "apikey", secret=True)
    if password is not None:
        store.set(PROGRAM, ENV, "EMAIL_PASSWORD", password, secret=True)
    net = NetworkStore(db)
    net.create_infrastructure(PROGRAM, "flexiblePortEgress")
    net.enable(PROGRAM, ENV, json.loads(SEED_NETWORKING.read_text()))
    return db


def random_loopback() -> str:
    # A loopback address of its own, so the gateway can listen on the seed's portOrig 30002 without
    # colliding with anything else on the machine.
    return f"127.{secrets.randbelow(200) + 20}.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}"


@asynccontextmanager
async def gateway_for(db: Database, smtpd: FakeSmtpd, host: str, access: io.StringIO,
                      http_proxy: bool = False) -> AsyncIterator[Gateway]:
    pins = [parse_connect_to(f"smtp.sendgrid.com:465=127.0.0.1:{smtpd.port}")]
    gw = Gateway(lambda: load_egress_map(db, PROGRAM, ENV),
                 GatewayOptions(listen_host=host, http_proxy_port=0 if http_proxy else None,
                                connect_to=tuple(pins)), access_log=AccessLog(access))
    await gw.start()
    try:
        yield gw
    finally:
        await gw.aclose(drain_timeout=1.0)


SEED_SERVER = {"tls": "implicit", "credentials": {"apikey": SEED_PASSWORD}}


@pytest.mark.smtpd(**SEED_SERVER)
async def test_seed_config_through_the_real_gateway(smtpd: FakeSmtpd, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    db = seed_store(tmp_path / "home")
    host = random_loopback()
    monkeypatch.setenv("SSL_CERT_FILE", str(smtpd.cafile))  # the seed's file names no CA bundle
    access = io.StringIO()
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    async with gateway_for(db, smtpd, host, access) as gw:
        service = MailService.from_config(SEED_CONFIG_ROOT, program=PROGRAM, environment=ENV, db=db,
                                          environ={"AEM_PROXY_HOST": host}, run_modes="publish")
        s = service.settings
        assert (s.host, s.port, s.ssl, s.starttls) == (host, 30002, True, False)
        assert service.transport.config.tls_name == "smtp.sendgrid.com"
        assert gw.listening_ports == {30002: 30002}
        # debug.email is false in the seed: turn the transcript on through a copy of the settings
        result = await service.asend(Message("visitor@example.com", "Hello", text="Hi from the seed\n"))
    [msg] = smtpd.messages
    assert msg.tls and msg.login == "apikey" and msg.mail_from == "noreply@wknd.site"
    assert result.accepted.keys() == {"visitor@example.com"}
    # the gateway logged the same client address the session id carries
    client = result.session_id.split("@", 1)[1]
    assert f"client={client}" in access.getvalue()
    assert "dest=smtp.sendgrid.com:465" in access.getvalue()


@pytest.mark.smtpd(**SEED_SERVER)
async def test_rotated_secret_is_used_by_the_next_send(smtpd: FakeSmtpd, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    db = seed_store(tmp_path / "home")
    host = random_loopback()
    monkeypatch.setenv("SSL_CERT_FILE", str(smtpd.cafile))
    async with gateway_for(db, smtpd, host, io.StringIO()):
        service = MailService.from_config(SEED_CONFIG_ROOT, program=PROGRAM, environment=ENV, db=db,
                                          environ={"AEM_PROXY_HOST": host})
        await service.asend(Message("a@example.com", "1", text="one\n"))
        # the provider rotates the key; until the environment's secret changes, sends fail
        assert smtpd.config.credentials is not None
        smtpd.config.credentials["apikey"] = "rotated-key-456"
        with pytest.raises(PermanentDeliveryError) as info:
            await service.asend(Message("a@example.com", "2", text="two\n"))
        assert (info.value.stage, info.value.code) == ("auth", 535)
        EnvironmentStore(db).set(PROGRAM, ENV, "EMAIL_PASSWORD", "rotated-key-456", secret=True)
        await service.asend(Message("a@example.com", "3", text="three\n"))  # same service, no restart
    assert [m.data.count(b"Subject: ") for m in smtpd.messages] == [1, 1]
    assert b"Subject: 3" in smtpd.messages[1].data


@pytest.mark.smtpd(tls="starttls", credentials={"apikey": SEED_PASSWORD})
async def test_debug_email_transcript_never_shows_the_secret(smtpd: FakeSmtpd, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    service = MailService.from_properties({
        "smtp.host": "127.0.0.1", "smtp.port": smtpd.port, "smtp.user": "apikey",
        "smtp.password": SEED_PASSWORD, "from.address": "noreply@wknd.site", "smtp.ssl": False,
        "debug.email": "true", "egressmail.tls.servername": "smtp.sendgrid.com",
        "egressmail.tls.cafile": str(smtpd.cafile)})
    assert SEED_PASSWORD not in repr(service.settings) and SEED_PASSWORD not in repr(service.transport.config)
    await service.asend(Message("a@example.com", "s", text="secret body words\n"))
    # everything our package logged, at any level (the fake server's own debug log is not ours)
    everything = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("egressmail"))
    assert "AUTH PLAIN ****" in everything
    for needle in (SEED_PASSWORD, base64.b64encode(f"\0apikey\0{SEED_PASSWORD}".encode()).decode(),
                   "secret body words"):
        assert needle not in everything


def test_unresolved_secret_refuses_to_start(tmp_path: Path) -> None:
    db = seed_store(tmp_path / "home", password=None)
    with pytest.raises(MailConfigError) as info:
        MailService.from_config(SEED_CONFIG_ROOT, program=PROGRAM, environment=ENV, db=db,
                                environ={"AEM_PROXY_HOST": "127.0.0.1"})
    assert "$[secret:EMAIL_PASSWORD]" in str(info.value) and "--secret EMAIL_PASSWORD" in str(info.value)
    assert info.value.exit_code == 2


def test_provider_port_lint_refuses_to_start(tmp_path: Path) -> None:
    emap = load_egress_map(seed_store(tmp_path / "home"), PROGRAM, ENV)
    with pytest.raises(MailConfigError, match='smtp.port is 465.*set smtp.port to "30002"'):
        MailService.from_properties({"smtp.host": "proxy.tunnel", "smtp.port": 465, "smtp.ssl": True,
                                     "from.address": "a@example.com"}, egress_map=emap)
    with pytest.raises(MailConfigError, match="set smtp.ssl to true"):
        MailService.from_properties({"smtp.host": "proxy.tunnel", "smtp.port": 30002, "smtp.ssl": False,
                                     "from.address": "a@example.com"}, egress_map=emap)


@pytest.mark.smtpd(tls="starttls", credentials={"apikey": SEED_PASSWORD})
def test_sync_send_and_batch(smtpd: FakeSmtpd) -> None:
    service = MailService.from_properties({
        "smtp.host": "127.0.0.1", "smtp.port": str(smtpd.port), "smtp.user": "apikey",
        "smtp.password": SEED_PASSWORD, "from.address": "noreply@wknd.site", "smtp.ssl": "false",
        "egressmail.tls.servername": "smtp.sendgrid.com", "egressmail.tls.cafile": str(smtpd.cafile)})
    result = service.send(Message("a@example.com", "single", text="x\n"))
    assert result.reply[0] == 250
    results = service.send_many([Message(f"b{i}@example.com", f"batch {i}", text="x\n") for i in range(3)]
                                + [Message("not an address", "bad", text="x\n")])
    assert [type(r).__name__ for r in results] == ["SendResult"] * 3 + ["MessageError"]
    assert isinstance(results[3], MessageError)
    assert len(smtpd.messages) == 4
    assert len(smtpd.verbs) == 2 and smtpd.verbs[1].count("MAIL") == 3  # one connection for the batch


@pytest.mark.smtpd(tls="implicit", xoauth2={"user@example.com": {"tok-1"}})
async def test_oauth2_xoauth2_through_the_gateway_http_proxy(smtpd: FakeSmtpd, smtp_ca, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    db = seed_store(tmp_path / "home")
    endpoint = TokenEndpoint(refresh_token="refresh-secret-xyz", client_id="client-1")
    with token_endpoint(smtp_ca, "login.example.test", endpoint):
        pins = (parse_connect_to(f"login.example.test:443=127.0.0.1:{endpoint.port}"),)
        gw = Gateway(lambda: load_egress_map(db, PROGRAM, ENV),
                     GatewayOptions(http_proxy_port=0, ephemeral_ports=True, connect_to=pins))
        await gw.start()
        try:
            service = MailService.from_properties({
                "smtp.host": "127.0.0.1", "smtp.port": smtpd.port, "smtp.ssl": True,
                "smtp.user": "user@example.com", "from.address": "user@example.com", "oauth.flow": True,
                "debug.email": True, "egressmail.tls.servername": "smtp.sendgrid.com",
                "egressmail.tls.cafile": str(smtpd.cafile),
                "egressmail.oauth.proxy": f"http://127.0.0.1:{gw.http_proxy_port}",
            }, oauth_properties={
                "refreshUrl": "https://login.example.test/token", "clientId": "client-1",
                "clientSecret": "client-secret-abc", "refreshToken": "refresh-secret-xyz",
                "scopes": ["https://outlook.office.com/SMTP.Send", "offline_access"]})
            await service.asend(Message("a@example.com", "1", text="x\n"))
            await service.asend(Message("a@example.com", "2", text="x\n"))  # the cached token
            assert len(endpoint.requests) == 1
            # the server stops accepting tok-1: one retry with a fresh token
            smtpd.config.xoauth2 = {"user@example.com": {"tok-2"}}
            await service.asend(Message("a@example.com", "3", text="x\n"))
        finally:
            await gw.aclose(drain_timeout=1.0)
    assert len(endpoint.requests) == 2
    form = endpoint.requests[0]
    assert form["grant_type"] == "refresh_token" and form["client_secret"] == "client-secret-abc"
    assert form["scope"] == "https://outlook.office.com/SMTP.Send offline_access"
    assert [t for _, t in smtpd.xoauth2_attempts] == ["tok-1", "tok-1", "tok-1", "tok-2"]
    assert len(smtpd.messages) == 3
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert "AUTH XOAUTH2 ****" in log
    for needle in ("tok-1", "tok-2", "refresh-secret-xyz", "client-secret-abc"):
        assert needle not in log


@pytest.mark.smtpd(tls="implicit", xoauth2={"user@example.com": {"tok-1"}})
async def test_oauth2_revoked_refresh_token_is_a_clear_error(smtpd: FakeSmtpd, smtp_ca) -> None:
    endpoint = TokenEndpoint(refresh_token="the-real-one", client_id="client-1")
    with token_endpoint(smtp_ca, "127.0.0.1", endpoint):
        service = MailService.from_properties({
            "smtp.host": "127.0.0.1", "smtp.port": smtpd.port, "smtp.ssl": True, "oauth.flow": True,
            "smtp.user": "user@example.com", "from.address": "user@example.com",
            "egressmail.tls.servername": "smtp.sendgrid.com", "egressmail.tls.cafile": str(smtpd.cafile),
        }, oauth_properties={"refreshUrl": f"https://127.0.0.1:{endpoint.port}/token", "clientId": "client-1",
                             "refreshToken": "revoked-refresh-token"})
        with pytest.raises(PermanentDeliveryError) as info:
            await service.asend(Message("a@example.com", "1", text="x\n"))
    assert info.value.stage == "oauth" and "invalid_grant" in str(info.value)
    assert "revoked-refresh-token" not in str(info.value)
    assert "AUTH" not in smtpd.all_verbs
