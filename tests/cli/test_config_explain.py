"""`egressmail config explain` against the seed's example and small config roots (real subprocesses)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import SEED_CONFIG_FILE, SEED_CONFIG_ROOT, run_cli

PID = "com.day.cq.mailer.DefaultMailService"
SECRET = "s3cr3t-Pa55word-zz"
CLEAN = {"AEM_PROXY_HOST": "", "EMAIL_USERNAME": ""}


def _env(**values: str) -> dict[str, str]:
    """Environment for the subprocess: the seed's variables unset unless given."""
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    env.update(values)
    return env


def _run(*args: str, env: dict[str, str], home: Path) -> tuple[int, str, str]:
    full = dict(env)
    full["EGRESSMAIL_HOME"] = str(home)
    full["COLUMNS"] = "200"
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "egressmail", *args], capture_output=True, text=True,
                          env=full, timeout=60, check=False)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    d = tmp_path / "secrets"
    d.mkdir()
    (d / "EMAIL_PASSWORD").write_text(SECRET + "\n")
    return d


def _props(document: dict) -> dict[str, dict]:
    [config] = document["configurations"]
    assert config["pid"] == PID
    return {p["name"]: p for p in config["properties"]}


def test_seed_without_any_values_uses_defaults_and_warns(home: Path) -> None:
    rc, out, err = _run("config", "explain", str(SEED_CONFIG_ROOT), "--run-modes", "author,dev", "--json",
                        env=_env(), home=home)
    assert rc == 0, err
    props = _props(json.loads(out))
    assert props["smtp.host"]["value"] == "proxy.tunnel"
    assert props["smtp.host"]["sources"] == [{"kind": "default", "name": "env:AEM_PROXY_HOST", "origin": ""}]
    assert props["smtp.user"]["value"] == "emailapikey"
    assert props["smtp.password"]["value"] == "$[secret:EMAIL_PASSWORD]"  # Felix leaves it verbatim
    assert props["smtp.password"]["warnings"][0]["code"] == "unresolved"
    assert props["smtp.port"] == props["smtp.port"] | {"value": "30002", "type": "String"}
    assert props["smtp.ssl"]["value"] is True and props["smtp.ssl"]["type"] == "Boolean"
    assert json.loads(out)["warnings"][0]["property"] == "smtp.password"


def test_seed_with_env_and_secrets_dir(home: Path, secrets_dir: Path) -> None:
    env = _env(AEM_PROXY_HOST="127.0.0.1", EMAIL_USERNAME="apikey")
    rc, out, err = _run("config", "explain", str(SEED_CONFIG_FILE), "--secrets-dir", str(secrets_dir),
                        "--json", "--strict", env=env, home=home)
    assert rc == 0, err
    document = json.loads(out)
    assert document["ok"] is True and document["warnings"] == []
    props = _props(document)
    assert props["smtp.host"]["value"] == "127.0.0.1"
    assert props["smtp.host"]["sources"] == [
        {"kind": "env", "name": "AEM_PROXY_HOST", "origin": "process environment"}]
    assert props["smtp.user"]["value"] == "apikey"
    assert props["smtp.password"]["value"] == "****"
    assert props["smtp.password"]["secret"] is True
    assert props["smtp.password"]["sources"][0]["kind"] == "secret"
    assert SECRET not in out + err


def test_reveal_shows_the_trimmed_secret(home: Path, secrets_dir: Path) -> None:
    rc, out, err = _run("config", "explain", str(SEED_CONFIG_FILE), "--secrets-dir", str(secrets_dir),
                        "--json", "--reveal", env=_env(), home=home)
    assert rc == 0, err
    assert _props(json.loads(out))["smtp.password"]["value"] == SECRET  # trailing newline trimmed


def test_table_output_masks_secret_and_names_sources(home: Path, secrets_dir: Path) -> None:
    rc, out, err = _run("config", "explain", str(SEED_CONFIG_ROOT), "--secrets-dir", str(secrets_dir),
                        env=_env(EMAIL_USERNAME="apikey"), home=home)
    assert rc == 0, err
    assert PID in out
    assert "default of env:AEM_PROXY_HOST" in out
    assert "env var EMAIL_USERNAME (process environment)" in out
    assert "****" in out and SECRET not in out + err
    assert "secret EMAIL_PASSWORD (secrets directory)" in out


def test_strict_fails_on_unresolved_placeholder(home: Path) -> None:
    rc, out, err = _run("config", "explain", str(SEED_CONFIG_ROOT), "--strict", env=_env(), home=home)
    assert rc == 2
    assert "smtp.password" in err and "$[secret:EMAIL_PASSWORD]" in err
    assert "error:" in err


def test_strict_json_reports_not_ok_and_exits_2(home: Path) -> None:
    rc, out, err = _run("config", "explain", str(SEED_CONFIG_ROOT), "--strict", "--json", env=_env(),
                        home=home)
    assert rc == 2
    assert json.loads(out)["ok"] is False


def _root(tmp_path: Path, folders: dict[str, str]) -> Path:
    root = tmp_path / "osgiconfig"
    for folder, body in folders.items():
        (root / folder).mkdir(parents=True)
        (root / folder / "my.pid.cfg.json").write_text(body)
    return root


def test_run_modes_choose_most_specific_folder(home: Path, tmp_path: Path) -> None:
    root = _root(tmp_path, {"config": '{"a": "base"}', "config.author": '{"a": "author"}',
                            "config.author.dev": '{"a": "author-dev"}'})
    for modes, expected in (("author,dev", "author-dev"), ("author", "author"), ("publish", "base")):
        rc, out, err = _run("config", "explain", str(root), "--run-modes", modes, "--json", env=_env(),
                            home=home)
        assert rc == 0, err
        assert json.loads(out)["configurations"][0]["properties"][0]["value"] == expected


@pytest.mark.parametrize(("folders", "message"), [
    ({"config.preview": "{}"}, "preview"),
    ({"config.author": '{"a": 1}', "config.dev": '{"a": 2}'}, "two equally specific files"),
    ({"config": "[1, 2]"}, "not an object"),
    ({"config": '{"a": 1, "a": 2}'}, "duplicate key 'a'"),
    ({"config": '{"a": 1,\n  "b" 2}'}, ":2:7: invalid JSON: Expecting ':' delimiter"),
    ({"config": '{"p": "$[env:X;type=Integer]"}'}, "does not convert to Integer"),
    ({"config": '{"p": "$[env:X;type=Integer[];delimiter=]"}'}, "empty delimiter"),
])
def test_bad_input_is_a_clear_error(home: Path, tmp_path: Path, folders: dict[str, str],
                                    message: str) -> None:
    root = _root(tmp_path, folders)
    rc, out, err = _run("config", "explain", str(root), "--run-modes", "author,dev", env=_env(X="abc"),
                        home=home)
    assert rc == 2, (out, err)
    assert message in err
    assert "Traceback" not in err


def test_secret_in_conversion_error_is_not_shown(home: Path, tmp_path: Path) -> None:
    root = _root(tmp_path, {"config": '{"port": "$[secret:PORT;type=Integer]"}'})
    secrets = tmp_path / "s"
    secrets.mkdir()
    (secrets / "PORT").write_text(SECRET)
    rc, out, err = _run("config", "explain", str(root), "--secrets-dir", str(secrets), env=_env(), home=home)
    assert rc == 2
    assert "property 'port'" in err and "my.pid.cfg.json" in err
    assert SECRET not in out + err


@pytest.mark.parametrize(("value", "reason"), [
    ("$[env:NOPE_NOT_SET]", "is not set"),
    ("$[foo:x]", "unknown source 'foo'"),
    ("x$[env:A", "unterminated"),
    ("$[secret:../x]", "contains '..'"),
    ("$[secret:/etc/passwd]", "absolute"),
    ("$[env:NOPE;default=1;type=Integr]", "not a type Felix knows"),
])
def test_verbatim_placeholders_are_warnings_and_strict_errors(home: Path, tmp_path: Path, value: str,
                                                               reason: str) -> None:
    root = _root(tmp_path, {"config": json.dumps({"p": value})})
    secrets = tmp_path / "s"
    secrets.mkdir()
    rc, out, err = _run("config", "explain", str(root), "--secrets-dir", str(secrets), env=_env(), home=home)
    assert rc == 0, err
    assert "warning:" in err and "p:" in err and reason in err
    rc, out, err = _run("config", "explain", str(root), "--secrets-dir", str(secrets), "--strict", env=_env(),
                        home=home)
    assert rc == 2 and reason in err


def test_secrets_dir_comma_separated_and_repeated(home: Path, tmp_path: Path) -> None:
    root = _root(tmp_path, {"config": '{"a": "$[secret:A]", "b": "$[secret:B]"}'})
    for name in ("A", "B"):
        (tmp_path / name.lower()).mkdir()
        (tmp_path / name.lower() / name).write_text(f"value-{name}")
    rc, out, err = _run("config", "explain", str(root), "--secrets-dir", f"{tmp_path / 'a'},{tmp_path / 'b'}",
                        "--json", "--reveal", "--strict", env=_env(), home=home)
    assert rc == 0, err
    values = [p["value"] for p in json.loads(out)["configurations"][0]["properties"]]
    assert values == ["value-A", "value-B"]


def test_help_teaches() -> None:
    result = run_cli("config", "explain", "--help")
    assert result.returncode == 0
    assert "--run-modes" in result.stdout and "Examples:" in result.stdout


def test_program_without_environment_is_a_usage_error(home: Path) -> None:
    rc, out, err = _run("config", "explain", str(SEED_CONFIG_ROOT), "--program", "1001", env=_env(),
                        home=home)
    assert rc == 2 and "--program and --environment go together" in err
