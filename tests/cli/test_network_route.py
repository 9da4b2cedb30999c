"""`egressmail network route` and the help texts, through the real command line."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_network_cli import fails, given_infrastructure, ok
from tests.conftest import run_cli


def test_route_explains_the_gateways_decision(home: Path) -> None:
    given_infrastructure(home, "dedicatedEgressIp")
    ok("enable", "1001", "2002", "--json-stdin", home=home, input=json.dumps({
        "portForwards": [{"name": "smtp.sendgrid.com", "portDest": 465, "portOrig": 30002}],
        "nonProxyHosts": ["*.example.com"]}))
    assert ok("route", "1001", "2002", "30002", home=home).strip() == (
        "allowed: proxy.tunnel:30002 → smtp.sendgrid.com:465 (rule portOrig 30002), "
        "from the dedicated egress address")
    assert "from the shared egress address" in ok("route", "1001", "2002", "cdn.example.com:443", home=home)
    for target, code in [("30003", "no-forward"), ("cdn.example.com:8443", "port-not-allowed"),
                         ("smtp.sendgrid.com:465", "non-http-port"), ("[::1]:443", "private-address")]:
        result = run_cli("network", "route", "1001", "2002", target, home=home)
        assert result.returncode == 1, target
        assert result.stdout.startswith(f"refused ({code}): "), result.stdout
    assert "TARGET" in fails("route", "1001", "2002", "nowhere", home=home, code=2)


def test_help_teaches_with_examples() -> None:
    for command in ("create", "delete", "enable", "disable", "show", "list", "route"):
        result = run_cli("network", command, "--help")
        assert result.returncode == 0
        assert "egressmail network " + command in result.stdout, command
    assert "flexiblePortEgress" in run_cli("network", "create", "--help").stdout


def test_route_refuses_a_target_that_only_looks_numeric(home: Path) -> None:
    # "²".isdigit() is True but int("²") raises, and int() refuses thousands of digits.
    given_infrastructure(home)
    for target in ("\u00b2", "1" * 5000, "api.example.com:\u00b2", "api.example.com:" + "4" * 5000):
        assert "TARGET" in fails("route", "1001", "2002", target, home=home, code=2), target
