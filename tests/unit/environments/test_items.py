"""The API's JSON/YAML array of variables."""

from __future__ import annotations

import pytest

from egressmail.environments.errors import CloudManagerInputError, VariableRuleError
from egressmail.environments.items import load_array, updates_from_items
from egressmail.environments.model import Service, VariableType


def test_json_array() -> None:
    data = load_array('[{"name": "AA", "value": "1"}, {"name": "PW", "value": "s", "type": "secretString",'
                      ' "service": "publish"}, {"name": "GONE", "value": ""}, {"name": "N", "value": 42}]',
                      "json", source="f.json")
    parsed = updates_from_items(data, source="f.json")
    assert [(u.name, u.type, u.value, u.service) for u in parsed.updates] == [
        ("AA", VariableType.STRING, "1", None),
        ("PW", VariableType.SECRET, "s", Service.PUBLISH),
        ("GONE", VariableType.STRING, None, None),
        ("N", VariableType.STRING, "42", None),
    ]


def test_yaml_array() -> None:
    data = load_array("- name: AA\n  value: x\n- name: BB\n  value: true\n", "yaml", source="f.yaml")
    assert [(u.name, u.value) for u in updates_from_items(data, source="f.yaml").updates] == [
        ("AA", "x"), ("BB", "true")]


def test_items_without_name_or_value_are_passed_over() -> None:
    parsed = updates_from_items([{"value": "x"}, {"name": "PW", "type": "secretString"},
                                 {"name": "NUL", "value": None}], source="s")
    assert parsed.updates == ()
    assert parsed.without_value == ("PW", "NUL")


@pytest.mark.parametrize(("text", "fmt", "code"), [
    ("{not json", "json", "VARIABLES_JSON_PARSE_ERROR"),
    ('{"name": "AA"}', "json", "VARIABLES_JSON_NOT_ARRAY"),
    ("a: [b", "yaml", "VARIABLES_YAML_PARSE_ERROR"),
    ("name: AA", "yaml", "VARIABLES_YAML_NOT_ARRAY"),
    (b"\xff\xfe[", "json", "VARIABLES_JSON_PARSE_ERROR"),
])
def test_bad_input(text: str | bytes, fmt: str, code: str) -> None:
    with pytest.raises(CloudManagerInputError) as info:
        load_array(text, fmt, source="input")
    assert info.value.code == code
    assert info.value.exit_code == 3


def test_parse_errors_never_quote_the_input() -> None:
    secret = "TopSecretValue99"
    for text, fmt in ((f'[{{"name": "PW", "value": "{secret}"', "json"),
                      (f"- name: PW\n  value: {secret}\n  : : [", "yaml")):
        with pytest.raises(CloudManagerInputError) as info:
            load_array(text, fmt, source="input")
        assert secret not in str(info.value)
        assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize(("item", "code"), [
    ("just a string", "INVALID_ITEM"),
    ({"name": 5, "value": "x"}, "INVALID_NAME"),
    ({"name": "AA", "value": "x", "type": "secret"}, "INVALID_TYPE"),
    ({"name": "AA", "value": "x", "type": 1}, "INVALID_TYPE"),
    ({"name": "AA", "value": "x", "service": "Publish"}, "INVALID_SERVICE"),
    ({"name": "AA", "value": "x", "service": ["author"]}, "INVALID_SERVICE"),
])
def test_bad_items(item: object, code: str) -> None:
    with pytest.raises(VariableRuleError) as info:
        updates_from_items([{"name": "OK", "value": "1"}, item], source="vars.json")
    assert info.value.code == code
    assert "vars.json, item 2" in str(info.value)


@pytest.mark.parametrize(("text", "fmt"), [
    ('[{"name": "AA", "value": ' + "[" * 100_000 + "]" * 100_000 + "}]", "json"),
    ("- name: AA\n  value: " + "[" * 100_000 + "]" * 100_000 + "\n", "yaml"),
])
def test_nesting_too_deep_is_a_parse_error(text: str, fmt: str) -> None:
    # The parsers recurse: without this, a RecursionError escaped (a traceback in the CLI).
    with pytest.raises(CloudManagerInputError) as info:
        load_array(text, fmt, source="deep")
    assert info.value.code == f"VARIABLES_{fmt.upper()}_PARSE_ERROR"
    assert "nested too deeply" in info.value.message


def test_yaml_alias_bomb_is_refused_quickly() -> None:
    # 9**9 strings through shared aliases: cheap to load, ruinous to turn into text.
    lines = ['  a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"  a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    text = "- anchors:\n" + "\n".join(lines) + "\n  name: AA\n  value: *a8\n"
    with pytest.raises(VariableRuleError) as info:
        updates_from_items(load_array(text, "yaml", source="bomb.yaml"), source="bomb.yaml")
    assert info.value.code == "VALUE_TOO_LONG"
    assert "lol" not in info.value.message


def test_structured_values_are_kept_as_json_text() -> None:
    parsed = updates_from_items([{"name": "AA", "value": {"a": [1, "x"]}}], source="f")
    assert parsed.updates[0].value == '{"a":[1,"x"]}'
