"""Master key problems seen from the CLI: exit code 2, a clear line, never a value."""

from __future__ import annotations

import base64
from pathlib import Path

from tests.conftest import run_cli

SECRET = "Sup3rS3cretValue"
OTHER_KEY = base64.b64encode(b"k" * 32).decode()


def test_secret_under_another_master_key_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run_cli("env", "set", "1001", "2002", "-s", "EMAIL_PASSWORD", SECRET, home=home).returncode == 0
    result = run_cli("env", "set", "1001", "2002", "-s", "OTHER_SECRET", SECRET, home=home,
                     env={"EGRESSMAIL_MASTER_KEY": OTHER_KEY})
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert SECRET not in out and OTHER_KEY not in out
    assert "$EGRESSMAIL_MASTER_KEY does not hold" in result.stderr
    listing = run_cli("env", "list", "1001", "2002", home=home)
    assert "OTHER_SECRET" not in listing.stdout
    assert run_cli("env", "rotate-key", home=home).returncode == 0


def test_truncated_key_file_is_a_configuration_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run_cli("env", "set", "1001", "2002", "-s", "EMAIL_PASSWORD", SECRET, home=home).returncode == 0
    key_file = home / "master.key"
    key_text = key_file.read_text()
    key_file.write_text(key_text[: len(key_text) // 2])
    for args in (("env", "set", "1001", "2002", "-s", "OTHER_SECRET", SECRET), ("env", "rotate-key")):
        result = run_cli(*args, home=home)
        out = result.stdout + result.stderr
        assert result.returncode == 2, out
        assert "damaged" in result.stderr and "Traceback" not in out
        assert SECRET not in out and key_text[len(key_text) // 2 - 20:] not in out
