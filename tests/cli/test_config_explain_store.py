"""`config explain --program P --environment E`: values from the environment store (real store)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import SEED_CONFIG_ROOT, run_cli

pytest.importorskip("egressmail.environments", reason="the environments part is not there yet")
environments = pytest.importorskip("egressmail.environments")
if not hasattr(environments, "placeholder_values"):
    pytest.skip("egressmail.environments.placeholder_values is not written yet", allow_module_level=True)

PASSWORD = "password123-Zq"
CLEAN_ENV = {"AEM_PROXY_HOST": "", "EMAIL_USERNAME": ""}


def test_store_values_fill_placeholders_and_stay_masked(home: Path) -> None:
    # the seed's own CLI call: both values set as secrets
    setup = run_cli("cloudmanager:set-environment-variables", "--programId=1001", "2002",
                    "--secret", "EMAIL_USERNAME", "apikey", "--secret", "EMAIL_PASSWORD", PASSWORD, home=home)
    assert setup.returncode == 0, setup.stderr
    result = run_cli("config", "explain", str(SEED_CONFIG_ROOT), "--program", "1001", "--environment", "2002",
                     "--service", "publish", "--json", "--strict", home=home, env=CLEAN_ENV)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    props = {p["name"]: p for p in document["configurations"][0]["properties"]}
    assert props["smtp.password"]["value"] == "****"
    assert props["smtp.password"]["sources"][0]["kind"] == "secret"
    assert "1001" in props["smtp.password"]["sources"][0]["origin"]
    # $[env:EMAIL_USERNAME] where EMAIL_USERNAME is a secret: resolves, masked, with a hint
    assert props["smtp.user"]["value"] == "****" and props["smtp.user"]["secret"] is True
    assert any(w["code"] == "env-is-secret" for w in props["smtp.user"]["warnings"])
    assert PASSWORD not in result.stdout + result.stderr
    revealed = run_cli("config", "explain", str(SEED_CONFIG_ROOT), "--program", "1001", "--environment",
                       "2002", "--json", "--reveal", home=home, env=CLEAN_ENV)
    props = {p["name"]: p for p in json.loads(revealed.stdout)["configurations"][0]["properties"]}
    assert props["smtp.password"]["value"] == PASSWORD
    assert props["smtp.user"]["value"] == "apikey"


def test_store_variable_wins_over_process_environment(home: Path, tmp_path: Path) -> None:
    setup = run_cli("cloudmanager:set-environment-variables", "--programId=1001", "2002",
                    "--variable", "MAIL_HOST", "gateway.internal", home=home)
    assert setup.returncode == 0, setup.stderr
    cfg = tmp_path / "my.pid.cfg.json"
    cfg.write_text('{"host": "$[env:MAIL_HOST;default=x]", "other": "$[env:ONLY_IN_PROCESS]"}')
    result = run_cli("config", "explain", str(cfg), "--program", "1001", "--environment", "2002",
                     "--json", home=home, env={"MAIL_HOST": "127.0.0.1", "ONLY_IN_PROCESS": "p"})
    assert result.returncode == 0, result.stderr
    props = {p["name"]: p for p in json.loads(result.stdout)["configurations"][0]["properties"]}
    assert props["host"]["value"] == "gateway.internal"
    assert "1001/2002" in props["host"]["sources"][0]["origin"]
    assert props["other"]["value"] == "p"
    assert props["other"]["sources"][0]["origin"] == "process environment"


def test_unknown_environment_is_an_error(home: Path) -> None:
    result = run_cli("config", "explain", str(SEED_CONFIG_ROOT), "--program", "9", "--environment", "9",
                     home=home)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
