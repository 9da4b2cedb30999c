"""`egressmail network create` options, `list` and usage errors, through the real command line."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_network_cli import fails, ok
from tests.conftest import SEED_NETWORKING


def test_list_shows_infrastructure_and_each_environment(home: Path) -> None:
    err = fails("list", "1001", home=home, code=2)
    assert "error: program '1001' does not exist" in err
    ok("create", "1001", "--kind", "flexiblePortEgress", home=home)
    assert "no environments" in ok("list", "1001", home=home)
    ok("enable", "1001", "2002", "--json-file", str(SEED_NETWORKING), home=home)
    ok("enable", "1001", "2003", "--json-stdin", home=home, input="{}")
    ok("disable", "1001", "2003", home=home)
    out = ok("list", "1001", home=home)
    assert "program 1001: flexiblePortEgress (region local, ready)" in out
    assert "2002: enabled; port forwards: 30002→smtp.sendgrid.com:465; nonProxyHosts: 0" in out
    assert "2003: disabled" in out
    data = json.loads(ok("list", "1001", "--json", home=home))
    assert [(e["environment"], e["enabled"]) for e in data["environments"]] == [
        ("2002", True), ("2003", False)]


def test_usage_errors(home: Path) -> None:
    err = fails("enable", "1001", "2002", home=home, code=2)
    assert "exactly one of --json-file FILE or --json-stdin" in err
    err = fails("enable", "1001", "2002", "--json-file", str(home / "missing.json"), home=home, code=2)
    assert "missing.json" in err
    err = fails("show", "1001", "2002", home=home, code=2)
    assert "error: program '1001' does not exist" in err
    err = fails("create", "not a program", "--kind", "vpn", home=home, code=3)
    assert "invalid program id" in err


def test_create_checks_kind_and_vpn_settings(home: Path) -> None:
    err = fails("create", "1001", "--kind", "flexibleportegress", home=home, code=3)
    assert "error: kind: \"flexibleportegress\" is not a kind" in err
    assert "hint: did you mean 'flexiblePortEgress'?" in err
    err = fails("create", "1001", "--kind", "vpn", home=home, code=3)
    assert "error: addressSpace: a vpn needs at least one CIDR" in err
    err = fails("create", "1001", "--kind", "vpn", "--address-space", "10.0.0.1/8", home=home, code=3)
    assert "error: addressSpace[0]:" in err and "hint: did you mean 10.0.0.0/8?" in err
    err = fails("create", "1001", "--kind", "flexiblePortEgress", "--dns", "10.0.0.2", home=home, code=3)
    assert "error: dns: only kind vpn has DNS servers" in err
    out = ok("create", "1001", "--kind", "vpn", "--address-space", "10.20.0.0/16,10.30.0.0/16",
             "--address-space", "fd20::/64", "--dns", "10.20.0.2", "--json", home=home)
    assert json.loads(out) == {"kind": "vpn", "region": "local", "status": "ready",
                               "addressSpace": ["10.20.0.0/16", "10.30.0.0/16", "fd20::/64"],
                               "dns": ["10.20.0.2"]}
