"""Felix's own test cases, ported one to one (InterpolatorTest / InterpolationConfigurationPluginTest).

Each table row cites the Felix test it comes from. Where Felix's test uses a mocked provider, the
same values are given here as env/props/secrets mappings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from egressmail.config import PlaceholderError, Sources, interpolate
from egressmail.config.conversion import split_delimited
from egressmail.config.placeholders import Interpolator, Lookup, parse_directives
from egressmail.config.sources import SourceProvider


def _replace_with(provider_map: dict[tuple[str, str], str], text: str) -> object:
    """Interpolator.replace with a provider answering from a table (Felix's lambda providers)."""

    def provider(source: str, name: str, directives: object) -> Lookup:
        return Lookup(provider_map.get((source, name)))

    return Interpolator(provider).replace(text)


# InterpolatorTest ----------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "table", "expected"), [
    # testNoValue
    ("$[foo:hello]", {}, "$[foo:hello]"),
    # testValue
    ("$[foo:hello]", {("foo", "hello"): "hello world"}, "hello world"),
    # testValueAndConstantText
    ("before$[foo:hello]after", {("foo", "hello"): "hello world"}, "beforehello worldafter"),
    # testRecursion
    ("before$[foo:$[foo:inner]]after", {("foo", "hello"): "hello world", ("foo", "inner"): "hello"},
     "beforehello worldafter"),
])
def test_interpolator_table(text: str, table: dict[tuple[str, str], str], expected: str) -> None:
    assert _replace_with(table, text) == expected


def test_escaping() -> None:
    # testEscaping: the provider answers "value" to everything, yet the escaped text stays
    def provider(source: str, name: str, directives: object) -> Lookup:
        return Lookup("value")

    assert Interpolator(provider).replace("\\$[no:replacement]") == "$[no:replacement]"


@pytest.mark.parametrize(("text", "expected"), [
    ("a=1;b=2", {"a": "1", "b": "2"}),          # testParseDirectives
    ("a=1\\;b=2", {"a": "1;b=2"}),               # testParseDirectivesWithEscaping
    ("default=foo;=bar", {"default": "foo", "": "bar"}),
    ("a", {"a": ""}),
    ("", {"": ""}),
    ("a=1;a=2", {"a": "2"}),                     # HashMap.put: the later one wins
    ("a=1\\\\;b=2", {"a": "1\\\\", "b": "2"}),   # a doubled backslash does not escape
])
def test_parse_directives(text: str, expected: dict[str, str]) -> None:
    assert parse_directives(text) == expected


@pytest.mark.parametrize(("env", "props", "expected"), [
    ({"MQTT_WRITE_HOST": "env.host"}, {}, "env.host"),      # testNestedDefaults usecase 1
    ({}, {"MQTT_WRITE_HOST": "prop.host"}, "prop.host"),    # usecase 2
    ({}, {}, "some.host"),                                  # usecase 3
])
def test_nested_defaults(env: dict[str, str], props: dict[str, str], expected: str) -> None:
    text = "$[env:MQTT_WRITE_HOST;default=$[prop:MQTT_WRITE_HOST;default=some.host]]"
    assert interpolate(text, env=env, props=props) == expected


# InterpolationConfigurationPluginTest ---------------------------------------------------------

def test_modify_configuration(tmp_path: Path) -> None:
    # testModifyConfiguration: a secret file is read and trimmed; defaults; env; non-strings untouched
    (tmp_path / "testfile").write_text("line1\nline2\n")
    sources = Sources(secret_dirs=[tmp_path], env_fallback={"USER": "felix"})
    provider = SourceProvider(sources)
    assert Interpolator(provider).replace("$[secret:testfile]") == "line1\nline2"
    assert Interpolator(provider).replace("$[secret:not_there;default=defval123]") == "defval123"
    assert Interpolator(provider).replace("$[env:USER]") == "felix"
    assert interpolate(999, env={}) == 999
    assert interpolate("bar", env={}) == "bar"


@pytest.mark.parametrize(("text", "expected"), [
    # testModifyConfigurationNoDirConfig
    ("YY$[env:USER]X$[env:USER]YY", "YYfelixXfelixYY"),
    ("$[prop:foo.bar]", "hello there"),
    ("$[blah:blah]", "$[blah:blah]"),
    ("$[env:boo]", "$[env:boo]"),
])
def test_modify_configuration_no_dir_config(text: str, expected: str) -> None:
    assert interpolate(text, env={"USER": "felix"}, props={"foo.bar": "hello there"}) == expected


@pytest.mark.parametrize(("text", "expected"), [
    # testSubdirReplacement
    ("$[secret:sub2/testfile2]", "the_content"),
    ("$[secret:../testfile]", "$[secret:../testfile]"),
    ("$[secret:sub2/../../testfile.txt]", "$[secret:sub2/../../testfile.txt]"),
])
def test_subdir_replacement(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "sub" / "sub2").mkdir(parents=True)
    (tmp_path / "sub" / "sub2" / "testfile2").write_text("the_content")
    (tmp_path / "sub" / "testfile").write_text("outside")
    (tmp_path / "testfile.txt").write_text("outside too")
    provider = SourceProvider(Sources(secret_dirs=[tmp_path / "sub"]))
    assert Interpolator(provider).replace(text) == expected


def test_replacement_and_multiple_directories(tmp_path: Path) -> None:
    # testReplacement, testMultipleDirectories, testMultiplePlaceholders, testNoReplacement
    other = tmp_path / "other"
    other.mkdir()
    (other / "testfile.txt").write_text("la la la")
    (tmp_path / "foo.bar").write_text("hello there")
    provider = SourceProvider(Sources(secret_dirs=[other, tmp_path], props={"foo.bar": "hello there"}))

    def replace(text: str) -> object:
        return Interpolator(provider).replace(text)

    assert replace("xx$[secret:testfile.txt]yy") == "xxla la layy"
    not_a_placeholder = f"xx$[{other / 'testfile.txt'}]yy"
    assert replace(not_a_placeholder) == not_a_placeholder
    assert replace("foo") == "foo"
    assert replace("xx$[secret:foo.bar]yy$[secret:foo.bar]zz") == "xxhello thereyyhello therezz"
    assert replace("xx$[secret:testfile.txt]yy$[secret:foo.bar]zz") == "xxla la layyhello therezz"
    assert replace("xx$[prop:foo.bar]yy$[prop:foo.bar]zz") == "xxhello thereyyhello therezz"


@pytest.mark.parametrize(("text", "expected"), [
    # testDefault
    ("$[env:notset;default=foo]", "foo"),
    ("$[env:notset;default=]", ""),
    ("$[env:notset;default=foo=bar]", "foo=bar"),
    ("$[env:notset;default=foo;=bar]", "foo"),  # semicolon is not supported in values
    ("$[env:notset;default= ]", " "),
    ("$[env:notset;default", "$[env:notset;default"),
])
def test_default(text: str, expected: str) -> None:
    assert interpolate(text, env={}) == expected


def test_type_conversion() -> None:
    # testTypeConversion
    result = interpolate("$[env:notset;default=123;type=Integer]", env={})
    assert result == 123
    assert type(result) is int


def test_replacement_in_string_array() -> None:
    # testReplacementInStringArray
    assert interpolate(["1", "$[prop:foo.bar]", "3"], env={}, props={"foo.bar": "hello there"}) == [
        "1", "hello there", "3"]


def test_nested_placeholders() -> None:
    # testNestedPlaceholders
    assert interpolate("$[prop:$[prop:key]]", env={}, props={"foo.bar": "hello there", "key": "foo.bar"}) \
        == "hello there"


@pytest.mark.parametrize(("value", "delimiter", "expected"), [
    # testArraySplit
    ("a,b,c", ".", ["a,b,c"]),
    ("a,b,c", ",", ["a", "b", "c"]),
    ("a\\,b,c", ",", ["a,b", "c"]),
    ("a\\\\,b,c", ",", ["a\\", "b", "c"]),
    # the quirk: a backslash at index 0 does not escape a delimiter at index 1
    ("\\,b", ",", ["\\", "b"]),
    ("a,,b", ",", ["a", "", "b"]),
    ("a,", ",", ["a", ""]),
    ("", ",", [""]),
    ("a::b", "::", ["a", "b"]),
])
def test_array_split(value: str, delimiter: str, expected: list[str]) -> None:
    assert split_delimited(value, delimiter) == expected


def test_array_type_conversion() -> None:
    # testArrayTypeConversion
    props = {"foo": "2000,3000"}
    assert interpolate("$[prop:foo;type=Integer[];delimiter=,]", env={}, props=props) == [2000, 3000]
    assert interpolate("$[prop:bar;type=Integer[];delimiter=,;default=1,2]", env={}, props=props) == [1, 2]


def test_empty_delimiter_never_returns_in_felix_so_we_raise() -> None:
    with pytest.raises(PlaceholderError, match="empty delimiter"):
        interpolate("$[env:X;type=String[];delimiter=]", env={"X": "a,b"})
