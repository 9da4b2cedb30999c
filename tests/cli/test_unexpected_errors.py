"""An exception egressmail did not raise on purpose (OSError, sqlite3.Error, ...) still ends in one
clear ``error:`` line and exit code 1, never a traceback; ``--debug`` / ``EGRESSMAIL_DEBUG=1`` shows it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.conftest import run_cli

SECRET = "Sup3rS3cretValue"


def _foreign_database(home: Path) -> None:
    # A SQLite file whose env_variables table is not ours: queries fail with OperationalError.
    home.mkdir(mode=0o700)
    conn = sqlite3.connect(home / "egressmail.db")
    conn.execute("CREATE TABLE env_variables (x)")
    conn.commit()
    conn.close()


def test_sqlite_error_is_one_line_without_traceback_or_secret(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _foreign_database(home)
    result = run_cli("env", "set", "1001", "2002", "-s", "EMAIL_PASSWORD", SECRET, home=home)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "Traceback" not in out
    assert SECRET not in out
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "OperationalError" in lines[0]
    assert "--debug" in result.stderr


def test_home_that_is_a_file_names_the_path(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "home"
    not_a_folder.write_text("")
    result = run_cli("env", "set", "1001", "2002", "-s", "EMAIL_PASSWORD", SECRET, home=not_a_folder)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "Traceback" not in out
    assert SECRET not in out
    assert result.stderr.startswith("error:"), result.stderr
    assert str(not_a_folder) in result.stderr
    assert "not a folder" in result.stderr
    assert "--home" in result.stderr


def test_debug_flag_and_env_var_show_the_traceback(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _foreign_database(home)
    for args, env in ((("--debug",), None), ((), {"EGRESSMAIL_DEBUG": "1"})):
        result = run_cli(*args, "env", "set", "1001", "2002", "-v", "SMTP_HOST", "x", home=home, env=env)
        assert result.returncode == 1, result.stderr
        assert "Traceback" in result.stderr
        assert "sqlite3.OperationalError" in result.stderr


def test_value_that_is_not_text_is_a_validation_error(tmp_path: Path) -> None:
    # A command-line byte that is not UTF-8 arrives as a lone surrogate: it cannot be stored.
    home = tmp_path / "home"
    for flag in ("-s", "-v"):
        result = run_cli("env", "set", "1001", "2002", flag, "EMAIL_PASSWORD", SECRET + "\udcff", home=home)
        out = result.stdout + result.stderr
        assert result.returncode == 3, out
        assert "Traceback" not in out
        assert SECRET not in out
        assert "EMAIL_PASSWORD" in result.stderr
