"""Reading .cfg.json files: comments, type suffixes, and every kind of bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from egressmail.config import ConfigFileError, parse_cfg_json, read_cfg_json
from egressmail.config.cfgjson import MAX_FILE_BYTES
from tests.conftest import SEED_CONFIG_FILE


def test_seed_file() -> None:
    config = read_cfg_json(SEED_CONFIG_FILE)
    assert config.pid == "com.day.cq.mailer.DefaultMailService"
    assert list(config.properties)[:2] == ["smtp.host", "smtp.port"]
    assert config.properties["smtp.port"] == "30002"
    assert config.types["smtp.ssl"] == "Boolean" and config.properties["smtp.ssl"] is True


def test_comments_are_allowed_and_positions_stay_true() -> None:
    text = '// head\n{\n  /* a\n  block */ "a": "x // not a comment", // tail\n  "b": "/* nor this */"\n}\n'
    props, _ = parse_cfg_json(text)
    assert props == {"a": "x // not a comment", "b": "/* nor this */"}
    with pytest.raises(ConfigFileError) as info:
        parse_cfg_json('/* x\n */ {\n "a": 1\n "b": 2}', "f.cfg.json")
    assert (info.value.line, info.value.column) == (4, 2)
    assert "Expecting ',' delimiter" in str(info.value) and "f.cfg.json:4:2" in str(info.value)


@pytest.mark.parametrize(("key", "value", "name", "expected", "type_name"), [
    ("port:Integer", 25, "port", 25, "Integer"),
    ("port:Integer", "25", "port", 25, "Integer"),
    ("port:int", 25.9, "port", 25, "Integer"),          # Number.intValue truncates
    ("port:Long", 25, "port", 25, "Long"),
    ("b:Byte", 300, "b", 44, "Byte"),                   # Java narrowing wraps
    ("s:Short", "12", "s", 12, "Short"),
    ("f:Float", "1.5", "f", 1.5, "Float"),
    ("d:Double", 2, "d", 2.0, "Double"),
    ("flag:Boolean", "TRUE", "flag", True, "Boolean"),
    ("flag:boolean", "yes", "flag", False, "Boolean"),
    ("flag:Boolean", 1, "flag", True, "Boolean"),
    ("c:Character", "xy", "c", "x", "Character"),
    ("s:String", 25, "s", "25", "String"),
    ("s:String", 1.5, "s", "1.5", "String"),
    ("s:String", True, "s", "true", "String"),
    ("hosts:String[]", ["a", "b"], "hosts", ["a", "b"], "String[]"),
    ("hosts:String[]", "a", "hosts", ["a"], "String[]"),
    ("ports:Integer[]", [1, "2"], "ports", [1, 2], "Integer[]"),
    ("ports:int[]", [], "ports", [], "Integer[]"),
    ("chars:char[]", "ab", "chars", ["a", "b"], "Character[]"),
    ("ids:Collection<Long>", [1, 2], "ids", [1, 2], "Collection<Long>"),
    ("a:b:Integer", 1, "a:b", 1, "Integer"),            # the type follows the last ':'
])
def test_type_suffixes(key: str, value: object, name: str, expected: object, type_name: str) -> None:
    import json

    props, types = parse_cfg_json(json.dumps({key: value}))
    assert props == {name: expected}
    assert types == {name: type_name}


@pytest.mark.parametrize(("value", "type_name"), [
    ("x", "String"), (1, "Long"), (1.5, "Double"), (True, "Boolean"), (["a"], "String[]"),
    ([1, 2], "Long[]"), ([], "String[]"),
])
def test_untyped_values(value: object, type_name: str) -> None:
    import json

    _, types = parse_cfg_json(json.dumps({"p": value}))
    assert types == {"p": type_name}


@pytest.mark.parametrize(("text", "message"), [
    ("[1]", "not an object"),
    ('"x"', "not an object"),
    ("null", "not an object"),
    ('{"a": 1, "a": 2}', "duplicate key 'a'"),
    ('{"a": 1, "a:Integer": 2}', "appears twice"),
    ('{"a": null}', "null is not a configuration value"),
    ('{"a": {"b": 1}}', "nested object"),
    ('{"a": [[1]]}', "arrays may only hold"),
    ('{"a": [1, "x"]}', "mixes"),
    ('{"a": NaN}', "invalid JSON"),
    ('{"a": 1e999}', "out of range"),
    ('{"a": 99999999999999999999}', "out of range for a Long"),
    ('{"a:Integer": "x"}', "does not convert to Integer"),
    ('{"a:Integer": "$[env:P]"}', "does not convert to Integer"),
    ('{"a:Nope": 1}', "unknown type suffix ':Nope'"),
    ('{"a": 1', "invalid JSON"),
    ('{"a": 1} /* open', "unterminated /* comment"),
    ("", "invalid JSON"),
    ("{" * 100_000, "invalid JSON"),
])
def test_bad_files(text: str, message: str) -> None:
    with pytest.raises(ConfigFileError, match=re.escape(message)):
        parse_cfg_json(text, "x.cfg.json")


def test_placeholder_under_typed_key_hints_at_type_directive() -> None:
    with pytest.raises(ConfigFileError) as info:
        parse_cfg_json('{"port:Integer": "$[env:P]"}', "x.cfg.json")
    assert info.value.property == "port:Integer"
    assert info.value.hint and "type=Integer" in info.value.hint


def test_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    big = tmp_path / "big.cfg.json"
    big.write_text('{"a": "' + "x" * MAX_FILE_BYTES + '"}')
    with pytest.raises(ConfigFileError, match="more than the"):
        read_cfg_json(big)


def test_not_utf8_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.cfg.json"
    bad.write_bytes(b'{\n "a": "\xff"}')
    with pytest.raises(ConfigFileError, match=r"bad.cfg.json:2:8: the file is not valid UTF-8"):
        read_cfg_json(bad)
    with pytest.raises(ConfigFileError, match="cannot read"):
        read_cfg_json(tmp_path / "missing.cfg.json")


def test_bom_is_accepted(tmp_path: Path) -> None:
    f = tmp_path / "p.cfg.json"
    f.write_bytes(b'\xef\xbb\xbf{"a": 1}')
    assert read_cfg_json(f).properties == {"a": 1}
