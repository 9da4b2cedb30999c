"""`egressmail network …` through the real command line (a subprocess per call)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from egressmail.networking import NetworkStore, PortForward
from egressmail.storage import Database
from tests.conftest import SEED_NETWORKING, run_cli


def ok(*args: str, home: Path, input: str | None = None) -> str:
    result = run_cli("network", *args, home=home, input=input)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def given_infrastructure(home: Path, kind: str = "flexiblePortEgress") -> None:
    """Set up in-process (fast); the create command itself is tested through the CLI below."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    NetworkStore(Database(home)).create_infrastructure("1001", kind)


def fails(*args: str, home: Path, code: int, input: str | None = None) -> str:
    result = run_cli("network", *args, home=home, input=input)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stderr


def test_seed_example_is_accepted_as_is(home: Path) -> None:
    assert "flexiblePortEgress" in ok("create", "1001", "--kind", "flexiblePortEgress", home=home)
    out = ok("enable", "1001", "e2002", "--json-file", str(SEED_NETWORKING), home=home)
    assert "enabled advanced networking for environment 2002 of program 1001" in out
    assert "proxy.tunnel:30002 → smtp.sendgrid.com:465" in out
    # What the gateway will read, from the same home folder.
    egress = NetworkStore(Database(home)).egress_map("1001", "2002")
    assert egress.forward_for(30002) == PortForward("smtp.sendgrid.com", 465, 30002)


def test_enable_without_infrastructure_says_how_to_create_one(home: Path) -> None:
    err = fails("enable", "1001", "2002", "--json-file", str(SEED_NETWORKING), home=home, code=2)
    assert "error: program '1001' has no network infrastructure" in err
    assert "hint: create one first: `egressmail network create 1001 --kind flexiblePortEgress`" in err


@pytest.mark.parametrize(("payload", "message"), [
    ('{"portForwards": [{"name": "smtp.sendgrid.com", "portDest": 465, "portOrig": 29999}]}',
     "error: portForwards[0].portOrig: 29999 is outside 30000–30999"),
    ('{"portForwards": [{"name": "smtp.sendgrid.com", "portDest": true, "portOrig": 30002}]}',
     "error: portForwards[0].portDest: expected an integer, got boolean true"),
    ('{"portForward": []}', 'error: payload: unknown key "portForward"'),
    ('{"nonProxyHosts": ["example.com"]}',
     "error: nonProxyHosts: not available with kind flexiblePortEgress"),
    ('{"portForwards": [', "error: <stdin>: not valid JSON at line 1 column 19"),
])
def test_bad_payloads_exit_3_naming_the_field(home: Path, payload: str, message: str) -> None:
    given_infrastructure(home)
    err = fails("enable", "1001", "2002", "--json-stdin", home=home, code=3, input=payload)
    assert message in err


def test_stdin_dash_show_json_round_trip_and_disable(home: Path, tmp_path: Path) -> None:
    ok("create", "1001", "--kind", "dedicatedEgressIp", "--region", "va7", home=home)
    payload = {"portForwards": [{"name": "smtp.sendgrid.net", "portDest": 587, "portOrig": 30587}],
               "nonProxyHosts": ["*.example.com"]}
    ok("enable", "1001", "2002", "--json-file", "-", home=home, input=json.dumps(payload))
    shown = json.loads(ok("show", "1001", "2002", "--json", home=home))
    assert shown["infrastructure"] == {"kind": "dedicatedEgressIp", "region": "va7", "status": "ready"}
    assert shown["enabled"] is True and shown["networking"] == payload
    # The shown payload is accepted back as is (here replacing with the same rules).
    again = tmp_path / "again.json"
    again.write_text(json.dumps(shown["networking"]))
    ok("enable", "1001", "2002", "--json-file", str(again), home=home)
    human = ok("show", "1001", "2002", home=home)
    assert "infrastructure: dedicatedEgressIp (region va7, ready)" in human
    assert "proxy.tunnel:30587 → smtp.sendgrid.net:587" in human
    assert "nonProxyHosts: *.example.com" in human

    assert "disabled advanced networking" in ok("disable", "1001", "2002", home=home)
    assert "advanced networking: disabled" in ok("show", "1001", "2002", home=home)
    assert json.loads(ok("show", "1001", "2002", "--json", home=home))["networking"] is None
    err = fails("disable", "1001", "2002", home=home, code=2)
    assert "error: advanced networking is not enabled for environment '2002' of program '1001'" in err


def test_empty_object_enables_with_no_rules(home: Path) -> None:
    given_infrastructure(home)
    out = ok("enable", "1001", "2002", "--json-stdin", home=home, input="{}")
    assert "port forwards: none" in out
    assert json.loads(ok("show", "1001", "2002", "--json", home=home))["networking"] == {
        "portForwards": [], "nonProxyHosts": []}


def test_infrastructure_cannot_be_edited_nor_deleted_while_in_use(home: Path) -> None:
    ok("create", "1001", "--kind", "flexiblePortEgress", home=home)
    err = fails("create", "1001", "--kind", "dedicatedEgressIp", home=home, code=1)
    assert "already has a flexiblePortEgress network infrastructure" in err
    ok("enable", "1001", "2002", "--json-file", str(SEED_NETWORKING), home=home)
    err = fails("delete", "1001", home=home, code=1)
    assert "still has advanced networking enabled in 1 environment(s): 2002" in err
    assert "hint: disable them first, e.g. `egressmail network disable 1001 2002`" in err
    ok("disable", "1001", "2002", home=home)
    assert "deleted" in ok("delete", "1001", home=home)
    assert "dedicatedEgressIp" in ok("create", "1001", "--kind", "dedicatedEgressIp", home=home)
