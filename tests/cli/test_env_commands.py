"""`egressmail env …`: the plainer spelling of the same operations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli


def env_json(home: Path, env: str = "2002") -> list[dict[str, str | None]]:
    result = run_cli("env", "list", "1001", env, "--json", home=home)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_set_list_delete(home: Path) -> None:
    result = run_cli("env", "set", "1001", "2002", "-v", "HOST", '"kept quoted"', "-v", "PORT", "30002",
                     "-s", "PW", "p4ss", home=home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split() == ["Name", "Type", "Value", "Service", "Status"]
    rows = env_json(home)
    # The plain spelling takes values literally: no JSON parsing.
    assert [(r["name"], r["value"]) for r in rows] == [
        ("HOST", '"kept quoted"'), ("PORT", "30002"), ("PW", "****")]
    table = run_cli("env", "list", "1001", "e2002", home=home)
    assert "****" in table.stdout and "p4ss" not in table.stdout
    result = run_cli("env", "delete", "1001", "2002", "PORT", "MISSING", home=home)
    assert result.returncode == 0
    assert "MISSING does not exist" in result.stderr
    assert "deleted: PORT" in result.stdout
    assert [r["name"] for r in env_json(home)] == ["HOST", "PW"]


def test_service_option(home: Path) -> None:
    assert run_cli("env", "set", "1001", "2002", "-v", "HOST", "p", "--service", "publish",
                   home=home).returncode == 0
    assert env_json(home)[0]["service"] == "publish"
    result = run_cli("env", "set", "1001", "2002", "-v", "HOST", "p", "--service", "Publish", home=home)
    assert result.returncode == 3
    assert "invalid service 'Publish'" in result.stderr
    assert run_cli("env", "delete", "1001", "2002", "HOST", "--service", "publish", home=home).returncode == 0
    assert env_json(home) == []


def test_set_needs_something(home: Path) -> None:
    result = run_cli("env", "set", "1001", "2002", home=home)
    assert result.returncode == 2
    assert "nothing to set" in result.stderr


def test_blank_value_is_refused(home: Path) -> None:
    result = run_cli("env", "set", "1001", "2002", "-v", "AA", "", home=home)
    assert result.returncode == 3
    assert "empty value" in result.stderr and "delete" in result.stderr


def test_missing_environment(home: Path) -> None:
    result = run_cli("env", "list", "1001", "2002", home=home)
    assert result.returncode == 2
    assert "program '1001' does not exist" in result.stderr
    assert "hint:" in result.stderr


def test_diff(home: Path) -> None:
    run_cli("env", "set", "1001", "2002", "-v", "SAME", "1", "-v", "DIFF", "a", "-s", "PW", "x1",
            "-v", "ONLY_A", "a", home=home)
    run_cli("env", "set", "1001", "2003", "-v", "SAME", "1", "-v", "DIFF", "b", "-s", "PW", "x2", home=home)
    result = run_cli("env", "diff", "1001", "2002", "e2003", home=home)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[2:] if line.strip()}
    assert "value differs" in lines["DIFF"]
    assert "only in 2002" in lines["ONLY_A"]
    assert "same" in lines["SAME"]
    assert "not compared" in lines["PW"]
    for value in ("x1", "x2", " a ", " b "):
        assert value not in result.stdout
    as_json = json.loads(run_cli("env", "diff", "1001", "2002", "2003", "--json", home=home).stdout)
    assert {e["name"]: e["state"] for e in as_json} == {
        "DIFF": "differs", "ONLY_A": "only_a", "PW": "secret", "SAME": "same"}
    missing = run_cli("env", "diff", "1001", "2002", "2004", home=home)
    assert missing.returncode == 2 and "'2004'" in missing.stderr


def test_export_import(home: Path, tmp_path: Path) -> None:
    run_cli("env", "set", "1001", "2002", "-v", "HOST", "h", "-s", "PW", "secret-1", home=home)
    run_cli("env", "set", "1001", "2002", "-v", "HOST", "p", "--service", "publish", home=home)
    exported = run_cli("env", "export", "1001", "2002", home=home)
    assert exported.returncode == 0
    assert json.loads(exported.stdout) == [
        {"name": "HOST", "type": "string", "value": "h"},
        {"name": "HOST", "type": "string", "value": "p", "service": "publish"},
        {"name": "PW", "type": "secretString"},
    ]
    assert "secret-1" not in exported.stdout
    imported = run_cli("env", "import", "1001", "2003", "-", home=home, input=exported.stdout)
    assert imported.returncode == 0, imported.stderr
    assert "PW has no value" in imported.stderr
    assert [(r["name"], r["service"]) for r in env_json(home, "2003")] == [
        ("HOST", None), ("HOST", "publish")]
    f = tmp_path / "changes.json"
    f.write_text(json.dumps([{"name": "HOST", "value": ""}, {"name": "NEW", "value": "n"}]))
    assert run_cli("env", "import", "1001", "2003", str(f), home=home).returncode == 0
    assert [(r["name"], r["service"]) for r in env_json(home, "2003")] == [("HOST", "publish"), ("NEW", None)]


@pytest.mark.parametrize(("content", "exit_code", "fragment"), [
    ("{bad", 3, "VARIABLES_JSON_PARSE_ERROR"),
    ('{"a": 1}', 3, "VARIABLES_JSON_NOT_ARRAY"),
    ('[{"name": "X", "value": "1"}]', 3, "too short"),
])
def test_import_errors(home: Path, content: str, exit_code: int, fragment: str) -> None:
    result = run_cli("env", "import", "1001", "2002", "-", home=home, input=content)
    assert result.returncode == exit_code
    assert fragment in result.stderr


def test_import_missing_file(home: Path) -> None:
    result = run_cli("env", "import", "1001", "2002", "/nonexistent.json", home=home)
    assert result.returncode == 1
    assert "cannot read /nonexistent.json" in result.stderr


def test_rotate_key(home: Path) -> None:
    run_cli("env", "set", "1001", "2002", "-s", "PW", "x1", home=home)
    before = (home / "master.key").read_bytes()
    result = run_cli("env", "rotate-key", home=home)
    assert result.returncode == 0, result.stderr
    assert "1 secret(s) re-encrypted, 1 old key(s) retired" in result.stdout
    assert (home / "master.key").read_bytes() != before
    refused = run_cli("env", "rotate-key", home=home,
                      env={"EGRESSMAIL_MASTER_KEY": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="})
    assert refused.returncode == 2
    assert "cannot rotate" in refused.stderr


@pytest.mark.parametrize("command", ["set", "list", "delete", "diff", "export", "import", "rotate-key"])
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = run_cli("env", command, "--help")
    assert result.returncode == 0
    assert "Example" in result.stdout


def test_values_print_as_they_are_not_as_markup(home: Path) -> None:
    result = run_cli("env", "set", "1001", "2002", "-v", "STYLE", "[red]x[/red] [/]", home=home)
    assert result.returncode == 0, result.stderr
    assert "[red]x[/red] [/]" in result.stdout
