"""The networking store on a real SQLite file: transactions, replace semantics, generations, errors."""

from __future__ import annotations

import ipaddress
import json
import sqlite3
import threading
from pathlib import Path

import pytest

from egressmail.errors import NotFoundError, StoreError, ValidationError
from egressmail.networking import (
    EnvironmentNetworking,
    InfrastructureExists,
    InfrastructureInUse,
    InfrastructureNotFound,
    InvalidInfrastructure,
    InvalidNetworkingPayload,
    Kind,
    NetworkingNotEnabled,
    NetworkStore,
    PortForward,
    load_egress_map,
)
from egressmail.storage import Database
from egressmail.storage.sqlite import ensure_environment
from tests.conftest import SEED_NETWORKING

SEED = json.loads(SEED_NETWORKING.read_text())


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(tmp_path / "egressmail.db")


@pytest.fixture
def store(db: Database) -> NetworkStore:
    return NetworkStore(db)


def test_seed_payload_round_trip(store: NetworkStore, db: Database) -> None:
    infra = store.create_infrastructure("1001", "flexiblePortEgress")
    assert infra.kind is Kind.FLEXIBLE_PORT_EGRESS and infra.status == "ready"
    networking = store.enable("1001", "2002", SEED)
    assert networking.port_forwards == (PortForward("smtp.sendgrid.com", 465, 30002),)
    # A second process (a fresh Database object) reads the same map.
    egress = load_egress_map(Database(db.path), "1001", "e2002")
    assert egress.environment == "2002"
    assert egress.infrastructure == infra
    assert egress.networking == networking
    assert egress.forward_for(30002) == PortForward("smtp.sendgrid.com", 465, 30002)
    assert egress.generation >= 1


def test_unknown_program_gives_an_empty_map(store: NetworkStore) -> None:
    egress = store.egress_map("nobody", "nowhere")
    assert (egress.infrastructure, egress.networking, egress.generation) == (None, None, 0)
    assert not egress.is_enabled and egress.port_forwards == ()


def test_enabling_needs_an_infrastructure(store: NetworkStore) -> None:
    with pytest.raises(InfrastructureNotFound) as info:
        store.enable("1001", "2002", SEED)
    assert isinstance(info.value, NotFoundError)
    assert "program '1001' has no network infrastructure" in str(info.value)
    assert info.value.hint is not None
    assert "egressmail network create 1001 --kind flexiblePortEgress" in info.value.hint


def test_each_enable_replaces_the_whole_configuration(store: NetworkStore) -> None:
    store.create_infrastructure("1001", Kind.DEDICATED_EGRESS_IP)
    store.enable("1001", "2002", {"portForwards": [
        {"name": "smtp.sendgrid.net", "portDest": 465, "portOrig": 30465},
        {"name": "smtp.sendgrid.net", "portDest": 587, "portOrig": 30587}],
        "nonProxyHosts": ["*.example.com"]})
    store.enable("1001", "2002", {"portForwards": [
        {"name": "smtp.office365.com", "portDest": 587, "portOrig": 30465}]})
    egress = store.egress_map("1001", "2002")
    assert egress.networking == EnvironmentNetworking(
        port_forwards=(PortForward("smtp.office365.com", 587, 30465),), non_proxy_hosts=())
    assert egress.forward_for(30587) is None
    store.enable("1001", "2002", {})
    egress = store.egress_map("1001", "2002")
    assert egress.is_enabled and egress.networking == EnvironmentNetworking()


def test_a_rejected_payload_leaves_the_previous_rules(store: NetworkStore) -> None:
    store.create_infrastructure("1001", "flexiblePortEgress")
    store.enable("1001", "2002", SEED)
    before = store.egress_map("1001", "2002")
    with pytest.raises(InvalidNetworkingPayload, match=r"portForwards\[0\]\.portOrig: 29999"):
        store.enable("1001", "2002", {"portForwards": [{"name": "a", "portDest": 1, "portOrig": 29999}]})
    with pytest.raises(InvalidNetworkingPayload, match="nonProxyHosts: not available with kind"):
        store.enable("1001", "2002", {"nonProxyHosts": ["example.com"]})
    assert store.egress_map("1001", "2002") == before
    assert store.egress_map("1001", "2002").generation == before.generation


def test_generation_moves_on_every_change(store: NetworkStore, db: Database) -> None:
    with db.transaction() as conn:
        ensure_environment(conn, "1001", "2002")
        ensure_environment(conn, "1001", "2003")
    gens = []

    def snap() -> tuple[int, int]:
        return store.egress_map("1001", "2002").generation, store.egress_map("1001", "2003").generation

    gens.append(snap())
    store.create_infrastructure("1001", "flexiblePortEgress")  # every environment of the program
    gens.append(snap())
    store.enable("1001", "2002", SEED)  # that environment only
    gens.append(snap())
    store.enable("1001", "2002", SEED)  # even an identical replace: the gateway re-reads cheaply
    gens.append(snap())
    store.disable("1001", "2002")
    gens.append(snap())
    store.delete_infrastructure("1001")
    gens.append(snap())
    assert gens == [(0, 0), (1, 1), (2, 1), (3, 1), (4, 1), (5, 2)]


def test_one_infrastructure_per_program(store: NetworkStore) -> None:
    store.create_infrastructure("1001", "dedicatedEgressIp", region="va7")
    with pytest.raises(InfrastructureExists) as info:
        store.create_infrastructure("1001", "flexiblePortEgress")
    assert "already has a dedicatedEgressIp network infrastructure (region va7)" in str(info.value)
    assert info.value.hint is not None and "network delete 1001" in info.value.hint
    assert store.infrastructure("1001") is not None
    assert store.infrastructure("1001").kind is Kind.DEDICATED_EGRESS_IP  # type: ignore[union-attr]


def test_delete_needs_every_environment_disabled(store: NetworkStore) -> None:
    store.create_infrastructure("1001", "flexiblePortEgress")
    store.enable("1001", "2002", SEED)
    store.enable("1001", "2003", {})
    with pytest.raises(InfrastructureInUse) as info:
        store.delete_infrastructure("1001")
    assert info.value.environments == ("2002", "2003")
    assert "2 environment(s): 2002, 2003" in str(info.value)
    assert info.value.hint == "disable them first, e.g. `egressmail network disable 1001 2002`"
    store.disable("1001", "2002")
    store.disable("1001", "2003")
    store.delete_infrastructure("1001")
    assert store.infrastructure("1001") is None
    with pytest.raises(InfrastructureNotFound):
        store.delete_infrastructure("1001")
    # ... and it can be created again, with another kind.
    assert store.create_infrastructure("1001", "vpn", address_space=["10.0.0.0/8"]).kind is Kind.VPN


def test_disable_errors(store: NetworkStore) -> None:
    with pytest.raises(NotFoundError, match="program '1001' does not exist"):
        store.disable("1001", "2002")
    store.create_infrastructure("1001", "flexiblePortEgress")
    with pytest.raises(NotFoundError, match="environment '2002' of program '1001' does not exist"):
        store.disable("1001", "2002")
    store.enable("1001", "2002", SEED)
    store.disable("1001", "e2002")
    with pytest.raises(NetworkingNotEnabled, match="not enabled for environment '2002'"):
        store.disable("1001", "2002")
    assert store.egress_map("1001", "2002").networking is None


def test_vpn_infrastructure_round_trip(store: NetworkStore) -> None:
    store.create_infrastructure("1001", "vpn", region="va7", address_space=["10.20.0.0/16", "fd20::/64"],
                                dns=["10.20.0.2"])
    store.enable("1001", "2002", {"nonProxyHosts": ["*.example.com"]})
    infra = store.egress_map("1001", "2002").infrastructure
    assert infra is not None
    assert infra.address_space == (ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("fd20::/64"))
    assert infra.dns == ("10.20.0.2",)
    assert infra.region == "va7"


def test_bad_input_is_refused_before_writing(store: NetworkStore, db: Database) -> None:
    with pytest.raises(InvalidInfrastructure, match="kind"):
        store.create_infrastructure("1001", "fast")
    with pytest.raises(ValidationError, match="invalid program id"):
        store.create_infrastructure("bad id!", "vpn", address_space=["10.0.0.0/8"])
    with pytest.raises(ValidationError, match="invalid environment id"):
        store.egress_map("1001", "")
    with pytest.raises(NotFoundError):
        store.environments("1001")  # nothing was written


def test_environments_lists_enabled_and_disabled(store: NetworkStore, db: Database) -> None:
    store.create_infrastructure("1001", "flexiblePortEgress")
    with db.transaction() as conn:
        ensure_environment(conn, "1001", "2001")
    store.enable("1001", "2002", SEED)
    assert store.environments("1001") == [
        ("2001", None),
        ("2002", EnvironmentNetworking(port_forwards=(PortForward("smtp.sendgrid.com", 465, 30002),))),
    ]


def test_a_tampered_row_fails_closed(store: NetworkStore, db: Database) -> None:
    store.create_infrastructure("1001", "flexiblePortEgress")
    store.enable("1001", "2002", SEED)
    conn = sqlite3.connect(db.path)
    conn.execute("UPDATE network_port_forwards SET name = 'smtp.sendgrid.com\r\nEVIL'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="stored networking of environment '2002'"):
        load_egress_map(db, "1001", "2002")


def test_the_database_enforces_unique_ports_too(store: NetworkStore, db: Database) -> None:
    store.create_infrastructure("1001", "flexiblePortEgress")
    store.enable("1001", "2002", SEED)
    conn = sqlite3.connect(db.path)
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO network_port_forwards VALUES ('1001', '2002', 1, 'a', 25, 30002)")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO network_port_forwards VALUES ('1001', '2002', 1, 'a', 25, 29999)")
    conn.close()


def test_concurrent_writers_queue_instead_of_failing(db: Database) -> None:
    NetworkStore(db).create_infrastructure("1001", "flexiblePortEgress")
    errors: list[BaseException] = []

    def writer(env: str) -> None:
        store = NetworkStore(Database(db.path))  # its own connections, like another process
        try:
            for i in range(5):
                store.enable("1001", env, {"portForwards": [
                    {"name": "smtp.sendgrid.com", "portDest": 465, "portOrig": 30000 + i}]})
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"20{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    for n in range(4):
        egress = load_egress_map(db, "1001", f"20{n}")
        assert egress.generation == 5  # one per enable (the environments did not exist at create)
        assert [f.port_orig for f in egress.port_forwards] == [30004]
