"""Felix's rules beyond its own tests: escapes, nesting, missing values, typing, conf, loops.

Expected values were derived by reading Interpolator.java / InterpolationConfigurationPlugin.java
line by line (see docs/configuration.md, "Felix quirks we match").
"""

from __future__ import annotations

import pytest

from egressmail.config import PlaceholderError, interpolate


@pytest.mark.parametrize(("text", "expected"), [
    # escapes
    ("\\$[env:A]", "$[env:A]"),                       # escaped placeholder: backslash removed
    ("\\\\$[env:A]", "\\\\a"),                        # doubled backslash does not escape, stays
    ("x\\$[env:A]y$[env:A]", "x$[env:A]ya"),
    ("$[env:A;default=x\\]y]", "a"),
    ("$[env:NO;default=x\\]y]", "x]y"),               # \] is a literal bracket inside
    ("$[env:NO;default=[x]]", "[x]"),                 # brackets nest
    ("$[env:NO;default=a\\;b]", "a;b"),               # \; keeps the semicolon in a default
    ("$[env:NO;default=a\\[b]", "a[b"),
    ("$[env:NO\\]", "$[env:NO]"),                     # unterminated, yet the escape is removed
    # several placeholders, larger strings
    ("Hello $[env:A]!", "Hello a!"),
    ("$[env:A]$[env:B]", "ab"),
    ("$[env:NO]$[env:B]", "$[env:NO]b"),
    ("x$[env:NO]y$[env:A]", "x$[env:NO]ya"),
    # missing value, no default: verbatim
    ("$[env:NO]", "$[env:NO]"),
    ("$[secret:NO]", "$[secret:NO]"),
    ("$[prop:NO]", "$[prop:NO]"),
    ("$[unknown:A]", "$[unknown:A]"),
    ("$[noColon]", "$[noColon]"),
    ("$[env:A", "$[env:A"),                           # unterminated
    ("$[", "$["),
    ("$[]", "$[]"),
    ("$[:]", "$[:]"),
    ("$[env:]", "$[env:]"),                           # empty name: not set
    ("$[env:;default=d]", "d"),
    # defaults
    ("$[env:NO;default=$[env:A]]", "a"),              # nested placeholder in a default
    ("$[env:A;default=$[env:NO]]", "a"),
    ("$[env:NO;default=$[env:NO2]]", "$[env:NO2]"),    # the default's own placeholder is left
    ("$[env:NO;type=Integer]", "$[env:NO;type=Integer]"),  # no value, no default: no conversion
    # names and directives are interpolated first
    ("$[env:$[env:KEY]]", "a"),
    ("$[env:NO;$[env:DIR]]", "from-directive"),
    # a resolved value is interpolated again
    ("$[env:INDIRECT]", "a"),
    ("<$[env:ESCAPED]>", "<$[env:A]>"),
    # typed values inside larger strings are their Java toString
    ("port $[env:N;type=Integer]", "port 12"),
    ("$[env:F;type=Float]!", "1.5!"),
    ("$[env:BIG;type=Double]!", "1.0E10!"),
    ("$[env:T;type=Boolean]!", "true!"),
    ("$[env:A;type=Character]!", "a!"),
    ("$[env:A;type=Unknown]", "a"),                  # unknown type: text unconverted
    ("$[env:N;delimiter=,]", "12"),                   # delimiter without type: no conversion
])
def test_rules(text: str, expected: str) -> None:
    env = {"A": "a", "B": "b", "KEY": "A", "DIR": "default=from-directive", "INDIRECT": "$[env:A]",
           "ESCAPED": "\\$[env:A]", "N": "12", "F": "1.5", "BIG": "1e10", "T": "TRUE"}
    assert interpolate(text, env=env) == expected


@pytest.mark.parametrize(("text", "env", "expected"), [
    # whole-value typed results keep their Python type
    ("$[env:V;type=Integer]", {"V": "12"}, 12),
    ("$[env:V;type=int]", {"V": "-7"}, -7),
    ("$[env:V;type=Long]", {"V": "9223372036854775807"}, 9223372036854775807),
    ("$[env:V;type=Short]", {"V": "32767"}, 32767),
    ("$[env:V;type=Byte]", {"V": "-128"}, -128),
    ("$[env:V;type=Integer]", {"V": "+12"}, 12),
    ("$[env:V;type=Integer]", {"V": "012"}, 12),
    ("$[env:V;type=Integer]", {"V": "\u0661\u0662"}, 12),   # Java's Character.digit: Unicode digits
    ("$[env:V;type=Float]", {"V": " 1.5 "}, 1.5),            # Float.valueOf trims
    ("$[env:V;type=Float]", {"V": "0.1"}, 0.10000000149011612),  # a float32 value
    ("$[env:V;type=Double]", {"V": "1e3"}, 1000.0),
    ("$[env:V;type=double]", {"V": "1.5d"}, 1.5),
    ("$[env:V;type=Double]", {"V": "0x1p3"}, 8.0),
    ("$[env:V;type=Double]", {"V": ".5"}, 0.5),
    ("$[env:V;type=Boolean]", {"V": "TRUE"}, True),
    ("$[env:V;type=Boolean]", {"V": "yes"}, False),          # Boolean.valueOf: only "true"
    ("$[env:V;type=Boolean]", {"V": " true"}, False),
    ("$[env:V;type=boolean]", {"V": "1"}, False),
    ("$[env:V;type=Character]", {"V": "abc"}, "a"),           # String -> Character: first char
    ("$[env:V;type=char]", {"V": ""}, "\x00"),
    ("$[env:V;type=String]", {"V": "x"}, "x"),
    # arrays
    ("$[env:V;type=String[]]", {"V": "a,b"}, ["a,b"]),
    ("$[env:V;type=String[];delimiter=,]", {"V": "a,b"}, ["a", "b"]),
    ("$[env:V;type=Integer[];delimiter=,]", {"V": "1,2"}, [1, 2]),
    ("$[env:V;type=long[];delimiter=|]", {"V": "1|2"}, [1, 2]),
    ("$[env:V;type=Float[];delimiter=,]", {"V": "1.5,2"}, [1.5, 2.0]),
    ("$[env:V;type=double[];delimiter=,]", {"V": "1.5,2"}, [1.5, 2.0]),
    ("$[env:V;type=Short[];delimiter=,]", {"V": "1,2"}, [1, 2]),
    ("$[env:V;type=byte[];delimiter=,]", {"V": "1,2"}, [1, 2]),
    ("$[env:V;type=Boolean[];delimiter=,]", {"V": "true,no"}, [True, False]),
    ("$[env:V;type=boolean[];delimiter=,]", {"V": "TRUE"}, [True]),
    ("$[env:V;type=Character[]]", {"V": "ab"}, ["a", "b"]),  # String -> Character[]: its chars
    ("$[env:V;type=char[]]", {"V": "ab"}, ["a", "b"]),
    ("$[env:V;type=Character[];delimiter=,]", {"V": "ab,c"}, ["a", "c"]),
    ("$[env:V;type=Integer[]]", {"V": "7"}, [7]),
    # the delimiter is the two characters "\," here, so "1,2" stays one element that is no Integer
    ("$[env:V;type=Integer[];delimiter=\\,]", {"V": "1,2"}, "$[env:V;type=Integer[];delimiter=\\,]"),
    # an array element that does not convert: Felix's converter returns null -> placeholder kept
    ("$[env:V;type=Integer[];delimiter=,]", {"V": "1,x"}, "$[env:V;type=Integer[];delimiter=,]"),
    ("$[env:V;type=Integer[];delimiter=,]", {"V": "1,,2"}, "$[env:V;type=Integer[];delimiter=,]"),
    ("$[env:V;type=char[];delimiter=,]", {"V": "a,b"}, "$[env:V;type=char[];delimiter=,]"),
    # default converted like a found value
    ("$[env:NO;type=Integer[];delimiter=,;default=8080,8081]", {}, [8080, 8081]),
    ("$[env:NO;default=true;type=Boolean]", {}, True),
])
def test_types(text: str, env: dict[str, str], expected: object) -> None:
    result = interpolate(text, env=env)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(("value", "type_name"), [
    (" 12 ", "Integer"),          # Integer.valueOf does not trim
    ("1.5", "Integer"),
    ("2147483648", "Integer"),
    ("128", "Byte"),
    ("32768", "Short"),
    ("", "Long"),
    ("-", "Integer"),
    ("0x10", "Integer"),
    ("1_000", "Integer"),
    ("abc", "Double"),
    ("1e", "Float"),
    ("nan", "Double"),            # Java wants NaN
])
def test_values_that_do_not_convert_are_errors(value: str, type_name: str) -> None:
    with pytest.raises(PlaceholderError, match=f"does not convert to {type_name}"):
        interpolate(f"$[env:V;type={type_name}]", env={"V": value})


def test_whole_value_check_uses_the_current_text() -> None:
    # after the first placeholder became "", the typed one is the whole value: typed result
    assert interpolate("$[env:E;default=]$[env:N;type=Integer]", env={"N": "5"}) == 5


def test_string_array_elements_are_interpolated_one_by_one() -> None:
    assert interpolate(["$[env:A]", "x", "$[env:NO]"], env={"A": "a"}) == ["a", "x", "$[env:NO]"]
    # an element that becomes an array is spliced in; typed scalars become text
    assert interpolate(["0", "$[env:L;type=Integer[];delimiter=,]", "$[env:N;type=Integer]"],
                       env={"L": "1,2", "N": "3"}) == ["0", "1", "2", "3"]
    assert interpolate([1, 2], env={}) == [1, 2]
    assert interpolate(True, env={}) is True
    assert interpolate(1.5, env={}) == 1.5


def test_secrets_mapping_is_trimmed_like_a_file() -> None:
    assert interpolate("$[secret:P]", env={}, secrets={"P": "\t pw \n"}) == "pw"
    # String.trim() only drops characters up to U+0020, not other Unicode spaces
    assert interpolate("$[secret:P]", env={}, secrets={"P": "\u00a0pw\u00a0"}) == "\u00a0pw\u00a0"
    assert interpolate("$[secret:../P]", env={}, secrets={"../P": "x"}) == "$[secret:../P]"


@pytest.mark.parametrize(("text", "conf", "expected"), [
    ("$[conf:a]", {"a": "x"}, "x"),
    ("<$[conf:a]>", {"a": "[1, 2]"}, "<[1, 2]>"),
    ("$[conf:a]", {"a": "$[conf:b]", "b": "y"}, "a"),      # Felix's cycle guard: the name
    ("$[conf:a]", {"a": "x$[conf:b]", "b": "$[conf:a]"}, "xb"),
])
def test_conf(text: str, conf: dict[str, str], expected: str) -> None:
    assert interpolate(text, env={}, conf=conf) == expected


def test_conf_of_a_missing_property_fails_like_felix() -> None:
    with pytest.raises(PlaceholderError, match="does not have"):
        interpolate("$[conf:missing;default=x]", env={}, conf={})


@pytest.mark.parametrize(("text", "env"), [
    ("$[env:X]", {"X": "$[env:X]"}),                       # Felix: StackOverflowError
    ("x$[conf:a]", {}),
    ("$[env:A]", {"A": "$[env:B]", "B": "$[env:A]"}),
    ("$[env:A]", {"A": "$[env:A]$[env:A]"}),
])
def test_self_reference_raises_instead_of_looping(text: str, env: dict[str, str]) -> None:
    with pytest.raises(PlaceholderError):
        interpolate(text, env=env, conf={"a": "x$[conf:a]"})


def test_exponential_growth_is_bounded() -> None:
    env = {f"V{i}": f"$[env:V{i + 1}]$[env:V{i + 1}]" for i in range(30)}
    env["V30"] = "x" * 100
    with pytest.raises(PlaceholderError):
        interpolate("$[env:V0]", env=env)


@pytest.mark.parametrize("text", [
    "$[env:V;type=Integer[];delimiter=]",
    "$[env:NO;type=String[];delimiter=;default=a]",
    "$[env:V;type=int[];delimiter=;]",   # the ';' ends the directive: the delimiter is empty
])
def test_empty_delimiter_for_an_array_raises(text: str) -> None:
    with pytest.raises(PlaceholderError, match="empty delimiter"):
        interpolate(text, env={"V": "1"})


def test_empty_delimiter_is_harmless_where_felix_does_not_split() -> None:
    assert interpolate("$[env:V;type=Integer;delimiter=]", env={"V": "1"}) == 1
    assert interpolate("$[env:V;delimiter=]", env={"V": "a"}) == "a"
    assert interpolate("$[env:NO;type=Integer[];delimiter=]", env={}) == "$[env:NO;type=Integer[];delimiter=]"


def test_typed_array_inside_larger_text_is_an_error() -> None:
    with pytest.raises(PlaceholderError, match="Java object identity"):
        interpolate("x$[env:V;type=Integer[];delimiter=,]", env={"V": "1,2"})


def test_error_message_does_not_show_a_secret_value() -> None:
    with pytest.raises(PlaceholderError) as info:
        interpolate("$[secret:S;type=Integer]", env={}, secrets={"S": "hunter2-secret"})
    assert "hunter2-secret" not in str(info.value)
    assert "secret" in str(info.value)


def test_rescan_after_an_unresolved_placeholder_undoes_an_earlier_escape() -> None:
    # Felix continues from "index + 2" after a placeholder it leaves, so it scans the text again from
    # the start of the value and then finds the (now unescaped) "$[env:A]" as a real placeholder.
    assert interpolate("ab\\$[env:A]$[env:M]", env={"A": "a"}) == "aba$[env:M]"
    # without a following unresolved placeholder the escape holds
    assert interpolate("ab\\$[env:A]$[env:B]", env={"A": "a", "B": "b"}) == "ab$[env:A]b"
    # the re-scan also sees a bracket whose escape was removed by the first scan
    assert interpolate("xx$[foo:a\\]b]", env={}) == "xx$[foo:a]b]"


def test_long_prefix_before_an_unresolved_placeholder_is_fast() -> None:
    # Felix looks the same placeholder up again every two characters (quadratic); the outcome is
    # the same each time, so we skip the repeats. This must finish quickly, with Felix's result.
    text = "x" * 1_000_000 + "$[env:MISSING]"
    assert interpolate(text, env={}) == text


def test_pathological_escapes_hit_the_work_bound() -> None:
    with pytest.raises(PlaceholderError, match="too much work"):
        interpolate("\\$[x]" * 150_000, env={})
