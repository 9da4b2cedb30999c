"""Shared fixtures: an isolated home folder, the seed's examples, a CLI runner in a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "wknd"
SEED_CONFIG_ROOT = EXAMPLES / "ui.config/src/jcr_root/apps/wknd-examples/osgiconfig"
SEED_CONFIG_FILE = SEED_CONFIG_ROOT / "config" / "com.day.cq.mailer.DefaultMailService.cfg.json"
SEED_NETWORKING = EXAMPLES / "advanced-networking.json"
SEED_SET_SECRETS = EXAMPLES / "set-secrets.sh"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh egressmail home, also exported as $EGRESSMAIL_HOME for subprocesses."""
    h = tmp_path / "home"
    monkeypatch.setenv("EGRESSMAIL_HOME", str(h))
    yield h


def run_cli(*args: str, home: Path | None = None, input: str | None = None,
            env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``egressmail ARGS`` as a real subprocess and capture its output."""
    full_env = dict(os.environ)
    full_env.pop("EGRESSMAIL_MASTER_KEY", None)
    if home is not None:
        full_env["EGRESSMAIL_HOME"] = str(home)
    full_env["COLUMNS"] = "200"
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "egressmail", *args],
        capture_output=True, text=True, input=input, env=full_env, timeout=timeout, check=False,
    )
