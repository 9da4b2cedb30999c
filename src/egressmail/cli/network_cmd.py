"""`egressmail network`: advanced networking (kinds, portForwards, nonProxyHosts).

Parsing and printing only: every command calls one method of
:class:`~egressmail.networking.store.NetworkStore`, whose errors ``main.py`` turns into
``error:``/``hint:`` lines and an exit code.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from typing import IO

import click

from egressmail.cli.context import AppContext, pass_app
from egressmail.cli.output import stdout
from egressmail.networking.model import EgressMap, EnvironmentNetworking, Infrastructure, Kind
from egressmail.networking.routing import Allowed, Refused, WayIn, check_resolved_address, decide
from egressmail.networking.store import NetworkStore, egress_map_to_dict
from egressmail.networking.validation import (
    decode_payload_json,
    infrastructure_to_dict,
    networking_to_payload,
)

PROXY_HOST = "proxy.tunnel"  # what AEM_PROXY_HOST points at (spec: networking.md)
_KINDS = ", ".join(k.value for k in Kind)


def _store(app: AppContext) -> NetworkStore:
    return NetworkStore(app.database())


def _say(text: str) -> None:
    stdout.print(text, markup=False)


def _dump(data: object) -> None:
    # click.echo, not rich: JSON must reach pipes byte for byte, never wrapped or styled.
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _split(values: tuple[str, ...]) -> list[str]:
    """Repeated options, each possibly comma-separated: ``--dns a,b --dns c`` → ``[a, b, c]``."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _describe_infrastructure(infra: Infrastructure) -> str:
    text = f"{infra.kind.value} (region {infra.region}, {infra.status})"
    if infra.kind is Kind.VPN:
        text += f"; addressSpace {', '.join(str(n) for n in infra.address_space)}"
        if infra.dns:
            text += f"; dns {', '.join(infra.dns)}"
    return text


def _print_rules(networking: EnvironmentNetworking) -> None:
    if networking.port_forwards:
        _say("port forwards:")
        for f in networking.port_forwards:
            _say(f"  {PROXY_HOST}:{f.port_orig} → {f.name}:{f.port_dest}")
    else:
        _say("port forwards: none (non-HTTP traffic cannot leave)")
    if networking.non_proxy_hosts:
        _say(f"nonProxyHosts: {', '.join(networking.non_proxy_hosts)}")
    else:
        _say("nonProxyHosts: none")


@click.group()
def network() -> None:
    """Advanced networking: kinds, portForwards and nonProxyHosts.

    A program has one network infrastructure (its kind); each environment then enables advanced
    networking with the Cloud Manager API's payload, which lists the port forwards the egress
    gateway opens and the nonProxyHosts. Without a kind only HTTP(S) to ports 80/443 leaves.

    \b
    Typical use:
      egressmail network create 1001 --kind flexiblePortEgress
      egressmail network enable 1001 2002 --json-file examples/wknd/advanced-networking.json
      egressmail network show 1001 2002
      egressmail network route 1001 2002 30002
    """


@network.command("create")
@click.argument("program")
@click.option("--kind", required=True, metavar="KIND",
              help=f"One of {_KINDS}. flexiblePortEgress is the usual choice for mail; "
                   "dedicatedEgressIp when the provider allow-lists your address; vpn to reach a "
                   "private network.")
@click.option("--region", default="local", show_default=True, help="Region name (e.g. va7).")
@click.option("--address-space", "address_space", multiple=True, metavar="CIDR",
              help="vpn only, required: a CIDR reachable through the VPN (repeat, or comma-separate).")
@click.option("--dns", multiple=True, metavar="IP",
              help="vpn only: a DNS server inside the VPN (repeat, or comma-separate).")
@click.option("--json", "as_json", is_flag=True, help="Print the infrastructure as JSON.")
@pass_app
def create(app: AppContext, program: str, kind: str, region: str, address_space: tuple[str, ...],
           dns: tuple[str, ...], as_json: bool) -> None:
    """Create PROGRAM's network infrastructure (one per program).

    A flexiblePortEgress or dedicatedEgressIp infrastructure cannot be edited: disable every
    environment, delete it, and create it again.

    \b
    Examples:
      egressmail network create 1001 --kind flexiblePortEgress
      egressmail network create 1001 --kind dedicatedEgressIp --region va7
      egressmail network create 1001 --kind vpn --address-space 10.20.0.0/16 --dns 10.20.0.2
    """
    infra = _store(app).create_infrastructure(program, kind, region=region,
                                              address_space=_split(address_space), dns=_split(dns))
    if as_json:
        _dump(infrastructure_to_dict(infra))
        return
    _say(f"created the network infrastructure of program {program}: {_describe_infrastructure(infra)}")
    _say(f"next: egressmail network enable {program} ENVIRONMENT --json-file FILE")


@network.command("delete")
@click.argument("program")
@pass_app
def delete(app: AppContext, program: str) -> None:
    """Delete PROGRAM's network infrastructure.

    Every environment must have advanced networking disabled first.

    \b
    Example:
      egressmail network disable 1001 2002 && egressmail network delete 1001
    """
    _store(app).delete_infrastructure(program)
    _say(f"deleted the network infrastructure of program {program}")


@network.command("enable")
@click.argument("program")
@click.argument("environment")
@click.option("--json-file", "json_file", type=click.File("r", encoding="utf-8-sig", lazy=False),
              metavar="FILE", help="The payload file ('-' reads standard input).")
@click.option("--json-stdin", "json_stdin", is_flag=True, help="Read the payload from standard input.")
@pass_app
def enable(app: AppContext, program: str, environment: str, json_file: IO[str] | None,
           json_stdin: bool) -> None:
    """Enable advanced networking for ENVIRONMENT, replacing its whole configuration.

    The payload is the Cloud Manager API's, as is:

    \b
      {"portForwards": [{"name": "smtp.sendgrid.com", "portDest": 465, "portOrig": 30002}],
       "nonProxyHosts": ["*.example.com"]}

    Each rule makes proxy.tunnel:portOrig reach name:portDest. portOrig is 30000-30999 and
    unique; nonProxyHosts need kind dedicatedEgressIp or vpn. {} enables networking with no rules.

    \b
    Examples:
      egressmail network enable 1001 2002 --json-file examples/wknd/advanced-networking.json
      echo '{}' | egressmail network enable 1001 2002 --json-stdin
    """
    if (json_file is None) == (not json_stdin):
        raise click.UsageError("give the payload with exactly one of --json-file FILE or --json-stdin")
    if json_file is not None:
        source = "<stdin>" if json_file.name == "<stdin>" else json_file.name
        text = json_file.read()
    else:
        source, text = "<stdin>", sys.stdin.read()
    payload = decode_payload_json(text, source=source)
    networking = _store(app).enable(program, environment, payload)
    egress = _store(app).egress_map(program, environment)
    kind = egress.kind.value if egress.kind else "?"
    _say(f"enabled advanced networking for environment {egress.environment} of program "
         f"{egress.program} ({kind}); the gateway applies it at generation {egress.generation}")
    _print_rules(networking)


@network.command("disable")
@click.argument("program")
@click.argument("environment")
@pass_app
def disable(app: AppContext, program: str, environment: str) -> None:
    """Disable advanced networking for ENVIRONMENT (its rules are removed).

    \b
    Example:
      egressmail network disable 1001 2002
    """
    _store(app).disable(program, environment)
    _say(f"disabled advanced networking for environment {environment} of program {program}")


@network.command("show")
@click.argument("program")
@click.argument("environment")
@click.option("--json", "as_json", is_flag=True,
              help='JSON: {"program", "environment", "generation", "infrastructure", "enabled", '
                   '"networking"}; "networking" is the payload, ready for enable.')
@pass_app
def show(app: AppContext, program: str, environment: str, as_json: bool) -> None:
    """Show ENVIRONMENT's advanced networking: the kind and the rules in force.

    \b
    Examples:
      egressmail network show 1001 2002
      egressmail network show 1001 2002 --json | jq .networking > payload.json
    """
    egress = _store(app).describe(program, environment)
    if as_json:
        _dump(egress_map_to_dict(egress))
        return
    _print_egress(egress)


def _print_egress(egress: EgressMap) -> None:
    _say(f"program {egress.program}, environment {egress.environment} (generation {egress.generation})")
    if egress.infrastructure is None:
        _say("infrastructure: none (only HTTP(S) to ports 80/443 leaves)")
    else:
        _say(f"infrastructure: {_describe_infrastructure(egress.infrastructure)}")
    if egress.networking is None:
        _say("advanced networking: disabled")
        return
    _say("advanced networking: enabled")
    _print_rules(egress.networking)


@network.command("list")
@click.argument("program")
@click.option("--json", "as_json", is_flag=True, help="Print the infrastructure and environments as JSON.")
@pass_app
def list_(app: AppContext, program: str, as_json: bool) -> None:
    """List PROGRAM's infrastructure and each environment's networking.

    \b
    Example:
      egressmail network list 1001
    """
    store = _store(app)
    environments = store.environments(program)
    infra = store.infrastructure(program)
    if as_json:
        _dump({
            "program": program,
            "infrastructure": infrastructure_to_dict(infra) if infra else None,
            "environments": [
                {"environment": env, "enabled": n is not None,
                 "networking": networking_to_payload(n) if n is not None else None}
                for env, n in environments
            ],
        })
        return
    if infra is None:
        _say(f"program {program}: no network infrastructure "
             f"(create one: egressmail network create {program} --kind flexiblePortEgress)")
    else:
        _say(f"program {program}: {_describe_infrastructure(infra)}")
    if not environments:
        _say("no environments")
        return
    for env, n in environments:
        if n is None:
            _say(f"  {env}: disabled")
        else:
            forwards = ", ".join(f"{f.port_orig}→{f.name}:{f.port_dest}" for f in n.port_forwards) or "none"
            _say(f"  {env}: enabled; port forwards: {forwards}; nonProxyHosts: {len(n.non_proxy_hosts)}")



def _is_port_number(text: str) -> bool:
    # str.isdigit() accepts "²", which int() refuses, and int() refuses thousands of digits.
    return text.isascii() and text.isdigit() and len(text) <= 5


def _parse_target(target: str) -> tuple[int | None, str | None, int | None]:
    """``30002`` → a listen port; ``host:port`` / ``[v6]:port`` → a proxy destination."""
    if _is_port_number(target):
        return int(target), None, None
    host, sep, port = target.rpartition(":")
    if not sep or not host or not _is_port_number(port):
        raise click.BadParameter(
            f"{target!r}: give a forward port (30002) or HOST:PORT (api.example.com:8443)",
            param_hint="TARGET")
    return None, host, int(port)


@network.command("route")
@click.argument("program")
@click.argument("environment")
@click.argument("target")
@click.option("--http", "plain_http", is_flag=True,
              help="For HOST:PORT, ask as plain HTTP forwarding instead of CONNECT (same rules).")
@pass_app
def route(app: AppContext, program: str, environment: str, target: str, plain_http: bool) -> None:
    """Explain what the gateway would do with a connection (exit 1 when it would refuse it).

    TARGET is a port-forward port (the application dials proxy.tunnel:TARGET) or HOST:PORT asked of
    the HTTP proxy. Addresses are not resolved here: the gateway also refuses private addresses
    unless a rule names them, they are pinned, or they are inside the vpn's address space.

    \b
    Examples:
      egressmail network route 1001 2002 30002
      egressmail network route 1001 2002 api.example.com:8443
    """
    listen_port, host, port = _parse_target(target)
    egress = _store(app).egress_map(program, environment)
    if listen_port is not None:
        decision = decide(egress, way_in=WayIn.PORT_FORWARD, listen_port=listen_port)
        asked = f"{PROXY_HOST}:{listen_port}"
    else:
        way_in = WayIn.HTTP_FORWARD if plain_http else WayIn.HTTP_CONNECT
        decision = decide(egress, way_in=way_in, host=host, port=port)
        asked = f"{way_in.value} {target}"
    if isinstance(decision, Allowed):
        # A literal address is checked now; a name is checked by the gateway once resolved.
        try:
            literal = ipaddress.ip_address(decision.host)
        except ValueError:
            literal = None
        if literal is not None:
            decision = check_resolved_address(egress, literal, pinned=False, rule=decision.rule) or decision
    if isinstance(decision, Refused):
        _say(f"refused ({decision.code}): {asked}: {decision.reason}")
        raise SystemExit(1)
    how = "through the vpn" if decision.via_vpn else f"from the {decision.egress} egress address"
    rule = f" (rule portOrig {decision.rule.port_orig})" if decision.rule is not None else ""
    dest = f"[{decision.host}]" if ":" in decision.host else decision.host
    _say(f"allowed: {asked} → {dest}:{decision.port}{rule}, {how}")
