"""`egressmail send` as a real subprocess against real servers."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import SEED_CONFIG_ROOT, run_cli
from tests.integration.mail.test_service import gateway_for, random_loopback, seed_store
from tests.servers.fake_smtpd import FakeSmtpd

PASSWORD = "cli-Secret-pw-77"


def write_config(tmp_path: Path, smtpd: FakeSmtpd, **extra: object) -> Path:
    props: dict[str, object] = {
        "smtp.host": "127.0.0.1", "smtp.port": str(smtpd.port), "smtp.user": "apikey",
        "smtp.password": PASSWORD, "from.address": "noreply@wknd.site", "smtp.ssl": False,
        "smtp.starttls": True, "smtp.requiretls": True, "debug.email": False, "oauth.flow": False,
        "egressmail.tls.servername": "smtp.sendgrid.com", "egressmail.tls.cafile": str(smtpd.cafile),
        "egressmail.timeout.connect": 5, "egressmail.timeout.read": 5}
    props.update(extra)
    path = tmp_path / "com.day.cq.mailer.DefaultMailService.cfg.json"
    path.write_text(json.dumps(props))
    return path


@pytest.mark.smtpd(tls="starttls", credentials={"apikey": PASSWORD})
def test_send_text_with_attachment(smtpd: FakeSmtpd, tmp_path: Path, home: Path) -> None:
    cfg = write_config(tmp_path, smtpd)
    att = tmp_path / "report.csv"
    att.write_text("a,b\n1,2\n")
    r = run_cli("send", "--config", str(cfg), "--to", "a@example.com", "--bcc", "hidden@example.com",
                "--subject", "Report", "--text", "See attached", "--attach", str(att), home=home)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("sent: <") and "accepted for 2 recipient(s)" in r.stdout
    [msg] = smtpd.messages
    assert msg.rcpt_tos == ["a@example.com", "hidden@example.com"] and b"hidden" not in msg.data
    assert b'filename="report.csv"' in msg.data


@pytest.mark.smtpd(tls="starttls", credentials={"apikey": PASSWORD})
def test_send_template_with_vars_and_debug_transcript(smtpd: FakeSmtpd, tmp_path: Path, home: Path) -> None:
    cfg = write_config(tmp_path, smtpd, **{"debug.email": True})
    tpl = tmp_path / "order.txt"
    tpl.write_text("To: ${email}\nSubject: Order ${order}\n\nHello ${name}, order ${order} shipped.\n")
    r = run_cli("send", "--config", str(cfg), "--template", str(tpl), "--var", "email=b@example.com",
                "--var", "order=42", "--var", "name=Ann", home=home)
    assert r.returncode == 0, r.stderr
    assert b"Subject: Order 42" in smtpd.messages[0].data
    assert "transcript:" in r.stderr and "AUTH PLAIN ****" in r.stderr
    assert PASSWORD not in r.stderr + r.stdout and "shipped" not in r.stderr


@pytest.mark.smtpd(tls="starttls", credentials={"apikey": PASSWORD},
                   refuse={"nobody@example.com": "550 5.1.1 No such user"})
def test_refused_recipient_exits_non_zero_with_stage(smtpd: FakeSmtpd, tmp_path: Path, home: Path) -> None:
    r = run_cli("send", "--config", str(write_config(tmp_path, smtpd)), "--to", "nobody@example.com",
                "--subject", "x", "--text", "y", home=home)
    assert r.returncode == 1
    assert "error: SMTP rcpt failed at 127.0.0.1:" in r.stderr and "550 5.1.1 No such user" in r.stderr


@pytest.mark.smtpd(tls="starttls", credentials={"apikey": "other-password"})
def test_auth_failure_never_prints_the_password(smtpd: FakeSmtpd, tmp_path: Path, home: Path) -> None:
    r = run_cli("send", "--config", str(write_config(tmp_path, smtpd)), "--to", "a@example.com",
                "--subject", "x", "--text", "y", home=home)
    assert r.returncode == 1 and "SMTP auth failed" in r.stderr and "535" in r.stderr
    assert PASSWORD not in r.stderr + r.stdout


@pytest.mark.smtpd(tls="starttls")
def test_bad_address_and_lint_errors_before_connecting(smtpd: FakeSmtpd, tmp_path: Path, home: Path) -> None:
    r = run_cli("send", "--config", str(write_config(tmp_path, smtpd)), "--to", "a@example.com\nBcc: x@y.z",
                "--subject", "x", "--text", "y", home=home)
    assert r.returncode == 3 and "header injection" in r.stderr
    r = run_cli("send", "--config", str(write_config(tmp_path, smtpd, **{"smtp.password": " padded "})),
                "--to", "a@example.com", "--subject", "x", "--text", "y", home=home)
    assert r.returncode == 2 and "whitespace" in r.stderr and "padded" not in r.stderr
    r = run_cli("send", "--config", str(write_config(tmp_path, smtpd)), "--to", "a@example.com", home=home)
    assert r.returncode == 2 and "--text, --html or --template" in r.stderr
    assert smtpd.verbs == []


def test_help_teaches() -> None:
    r = run_cli("send", "--help")
    assert r.returncode == 0
    for text in ("--template", "--var", "Examples:", "AEM_PROXY_HOST", "exits 0 only"):
        assert text in r.stdout


@pytest.mark.smtpd(tls="implicit", credentials={"apikey": "password123"})
async def test_seed_send_through_the_gateway(smtpd: FakeSmtpd, tmp_path: Path) -> None:
    home = tmp_path / "home"
    db = seed_store(home)
    host = random_loopback()
    env = dict(os.environ)
    env.pop("EGRESSMAIL_MASTER_KEY", None)
    env.update({"EGRESSMAIL_HOME": str(home), "AEM_PROXY_HOST": host, "SSL_CERT_FILE": str(smtpd.cafile)})
    async with gateway_for(db, smtpd, host, io.StringIO()):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "egressmail", "send", "--config", str(SEED_CONFIG_ROOT),
            "--program", "1001", "--environment", "e2002", "--run-modes", "publish",
            "--to", "visitor@example.com", "--subject", "Hello", "--text", "Hi", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    assert b"sent: <" in out
    assert smtpd.messages[0].login == "apikey" and smtpd.messages[0].tls
