"""Parallel writers in real processes, and a key rotation killed half-way."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from egressmail.environments import EnvironmentStore, KeyFile, Service, VariableType, VariableUpdate
from egressmail.storage import Database
from tests.conftest import run_cli

WRITER = """
import sys
from egressmail.environments import EnvironmentStore, VariableType, VariableUpdate
from egressmail.storage import Database
home, tag, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = EnvironmentStore(Database(home))
for i in range(rounds):
    store.apply("1001", "2002", [
        VariableUpdate(f"{tag}_V{i}", VariableType.STRING, f"{tag}-{i}"),
        VariableUpdate(f"{tag}_S{i}", VariableType.SECRET, f"secret-{tag}-{i}"),
    ])
"""


def _clean_env(home: Path) -> dict[str, str]:
    home.mkdir(mode=0o700, exist_ok=True)
    env = dict(os.environ)
    env.pop("EGRESSMAIL_MASTER_KEY", None)
    env["EGRESSMAIL_HOME"] = str(home)
    return env


def test_parallel_cli_writers_lose_nothing(home: Path) -> None:
    env = _clean_env(home)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "egressmail", "cloudmanager:set-environment-variables", "-p", "1001",
             "2002", "-v", *[w for i in range(5) for w in (f"P{n}_V{i}", str(i))],
             "-s", *[w for i in range(3) for w in (f"P{n}_S{i}", f"secret-{n}-{i}")]],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(4)
    ]
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    store = EnvironmentStore(Database(home))
    names = {v.name for v in store.list("1001", "2002")}
    assert names == {f"P{n}_V{i}" for n in range(4) for i in range(5)} | {
        f"P{n}_S{i}" for n in range(4) for i in range(3)}
    secrets = store.secret_values("1001", "2002").secrets
    assert secrets == {f"P{n}_S{i}": f"secret-{n}-{i}" for n in range(4) for i in range(3)}
    assert store.generation("1001", "2002") == 4
    assert len(KeyFile(home / "master.key").load().keys) == 1  # type: ignore[union-attr]


def test_parallel_writers_many_transactions(home: Path) -> None:
    env = _clean_env(home)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(home), tag, "25"], env=env,
                              stderr=subprocess.PIPE, text=True) for tag in ("A", "B", "C")]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    store = EnvironmentStore(Database(home))
    values = store.secret_values("1001", "2002")
    assert len(values.variables) == len(values.secrets) == 75
    assert values.secrets["B_S24"] == "secret-B-24"
    assert values.generation == 75
    with sqlite3.connect(home / "egressmail.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _seed(home: Path) -> dict[tuple[str, Service | None], str]:
    home.mkdir(mode=0o700, exist_ok=True)  # Database(folder) needs the folder to exist
    store = EnvironmentStore(Database(home))
    expected: dict[tuple[str, Service | None], str] = {}
    for env_id in ("2002", "2003"):
        updates = [VariableUpdate(f"S{i}", VariableType.SECRET, f"v-{env_id}-{i}") for i in range(5)]
        updates.append(VariableUpdate("S0", VariableType.SECRET, f"pub-{env_id}", Service.PUBLISH))
        store.apply("1001", env_id, updates)
        for u in updates:
            expected[(f"{env_id}:{u.name}", u.service)] = u.value or ""
    return expected


def _all_values(home: Path) -> dict[tuple[str, Service | None], str]:
    store = EnvironmentStore(Database(home), KeyFile(home / "master.key"))
    got: dict[tuple[str, Service | None], str] = {}
    for env_id in ("2002", "2003"):
        for name, value in store.secret_values("1001", env_id).secrets.items():
            got[(f"{env_id}:{name}", None)] = value
        got[(f"{env_id}:S0", Service.PUBLISH)] = store.secret_values(
            "1001", env_id, Service.PUBLISH).secrets["S0"]
    return got


@pytest.mark.parametrize("point", ["after-new-key", "rows:1", "rows:7", "rows:12", "before-retire"])
def test_rotation_killed_half_way_loses_nothing(home: Path, point: str) -> None:
    expected = _seed(home)
    old = KeyFile(home / "master.key").load()
    assert old is not None
    killed = run_cli("env", "rotate-key", home=home, env={"EGRESSMAIL_TEST_ROTATION_CRASH": point})
    assert killed.returncode == -9, killed.stderr  # SIGKILL: no cleanup ran
    ring = KeyFile(home / "master.key").load()
    assert ring is not None
    assert old.current in ring.keys and ring.current != old.current  # new key written, old kept
    assert _all_values(home) == expected  # every value still decrypts
    rerun = run_cli("env", "rotate-key", home=home)
    assert rerun.returncode == 0, rerun.stderr
    assert "12 secret(s) re-encrypted" in rerun.stdout
    final = KeyFile(home / "master.key").load()
    assert final is not None and len(final.keys) == 1
    assert old.current not in final.keys and ring.current not in final.keys
    assert _all_values(home) == expected
    with sqlite3.connect(home / "egressmail.db") as conn:
        assert {r[0] for r in conn.execute("SELECT DISTINCT key_id FROM env_variables")} == {final.current}
