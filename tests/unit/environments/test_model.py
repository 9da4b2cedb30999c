"""Every rule of the model, one test (or parametrized case) each."""

from __future__ import annotations

import pytest

from egressmail.environments.errors import VariableRuleError
from egressmail.environments.model import (
    Service,
    Variable,
    VariableType,
    VariableUpdate,
    check_name,
    check_not_reserved,
    check_update,
    check_value,
    parse_service,
    parse_type,
)


@pytest.mark.parametrize("name", ["AB", "_X", "EMAIL_PASSWORD", "a1", "x" * 100, "__", "Ab_9"])
def test_valid_names(name: str) -> None:
    check_name(name)


@pytest.mark.parametrize(("name", "code"), [
    ("A", "NAME_TOO_SHORT"),
    ("", "NAME_TOO_SHORT"),
    ("x" * 101, "NAME_TOO_LONG"),
    ("1AB", "INVALID_NAME"),
    ("A-B", "INVALID_NAME"),
    ("A B", "INVALID_NAME"),
    ("ÅÄÖ", "INVALID_NAME"),
    ("A.B", "INVALID_NAME"),
    ("AEM_PROXY_HOST", "PRODUCT_NAME"),
    ("AEM_ANYTHING", "PRODUCT_NAME"),
])
def test_invalid_names(name: str, code: str) -> None:
    with pytest.raises(VariableRuleError) as info:
        check_name(name)
    assert info.value.code == code
    assert info.value.exit_code == 3


def test_aem_lowercase_is_an_ordinary_name() -> None:
    check_name("aem_proxy_host")


@pytest.mark.parametrize("name", ["INTERNAL_X", "ADOBE_X", "CONST_X"])
def test_reserved_prefixes_are_refused(name: str) -> None:
    with pytest.raises(VariableRuleError) as info:
        check_not_reserved(name)
    assert info.value.code == "INTERNAL_VARIABLE_USAGE"
    assert name in str(info.value)


def test_non_reserved_name_passes() -> None:
    check_not_reserved("INTERNALX")


def test_value_limits() -> None:
    check_value("AB", VariableType.STRING, "x" * 2048)
    check_value("AB", VariableType.SECRET, "x" * 499)
    with pytest.raises(VariableRuleError) as info:
        check_value("AB", VariableType.STRING, "x" * 2049)
    assert info.value.code == "VALUE_TOO_LONG"
    with pytest.raises(VariableRuleError) as info:
        check_value("AB", VariableType.SECRET, "x" * 500)
    assert info.value.code == "SECRET_TOO_LONG"
    with pytest.raises(VariableRuleError) as info:
        check_value("AB", VariableType.STRING, "")
    assert info.value.code == "BLANK_VARIABLE_VALUE"


def test_value_error_never_quotes_the_value() -> None:
    secret = "S3cr3t-" + "y" * 600
    with pytest.raises(VariableRuleError) as info:
        check_value("PASS", VariableType.SECRET, secret)
    assert "S3cr3t" not in str(info.value) and "S3cr3t" not in (info.value.hint or "")


def test_services_are_case_sensitive() -> None:
    assert parse_service("author") is Service.AUTHOR
    assert parse_service("publish") is Service.PUBLISH
    assert parse_service("preview") is Service.PREVIEW
    assert parse_service(None) is None
    assert parse_service("all") is None
    for bad in ("Author", "PUBLISH", "dispatcher", " author"):
        with pytest.raises(VariableRuleError) as info:
            parse_service(bad)
        assert info.value.code == "INVALID_SERVICE"


def test_types() -> None:
    assert parse_type(None) is VariableType.STRING
    assert parse_type("secretString") is VariableType.SECRET
    with pytest.raises(VariableRuleError) as info:
        parse_type("secret")
    assert info.value.code == "INVALID_TYPE"


def test_update_repr_hides_the_value() -> None:
    u = VariableUpdate("PASS", VariableType.SECRET, "hunter2-secret")
    assert "hunter2" not in repr(u)
    check_update(u)
    check_update(VariableUpdate("PASS", VariableType.SECRET, None))  # a delete has no value to check


def test_listing_masks_secrets() -> None:
    v = Variable("PASS", VariableType.SECRET, None)
    assert v.as_api_dict() == {"name": "PASS", "type": "secretString", "value": "****",
                               "service": None, "status": "ready"}
    s = Variable("HOST", VariableType.STRING, "h", Service.PUBLISH)
    assert s.as_api_dict()["service"] == "publish"
    assert s.as_api_dict()["value"] == "h"


@pytest.mark.parametrize("type_", list(VariableType))
def test_value_with_a_lone_surrogate_is_refused_without_quoting_it(type_: VariableType) -> None:
    # json.loads("\"\\ud800\"") and a non-UTF-8 command-line byte both give one; SQLite and the
    # cipher would fail on it with a UnicodeEncodeError that is not ours.
    with pytest.raises(VariableRuleError) as info:
        check_value("EMAIL_PASSWORD", type_, "hunter2\ud800")
    assert info.value.code == "INVALID_VALUE"
    assert "hunter2" not in str(info.value)
