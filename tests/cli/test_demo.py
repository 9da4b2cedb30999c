"""`egressmail demo` as a real subprocess: the seed's scenario end to end, and its failures."""

from __future__ import annotations

import filecmp
import json
import random
import re
import socket
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, run_cli

SECRET = "password123"  # the API key in the seed's set-secrets.sh
PACKAGED_SEED = Path(__file__).resolve().parents[2] / "src" / "egressmail" / "demo" / "seed" / "wknd"


def _proxy_host() -> str:
    # A loopback address of its own, so that parallel runs never fight over port 30002.
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def _demo(*args: str) -> tuple[int, str]:
    proc = run_cli("demo", "--proxy-host", _proxy_host(), "--timeout", "30", *args, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


def test_demo_runs_the_seed_end_to_end_without_showing_the_secret() -> None:
    code, out = _demo()
    assert code == 0, out
    assert SECRET not in out
    # the seed's command line ran, masked
    assert "$ egressmail cloudmanager:set-environment-variables --programId=1001 2002 --secret " \
           "EMAIL_USERNAME **** --secret EMAIL_PASSWORD ****" in out
    assert "$ egressmail network create 1001 --kind flexiblePortEgress" in out
    assert "proxy.tunnel:30002 → smtp.sendgrid.com:465" in out
    # the configuration, masked, with AEM_PROXY_HOST set by the demo
    assert re.search(r"smtp\.password\s+\*\*\*\*", out)
    assert "AEM_PROXY_HOST (set by the demo)" in out or "AEM_PROXY_HOST=" in out
    # the transcript: TLS verified for the provider's name, AUTH redacted, delivered
    assert "certificate valid for 'smtp.sendgrid.com'" in out
    assert "C: AUTH PLAIN ****" in out
    assert "250 2.0.0 Ok: queued as demo0001" in out
    # the gateway's access-log line joins the transcript's session id
    session = re.search(r"session [0-9a-f]{8}@([0-9.]+:\d+)", out)
    assert session is not None
    assert re.search(rf"rule=smtp\.sendgrid\.com:465 via=port-forward listen=30002 client={session.group(1)} "
                     r"dest=smtp\.sendgrid\.com:465 addr=127\.0\.0\.1:\d+ .* end=closed", out)
    # the message as received
    assert "Subject: Hello from the egressmail demo" in out
    assert "TLS yes, authenticated yes" in out
    # the temporary home is gone
    home = re.search(r"home: (\S+) \(a fresh store", out)
    assert home is not None and not Path(home.group(1)).exists()
    assert "demo finished" in out


def test_keep_home_keeps_an_encrypted_store(tmp_path: Path) -> None:
    home = tmp_path / "demo-home"
    code, out = _demo("--keep-home", str(home))
    assert code == 0, out
    assert f"home kept in {home}" in out
    listing = run_cli("env", "list", "1001", "2002", home=home)
    assert listing.returncode == 0 and "EMAIL_PASSWORD" in listing.stdout and SECRET not in listing.stdout
    for path in home.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_keep_home_refuses_a_folder_in_use(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    code, out = _demo("--keep-home", str(tmp_path))
    assert code == 1
    assert "demo step 'home' failed" in out and "not an empty folder" in out


def test_json_summary() -> None:
    proc = run_cli("demo", "--proxy-host", _proxy_host(), "--json", timeout=60)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["ok"] is True and summary["failed_step"] is None
    assert [s["key"] for s in summary["steps"]] == ["seed", "secrets", "network", "config", "provider",
                                                   "gateway", "send", "received", "access-log", "stop"]
    assert summary["message"]["tls"] and summary["message"]["authenticated"]
    assert any("end=closed" in line for line in summary["access_log"])
    assert SECRET not in proc.stdout + proc.stderr


def test_port_taken_fails_at_the_gateway_step_and_says_what_to_do() -> None:
    host = _proxy_host()
    with socket.socket() as blocker:
        blocker.bind((host, 30002))
        blocker.listen(1)
        proc = run_cli("demo", "--proxy-host", host, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "demo step 'gateway' failed" in out and f"{host}:30002" in out
    assert "--proxy-host 127.0.0.2" in out
    assert SECRET not in out


def test_a_seed_without_the_files_fails_at_the_seed_step(tmp_path: Path) -> None:
    code, out = _demo("--seed", str(tmp_path))
    assert code == 1
    assert "demo step 'seed' failed" in out and "set-secrets.sh" in out


def test_a_seed_without_a_command_line_fails_at_the_seed_step(tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    import shutil

    shutil.copytree(EXAMPLES, seed)
    (seed / "set-secrets.sh").write_text("# nothing to run here\n")
    code, out = _demo("--seed", str(seed))
    assert code == 1
    assert "demo step 'seed' failed" in out and "no `egressmail cloudmanager:set-environment-variables" in out


def test_the_packaged_seed_is_the_examples_folder_byte_for_byte() -> None:
    files = sorted(p.relative_to(EXAMPLES) for p in EXAMPLES.rglob("*") if p.is_file())
    packaged = sorted(p.relative_to(PACKAGED_SEED) for p in PACKAGED_SEED.rglob("*") if p.is_file())
    assert files == packaged
    _, mismatch, errors = filecmp.cmpfiles(EXAMPLES, PACKAGED_SEED, [str(f) for f in files], shallow=False)
    assert mismatch == [] and errors == []


def test_help_teaches_with_examples() -> None:
    proc = run_cli("demo", "--help")
    assert proc.returncode == 0
    assert "egressmail demo --keep-home" in proc.stdout and "--proxy-host" in proc.stdout


@pytest.mark.parametrize("bad", ["--timeout=0"])
def test_bad_option_is_a_usage_error(bad: str) -> None:
    proc = run_cli("demo", bad)
    assert proc.returncode == 2 and "timeout" in proc.stderr
