"""The real-Postfix harness (scripts/harness) for interoperability tests, and a real gateway in front of it.

``postfix_harness`` (session): starts Postfix + Dovecot SASL (+ HAProxy, socat) on 127.0.0.1 with
``scripts/harness/peers-up.sh`` unless they already answer, and stops them at the end of the session
(``peers-down.sh``) if it started them. Without root, or when the Debian packages are missing and
cannot be installed, the tests are skipped with the reason, except under CI (``$CI`` set), where
that is a failure: CI runs as root with apt, so the harness must run there.

``harness_gateway``: the real egress gateway, in-process, on a loopback address of its own, with
one port forward per harness port, each pinned with ``--connect-to`` exactly as a user would::

    30465 → smtp.sendgrid.com:465   pinned to 127.0.0.1:2465  (implicit TLS, AUTH)
    30587 → smtp.sendgrid.com:587   pinned to 127.0.0.1:2587  (STARTTLS required before AUTH)
    30525 → smtp.sendgrid.com:2525  pinned to 127.0.0.1:2525  (no TLS offered)
    30466 → smtp.sendgrid.com:466   pinned to 127.0.0.1:2466  (certificate for wrong.example.test)
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from egressmail.gateway.accesslog import AccessLog
from egressmail.gateway.options import GatewayOptions, parse_connect_to
from egressmail.gateway.server import Gateway
from egressmail.networking.model import EgressMap, EnvironmentNetworking, Infrastructure, Kind, PortForward

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "scripts" / "harness"
STATE = Path(os.environ.get("HARNESS_STATE", "/var/tmp/egressmail-harness"))
PORTS = (2465, 2587, 2525, 2466)
PROVIDER = "smtp.sendgrid.com"
USER, PASSWORD = "apikey", "password123"  # the harness's Dovecot user (scripts/harness/peers-up.sh)
FORWARDS = {30465: (465, 2465), 30587: (587, 2587), 30525: (2525, 2525), 30466: (466, 2466)}


@dataclass(frozen=True)
class Harness:
    """The running peers: where their CA and Maildir are."""

    state: Path

    @property
    def cafile(self) -> Path:
        return self.state / "ca.pem"

    @property
    def maildir(self) -> Path:
        return self.state / "mailhome" / "Maildir"

    def messages(self) -> list[bytes]:
        files = [p for sub in ("new", "cur") for p in (self.maildir / sub).glob("*") if p.is_file()]
        return [p.read_bytes() for p in sorted(files)]

    def wait_for(self, needle: bytes, timeout: float = 20.0) -> bytes:
        """The first delivered message containing ``needle`` (polling the Maildir, bounded)."""
        end = time.monotonic() + timeout
        while True:
            for data in self.messages():
                if needle in data:
                    return data
            if time.monotonic() > end:
                raise AssertionError(f"no message containing {needle!r} in {self.maildir} after {timeout} s "
                                     f"(see {self.state / 'postfix.log'})")
            subprocess.run(["postqueue", "-f"], capture_output=True, check=False, timeout=10)
            time.sleep(0.2)

    def log(self) -> str:
        path = self.state / "postfix.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"the Postfix harness must run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postfix_harness() -> Iterator[Harness]:
    """Real Postfix/Dovecot peers on loopback (see the module docstring)."""
    harness = Harness(STATE)
    if all(_answers(p) for p in PORTS) and harness.cafile.exists():
        yield harness  # already up (someone else's): leave it running
        return
    if os.geteuid() != 0:
        _unavailable("the Postfix harness needs root (scripts/harness/peers-up.sh starts Postfix and "
                     "Dovecot); run the tests as root or start it by hand")
    install = subprocess.run([str(ROOT / "scripts" / "install-peers")], capture_output=True, text=True,
                             timeout=600, check=False)
    if install.returncode != 0:
        _unavailable(f"Postfix/Dovecot are not installed and cannot be: {install.stderr.strip()[-300:]}")
    # Output to a file, not a pipe: the daemons it starts inherit it, and a pipe would never close.
    with tempfile.TemporaryFile("w+") as out:
        up = subprocess.run([str(HARNESS / "peers-up.sh")], stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, timeout=300, check=False)
        out.seek(0)
        output = out.read()
    if up.returncode != 0 or not all(_answers(p) for p in PORTS):
        _peers_down()
        _unavailable(f"scripts/harness/peers-up.sh failed ({up.returncode}): {output.strip()[-500:]}")
    try:
        yield harness
    finally:
        _peers_down()


def _peers_down() -> None:
    subprocess.run([str(HARNESS / "peers-down.sh")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   stdin=subprocess.DEVNULL, timeout=60, check=False)


def harness_egress_map() -> EgressMap:
    forwards = tuple(PortForward(PROVIDER, dest, orig) for orig, (dest, _) in FORWARDS.items())
    return EgressMap(program="1001", environment="2002",
                     infrastructure=Infrastructure(Kind.FLEXIBLE_PORT_EGRESS),
                     networking=EnvironmentNetworking(port_forwards=forwards))


@dataclass
class RunningGateway:
    gateway: Gateway
    host: str
    egress_map: EgressMap
    log: io.StringIO

    def access_lines(self) -> list[str]:
        assert self.gateway.access_log is not None
        self.gateway.access_log.flush()
        return [line for line in self.log.getvalue().splitlines() if line]

    async def access_line(self, needle: str) -> str:
        """The access-log line containing ``needle`` (written when the tunnel ends: wait up to 5 s)."""
        async with asyncio.timeout(5.0):
            while True:
                found = [line for line in self.access_lines() if needle in line]
                if found:
                    return found[0]
                await asyncio.sleep(0.05)


@pytest.fixture
async def harness_gateway(postfix_harness: Harness) -> AsyncIterator[RunningGateway]:
    """The real gateway on a loopback address of its own, with the four pinned forwards."""
    host = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
    pins = tuple(parse_connect_to(f"{PROVIDER}:{dest}=127.0.0.1:{real}") for dest, real in FORWARDS.values())
    log = io.StringIO()
    egress = harness_egress_map()
    gateway = Gateway(egress, GatewayOptions(listen_host=host, http_proxy_port=None, connect_to=pins),
                      access_log=AccessLog(log))
    await gateway.start()
    try:
        yield RunningGateway(gateway, host, egress, log)
    finally:
        await gateway.aclose(drain_timeout=2.0)
