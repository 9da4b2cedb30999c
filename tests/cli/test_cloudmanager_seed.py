"""The seed's command line runs as it is, with `egressmail` on PATH."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import SEED_SET_SECRETS, run_cli


def test_seed_set_secrets_script_runs_verbatim(home: Path) -> None:
    env = dict(os.environ)
    env.pop("EGRESSMAIL_MASTER_KEY", None)
    env["EGRESSMAIL_HOME"] = str(home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["COLUMNS"] = "200"
    done = subprocess.run(["bash", str(SEED_SET_SECRETS)], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    header = done.stdout.splitlines()[0].split()
    assert header == ["Name", "Type", "Value", "Service", "Status"]
    assert "EMAIL_USERNAME" in done.stdout and "EMAIL_PASSWORD" in done.stdout
    assert "****" in done.stdout
    assert "password123" not in done.stdout + done.stderr
    assert "apikey" not in done.stdout + done.stderr
    listed = run_cli("cloudmanager:list-environment-variables", "--programId=1001", "e2002", "--json",
                     home=home)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [
        {"name": "EMAIL_PASSWORD", "type": "secretString", "value": "****", "service": None,
         "status": "ready"},
        {"name": "EMAIL_USERNAME", "type": "secretString", "value": "****", "service": None,
         "status": "ready"},
    ]
    assert b"password123" not in (home / "egressmail.db").read_bytes()
    assert (home / "egressmail.db").stat().st_mode & 0o777 == 0o600
    assert (home / "master.key").stat().st_mode & 0o777 == 0o600
