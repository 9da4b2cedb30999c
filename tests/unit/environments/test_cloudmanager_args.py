"""The oclif-style parser of the Cloud Manager commands, and the original's value rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from egressmail.environments.cloudmanager_args import (
    LIST_FLAGS,
    SET_FLAGS,
    merge_file_updates,
    pairs_to_values,
    parse_argv,
    parse_flag_value,
    updates_from_flags,
)
from egressmail.environments.errors import CloudManagerInputError
from egressmail.environments.model import Service, VariableType, VariableUpdate


def _updates(*argv: str) -> list[tuple[str, str, str | None, str | None]]:
    parsed = parse_argv(argv, SET_FLAGS)
    return [(u.name, u.type.value, u.value, u.service.value if u.service else None)
            for u in updates_from_flags(parsed)]


def test_seed_command_line() -> None:
    parsed = parse_argv(["--programId=1001", "2002", "--secret", "EMAIL_USERNAME", "apikey",
                         "--secret", "EMAIL_PASSWORD", "password123"], SET_FLAGS)
    assert parsed.positional == ("2002",)
    assert parsed.single("programId") == "1001"
    assert [(u.name, u.type, u.value) for u in updates_from_flags(parsed)] == [
        ("EMAIL_USERNAME", VariableType.SECRET, "apikey"),
        ("EMAIL_PASSWORD", VariableType.SECRET, "password123"),
    ]


@pytest.mark.parametrize("argv", [
    ["-p", "1001", "2002"], ["-p=1001", "2002"], ["-p1001", "2002"], ["--programId", "1001", "2002"],
    ["--programId=1001", "2002"], ["2002", "--programId", "1001"], ["2002", "-p", "1001"],
])
def test_program_id_spellings(argv: list[str]) -> None:
    parsed = parse_argv(argv, SET_FLAGS)
    assert parsed.single("programId") == "1001"
    assert parsed.positional == ("2002",)


def test_several_pairs_after_one_flag_and_repeats_are_the_same() -> None:
    a = _updates("2002", "-v", "AA", "1", "BB", "2")
    b = _updates("2002", "-v", "AA", "1", "-v", "BB", "2")
    c = _updates("2002", "--variable", "AA", "1", "--variable=BB", "2")
    assert a == b == c == [("AA", "string", "1", None), ("BB", "string", "2", None)]


def test_words_of_a_repeated_flag_are_joined_before_pairing() -> None:
    # oclif concatenates every occurrence of a multiple flag: "-v A -v 1" is the pair A=1.
    assert _updates("2002", "-v", "AA", "-v", "1") == [("AA", "string", "1", None)]


def test_last_value_of_a_repeated_name_wins() -> None:
    assert _updates("2002", "-v", "AA", "1", "AA", "2") == [("AA", "string", "2", None)]


def test_secret_and_delete_short_flags() -> None:
    assert _updates("2002", "-s", "PW", "x", "-d", "OLD", "OLDER") == [
        ("PW", "secretString", "x", None), ("OLD", "string", None, None), ("OLDER", "string", None, None)]


@pytest.mark.parametrize("service", ["author", "publish", "preview"])
def test_service_flags(service: str) -> None:
    got = _updates("2002", f"--{service}Variable", "AA", "1", f"--{service}Secret", "BB", "2",
                   f"--{service}Delete", "CC")
    assert got == [("AA", "string", "1", service), ("BB", "secretString", "2", service),
                   ("CC", "string", None, service)]


def test_order_is_flag_order_then_services() -> None:
    got = _updates("2002", "--previewVariable", "PP", "1", "-v", "AA", "1", "--authorSecret", "SS", "x")
    assert [g[0] for g in got] == ["AA", "SS", "PP"]


def test_values_that_look_like_flags_stay_values() -> None:
    got = _updates("2002", "-v", "NEG", "-5", "DASHES", "--not-a-flag", "-s", "PW", "-x=y")
    assert got == [("NEG", "string", "-5", None), ("DASHES", "string", "--not-a-flag", None),
                   ("PW", "secretString", "-x=y", None)]


def test_known_flag_ends_a_list_and_double_dash_ends_flags() -> None:
    parsed = parse_argv(["-v", "AA", "1", "--", "e2002"], SET_FLAGS)
    assert parsed.positional == ("e2002",)
    assert updates_from_flags(parsed)[0].value == "1"


def test_switches() -> None:
    parsed = parse_argv(["2002", "--strict", "-j", "--jsonStdin", "-y", "--yamlStdin"], SET_FLAGS)
    assert parsed.switches == {"strict", "json", "jsonStdin", "yaml", "yamlStdin"}
    parsed = parse_argv(["2002", "--json", "--yaml"], LIST_FLAGS)
    assert parsed.has("json") and parsed.has("yaml")
    assert parse_argv(["-h"], SET_FLAGS).has("help")
    assert parse_argv(["2002", "--help"], LIST_FLAGS).has("help")


def test_files() -> None:
    parsed = parse_argv(["2002", "--jsonFile", "a.json", "--yamlFile=b.yaml"], SET_FLAGS)
    assert parsed.single("jsonFile") == "a.json"
    assert parsed.single("yamlFile") == "b.yaml"


@pytest.mark.parametrize(("argv", "fragment"), [
    (["2002", "--frobnicate"], "unknown flag '--frobnicate'"),
    (["2002", "-x"], "unknown flag '-x'"),
    (["2002", "--frob=1"], "unknown flag '--frob'"),
    (["2002", "--strict=yes"], "takes no value"),
    (["2002", "-p"], "expects a value"),
    (["2002", "-p", "--json"], "expects a value"),
    (["2002", "--jsonFile"], "expects a value"),
])
def test_usage_errors(argv: list[str], fragment: str) -> None:
    with pytest.raises(CloudManagerInputError) as info:
        parse_argv(argv, SET_FLAGS)
    assert fragment in str(info.value)
    assert info.value.code == "INVALID_ARGUMENTS"


def test_list_command_has_no_setter_flags() -> None:
    with pytest.raises(CloudManagerInputError):
        parse_argv(["2002", "-v", "AA", "1"], LIST_FLAGS)


@pytest.mark.parametrize(("words", "code"), [
    (["AA"], "MALFORMED_NAME_VALUE_PAIR"),
    (["AA", "1", "BB"], "MALFORMED_NAME_VALUE_PAIR"),
    ([], "MALFORMED_NAME_VALUE_PAIR"),
    (["AA", ""], "BLANK_VARIABLE_VALUE"),
    (["AA", '""'], "BLANK_VARIABLE_VALUE"),
])
def test_pair_errors(words: list[str], code: str) -> None:
    with pytest.raises(CloudManagerInputError) as info:
        pairs_to_values("variable", words)
    assert info.value.code == code
    assert f"[CloudManagerCLI:{code}]" in str(info.value)
    assert info.value.exit_code == 3


def test_malformed_pair_message_never_repeats_the_words() -> None:
    with pytest.raises(CloudManagerInputError) as info:
        pairs_to_values("secret", ["PW", "TopSecretValue1", "ORPHAN"])
    assert "TopSecretValue1" not in str(info.value) + (info.value.hint or "")


def test_flag_with_no_pairs_is_malformed() -> None:
    with pytest.raises(CloudManagerInputError) as info:
        _updates("2002", "-v", "--json")
    assert info.value.code == "MALFORMED_NAME_VALUE_PAIR"
    with pytest.raises(CloudManagerInputError) as info:
        _updates("2002", "-d")
    assert info.value.code == "INVALID_ARGUMENTS"


@pytest.mark.parametrize(("raw", "value"), [
    ("apikey", "apikey"),
    ('"quoted"', "quoted"),
    ('"x y"', "x y"),
    ("4566206088344615922", "4566206088344615922"),
    ("1.50", "1.50"),
    ("1e3", "1e3"),
    ("-0", "-0"),
    ("true", "true"),
    ("null", "null"),
    ('{"a": 1}', '{"a": 1}'),
    ("[1,2]", "[1,2]"),
    ("not json", "not json"),
    (" ", " "),
    ('"\\u00e9"', "é"),
])
def test_value_rules(raw: str, value: str) -> None:
    assert parse_flag_value(raw) == value


@given(st.integers())
def test_numbers_keep_every_digit(n: int) -> None:
    assert parse_flag_value(str(n)) == str(n)


@given(st.lists(st.text(alphabet="ABC_xyz-=0 ", min_size=0, max_size=8), max_size=12))
def test_parser_never_crashes_and_never_loses_words(words: list[str]) -> None:
    argv = ["2002", "-v", *words]
    try:
        parsed = parse_argv(argv, SET_FLAGS)
    except CloudManagerInputError:
        return
    collected = [w for vs in parsed.words.values() for w in vs]
    kept = [w for w in words if w not in collected]
    # Every word after -v is either a value of a flag, a flag itself, or (after --) positional.
    assert all(w.startswith("-") or w in parsed.positional or w in collected for w in kept)


def test_flags_win_over_file_items() -> None:
    flags = [VariableUpdate("AA", VariableType.STRING, "flag")]
    file = [VariableUpdate("AA", VariableType.STRING, "file"),
            VariableUpdate("AA", VariableType.STRING, "file", Service.PUBLISH),
            VariableUpdate("BB", VariableType.SECRET, "b"),
            VariableUpdate("BB", VariableType.SECRET, "second")]
    merged = merge_file_updates(flags, file)
    assert [(u.name, u.value, u.service) for u in merged] == [
        ("AA", "flag", None), ("AA", "file", Service.PUBLISH), ("BB", "b", None)]


def test_deeply_nested_json_value_keeps_its_text() -> None:
    # json.loads recurses per level: a RecursionError escaped as a traceback. Not a JSON string,
    # so the text is the value, as for any array.
    deep = "[" * 100_000 + "]" * 100_000
    assert parse_flag_value(deep) == deep
