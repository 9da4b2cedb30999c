"""`egressmail doctor` as a real subprocess, against a real gateway and the embedded SMTP server."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from egressmail.gateway.options import GatewayOptions, parse_connect_to
from egressmail.gateway.server import Gateway
from egressmail.mail.embedded_server import EmbeddedSmtpServer, LocalTls, local_tls
from egressmail.mail.settings import Secret
from egressmail.networking.store import load_egress_map
from egressmail.storage.sqlite import Database
from tests.conftest import SEED_CONFIG_ROOT, SEED_NETWORKING, SEED_SET_SECRETS, run_cli

SECRET = "password123"


def _setup_home(home: Path, *, networking: Path | None = SEED_NETWORKING, password: str = SECRET) -> None:
    line = SEED_SET_SECRETS.read_text().split("egressmail ", 1)[1].split()
    words = [w.strip('"') for w in line]
    words[words.index(SECRET)] = password
    assert run_cli(*words, home=home).returncode == 0
    assert run_cli("network", "create", "1001", "--kind", "flexiblePortEgress", home=home).returncode == 0
    if networking is not None:
        assert run_cli("network", "enable", "1001", "2002", "--json-file", str(networking),
                       home=home).returncode == 0


@dataclass
class Peers:
    host: str
    tls: LocalTls
    server: EmbeddedSmtpServer


@pytest.fixture
async def peers(home: Path, tmp_path: Path) -> AsyncIterator[Peers]:
    """The seed's store, a stand-in for smtp.sendgrid.com and the real gateway in front of it."""
    _setup_home(home)
    tls = local_tls(["smtp.sendgrid.com"], tmp_path)
    host = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
    async with EmbeddedSmtpServer(tls="implicit", ssl_context=tls.server_context,
                                  credentials=("apikey", Secret(SECRET)),
                                  hostname="smtp.sendgrid.com") as server:
        db = Database(home)
        options = GatewayOptions(listen_host=host, http_proxy_port=None, connect_to=(
            parse_connect_to(f"smtp.sendgrid.com:465=127.0.0.1:{server.port}"),))
        async with Gateway(lambda: load_egress_map(db, "1001", "2002"), options):
            yield Peers(host, tls, server)


async def _doctor(home: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    full = {k: v for k, v in os.environ.items() if k not in ("AEM_PROXY_HOST", "SSL_CERT_FILE")}
    full.update({"EGRESSMAIL_HOME": str(home), "COLUMNS": "250", **(env or {})})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "egressmail", "doctor", "--config", str(SEED_CONFIG_ROOT), "--program", "1001",
        "--environment", "2002", "--timeout", "5", *args, env=full,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_every_layer_passes_without_sending_or_showing_the_secret(home: Path, peers: Peers) -> None:
    code, out = await _doctor(home, "--gateway", peers.host, "--cafile", str(peers.tls.cafile))
    assert code == 0, out
    for layer in ("config", "forward", "gateway", "tcp", "tls", "greeting", "ehlo", "auth"):
        assert f"✔ {layer} " in out, (layer, out)
    assert "– starttls" in out and "implicit TLS" in out
    assert "30002 → smtp.sendgrid.com:465" in out
    assert "certificate valid for 'smtp.sendgrid.com' (forward)" in out
    assert "AUTH LOGIN PLAIN" in out and "PLAIN accepted" in out
    assert SECRET not in out
    assert peers.server.messages == []  # never MAIL


async def test_aem_proxy_host_is_used_like_the_service_would(home: Path, peers: Peers) -> None:
    code, out = await _doctor(home, "--cafile", str(peers.tls.cafile), env={"AEM_PROXY_HOST": peers.host})
    assert code == 0, out
    assert f"smtp.host={peers.host}" in out


async def test_json_report(home: Path, peers: Peers) -> None:
    code, out = await _doctor(home, "--gateway", peers.host, "--cafile", str(peers.tls.cafile), "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["ok"] is True and report["first_failure"] is None
    assert [x["layer"] for x in report["layers"]] == [
        "config", "forward", "gateway", "tcp", "tls", "greeting", "ehlo", "starttls", "auth"]


async def test_untrusted_certificate_fails_at_tls(home: Path, peers: Peers) -> None:
    code, out = await _doctor(home, "--gateway", peers.host)  # the demo CA is not trusted
    assert code == 1, out
    assert "✘ tls" in out and "'smtp.sendgrid.com'" in out
    assert "error: the first failing layer is tls" in out
    assert "– greeting" in out and "not checked: tls failed" in out


async def test_wrong_password_fails_at_auth(home: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-home"
    _setup_home(other, password="not-the-key")
    tls = local_tls(["smtp.sendgrid.com"], tmp_path / "tls")
    host = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
    async with EmbeddedSmtpServer(tls="implicit", ssl_context=tls.server_context,
                                  credentials=("apikey", Secret(SECRET))) as server:
        options = GatewayOptions(listen_host=host, http_proxy_port=None, connect_to=(
            parse_connect_to(f"smtp.sendgrid.com:465=127.0.0.1:{server.port}"),))
        async with Gateway(load_egress_map(Database(other), "1001", "2002"), options):
            code, out = await _doctor(other, "--gateway", host, "--cafile", str(tls.cafile))
    assert code == 1, out
    assert "✘ auth" in out and "535" in out and "✔ ehlo" in out
    assert "not-the-key" not in out and SECRET not in out


async def test_no_gateway_listening_fails_at_tcp(home: Path) -> None:
    _setup_home(home)
    # not 127.0.0.1: someone's demo may be listening on 30002 there; a loopback address of our own
    host = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
    code, out = await _doctor(home, "--gateway", host)
    assert code == 1
    assert "✘ tcp" in out and "egressmail gateway run 1001 2002" in out


async def test_proxy_tunnel_not_resolving_fails_at_gateway(home: Path) -> None:
    _setup_home(home)
    code, out = await _doctor(home)
    assert code == 1
    assert "✘ gateway" in out and "proxy.tunnel does not resolve" in out and "--gateway" in out


async def test_networking_not_enabled_fails_at_forward(home: Path) -> None:
    _setup_home(home, networking=None)
    code, out = await _doctor(home, "--gateway", "127.0.0.1")
    assert code == 1
    assert "✔ config" in out and "✘ forward" in out and "not enabled" in out


async def test_unknown_environment_fails_at_config(home: Path) -> None:
    code, out = await _doctor(home, "--gateway", "127.0.0.1")
    assert code == 1
    assert "✘ config" in out and "– forward" in out


async def test_missing_config_fails_at_config(home: Path, tmp_path: Path) -> None:
    _setup_home(home)
    proc = run_cli("doctor", "--config", str(tmp_path / "nowhere"), "--program", "1001", "--environment",
                   "2002", home=home)
    assert proc.returncode == 1
    assert "✘ config" in proc.stdout and "no such file" in proc.stdout


def test_help_lists_the_layers() -> None:
    proc = run_cli("doctor", "--help")
    assert proc.returncode == 0
    for layer in ("config", "forward", "gateway", "tcp", "tls", "greeting", "ehlo", "starttls", "auth"):
        assert f"  {layer} " in proc.stdout
    assert "egressmail doctor --config" in proc.stdout


def test_program_is_required() -> None:
    proc = run_cli("doctor", "--config", "x")
    assert proc.returncode == 2 and "--program" in proc.stderr


# -- the report model (pure) --------------------------------------------------------------------

from egressmail.mail.doctor import DoctorFailed, Layer, LayerResult, Status, build_report  # noqa: E402


def test_report_marks_everything_after_the_first_failure_as_not_checked() -> None:
    report = build_report([LayerResult(Layer.CONFIG, Status.OK, "ok"),
                           LayerResult(Layer.TCP, Status.FAILED, "refused", "start it"),
                           LayerResult(Layer.AUTH, Status.OK, "should not count")])
    assert [r.layer for r in report.results] == list(Layer)
    by = {r.layer: r for r in report.results}
    assert by[Layer.FORWARD].detail == "not applicable"
    assert by[Layer.AUTH].status is Status.SKIPPED and by[Layer.AUTH].detail == "not checked: tcp failed"
    assert report.first_failure is by[Layer.TCP] and not report.ok
    error = DoctorFailed(report)
    assert error.layer is Layer.TCP and error.hint == "start it" and "tcp (TCP connection)" in error.message
    assert report.to_dict()["first_failure"] == "tcp"


def test_report_without_failure_is_ok() -> None:
    report = build_report([LayerResult(layer, Status.OK, "") for layer in Layer])
    assert report.ok and report.first_failure is None and report.to_dict()["ok"] is True
