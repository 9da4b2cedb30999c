"""Secret files (Felix's rules), lookup order, provenance and warnings of resolve_configuration."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from egressmail.config import PlaceholderError, Sources, read_secret_file, resolve_configuration

SECRET = "pa55-word-Xy"


def test_secret_file_rules(tmp_path: Path) -> None:
    d = tmp_path / "secrets"
    (d / "sub").mkdir(parents=True)
    (d / "A").write_text(f"  {SECRET}\r\n")
    (d / "sub" / "B").write_text("b")
    (tmp_path / "outside").write_text("outside")
    dirs = [d]
    assert read_secret_file(dirs, "A") == (SECRET, "")            # trimmed like String.trim()
    assert read_secret_file(dirs, "sub/B") == ("b", "")
    assert read_secret_file(dirs, "/sub/B") == ("b", "")          # java.io.File: inside the directory
    assert read_secret_file(dirs, "../outside")[0] is None
    assert "'..'" in read_secret_file(dirs, "sub/../A")[1]        # refused even when it stays inside
    assert read_secret_file(dirs, "sub")[0] is None               # a directory is not a secret
    assert read_secret_file(dirs, "")[0] is None
    assert read_secret_file(dirs, "nul\x00name")[0] is None
    assert read_secret_file(dirs, "x" * 5000)[0] is None          # name too long: no exception
    assert read_secret_file([], "A") == (None, "no secrets directory is configured (--secrets-dir)")


def test_first_existing_path_decides(tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    (first / "S").mkdir(parents=True)      # exists in the first directory, but as a directory
    second.mkdir()
    (second / "S").write_text("from-two")
    assert read_secret_file([first, second], "S")[0] is None    # Felix reads the first: fails
    (second / "T").write_text("t")
    assert read_secret_file([first, second], "T") == ("t", "")


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlink_leaving_the_directory_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "secrets"
    d.mkdir()
    (tmp_path / "outside").write_text("outside")
    (d / "LINK").symlink_to(tmp_path / "outside")
    (d / "data").mkdir()
    (d / "data" / "K").write_text("k")
    (d / "K").symlink_to(d / "data" / "K")      # Kubernetes-style link inside the directory: fine
    assert read_secret_file([d], "LINK")[0] is None
    assert read_secret_file([d], "K") == ("k", "")


def test_env_lookup_order_and_secret_env_hint() -> None:
    sources = Sources(env={"A": "store"}, secret_env={"A": "secret", "S": "sv"}, env_fallback={"A": "proc",
                                                                                               "P": "p"})
    resolved = resolve_configuration({"a": "$[env:A]", "s": "$[env:S]", "p": "$[env:P]"}, sources)
    a, s, p = resolved.properties.values()
    assert (a.value, a.is_secret) == ("store", False)
    assert (s.value, s.is_secret) == ("sv", True)
    assert [w.code for w in s.warnings] == ["env-is-secret"] and not s.warnings[0].blocking
    assert p.value == "p" and p.provenance[0].origin == "process environment"
    assert "sv" not in repr(s) and "****" in repr(s)


def test_secret_lookup_order(tmp_path: Path) -> None:
    (tmp_path / "S").write_text("from-file")
    (tmp_path / "F").write_text("file-only")
    sources = Sources(secrets={"S": "from-store "}, secret_dirs=[tmp_path])
    resolved = resolve_configuration({"s": "$[secret:S]", "f": "$[secret:F]"}, sources)
    s, f = resolved.properties.values()
    assert s.value == "from-store" and s.provenance[0].origin == "environment secrets"
    assert any(w.code == "secret-whitespace" for w in s.warnings)
    assert f.value == "file-only" and f.provenance[0].origin == "secrets directory"
    assert f.is_secret and f.display_value() == "****" and f.display_value(reveal=True) == "file-only"


def test_provenance_kinds() -> None:
    sources = Sources(env={"H": "h"}, props={"p": "P"}, labels={"env": "environment 1001/2002 variable"})
    resolved = resolve_configuration({
        "lit": "plain", "env": "$[env:H]", "mixed": "x-$[env:H]", "dflt": "$[env:NO;default=d]",
        "prop": "$[prop:p]", "conf": "$[conf:lit]", "num": 25, "arr": ["$[env:H]", "y"],
    }, sources, pid="my.pid")
    kinds = {name: [(p.kind, p.name) for p in prop.provenance] for name, prop in resolved.properties.items()}
    assert kinds == {
        "lit": [("literal", "")], "env": [("env", "H")], "mixed": [("literal", ""), ("env", "H")],
        "dflt": [("default", "env:NO")], "prop": [("prop", "p")], "conf": [("conf", "lit")],
        "num": [("literal", "")], "arr": [("literal", ""), ("env", "H")],
    }
    assert resolved.properties["env"].provenance[0].origin == "environment 1001/2002 variable"
    assert resolved.properties["arr"].value == ["h", "y"]
    assert resolved.properties["num"].type_name == "Long"
    assert resolved.values()["conf"] == "plain"
    assert not resolved.warnings


def test_unused_default_does_not_count() -> None:
    resolved = resolve_configuration({"a": "$[env:A;default=$[secret:S]$[env:MISSING]]"},
                                     Sources(env={"A": "a"}, secrets={"S": "s"}))
    prop = resolved.properties["a"]
    assert prop.value == "a" and not prop.is_secret and not prop.warnings
    assert [p.kind for p in prop.provenance] == ["env"]


def test_used_default_brings_its_sources_and_warnings() -> None:
    resolved = resolve_configuration({"a": "$[env:A;default=$[secret:S]-$[env:MISSING]]"},
                                     Sources(secrets={"S": "s"}))
    prop = resolved.properties["a"]
    assert prop.value == "s-$[env:MISSING]" and prop.is_secret
    assert prop.unresolved == ("$[env:MISSING]",)
    assert resolved.has_blocking_warnings


def test_typed_whole_value_and_unknown_type() -> None:
    resolved = resolve_configuration({"port": "$[env:P;type=Integer]", "x": "$[env:P;type=Int]"},
                                     Sources(env={"P": "30465"}))
    port, x = resolved.properties.values()
    assert (port.value, port.type_name, port.python_type) == (30465, "Integer", "int")
    assert x.value == "30465" and x.warnings[0].code == "unknown-type" and x.warnings[0].blocking


def test_conf_sees_service_pid_and_raw_values() -> None:
    resolved = resolve_configuration({"who": "$[conf:service.pid]", "list": ["a", "b"], "l": "$[conf:list]",
                                      "n": 1.5, "m": "$[conf:n]"}, Sources(), pid="my.pid")
    assert resolved.properties["who"].value == "my.pid"
    assert resolved.properties["l"].value == "[a, b]"
    assert resolved.properties["m"].value == "1.5"


def test_errors_name_the_property_and_file(tmp_path: Path) -> None:
    with pytest.raises(PlaceholderError) as info:
        resolve_configuration({"ok": "x", "port": "$[env:P;type=Integer]"}, Sources(env={"P": "abc"}),
                              path=tmp_path / "p.cfg.json")
    assert info.value.property == "port"
    assert "p.cfg.json" in str(info.value) and "'abc' does not convert to Integer" in str(info.value)


def test_sources_repr_shows_no_values() -> None:
    sources = Sources(env={"A": SECRET}, secrets={"B": SECRET}, secret_env={"B": SECRET})
    assert SECRET not in repr(sources)
