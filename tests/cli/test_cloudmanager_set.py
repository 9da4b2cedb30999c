"""`egressmail cloudmanager:set-environment-variables` and its alias: every flag, error code and exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli

SET = "cloudmanager:set-environment-variables"
ALIAS = "cloudmanager:environment:set-variables"
LIST = "cloudmanager:list-environment-variables"


def listing(home: Path, env: str = "2002") -> list[dict[str, str | None]]:
    result = run_cli(LIST, "-p", "1001", env, "--json", home=home)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def by_key(rows: list[dict[str, str | None]]) -> dict[tuple[str | None, str | None], dict[str, str | None]]:
    return {(r["name"], r["service"]): r for r in rows}


@pytest.mark.parametrize("command", [SET, ALIAS])
def test_both_names_set_variables_and_print_the_table(home: Path, command: str) -> None:
    result = run_cli(command, "--programId=1001", "e2002", "-v", "SMTP_PORT", "30002", "HOST", '"a b"',
                     "-s", "PW", "hunter22", home=home)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["Name", "Type", "Value", "Service", "Status"]
    assert any(line.split()[:3] == ["PW", "secretString", "****"] for line in lines)
    assert any(line.split()[:3] == ["SMTP_PORT", "string", "30002"] for line in lines)
    assert "hunter22" not in result.stdout + result.stderr
    rows = by_key(listing(home))
    assert rows[("HOST", None)]["value"] == "a b"


def test_json_output_has_exactly_the_api_keys(home: Path) -> None:
    result = run_cli(SET, "-p", "1001", "2002", "-v", "BIG", "4566206088344615922", "-s", "PW", "x1", "-j",
                     home=home)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert all(set(r) == {"name", "type", "value", "service", "status"} for r in rows)
    assert rows == [
        {"name": "BIG", "type": "string", "value": "4566206088344615922", "service": None, "status": "ready"},
        {"name": "PW", "type": "secretString", "value": "****", "service": None, "status": "ready"},
    ]


def test_yaml_output(home: Path) -> None:
    result = run_cli(SET, "-p", "1001", "2002", "-v", "AA", "1", "--yaml", home=home)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout) == [
        {"name": "AA", "type": "string", "value": "1", "service": None, "status": "ready"}]
    assert yaml.safe_load(run_cli(LIST, "-p", "1001", "2002", "-y", home=home).stdout)[0]["name"] == "AA"


def test_several_pairs_repeats_and_program_spellings(home: Path) -> None:
    done = run_cli(SET, "2002", "-p1001", "-v", "AA", "1", "BB", "2", "-v", "CC", "3", home=home)
    assert done.returncode == 0
    assert run_cli(SET, "2002", "-p=1001", "--variable=DD", "4", home=home).returncode == 0
    assert run_cli(ALIAS, "2002", "--programId", "1001", "--secret", "EE", "5", "FF", "6",
                   home=home).returncode == 0
    rows = by_key(listing(home, "e2002"))
    assert {k[0] for k in rows} == {"AA", "BB", "CC", "DD", "EE", "FF"}
    assert rows[("FF", None)]["type"] == "secretString"


def test_program_id_from_the_environment(home: Path) -> None:
    result = run_cli(SET, "2002", "-v", "AA", "1", home=home, env={"AIO_CLOUDMANAGER_PROGRAMID": "1001"})
    assert result.returncode == 0, result.stderr
    assert listing(home)[0]["name"] == "AA"


@pytest.mark.parametrize("service", ["author", "publish", "preview"])
def test_service_flags(home: Path, service: str) -> None:
    result = run_cli(SET, "-p", "1001", "2002", f"--{service}Variable", "AA", "1", f"--{service}Secret",
                     "SS", "x", home=home)
    assert result.returncode == 0, result.stderr
    rows = by_key(listing(home))
    assert rows[("AA", service)]["type"] == "string"
    assert rows[("SS", service)]["type"] == "secretString"
    assert ("AA", None) not in rows
    result = run_cli(SET, "-p", "1001", "2002", f"--{service}Delete", "AA", "SS", home=home)
    assert result.returncode == 0, result.stderr
    assert listing(home) == []


def test_delete_keeps_other_services_and_warns_for_missing(home: Path) -> None:
    run_cli(SET, "-p", "1001", "2002", "-s", "PW", "x", "--publishSecret", "PW", "y", home=home)
    result = run_cli(SET, "-p", "1001", "2002", "-d", "PW", "NOPE", home=home)
    assert result.returncode == 0, result.stderr
    assert "Variable NOPE not found. Will not try to delete." in result.stderr
    assert [(r["name"], r["service"]) for r in listing(home)] == [("PW", "publish")]


def test_no_changes(home: Path) -> None:
    run_cli(SET, "-p", "1001", "2002", "-v", "AA", "1", home=home)
    result = run_cli(SET, "-p", "1001", "2002", home=home)
    assert result.returncode == 0
    assert "No variables to set or delete." in result.stdout


def test_json_file_flags_win_and_empty_value_deletes(home: Path, tmp_path: Path) -> None:
    run_cli(SET, "-p", "1001", "2002", "-s", "OLD", "x", home=home)
    f = tmp_path / "vars.json"
    f.write_text(json.dumps([
        {"name": "AA", "value": "from-file"}, {"name": "BB", "value": "b"},
        {"name": "PW", "value": "s3", "type": "secretString", "service": "author"},
        {"name": "OLD", "value": ""}]))
    result = run_cli(SET, "-p", "1001", "2002", "--jsonFile", str(f), "-v", "AA", "from-flag", home=home)
    assert result.returncode == 0, result.stderr
    rows = by_key(listing(home))
    assert rows[("AA", None)]["value"] == "from-flag"
    assert rows[("BB", None)]["value"] == "b"
    assert rows[("PW", "author")]["type"] == "secretString"
    assert ("OLD", None) not in rows


def test_json_and_yaml_stdin_and_yaml_file(home: Path, tmp_path: Path) -> None:
    result = run_cli(SET, "-p", "1001", "2002", "--jsonStdin", home=home,
                     input='[{"name": "AA", "value": "j"}]')
    assert result.returncode == 0, result.stderr
    result = run_cli(SET, "-p", "1001", "2002", "--yamlStdin", home=home,
                     input="- name: BB\n  value: y\n  service: preview\n")
    assert result.returncode == 0, result.stderr
    f = tmp_path / "vars.yaml"
    f.write_text("- name: CC\n  value: 7\n")
    result = run_cli(SET, "-p", "1001", "2002", f"--yamlFile={f}", home=home)
    assert result.returncode == 0, result.stderr
    rows = by_key(listing(home))
    assert rows[("AA", None)]["value"] == "j"
    assert rows[("BB", "preview")]["value"] == "y"
    assert rows[("CC", None)]["value"] == "7"


def test_strict_turns_the_reserved_warning_into_an_error(home: Path) -> None:
    result = run_cli(SET, "-p", "1001", "2002", "-v", "INTERNAL_X", "1", "FINE", "1", home=home)
    assert result.returncode == 0, result.stderr
    assert "INTERNAL_VARIABLE_USAGE" in result.stderr and "INTERNAL_X" in result.stderr
    assert [r["name"] for r in listing(home)] == ["FINE"]  # refused, not silently stored
    result = run_cli(SET, "-p", "1001", "2002", "--strict", "-v", "ADOBE_X", "1", "OTHER", "1", home=home)
    assert result.returncode == 3
    assert "ADOBE_X" in result.stderr and "reserved" in result.stderr
    assert [r["name"] for r in listing(home)] == ["FINE"]  # nothing of the batch applied


@pytest.mark.parametrize("command", [SET, ALIAS])
def test_set_help_explains_the_flags(command: str) -> None:
    result = run_cli(command, "--help")
    assert result.returncode == 0
    for flag in ("--programId", "--variable", "--secret", "--delete", "--authorVariable", "--publishSecret",
                 "--previewDelete", "--jsonFile", "--jsonStdin", "--yamlFile", "--yamlStdin", "--strict",
                 "--json", "--yaml", "MALFORMED_NAME_VALUE_PAIR", "BLANK_VARIABLE_VALUE", "Examples"):
        assert flag in result.stdout, flag
    assert run_cli(command, "2002", "-h").stdout == result.stdout


@pytest.mark.parametrize("command", [LIST, "cloudmanager:environment:list-variables"])
def test_list_help(command: str) -> None:
    result = run_cli(command, "--help")
    assert result.returncode == 0
    assert "--programId" in result.stdout and "--json" in result.stdout and "Examples" in result.stdout


def test_commands_show_in_the_main_help() -> None:
    out = run_cli("--help").stdout
    for name in (SET, ALIAS, LIST, "cloudmanager:environment:list-variables"):
        assert name in out
