"""The environment store: variables and secrets in the shared SQLite database.

Theory of operation
-------------------
One table, ``env_variables``, keyed by (program, environment, name, service); ``service`` is ``''``
for a variable that applies to all services. A string variable keeps its text in ``value``; a secret
keeps only ``sealed`` (AES-256-GCM, see :mod:`egressmail.environments.crypto`) and the ``key_id`` of
the master key that sealed it. Listings read ``name, type, value, service`` and never touch
``sealed``; the one method that decrypts is :meth:`EnvironmentStore.secret_values`, used by
:func:`placeholder_values`.

Every update is one ``BEGIN IMMEDIATE`` transaction: the rules that depend on stored state (a type
cannot change, at most 200 variables) are checked inside it, so two processes updating at once are
serialized by SQLite and each sees the other's committed result. Each transaction that changes an
environment bumps its ``generation``, which a running service polls to notice a change.
"""

from __future__ import annotations

import builtins
import logging
import os
import signal
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from egressmail.environments import crypto
from egressmail.environments.crypto import KeyProvider, KeyRing
from egressmail.environments.errors import MasterKeyError, VariableRuleError
from egressmail.environments.items import load_array, updates_from_items
from egressmail.environments.model import (
    MAX_VARIABLES_PER_ENVIRONMENT,
    Service,
    Variable,
    VariableType,
    VariableUpdate,
    check_not_reserved,
    check_update,
    describe,
    is_reserved_name,
)
from egressmail.storage.ids import normalize_environment_id, normalize_program_id
from egressmail.storage.sqlite import (
    Database,
    bump_generation,
    ensure_environment,
    generation,
    require_environment,
)

log = logging.getLogger(__name__)

#: Test-only hook: kill this process at a named point of a key rotation, to prove it is crash-safe.
#: Values: ``after-new-key``, ``rows:N`` (after re-sealing N rows, before commit), ``before-retire``.
ROTATION_CRASH_ENV_VAR = "EGRESSMAIL_TEST_ROTATION_CRASH"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS env_variables (
    program_id     TEXT NOT NULL,
    environment_id TEXT NOT NULL,
    name           TEXT NOT NULL,
    service        TEXT NOT NULL DEFAULT '',
    type           TEXT NOT NULL CHECK (type IN ('string', 'secretString')),
    value          TEXT,
    sealed         BLOB,
    key_id         TEXT,
    updated_at     REAL NOT NULL,
    PRIMARY KEY (program_id, environment_id, name, service),
    FOREIGN KEY (program_id, environment_id) REFERENCES environments(program_id, environment_id),
    CHECK ((type = 'string' AND value IS NOT NULL AND sealed IS NULL)
        OR (type = 'secretString' AND value IS NULL AND sealed IS NOT NULL AND key_id IS NOT NULL))
);
"""

ReservedPolicy = Literal["refuse", "skip"]


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one update did (names only; ``NAME (service)`` for scoped ones)."""

    set: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    not_found: tuple[str, ...] = ()
    skipped_reserved: tuple[str, ...] = ()
    generation: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.set or self.deleted)


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What :meth:`EnvironmentStore.import_items` did; ``without_value`` names items left alone."""

    batch: BatchResult
    without_value: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DiffEntry:
    """One name in a diff of two environments; ``state`` is ``only_a``, ``only_b``, ``same``,
    ``differs``, ``type_differs`` or ``secret`` (a secret in both: values are never compared)."""

    name: str
    service: Service | None
    type_a: VariableType | None
    type_b: VariableType | None
    state: str


@dataclass(frozen=True, slots=True)
class EnvironmentDiff:
    """Which names exist where and which non-secret values differ between two environments."""

    program: str
    environment_a: str
    environment_b: str
    entries: tuple[DiffEntry, ...]

    @property
    def has_differences(self) -> bool:
        return any(e.state not in ("same", "secret") for e in self.entries)


@dataclass(frozen=True, slots=True)
class RotationResult:
    """The outcome of :meth:`EnvironmentStore.rotate_key` (key ids only, never keys)."""

    new_key_id: str
    retired_key_ids: tuple[str, ...]
    resealed: int


@dataclass(frozen=True, slots=True)
class PlaceholderValues:
    """The values ``$[env:NAME]`` and ``$[secret:NAME]`` see for one environment and service.

    Service-scoped variables win over all-service ones of the same name. ``secrets`` holds
    plaintext and is kept out of ``repr()``.
    """

    variables: dict[str, str]
    secrets: dict[str, str] = field(repr=False)
    generation: int


def _service_text(service: Service | None) -> str:
    return service.value if service is not None else ""


def _service_of(text: str) -> Service | None:
    return Service(text) if text else None


def _crash_point(point: str) -> None:
    """Die abruptly at ``point`` when the test hook asks for it (see ROTATION_CRASH_ENV_VAR)."""
    if os.environ.get(ROTATION_CRASH_ENV_VAR) == point:
        os.kill(os.getpid(), signal.SIGKILL)


class EnvironmentStore:
    """Programs' environments and their variables and secrets.

    Args:
        db: the shared database.
        keys: where the master key lives; defaults to ``$EGRESSMAIL_MASTER_KEY`` or ``master.key``
            next to the database.
    """

    def __init__(self, db: Database, keys: KeyProvider | None = None) -> None:
        self.db = db
        self.keys = keys if keys is not None else crypto.key_provider_for(db.path.parent)
        self._schema_ready = False

    def __repr__(self) -> str:
        return f"EnvironmentStore({self.db!r}, keys={self.keys.describe()!r})"

    # -- connections -------------------------------------------------------------------------

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        if not self._schema_ready:
            conn.executescript(_SCHEMA)
            self._schema_ready = True

    def _init(self) -> None:
        if not self._schema_ready:
            conn = self.db.connect()
            try:
                self._ensure_schema(conn)
            finally:
                conn.close()

    # -- reading -----------------------------------------------------------------------------

    def list(self, program: str, environment: str) -> builtins.list[Variable]:
        """The environment's variables, sorted by name then service; a secret's ``value`` is ``None``.

        Raises:
            NotFoundError: the program or environment does not exist.
            ValidationError: the program or environment id is malformed.
        """
        program, environment = normalize_program_id(program), normalize_environment_id(environment)
        self._init()
        with self.db.reading() as conn:
            require_environment(conn, program, environment)
            return self._list(conn, program, environment)

    @staticmethod
    def _list(conn: sqlite3.Connection, program: str, environment: str) -> builtins.list[Variable]:
        rows = conn.execute(
            "SELECT name, service, type, value FROM env_variables "
            "WHERE program_id = ? AND environment_id = ? ORDER BY name, service",
            (program, environment)).fetchall()
        return [Variable(name=r["name"], type=VariableType(r["type"]),
                         value=r["value"] if r["type"] == VariableType.STRING else None,
                         service=_service_of(r["service"])) for r in rows]

    def generation(self, program: str, environment: str) -> int:
        """The environment's change counter (0 if it does not exist)."""
        program, environment = normalize_program_id(program), normalize_environment_id(environment)
        with self.db.reading() as conn:
            return generation(conn, program, environment)

    def export(self, program: str, environment: str) -> builtins.list[dict[str, str]]:
        """The environment in the API's array format; secrets as names without ``value``.

        Raises:
            NotFoundError: the program or environment does not exist.
        """
        out: builtins.list[dict[str, str]] = []
        for v in self.list(program, environment):
            item = {"name": v.name, "type": v.type.value}
            if not v.is_secret and v.value is not None:
                item["value"] = v.value
            if v.service is not None:
                item["service"] = v.service.value
            out.append(item)
        return out

    def diff(self, program: str, environment_a: str, environment_b: str) -> EnvironmentDiff:
        """Compare two environments of a program by name (and service); secrets by name only.

        Raises:
            NotFoundError: the program or either environment does not exist.
        """
        program = normalize_program_id(program)
        env_a, env_b = normalize_environment_id(environment_a), normalize_environment_id(environment_b)
        self._init()
        with self.db.reading() as conn:
            require_environment(conn, program, env_a)
            require_environment(conn, program, env_b)
            a = {(v.name, v.service): v for v in self._list(conn, program, env_a)}
            b = {(v.name, v.service): v for v in self._list(conn, program, env_b)}
        entries: list[DiffEntry] = []
        for key in sorted(a.keys() | b.keys(), key=lambda k: (k[0], _service_text(k[1]))):
            va, vb = a.get(key), b.get(key)
            if va is None:
                state = "only_b"
            elif vb is None:
                state = "only_a"
            elif va.type is not vb.type:
                state = "type_differs"
            elif va.is_secret:
                state = "secret"
            else:
                state = "same" if va.value == vb.value else "differs"
            entries.append(DiffEntry(name=key[0], service=key[1], type_a=va.type if va else None,
                                     type_b=vb.type if vb else None, state=state))
        return EnvironmentDiff(program, env_a, env_b, tuple(entries))

    def secret_values(self, program: str, environment: str,
                      service: Service | None = None) -> PlaceholderValues:
        """Decrypt what placeholders see for one service (``None``: all-service variables only).

        The only method that returns secret plaintext.

        Raises:
            NotFoundError: the program or environment does not exist.
            MasterKeyError: the key that sealed a secret is not available.
            SecretDecryptionError: a stored secret fails authentication.
        """
        program, environment = normalize_program_id(program), normalize_environment_id(environment)
        self._init()
        # A rotation may retire a key between our snapshot and our reading of the key ring: then
        # the rows are already re-sealed under the new key, and a fresh attempt sees them.
        for attempt in range(3):
            try:
                return self._secret_values(program, environment, service)
            except _KeyMissing as missing:
                if attempt == 2:
                    raise MasterKeyError(
                        f"secret {missing.what} was sealed with master key {missing.kid}, which "
                        f"{self.keys.describe()} does not hold",
                        hint="use the key file (or $EGRESSMAIL_MASTER_KEY) the secrets were set with",
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _secret_values(self, program: str, environment: str,
                       service: Service | None) -> PlaceholderValues:
        with self.db.reading() as conn:
            require_environment(conn, program, environment)
            gen = generation(conn, program, environment)
            rows = conn.execute(
                "SELECT name, service, type, value, sealed, key_id FROM env_variables "
                "WHERE program_id = ? AND environment_id = ? AND service IN ('', ?) "
                # '' sorts first, so a service-scoped row overwrites the all-service one below.
                "ORDER BY service, name",
                (program, environment, _service_text(service))).fetchall()
        ring = self.keys.load() if any(r["type"] == VariableType.SECRET for r in rows) else None
        variables: dict[str, str] = {}
        secrets: dict[str, str] = {}
        for r in rows:
            if r["type"] == VariableType.STRING:
                variables[r["name"]] = r["value"]
                continue
            what = f"{r['name']} of {program}/{environment}"
            key = ring.get(r["key_id"]) if ring is not None else None
            if key is None:
                raise _KeyMissing(what, r["key_id"])
            aad = crypto.associated_data(program, environment, r["service"] or None, r["name"])
            secrets[r["name"]] = crypto.open_sealed(key, r["sealed"], aad, what=f"secret {what}")
        return PlaceholderValues(variables=variables, secrets=secrets, generation=gen)

    # -- writing -----------------------------------------------------------------------------

    def apply(self, program: str, environment: str, updates: Sequence[VariableUpdate], *,
              reserved: ReservedPolicy = "refuse") -> BatchResult:
        """Apply a batch of sets and deletes as one transaction (all or nothing).

        Creates the program and environment on first write. A delete of a name that does not exist
        is reported in ``not_found``, not an error.

        Args:
            reserved: ``"refuse"`` raises on a reserved prefix; ``"skip"`` leaves such a variable out
                and reports it in ``skipped_reserved`` (the Cloud Manager CLI without ``--strict``).

        Raises:
            VariableRuleError: a rule of the model is broken (nothing is applied).
            ValidationError: the program or environment id is malformed.
            MasterKeyError: the master key cannot be read or created.
        """
        program, environment = normalize_program_id(program), normalize_environment_id(environment)
        kept: list[VariableUpdate] = []
        skipped: list[str] = []
        seen: set[tuple[str, Service | None]] = set()
        for u in updates:
            check_update(u)
            if u.key in seen:
                raise VariableRuleError("DUPLICATE_NAME",
                                        f"variable {describe(*u.key)} is named twice in one update",
                                        hint="name each variable once per update")
            seen.add(u.key)
            if not u.is_delete and is_reserved_name(u.name):
                if reserved == "skip":
                    skipped.append(describe(*u.key))
                    continue
                check_not_reserved(u.name)
            kept.append(u)
        if not kept:
            return BatchResult(skipped_reserved=tuple(skipped),
                               generation=self.generation(program, environment))
        self._init()
        with self.db.transaction() as conn:
            result = self._apply(conn, program, environment, kept)
        log.info("environment %s/%s updated: %d set, %d deleted (generation %d)", program, environment,
                 len(result.set), len(result.deleted), result.generation)
        return BatchResult(set=result.set, deleted=result.deleted, not_found=result.not_found,
                           skipped_reserved=tuple(skipped), generation=result.generation)

    def _apply(self, conn: sqlite3.Connection, program: str, environment: str,
               updates: Iterable[VariableUpdate]) -> BatchResult:
        ensure_environment(conn, program, environment)
        existing = {(r["name"], r["service"]): VariableType(r["type"]) for r in conn.execute(
            "SELECT name, service, type FROM env_variables WHERE program_id = ? AND environment_id = ?",
            (program, environment))}
        ring: KeyRing | None = None
        done_set: list[str] = []
        done_deleted: list[str] = []
        not_found: list[str] = []
        now = time.time()
        for u in updates:
            svc = _service_text(u.service)
            label = describe(u.name, u.service)
            current = existing.get((u.name, svc))
            if u.value is None:
                if current is None:
                    not_found.append(label)
                    continue
                conn.execute("DELETE FROM env_variables WHERE program_id = ? AND environment_id = ? "
                             "AND name = ? AND service = ?", (program, environment, u.name, svc))
                del existing[(u.name, svc)]
                done_deleted.append(label)
                continue
            if current is not None and current is not u.type:
                raise VariableRuleError(
                    "TYPE_CHANGE",
                    f"variable {label} of {program}/{environment} is a {current.value}; its type cannot "
                    f"change to {u.type.value}",
                    hint=f"delete it first (-d {u.name}), then set it again")
            if u.type is VariableType.SECRET:
                if ring is None:
                    ring = self._sealing_ring(conn)
                aad = crypto.associated_data(program, environment, u.service, u.name)
                sealed = crypto.seal(ring.current_key, u.value, aad)
                row: tuple[str | None, bytes | None, str | None] = (None, sealed, ring.current)
            else:
                row = (u.value, None, None)
            conn.execute(
                "INSERT INTO env_variables(program_id, environment_id, name, service, type, value, sealed,"
                " key_id, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(program_id, environment_id, name, service) DO UPDATE SET "
                "value = excluded.value, sealed = excluded.sealed, key_id = excluded.key_id, "
                "updated_at = excluded.updated_at",
                (program, environment, u.name, svc, u.type.value, *row, now))
            existing[(u.name, svc)] = u.type
            done_set.append(label)
        if len(existing) > MAX_VARIABLES_PER_ENVIRONMENT:
            raise VariableRuleError(
                "TOO_MANY_VARIABLES",
                f"environment {program}/{environment} would hold {len(existing)} variables: the limit is "
                f"{MAX_VARIABLES_PER_ENVIRONMENT}",
                hint="delete variables that are no longer used")
        if done_set or done_deleted:
            bump_generation(conn, program, environment)
        return BatchResult(set=tuple(done_set), deleted=tuple(done_deleted), not_found=tuple(not_found),
                           generation=generation(conn, program, environment))

    def _sealing_ring(self, conn: sqlite3.Connection) -> KeyRing:
        """The ring to seal with, provided it holds every key the stored secrets were sealed with:
        sealing under another key (another ``$EGRESSMAIL_MASTER_KEY``, a lost key file recreated)
        would split the store so that no single key reads it and rotation fails."""
        used = {r[0] for r in conn.execute(
            "SELECT DISTINCT key_id FROM env_variables WHERE key_id IS NOT NULL")}
        ring = self.keys.load() if used else self.keys.load_or_create()
        if ring is None:
            raise MasterKeyError(
                f"the store holds secrets but the master key {self.keys.describe()} does not exist",
                hint="restore the key file the secrets were set with (a new key could not read them)")
        missing = sorted(used - set(ring.keys))
        if missing:
            raise MasterKeyError(
                f"the store holds secrets sealed with master key {', '.join(missing)}, which "
                f"{self.keys.describe()} does not hold: sealing new ones with it would leave secrets "
                "no single key can read",
                hint="use the key file (or $EGRESSMAIL_MASTER_KEY) the secrets were set with, or delete "
                     "those secrets first")
        return ring

    def set(self, program: str, environment: str, name: str, value: str, *, secret: bool = False,
            service: Service | None = None) -> BatchResult:
        """Set one variable (or secret). See :meth:`apply` for what it raises."""
        type_ = VariableType.SECRET if secret else VariableType.STRING
        return self.apply(program, environment, [VariableUpdate(name, type_, value, service)])

    def delete(self, program: str, environment: str, names: Iterable[str],
               service: Service | None = None) -> BatchResult:
        """Delete variables by name (missing ones are reported in ``not_found``). See :meth:`apply`."""
        return self.apply(program, environment,
                          [VariableUpdate(n, VariableType.STRING, None, service) for n in names])

    def import_items(self, program: str, environment: str, text: str | bytes, *,
                     source: str = "input") -> ImportResult:
        """Apply an API-format JSON array (as :meth:`export` writes) as one batch.

        An empty value deletes; an item without a value (an exported secret) is left alone and
        named in ``without_value``.

        Raises:
            CloudManagerInputError: the text is not a JSON array.
            VariableRuleError: an item or the resulting environment breaks a rule (nothing applied).
        """
        parsed = updates_from_items(load_array(text, "json", source=source), source=source)
        if parsed.updates:
            batch = self.apply(program, environment, parsed.updates)
        else:
            batch = BatchResult(generation=self.generation(program, environment))
        return ImportResult(batch, parsed.without_value)

    # -- key rotation ------------------------------------------------------------------------

    def rotate_key(self) -> RotationResult:
        """Re-seal every secret under a fresh master key, then retire the old keys.

        Crash-safe at every step: (1) the new key is added to the key file, old keys kept; (2) all
        rows are re-sealed in one transaction (a crash rolls it back: rows stay under the old key,
        which is still in the file); (3) keys no row uses any more are retired. Running it again
        after an interruption completes the job.

        Raises:
            MasterKeyError: the key comes from ``$EGRESSMAIL_MASTER_KEY``, or a key is missing.
            SecretDecryptionError: a stored secret fails authentication (nothing is changed).
        """
        if not self.keys.can_rotate:
            raise MasterKeyError(
                f"the master key comes from {self.keys.describe()}, which egressmail cannot rotate",
                hint=f"unset ${crypto.MASTER_KEY_ENV_VAR} to use (and rotate) the key file")
        self._init()
        fresh = crypto.new_key()
        fresh_id = crypto.key_id(fresh)
        # The write lock is held from before the new key is written until the rows are re-sealed,
        # so no other writer seals a value with a key that is about to be retired.
        with self.db.transaction() as conn:
            ring = self.keys.load()
            old_keys = dict(ring.keys) if ring is not None else {}
            self.keys.write(KeyRing(current=fresh_id, keys={**old_keys, fresh_id: fresh}))
            _crash_point("after-new-key")
            rows = conn.execute("SELECT program_id, environment_id, name, service, sealed, key_id "
                                "FROM env_variables WHERE type = 'secretString'").fetchall()
            for count, r in enumerate(rows, start=1):
                what = f"{r['name']} of {r['program_id']}/{r['environment_id']}"
                key = old_keys.get(r["key_id"])
                if key is None:
                    raise MasterKeyError(f"secret {what} was sealed with master key {r['key_id']}, which "
                                         f"{self.keys.describe()} does not hold",
                                         hint="restore the key file the secrets were set with")
                aad = crypto.associated_data(r["program_id"], r["environment_id"], r["service"] or None,
                                             r["name"])
                plain = crypto.open_sealed(key, r["sealed"], aad, what=f"secret {what}")
                conn.execute("UPDATE env_variables SET sealed = ?, key_id = ? WHERE program_id = ? AND "
                             "environment_id = ? AND name = ? AND service = ?",
                             (crypto.seal(fresh, plain, aad), fresh_id, r["program_id"],
                              r["environment_id"], r["name"], r["service"]))
                del plain
                _crash_point(f"rows:{count}")
        _crash_point("before-retire")
        retired = self._retire_unused_keys()
        log.info("master key rotated to %s: %d secrets re-sealed, %d keys retired", fresh_id, len(rows),
                 len(retired))
        return RotationResult(new_key_id=fresh_id, retired_key_ids=retired, resealed=len(rows))

    def _retire_unused_keys(self) -> tuple[str, ...]:
        with self.db.transaction() as conn:
            ring = self.keys.load()
            if ring is None:
                return ()
            in_use = {r[0] for r in conn.execute("SELECT DISTINCT key_id FROM env_variables "
                                                 "WHERE key_id IS NOT NULL")}
            keep = {kid: k for kid, k in ring.keys.items() if kid == ring.current or kid in in_use}
            retired = tuple(sorted(set(ring.keys) - set(keep)))
            if retired:
                self.keys.write(KeyRing(current=ring.current, keys=keep))
            return retired


class _KeyMissing(Exception):
    def __init__(self, what: str, kid: str) -> None:
        super().__init__(what)
        self.what = what
        self.kid = kid


def placeholder_values(db: Database, program: str, environment: str, service: str | None = None, *,
                       keys: KeyProvider | None = None) -> PlaceholderValues:
    """What ``$[env:]`` and ``$[secret:]`` placeholders see for one environment and service.

    Args:
        db: the shared database.
        program: the program id.
        environment: the environment id (``e2002`` and ``2002`` are the same).
        service: ``author``, ``publish``, ``preview``, or ``None`` for all-service variables only.
        keys: the master key's provider (default: ``$EGRESSMAIL_MASTER_KEY`` or the home's key file).

    Raises:
        NotFoundError: the program or environment does not exist (the message names it).
        VariableRuleError: ``service`` is not a known service.
        MasterKeyError: the key that sealed a secret is not available.
        SecretDecryptionError: a stored secret fails authentication.
    """
    from egressmail.environments.model import parse_service

    return EnvironmentStore(db, keys).secret_values(program, environment, parse_service(service))
