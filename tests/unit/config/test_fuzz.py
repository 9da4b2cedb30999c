"""Hypothesis: any input ends in a value or in the package's ConfigError, never another exception
and never a hang."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from egressmail.config import ConfigError, interpolate, parse_cfg_json
from egressmail.config.placeholders import parse_directives

# text biased towards the characters that matter to the parser
_ALPHABET = st.sampled_from(list("$[]\\:;=,envsrtpcofdlaiyIgT[]{}\"/*ABX 01\n") + ["type=", "default=",
                            "delimiter=", "Integer[]", "$[env:", "$[secret:", "$[conf:", "\\$["])
PLACEHOLDER_TEXT = st.lists(_ALPHABET, max_size=40).map("".join)
VALUES = st.dictionaries(st.sampled_from(["A", "B", "X", "", "a,b", "1"]), PLACEHOLDER_TEXT, max_size=4)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(text=PLACEHOLDER_TEXT, env=VALUES, secrets=VALUES, conf=VALUES)
def test_interpolate_ends_in_a_value_or_config_error(text: str, env: dict[str, str], secrets: dict[str, str],
                                                     conf: dict[str, str]) -> None:
    try:
        result = interpolate(text, env=env, secrets=secrets, props=env, conf=conf)
    except ConfigError:
        return
    assert isinstance(result, (str, int, float, bool, list))


@FUZZ
@given(text=st.text(max_size=60))
def test_interpolate_any_unicode(text: str) -> None:
    try:
        interpolate(text, env={"A": text}, secrets={"S": text})
    except ConfigError:
        pass


@FUZZ
@given(items=st.lists(PLACEHOLDER_TEXT, max_size=4), env=VALUES)
def test_interpolate_string_arrays(items: list[str], env: dict[str, str]) -> None:
    try:
        result = interpolate(items, env=env)
    except ConfigError:
        return
    assert isinstance(result, list)


@FUZZ
@given(text=PLACEHOLDER_TEXT)
def test_parse_directives_never_fails(text: str) -> None:
    assert isinstance(parse_directives(text), dict)


_JSON_BITS = st.sampled_from(list('{}[]:,"/*\n ') + ['"a"', '"p:Integer"', '"h:String[]"', "1", "1.5", "true",
                                                     "null", "//", "/*", "*/", '"$[env:A]"', "-", "e9"])


@FUZZ
@given(text=st.lists(_JSON_BITS, max_size=40).map("".join))
def test_reader_ends_in_properties_or_config_error(text: str) -> None:
    try:
        properties, types = parse_cfg_json(text, "fuzz.cfg.json")
    except ConfigError:
        return
    assert set(properties) == set(types)


_JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (st.lists(children, max_size=3)
                      | st.dictionaries(st.text(max_size=8), children, max_size=3)),
    max_leaves=10)


@FUZZ
@given(value=st.dictionaries(st.sampled_from(["a", "a:Integer", "b:String[]", "c:Boolean", "d:char[]",
                                              "e:Float", "f:Collection<Long>", "g:Byte", "h:X"]),
                             _JSON_VALUE, max_size=4))
def test_reader_with_typed_keys(value: dict[str, object]) -> None:
    try:
        parse_cfg_json(json.dumps(value), "fuzz.cfg.json")
    except ConfigError:
        pass
