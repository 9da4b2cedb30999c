"""The store against a real SQLite file: rules that need state, encryption at rest, placeholders."""

from __future__ import annotations

import base64
import logging
import sqlite3
from pathlib import Path

import pytest

from egressmail.environments import (
    EnvironmentStore,
    KeyFile,
    MasterKeyError,
    PlaceholderValues,
    SecretDecryptionError,
    Service,
    VariableRuleError,
    VariableType,
    VariableUpdate,
    placeholder_values,
)
from egressmail.environments.crypto import EnvironmentKey, key_provider_for
from egressmail.errors import NotFoundError, ValidationError
from egressmail.storage import Database

SECRET = "Pa55-w0rd-that-must-never-leak"


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(tmp_path)


@pytest.fixture
def store(db: Database, tmp_path: Path) -> EnvironmentStore:
    return EnvironmentStore(db, KeyFile(tmp_path / "master.key"))


def S(name: str, value: str | None, service: Service | None = None) -> VariableUpdate:
    return VariableUpdate(name, VariableType.SECRET, value, service)


def V(name: str, value: str | None, service: Service | None = None) -> VariableUpdate:
    return VariableUpdate(name, VariableType.STRING, value, service)


def test_first_write_creates_program_and_environment(store: EnvironmentStore) -> None:
    result = store.apply("1001", "e2002", [V("HOST", "smtp.example.com"), S("PASS", SECRET)])
    assert result.set == ("HOST", "PASS")
    assert result.generation == 1
    listed = store.list("1001", "2002")
    assert [(v.name, v.type, v.value) for v in listed] == [
        ("HOST", VariableType.STRING, "smtp.example.com"), ("PASS", VariableType.SECRET, None)]


def test_reading_what_does_not_exist_names_it(store: EnvironmentStore) -> None:
    with pytest.raises(NotFoundError, match="program '1001'"):
        store.list("1001", "2002")
    store.set("1001", "2002", "HOST", "h")
    with pytest.raises(NotFoundError, match="environment '2003' of program '1001'"):
        store.list("1001", "2003")
    with pytest.raises(NotFoundError, match="'2003'"):
        store.diff("1001", "2002", "2003")


def test_malformed_ids_are_refused(store: EnvironmentStore) -> None:
    with pytest.raises(ValidationError, match="invalid program id"):
        store.set("10 01", "2002", "HOST", "h")
    with pytest.raises(ValidationError, match="invalid environment id"):
        store.list("1001", "e/x")


def test_update_is_partial(store: EnvironmentStore) -> None:
    store.apply("1001", "2002", [V("AA", "1"), V("BB", "2")])
    store.apply("1001", "2002", [V("BB", "3")])
    assert {v.name: v.value for v in store.list("1001", "2002")} == {"AA": "1", "BB": "3"}


def test_type_cannot_change(store: EnvironmentStore) -> None:
    store.set("1001", "2002", "PASS", SECRET, secret=True)
    with pytest.raises(VariableRuleError) as info:
        store.set("1001", "2002", "PASS", "plain")
    assert info.value.code == "TYPE_CHANGE"
    assert "delete it first" in (info.value.hint or "")
    # Deleting then setting again is the way; the same name for another service is another variable.
    store.set("1001", "2002", "PASS", "plain", service=Service.PUBLISH)
    store.delete("1001", "2002", ["PASS"])
    store.set("1001", "2002", "PASS", "plain")
    assert {(v.name, v.service, v.type) for v in store.list("1001", "2002")} == {
        ("PASS", None, VariableType.STRING), ("PASS", Service.PUBLISH, VariableType.STRING)}


def test_a_failing_batch_changes_nothing(store: EnvironmentStore) -> None:
    store.apply("1001", "2002", [S("PASS", SECRET), V("AA", "1")])
    gen = store.generation("1001", "2002")
    with pytest.raises(VariableRuleError):
        store.apply("1001", "2002", [V("AA", "2"), V("PASS", "x")])  # second one is a type change
    assert {v.name: v.value for v in store.list("1001", "2002")}["AA"] == "1"
    assert store.generation("1001", "2002") == gen


def test_at_most_200_variables(store: EnvironmentStore) -> None:
    store.apply("1001", "2002", [V(f"V_{i}", "x") for i in range(199)])
    store.apply("1001", "2002", [V("LAST", "x")])
    with pytest.raises(VariableRuleError) as info:
        store.apply("1001", "2002", [V("ONE_MORE", "x")])
    assert info.value.code == "TOO_MANY_VARIABLES"
    assert "200" in str(info.value)
    # Replacing one (delete + add in one batch) keeps the count at 200.
    store.apply("1001", "2002", [V("V_0", None), V("ONE_MORE", "x")])
    assert len(store.list("1001", "2002")) == 200


def test_reserved_prefixes_refused_or_skipped(store: EnvironmentStore) -> None:
    for name in ("INTERNAL_X", "ADOBE_X", "CONST_X"):
        with pytest.raises(VariableRuleError) as info:
            store.apply("1001", "2002", [V(name, "1")])
        assert info.value.code == "INTERNAL_VARIABLE_USAGE"
    result = store.apply("1001", "2002", [V("ADOBE_X", "1"), V("FINE", "1")], reserved="skip")
    assert result.skipped_reserved == ("ADOBE_X",)
    assert [v.name for v in store.list("1001", "2002")] == ["FINE"]


def test_aem_names_refused(store: EnvironmentStore) -> None:
    with pytest.raises(VariableRuleError) as info:
        store.apply("1001", "2002", [V("AEM_PROXY_HOST", "x")], reserved="skip")
    assert info.value.code == "PRODUCT_NAME"


def test_value_limits_in_the_store(store: EnvironmentStore) -> None:
    store.apply("1001", "2002", [V("LONG", "x" * 2048), S("LONGS", "y" * 499)])
    for update, code in ((V("LONG", "x" * 2049), "VALUE_TOO_LONG"),
                         (S("LONGS", "y" * 500), "SECRET_TOO_LONG")):
        with pytest.raises(VariableRuleError) as info:
            store.apply("1001", "2002", [update])
        assert info.value.code == code


def test_same_name_twice_in_one_batch_is_refused(store: EnvironmentStore) -> None:
    with pytest.raises(VariableRuleError) as info:
        store.apply("1001", "2002", [V("AA", "1"), S("AA", "2")])
    assert info.value.code == "DUPLICATE_NAME"


def test_delete_of_missing_name_only_reports_it(store: EnvironmentStore) -> None:
    store.set("1001", "2002", "AA", "1")
    result = store.delete("1001", "2002", ["AA", "NOPE"])
    assert result.deleted == ("AA",)
    assert result.not_found == ("NOPE",)


def test_generation_counts_changes(store: EnvironmentStore) -> None:
    assert store.generation("1001", "2002") == 0
    store.set("1001", "2002", "AA", "1")
    store.set("1001", "2002", "AA", "2")
    assert store.generation("1001", "2002") == 2
    store.delete("1001", "2002", ["NOPE"])  # nothing changed
    assert store.generation("1001", "2002") == 2
    store.delete("1001", "2002", ["AA"])
    assert store.generation("1001", "2002") == 3


def test_placeholder_values_service_scoped_win(db: Database, store: EnvironmentStore, tmp_path: Path) -> None:
    store.apply("1001", "2002", [
        V("HOST", "all"), V("HOST", "pub", Service.PUBLISH), V("ONLY_AUTHOR", "a", Service.AUTHOR),
        S("PASS", "all-secret"), S("PASS", "publish-secret", Service.PUBLISH),
    ])
    keys = KeyFile(tmp_path / "master.key")
    pub = placeholder_values(db, "1001", "e2002", "publish", keys=keys)
    assert pub == PlaceholderValues({"HOST": "pub"}, {"PASS": "publish-secret"}, 1)
    author = placeholder_values(db, "1001", "2002", "author", keys=keys)
    assert author.variables == {"HOST": "all", "ONLY_AUTHOR": "a"}
    assert author.secrets == {"PASS": "all-secret"}
    every = placeholder_values(db, "1001", "2002", keys=keys)
    assert every.variables == {"HOST": "all"}
    assert "secret" not in repr(every)
    with pytest.raises(NotFoundError, match="'9999'"):
        placeholder_values(db, "1001", "9999", keys=keys)
    with pytest.raises(VariableRuleError):
        placeholder_values(db, "1001", "2002", "Publish", keys=keys)


def test_default_key_is_next_to_the_database(db: Database, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EGRESSMAIL_MASTER_KEY", raising=False)
    EnvironmentStore(db).set("1001", "2002", "PASS", SECRET, secret=True)
    assert (tmp_path / "master.key").stat().st_mode & 0o777 == 0o600
    assert placeholder_values(db, "1001", "2002").secrets == {"PASS": SECRET}


def test_secrets_are_not_in_the_database_file(db: Database, store: EnvironmentStore, tmp_path: Path) -> None:
    store.set("1001", "2002", "PASS", SECRET, secret=True)
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("egressmail.db*"))
    assert SECRET.encode() not in raw
    assert b"Pa55" not in raw
    assert db.path.stat().st_mode & 0o777 == 0o600


def test_ciphertext_copied_to_another_row_fails(db: Database, store: EnvironmentStore) -> None:
    store.apply("1001", "2002", [S("PASS", SECRET), S("OTHER", "other-value")])
    store.set("1001", "2003", "PASS", "env3", secret=True)
    conn = sqlite3.connect(db.path)
    with conn:
        conn.execute("UPDATE env_variables SET sealed = (SELECT sealed FROM env_variables WHERE "
                     "environment_id = '2002' AND name = 'PASS') WHERE environment_id = '2002' AND "
                     "name = 'OTHER'")
    with pytest.raises(SecretDecryptionError) as info:
        store.secret_values("1001", "2002")
    assert "OTHER" in str(info.value) and SECRET not in str(info.value)
    with conn:  # into another environment's row with the same name
        conn.execute("UPDATE env_variables SET sealed = (SELECT sealed FROM env_variables WHERE "
                     "environment_id = '2002' AND name = 'PASS') WHERE environment_id = '2003'")
    conn.close()
    with pytest.raises(SecretDecryptionError):
        store.secret_values("1001", "2003")


def test_tampered_ciphertext_fails(db: Database, store: EnvironmentStore) -> None:
    store.set("1001", "2002", "PASS", SECRET, secret=True)
    conn = sqlite3.connect(db.path)
    sealed = bytearray(conn.execute("SELECT sealed FROM env_variables").fetchone()[0])
    sealed[-1] ^= 1
    with conn:
        conn.execute("UPDATE env_variables SET sealed = ?", (bytes(sealed),))
    conn.close()
    with pytest.raises(SecretDecryptionError):
        store.secret_values("1001", "2002")


def test_wrong_key_is_named_by_id(db: Database, store: EnvironmentStore, tmp_path: Path) -> None:
    store.set("1001", "2002", "PASS", SECRET, secret=True)
    other = EnvironmentStore(db, EnvironmentKey(base64.b64encode(b"k" * 32).decode()))
    with pytest.raises(MasterKeyError, match="sealed with master key [0-9a-f]{16}"):
        other.secret_values("1001", "2002")
    (tmp_path / "master.key").unlink()
    with pytest.raises(MasterKeyError):
        store.secret_values("1001", "2002")


def test_environment_key(db: Database) -> None:
    key = base64.b64encode(bytes(range(32))).decode()
    provider = key_provider_for(Path("/nonexistent"), {"EGRESSMAIL_MASTER_KEY": key})
    store = EnvironmentStore(db, provider)
    store.set("1001", "2002", "PASS", SECRET, secret=True)
    assert store.secret_values("1001", "2002").secrets == {"PASS": SECRET}
    hex_store = EnvironmentStore(db, EnvironmentKey(bytes(range(32)).hex()))
    assert hex_store.secret_values("1001", "2002").secrets == {"PASS": SECRET}
    assert key not in repr(provider) and key not in repr(store)
    with pytest.raises(MasterKeyError, match="not a 256-bit key"):
        EnvironmentStore(db, EnvironmentKey("c2hvcnQ=")).set("1001", "2002", "PW", "x", secret=True)
    with pytest.raises(MasterKeyError, match="cannot rotate"):
        store.rotate_key()


def test_damaged_key_file(db: Database, tmp_path: Path) -> None:
    (tmp_path / "master.key").write_text('{"version": 1, "current": "x", "keys": {"x": "AAAA"}}')
    with pytest.raises(MasterKeyError, match="damaged") as info:
        EnvironmentStore(db, KeyFile(tmp_path / "master.key")).set("1001", "2002", "PW", "x", secret=True)
    assert info.value.exit_code == 2


def test_diff(store: EnvironmentStore) -> None:
    store.apply("1001", "2002", [V("SAME", "1"), V("DIFF", "a"), S("SEC", "x"), V("ONLY_A", "1"),
                                 V("KIND", "k")])
    store.apply("1001", "2003", [V("SAME", "1"), V("DIFF", "b"), S("SEC", "y"), V("ONLY_B", "1"),
                                 S("KIND", "k")])
    d = store.diff("1001", "e2002", "2003")
    assert {e.name: e.state for e in d.entries} == {
        "SAME": "same", "DIFF": "differs", "SEC": "secret", "ONLY_A": "only_a", "ONLY_B": "only_b",
        "KIND": "type_differs"}
    assert d.has_differences


def test_export_and_import_round_trip(store: EnvironmentStore) -> None:
    store.apply("1001", "2002", [V("HOST", "h"), V("HOST", "p", Service.PUBLISH), S("PASS", SECRET)])
    exported = store.export("1001", "2002")
    assert exported == [{"name": "HOST", "type": "string", "value": "h"},
                        {"name": "HOST", "type": "string", "value": "p", "service": "publish"},
                        {"name": "PASS", "type": "secretString"}]
    assert SECRET not in repr(exported)


def test_logs_never_hold_a_secret(store: EnvironmentStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    store.set("1001", "2002", "PASS", SECRET, secret=True)
    store.secret_values("1001", "2002")
    store.rotate_key()
    assert caplog.records  # something was logged
    assert SECRET not in caplog.text


def test_rotation_keeps_every_value(store: EnvironmentStore, tmp_path: Path) -> None:
    store.apply("1001", "2002", [S("PASS", SECRET), S("PASS", "pub", Service.PUBLISH)])
    store.set("1002", "3003", "TOKEN", "t", secret=True)
    before = KeyFile(tmp_path / "master.key").load()
    assert before is not None
    result = store.rotate_key()
    after = KeyFile(tmp_path / "master.key").load()
    assert after is not None
    assert result.resealed == 3
    assert result.retired_key_ids == (before.current,)
    assert set(after.keys) == {result.new_key_id} != set(before.keys)
    assert store.secret_values("1001", "2002", Service.PUBLISH).secrets == {"PASS": "pub"}
    assert store.secret_values("1002", "3003").secrets == {"TOKEN": "t"}
    assert (tmp_path / "master.key").stat().st_mode & 0o777 == 0o600


def test_rotation_of_an_empty_store(store: EnvironmentStore, tmp_path: Path) -> None:
    result = store.rotate_key()
    assert result.resealed == 0
    ring = KeyFile(tmp_path / "master.key").load()
    assert ring is not None and ring.current == result.new_key_id


def test_import_items(store: EnvironmentStore) -> None:
    store.apply("1001", "2002", [V("OLD", "1"), S("PASS", SECRET)])
    text = ('[{"name": "OLD", "value": ""}, {"name": "NEW", "value": "n"},'
            ' {"name": "PASS", "type": "secretString"}]')
    result = store.import_items("1001", "2002", text, source="x.json")
    assert result.batch.set == ("NEW",) and result.batch.deleted == ("OLD",)
    assert result.without_value == ("PASS",)
    assert store.secret_values("1001", "2002").secrets == {"PASS": SECRET}


def test_a_second_key_never_seals_next_to_secrets_it_cannot_open(db: Database, store: EnvironmentStore,
                                                                 tmp_path: Path) -> None:
    # Sealing with another key would split the store: no single key could then read the
    # environment, and rotation would fail on the rows it does not hold.
    store.set("1001", "2002", "PASS", SECRET, secret=True)
    other = EnvironmentStore(db, EnvironmentKey(base64.b64encode(b"k" * 32).decode()))
    with pytest.raises(MasterKeyError, match="sealed with master key [0-9a-f]{16}") as info:
        other.set("1001", "2003", "OTHER", "x2-" + SECRET, secret=True)
    assert SECRET not in str(info.value) and info.value.exit_code == 2
    assert other.generation("1001", "2003") == 0
    other.set("1001", "2003", "PLAIN", "public")  # string variables need no key
    # The key file lost: no new key is created beside the old secrets.
    (tmp_path / "master.key").rename(tmp_path / "master.key.bak")
    with pytest.raises(MasterKeyError, match="master.key"):
        store.set("1001", "2002", "PASS2", SECRET, secret=True)
    assert not (tmp_path / "master.key").exists()
    (tmp_path / "master.key.bak").rename(tmp_path / "master.key")
    store.set("1001", "2002", "PASS2", SECRET, secret=True)
    assert store.secret_values("1001", "2002").secrets == {"PASS": SECRET, "PASS2": SECRET}
    store.rotate_key()
    assert store.secret_values("1001", "2002").secrets == {"PASS": SECRET, "PASS2": SECRET}
