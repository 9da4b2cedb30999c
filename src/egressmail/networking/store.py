"""Advanced-networking rules in the shared SQLite database.

Tables (created on first use, next to the shared ``programs``/``environments``)::

    network_infrastructures(program_id PK, kind, region, address_space JSON, dns JSON, status, created_at)
    network_environments(program_id, environment_id, enabled_at)         -- a row = networking enabled
    network_port_forwards(program_id, environment_id, position, name, port_dest, port_orig)
    network_non_proxy_hosts(program_id, environment_id, position, pattern)

Rules are rows, not a JSON blob, so the database itself enforces what a concurrent writer could break
(one infrastructure per program, unique ``portOrig`` per environment, port ranges). Every write is one
``BEGIN IMMEDIATE`` transaction that also bumps the ``generation`` of each environment it affects: a
running gateway compares that one integer to notice a rule change, then reloads the
:class:`~egressmail.networking.model.EgressMap` with :func:`load_egress_map`.

Locally there is no provisioning delay: an infrastructure is ``ready`` and an enabled configuration
applies as soon as the transaction commits (the platform answers ``creating``/``updating`` first).
"""

from __future__ import annotations

import json
import sqlite3
import time
import weakref
from collections.abc import Mapping, Sequence

from egressmail.errors import NetworkingError, NotFoundError, StoreError
from egressmail.networking.errors import (
    InfrastructureExists,
    InfrastructureInUse,
    InfrastructureNotFound,
    NetworkingNotEnabled,
)
from egressmail.networking.model import EgressMap, EnvironmentNetworking, Infrastructure, Kind
from egressmail.networking.validation import (
    infrastructure_to_dict,
    networking_to_payload,
    parse_infrastructure,
    parse_networking_payload,
)
from egressmail.storage.ids import normalize_environment_id, normalize_program_id
from egressmail.storage.sqlite import (
    Database,
    bump_generation,
    ensure_environment,
    ensure_program,
    generation,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS network_infrastructures (
    program_id     TEXT PRIMARY KEY REFERENCES programs(program_id) ON DELETE CASCADE,
    kind           TEXT NOT NULL CHECK (kind IN ('flexiblePortEgress', 'dedicatedEgressIp', 'vpn')),
    region         TEXT NOT NULL,
    address_space  TEXT NOT NULL DEFAULT '[]',
    dns            TEXT NOT NULL DEFAULT '[]',
    status         TEXT NOT NULL DEFAULT 'ready',
    created_at     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS network_environments (
    program_id     TEXT NOT NULL,
    environment_id TEXT NOT NULL,
    enabled_at     REAL NOT NULL,
    PRIMARY KEY (program_id, environment_id),
    FOREIGN KEY (program_id, environment_id)
        REFERENCES environments(program_id, environment_id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS network_port_forwards (
    program_id     TEXT NOT NULL,
    environment_id TEXT NOT NULL,
    position       INTEGER NOT NULL,
    name           TEXT NOT NULL,
    port_dest      INTEGER NOT NULL CHECK (port_dest BETWEEN 1 AND 65535),
    port_orig      INTEGER NOT NULL CHECK (port_orig BETWEEN 30000 AND 30999),
    PRIMARY KEY (program_id, environment_id, port_orig),
    FOREIGN KEY (program_id, environment_id)
        REFERENCES network_environments(program_id, environment_id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS network_non_proxy_hosts (
    program_id     TEXT NOT NULL,
    environment_id TEXT NOT NULL,
    position       INTEGER NOT NULL,
    pattern        TEXT NOT NULL,
    PRIMARY KEY (program_id, environment_id, position),
    FOREIGN KEY (program_id, environment_id)
        REFERENCES network_environments(program_id, environment_id) ON DELETE CASCADE
);
"""

# Databases whose networking tables exist already (executescript() commits, so it cannot run inside a
# transaction: it runs once per Database object, before the first one).
_schema_ready: weakref.WeakSet[Database] = weakref.WeakSet()


def _ensure_schema(db: Database) -> None:
    if db in _schema_ready:
        return
    conn = db.connect()
    try:
        conn.executescript(_SCHEMA)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot create the networking tables in {db.path}: {exc}") from exc
    finally:
        conn.close()
    _schema_ready.add(db)


def _no_infrastructure(program: str) -> InfrastructureNotFound:
    return InfrastructureNotFound(
        f"program {program!r} has no network infrastructure",
        hint=f"create one first: `egressmail network create {program} --kind flexiblePortEgress`")


def _read_infrastructure(conn: sqlite3.Connection, program: str) -> Infrastructure | None:
    row = conn.execute(
        "SELECT kind, region, address_space, dns, status FROM network_infrastructures "
        "WHERE program_id = ?", (program,)).fetchone()
    if row is None:
        return None
    try:
        infra = parse_infrastructure(row["kind"], region=row["region"],
                                     address_space=json.loads(row["address_space"]),
                                     dns=json.loads(row["dns"]))
    except (ValueError, TypeError, NetworkingError) as exc:
        raise StoreError(f"the stored infrastructure of program {program!r} is invalid: {exc}",
                         hint=f"delete and recreate it: `egressmail network delete {program}`") from exc
    return Infrastructure(kind=infra.kind, region=infra.region, address_space=infra.address_space,
                          dns=infra.dns, status=str(row["status"]))


def _read_networking(conn: sqlite3.Connection, program: str, environment: str,
                     kind: Kind | None) -> EnvironmentNetworking | None:
    enabled = conn.execute(
        "SELECT 1 FROM network_environments WHERE program_id = ? AND environment_id = ?",
        (program, environment)).fetchone()
    if enabled is None:
        return None
    forwards = conn.execute(
        "SELECT name, port_dest, port_orig FROM network_port_forwards "
        "WHERE program_id = ? AND environment_id = ? ORDER BY position", (program, environment)).fetchall()
    patterns = conn.execute(
        "SELECT pattern FROM network_non_proxy_hosts "
        "WHERE program_id = ? AND environment_id = ? ORDER BY position", (program, environment)).fetchall()
    payload = {
        "portForwards": [{"name": r["name"], "portDest": r["port_dest"], "portOrig": r["port_orig"]}
                         for r in forwards],
        "nonProxyHosts": [r["pattern"] for r in patterns],
    }
    # Checked again on the way out: a gateway must fail closed on a row edited behind our back.
    try:
        return parse_networking_payload(payload, kind=kind)
    except NetworkingError as exc:
        raise StoreError(f"the stored networking of environment {environment!r} of program {program!r} "
                         f"is invalid: {exc}",
                         hint=f"enable it again: `egressmail network enable {program} {environment} "
                              "--json-file FILE`") from exc


def _enabled_environments(conn: sqlite3.Connection, program: str) -> tuple[str, ...]:
    rows = conn.execute("SELECT environment_id FROM network_environments WHERE program_id = ? "
                        "ORDER BY environment_id", (program,)).fetchall()
    return tuple(str(r[0]) for r in rows)


def _bump_program(conn: sqlite3.Connection, program: str) -> None:
    # The kind changes every environment's egress map (the HTTP proxy's routing), enabled or not.
    conn.execute("UPDATE environments SET generation = generation + 1 WHERE program_id = ?", (program,))


class NetworkStore:
    """Program infrastructures and environment networking, in the shared database.

    Program and environment ids are normalized like everywhere else (``e2002`` is ``2002``).
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    def __repr__(self) -> str:
        return f"NetworkStore({self.db!r})"

    def create_infrastructure(self, program: str, kind: Kind | str, *, region: str = "local",
                              address_space: Sequence[str] = (), dns: Sequence[str] = ()) -> Infrastructure:
        """Create the program's network infrastructure (one per program), creating the program if needed.

        Raises:
            ValidationError: the program id is malformed.
            InvalidInfrastructure: a bad kind, region, CIDR or DNS address (naming the field).
            InfrastructureExists: the program already has one (flexible and dedicated infrastructures
                cannot be edited: delete it, after disabling every environment, and create it again).
        """
        program = normalize_program_id(program)
        infra = parse_infrastructure(kind, region=region, address_space=address_space, dns=dns)
        _ensure_schema(self.db)
        with self.db.transaction() as conn:
            existing = _read_infrastructure(conn, program)
            if existing is not None:
                raise InfrastructureExists(
                    f"program {program!r} already has a {existing.kind.value} network infrastructure "
                    f"(region {existing.region}); it cannot be edited",
                    program=program,
                    hint=f"disable every environment, then `egressmail network delete {program}` and "
                         "create it again")
            ensure_program(conn, program)
            conn.execute(
                "INSERT INTO network_infrastructures(program_id, kind, region, address_space, dns, status, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (program, infra.kind.value, infra.region,
                 json.dumps([str(n) for n in infra.address_space]), json.dumps(list(infra.dns)),
                 infra.status, time.time()))
            _bump_program(conn, program)
        return infra

    def delete_infrastructure(self, program: str) -> None:
        """Delete the program's network infrastructure.

        Raises:
            ValidationError: the program id is malformed.
            InfrastructureNotFound: the program has none.
            InfrastructureInUse: some environments still have networking enabled (listed).
        """
        program = normalize_program_id(program)
        _ensure_schema(self.db)
        with self.db.transaction() as conn:
            if _read_infrastructure(conn, program) is None:
                raise _no_infrastructure(program)
            if in_use := _enabled_environments(conn, program):
                first = in_use[0]
                raise InfrastructureInUse(
                    f"program {program!r} still has advanced networking enabled in "
                    f"{len(in_use)} environment(s): {', '.join(in_use)}",
                    program=program, environments=in_use,
                    hint=f"disable them first, e.g. `egressmail network disable {program} {first}`")
            conn.execute("DELETE FROM network_infrastructures WHERE program_id = ?", (program,))
            _bump_program(conn, program)

    def enable(self, program: str, environment: str,
               payload: Mapping[str, object] | object) -> EnvironmentNetworking:
        """Enable advanced networking for an environment, replacing its whole configuration.

        ``payload`` is the API's decoded JSON (anything: a non-object is refused with a clear error).
        ``{}`` enables it with no rules. The environment is created if it does not exist yet.

        Raises:
            ValidationError: a malformed program or environment id.
            InfrastructureNotFound: the program has no infrastructure (create one first).
            InvalidNetworkingPayload: the payload breaks a rule (naming the field).
        """
        program = normalize_program_id(program)
        environment = normalize_environment_id(environment)
        _ensure_schema(self.db)
        with self.db.transaction() as conn:
            infra = _read_infrastructure(conn, program)
            if infra is None:
                raise _no_infrastructure(program)
            networking = parse_networking_payload(payload, kind=infra.kind)
            ensure_environment(conn, program, environment)
            key = (program, environment)
            conn.execute("DELETE FROM network_environments WHERE program_id = ? AND environment_id = ?", key)
            conn.execute("INSERT INTO network_environments(program_id, environment_id, enabled_at) "
                         "VALUES (?, ?, ?)", (*key, time.time()))
            conn.executemany(
                "INSERT INTO network_port_forwards(program_id, environment_id, position, name, port_dest, "
                "port_orig) VALUES (?, ?, ?, ?, ?, ?)",
                [(*key, i, f.name, f.port_dest, f.port_orig) for i, f in enumerate(networking.port_forwards)])
            conn.executemany(
                "INSERT INTO network_non_proxy_hosts(program_id, environment_id, position, pattern) "
                "VALUES (?, ?, ?, ?)",
                [(*key, i, p) for i, p in enumerate(networking.non_proxy_hosts)])
            bump_generation(conn, program, environment)
        return networking

    def disable(self, program: str, environment: str) -> None:
        """Disable advanced networking for an environment (its rules are removed).

        Raises:
            ValidationError: a malformed program or environment id.
            NotFoundError: the program or environment does not exist.
            NetworkingNotEnabled: the environment has no networking enabled.
        """
        program = normalize_program_id(program)
        environment = normalize_environment_id(environment)
        _ensure_schema(self.db)
        with self.db.transaction() as conn:
            self._require_environment(conn, program, environment)
            cur = conn.execute("DELETE FROM network_environments WHERE program_id = ? AND environment_id = ?",
                               (program, environment))
            if cur.rowcount == 0:
                raise NetworkingNotEnabled(
                    f"advanced networking is not enabled for environment {environment!r} "
                    f"of program {program!r}", hint="nothing to disable")
            bump_generation(conn, program, environment)

    def egress_map(self, program: str, environment: str) -> EgressMap:
        """Everything that decides what may leave the environment (a consistent snapshot).

        A program or environment that does not exist yields a map with no infrastructure and no
        networking (deny-by-default), not an error, so a gateway can start before any rule exists.

        Raises:
            ValidationError: a malformed program or environment id.
            StoreError: the stored rules are unreadable (fail closed).
        """
        program = normalize_program_id(program)
        environment = normalize_environment_id(environment)
        _ensure_schema(self.db)
        with self.db.reading() as conn:
            infra = _read_infrastructure(conn, program)
            networking = _read_networking(conn, program, environment, infra.kind if infra else None)
            gen = generation(conn, program, environment)
        return EgressMap(program=program, environment=environment, infrastructure=infra,
                         networking=networking, generation=gen)

    def infrastructure(self, program: str) -> Infrastructure | None:
        """The program's infrastructure, or ``None``.

        Raises:
            ValidationError: a malformed program id.
        """
        program = normalize_program_id(program)
        _ensure_schema(self.db)
        with self.db.reading() as conn:
            return _read_infrastructure(conn, program)

    def describe(self, program: str, environment: str) -> EgressMap:
        """Like :meth:`egress_map`, but for a user asking about a specific environment.

        Raises:
            ValidationError: a malformed program or environment id.
            NotFoundError: the program or the environment does not exist (likely a typo).
        """
        program = normalize_program_id(program)
        environment = normalize_environment_id(environment)
        _ensure_schema(self.db)
        with self.db.reading() as conn:
            self._require_environment(conn, program, environment)
        return self.egress_map(program, environment)

    def environments(self, program: str) -> list[tuple[str, EnvironmentNetworking | None]]:
        """Every environment of the program with its networking (``None`` = disabled), sorted by id.

        Raises:
            ValidationError: a malformed program id.
            NotFoundError: the program does not exist.
        """
        program = normalize_program_id(program)
        _ensure_schema(self.db)
        with self.db.reading() as conn:
            self._require_program(conn, program)
            infra = _read_infrastructure(conn, program)
            ids = [str(r[0]) for r in conn.execute(
                "SELECT environment_id FROM environments WHERE program_id = ? ORDER BY environment_id",
                (program,)).fetchall()]
            return [(e, _read_networking(conn, program, e, infra.kind if infra else None)) for e in ids]

    @staticmethod
    def _require_program(conn: sqlite3.Connection, program: str) -> None:
        if conn.execute("SELECT 1 FROM programs WHERE program_id = ?", (program,)).fetchone() is None:
            raise NotFoundError(f"program {program!r} does not exist",
                                hint=f"create its network infrastructure with `egressmail network create "
                                     f"{program} --kind flexiblePortEgress`")

    @classmethod
    def _require_environment(cls, conn: sqlite3.Connection, program: str, environment: str) -> None:
        cls._require_program(conn, program)
        row = conn.execute("SELECT 1 FROM environments WHERE program_id = ? AND environment_id = ?",
                           (program, environment)).fetchone()
        if row is None:
            raise NotFoundError(
                f"environment {environment!r} of program {program!r} does not exist",
                hint=f"check the ids with `egressmail network list {program}`; networking is enabled with "
                     f"`egressmail network enable {program} {environment} --json-file FILE`")


def load_egress_map(db: Database, program: str, environment: str) -> EgressMap:
    """The environment's egress map (see :meth:`NetworkStore.egress_map`).

    Raises:
        ValidationError: a malformed program or environment id.
        StoreError: the stored rules are unreadable (fail closed).
    """
    return NetworkStore(db).egress_map(program, environment)


def egress_map_to_dict(egress: EgressMap) -> dict[str, object]:
    """A JSON-ready view of an egress map (for ``--json`` output and logs; holds no secrets)."""
    return {
        "program": egress.program,
        "environment": egress.environment,
        "generation": egress.generation,
        "infrastructure": infrastructure_to_dict(egress.infrastructure) if egress.infrastructure else None,
        "enabled": egress.networking is not None,
        "networking": networking_to_payload(egress.networking) if egress.networking is not None else None,
    }

