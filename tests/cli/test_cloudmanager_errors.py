"""Cloud Manager commands: error codes, model rules, exit codes (1 general, 2 config, 3 validation)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli

SET = "cloudmanager:set-environment-variables"
LIST = "cloudmanager:list-environment-variables"


@pytest.mark.parametrize(("args", "code", "exit_code"), [
    (["-p", "1001", "2002", "-v", "AA"], "MALFORMED_NAME_VALUE_PAIR", 3),
    (["-p", "1001", "2002", "-s", "AA", "1", "BB"], "MALFORMED_NAME_VALUE_PAIR", 3),
    (["-p", "1001", "2002", "-v", "AA", ""], "BLANK_VARIABLE_VALUE", 3),
    (["-p", "1001", "2002", "--publishSecret", "AA", '""'], "BLANK_VARIABLE_VALUE", 3),
    (["2002", "-v", "AA", "1"], "MISSING_PROGRAM_ID", 3),
    (["-p", "1001", "-v", "AA", "1"], "MISSING_ENVIRONMENT_ID", 3),
    (["-p", "1001", "2002", "2003"], "INVALID_ARGUMENTS", 3),
    (["-p", "1001", "2002", "--nope"], "INVALID_ARGUMENTS", 3),
    (["-p", "1001", "2002", "--jsonStdin", "--yamlStdin"], "INVALID_ARGUMENTS", 3),
])
def test_error_codes(home: Path, args: list[str], code: str, exit_code: int) -> None:
    result = run_cli(SET, *args, home=home, env={"AIO_CLOUDMANAGER_PROGRAMID": ""})
    assert result.returncode == exit_code, result.stderr
    assert f"error: [CloudManagerCLI:{code}]" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("flag", "text", "code"), [
    ("--jsonStdin", "{oops", "VARIABLES_JSON_PARSE_ERROR"),
    ("--jsonStdin", '{"name": "AA"}', "VARIABLES_JSON_NOT_ARRAY"),
    ("--yamlStdin", "a: [b", "VARIABLES_YAML_PARSE_ERROR"),
    ("--yamlStdin", "just text", "VARIABLES_YAML_NOT_ARRAY"),
])
def test_input_error_codes(home: Path, flag: str, text: str, code: str) -> None:
    result = run_cli(SET, "-p", "1001", "2002", flag, home=home, input=text)
    assert result.returncode == 3
    assert f"[CloudManagerCLI:{code}]" in result.stderr


@pytest.mark.parametrize(("args", "fragment", "exit_code"), [
    (["-v", "A", "1"], "too short", 3),
    (["-v", "1A", "1"], "invalid variable name '1A'", 3),
    (["-v", "AEM_PROXY_HOST", "x"], "AEM_", 3),
    (["-v", "LONG", "x" * 2049], "limit is 2048", 3),
    (["-s", "LONG", "x" * 500], "under 500", 3),
    (["--jsonFile", "/nonexistent/vars.json"], "cannot read --jsonFile", 1),
])
def test_model_rules_through_the_cli(home: Path, args: list[str], fragment: str, exit_code: int) -> None:
    result = run_cli(SET, "-p", "1001", "2002", *args, home=home)
    assert result.returncode == exit_code, result.stderr
    assert fragment in result.stderr


def test_type_cannot_change_through_the_cli(home: Path) -> None:
    run_cli(SET, "-p", "1001", "2002", "-s", "PW", "x", home=home)
    result = run_cli(SET, "-p", "1001", "2002", "-v", "PW", "plain", home=home)
    assert result.returncode == 3
    assert "cannot change" in result.stderr and "hint: delete it first (-d PW)" in result.stderr


def test_listing_a_missing_environment_is_a_configuration_error(home: Path) -> None:
    result = run_cli(LIST, "-p", "1001", "2002", home=home)
    assert result.returncode == 2
    assert "program '1001' does not exist" in result.stderr
    run_cli(SET, "-p", "1001", "2002", "-v", "AA", "1", home=home)
    result = run_cli("cloudmanager:environment:list-variables", "-p", "1001", "e9", home=home)
    assert result.returncode == 2
    assert "environment '9' of program '1001' does not exist" in result.stderr


def test_damaged_master_key_is_a_configuration_error(home: Path) -> None:
    home.mkdir()
    (home / "master.key").write_text("not a key")
    result = run_cli(SET, "-p", "1001", "2002", "-s", "PW", "x", home=home)
    assert result.returncode == 2
    assert "damaged" in result.stderr
