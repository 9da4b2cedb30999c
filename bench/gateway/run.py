"""Gateway benchmark: direct vs egressmail's gateway vs HAProxy (tcp mode) vs socat, on loopback.

One run measures, for each forwarder, interleaved and repeated (medians are reported):

- bulk throughput, 1 and 4 streams (client → forwarder → sink, 256 KiB writes);
- connection churn: 50 concurrent clients, each looping connect → read the 220 greeting → QUIT →
  read 221 → close (what an SMTP client's connection costs the gateway);
- added latency: 64-byte round trips on one connection through the forwarder, minus the direct
  round trip, p50 and p99.

The backends and the load generators are one small C program (gwbench.c), so they are not what is
measured. Usage: ``bench/run-gateway [--reps 5] [--seconds 2] [--no-write]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DOC = ROOT / "docs" / "benchmarks.md"
KINDS = ("greet", "sink", "echo")
FORWARDERS = ("direct", "egressmail", "egressmail-w2", "haproxy", "socat")
ANALYSIS = "<!-- gateway analysis: kept by bench/run-gateway -->"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, limit_s: float = 15.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {limit_s}s")


def build_tool(workdir: Path) -> Path:
    out = workdir / "gwbench"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("a C compiler (cc) is needed: apt-get install gcc")
    subprocess.run([cc, "-O2", "-pthread", "-o", str(out), str(HERE / "gwbench.c")], check=True)
    return out


@dataclass
class Forwarder:
    name: str
    ports: dict[str, int]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_egressmail(backends: dict[str, int], workdir: Path, workers: int = 1) -> Forwarder:
    sys.path.insert(0, str(ROOT / "src"))
    from egressmail.networking.store import NetworkStore
    from egressmail.storage.home import resolve_home
    from egressmail.storage.sqlite import Database

    workdir = workdir / f"egressmail-w{workers}"
    workdir.mkdir()
    home = workdir / "home"
    store = NetworkStore(Database(resolve_home(str(home))))
    store.create_infrastructure("1001", "flexiblePortEgress")
    rules = {"greet": (2525, 30025), "sink": (9, 30009), "echo": (7, 30007)}
    store.enable("1001", "2002", {"portForwards": [
        {"name": f"{k}.bench.test", "portDest": d, "portOrig": o} for k, (d, o) in rules.items()]})
    args = [sys.executable, "-m", "egressmail", "gateway", "run", "1001", "2002", "--ephemeral-ports",
            "--no-http-proxy", "--access-log", str(workdir / "access.log"), "--workers", str(workers)]
    for k, (d, _) in rules.items():
        args += ["--connect-to", f"{k}.bench.test:{d}=127.0.0.1:{backends[k]}"]
    errfile = workdir / "egressmail.err"
    with errfile.open("wb") as err:
        proc = subprocess.Popen(args, env=dict(os.environ, EGRESSMAIL_HOME=str(home)),
                                stdout=subprocess.DEVNULL, stderr=err)
    fwd = Forwarder("egressmail" if workers == 1 else f"egressmail-w{workers}", {}, [proc])
    deadline = time.monotonic() + 30
    while "gateway ready" not in (text := errfile.read_text()):
        if proc.poll() is not None or time.monotonic() > deadline:
            fwd.stop()
            raise SystemExit(f"egressmail gateway did not start:\n{text}")
        time.sleep(0.05)
    for m in re.finditer(r"port forward (\d+) → (\w+)\.bench\.test:\d+ on 127\.0\.0\.1:(\d+)", text):
        fwd.ports[m.group(2)] = int(m.group(3))
    return fwd


def start_haproxy(backends: dict[str, int], workdir: Path) -> Forwarder:
    ports = {k: free_port() for k in KINDS}
    cfg = workdir / "haproxy.cfg"
    lines = ["global", "    maxconn 4096", "defaults", "    mode tcp", "    timeout connect 5s",
             "    timeout client 60s", "    timeout server 60s"]
    for k in KINDS:
        lines += [f"listen {k}", f"    bind 127.0.0.1:{ports[k]}", f"    server b 127.0.0.1:{backends[k]}"]
    cfg.write_text("\n".join(lines) + "\n")
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    errfile = workdir / "haproxy.err"
    with errfile.open("wb") as err:
        proc = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=err)
    fwd = Forwarder("haproxy", ports, [proc])
    try:
        for port in ports.values():
            wait_port(port)
    except SystemExit:
        fwd.stop()
        raise SystemExit(f"HAProxy did not start:\n{errfile.read_text()}") from None
    return fwd


def start_socat(backends: dict[str, int]) -> Forwarder:
    ports = {k: free_port() for k in KINDS}
    procs = [subprocess.Popen(["socat", f"TCP-LISTEN:{ports[k]},bind=127.0.0.1,fork,reuseaddr,backlog=1024",
                               f"TCP:127.0.0.1:{backends[k]}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for k in KINDS]
    fwd = Forwarder("socat", ports, procs)
    try:
        for port in ports.values():
            wait_port(port)
    except SystemExit:
        fwd.stop()
        raise
    return fwd


def measure(tool: Path, *args: str) -> dict[str, float]:
    out = subprocess.run([str(tool), *args], capture_output=True, text=True, timeout=120, check=True).stdout
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", out)}


@dataclass
class Results:
    samples: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def add(self, forwarder: str, metric: str, value: float) -> None:
        self.samples.setdefault((forwarder, metric), []).append(value)

    def median(self, forwarder: str, metric: str) -> float:
        return statistics.median(self.samples[(forwarder, metric)])


def run_round(tool: Path, fwd: Forwarder, direct: dict[str, int], seconds: float, pings: int,
              results: Results) -> None:
    p = fwd.ports
    for streams in (1, 4):
        bulk = measure(tool, "bulk", "127.0.0.1", str(p["sink"]), str(streams), str(seconds))
        results.add(fwd.name, f"bulk{streams}", bulk["rate"])
    churn = measure(tool, "churn", "127.0.0.1", str(p["greet"]), "50", str(seconds))
    results.add(fwd.name, "churn", churn["rate"])
    results.add(fwd.name, "churn_failures", churn["failures"])
    lat = measure(tool, "latency", "127.0.0.1", str(direct["echo"]), str(p["echo"]), str(pings))
    for q in ("p50", "p99"):
        results.add(fwd.name, q, lat[q])
        results.add(fwd.name, f"added_{q}", lat[q] - lat[f"direct_{q}"])


def table(results: Results) -> str:
    def added(name: str, q: str) -> float:
        return results.median(name, f"added_{q}")

    ha = {m: results.median("haproxy", m) for m in ("bulk1", "bulk4", "churn")}
    ha_added = {q: added("haproxy", q) for q in ("p50", "p99")}
    rows = ["| forwarder | bulk, 1 stream (MB/s) | bulk, 4 streams (MB/s) | churn (sessions/s) "
            "| added latency p50 (µs) | added latency p99 (µs) |",
            "|---|---|---|---|---|---|"]

    def ratio(value: float, base: float) -> str:
        return f"{value / base:.2f}×" if base > 0 else "n/a"

    for name in FORWARDERS:
        cells = [name]
        for m in ("bulk1", "bulk4"):
            v = results.median(name, m)
            cells.append(f"{v / 1e6:,.0f} ({ratio(v, ha[m])})")
        v = results.median(name, "churn")
        cells.append(f"{v:,.0f} ({ratio(v, ha['churn'])})")
        for q in ("p50", "p99"):
            if name == "direct":
                cells.append(f"{added(name, q):.1f} (round trip {results.median(name, q):.1f})")
            else:
                a = added(name, q)
                cells.append(f"{a:.1f} ({ratio(a, ha_added[q])})")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import uvloop
        loop = f"uvloop {uvloop.__version__}"
    except ImportError:
        loop = "asyncio (uvloop not installed)"

    def version(cmd: list[str], pattern: str) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        m = re.search(pattern, out.stdout + out.stderr)
        return m.group(0) if m else "?"

    haproxy = version([shutil.which("haproxy") or "/usr/sbin/haproxy", "-v"], r"HAProxy version \S+")
    socat = version(["socat", "-V"], r"socat version \S+")
    load = os.getloadavg()
    return (f"{model}, {os.cpu_count()} cores, Linux {platform.release()}, "
            f"Python {platform.python_version()} with {loop}; {haproxy}; {socat}; "
            f"load average (1 min) at start {load[0]:.2f}")


def write_doc(section: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n\n"
    pattern = re.compile(r"^## Gateway\n.*?(?=^## |\Z)", re.S | re.M)
    if (old := pattern.search(text)) is not None:
        kept = old.group(0).partition(ANALYSIS)  # the hand-written analysis survives a re-run
        if kept[1]:
            section = section.rstrip("\n") + "\n\n" + kept[1] + kept[2].rstrip("\n") + "\n\n"
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text.rstrip("\n") + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5, help="rounds; medians are reported (default 5)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each bulk/churn run")
    parser.add_argument("--pings", type=int, default=3000, help="round trips per latency run")
    parser.add_argument("--only", choices=FORWARDERS, action="append", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--note", default="", help="a sentence added under the table")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="gwbench-"))
    tool = build_tool(workdir)
    backend = subprocess.Popen([str(tool), "serve"], stdout=subprocess.PIPE, text=True)
    assert backend.stdout is not None
    backends = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", backend.stdout.readline())}
    forwarders: list[Forwarder] = []
    about = machine()
    started = time.monotonic()
    try:
        starters: dict[str, Callable[[], Forwarder]] = {
            "direct": lambda: Forwarder("direct", dict(backends)),
            "egressmail": lambda: start_egressmail(backends, workdir),
            "egressmail-w2": lambda: start_egressmail(backends, workdir, workers=2),
            "haproxy": lambda: start_haproxy(backends, workdir),
            "socat": lambda: start_socat(backends),
        }
        for name in FORWARDERS:
            forwarders.append(starters[name]())
        results = Results()
        for rep in range(args.reps):
            # Interleave the forwarders so a burst of noise from the neighbours hits all of them.
            order = forwarders[rep % len(forwarders):] + forwarders[:rep % len(forwarders)]
            for fwd in order:
                run_round(tool, fwd, backends, args.seconds, args.pings, results)
            print(f"round {rep + 1}/{args.reps} done", file=sys.stderr)
    finally:
        for fwd in forwarders:
            fwd.stop()
        backend.terminate()
        backend.wait()
    failures = {f: int(sum(results.samples[(f, "churn_failures")])) for f in FORWARDERS}
    load_end = os.getloadavg()[0]
    body = table(results)
    command = "bench/run-gateway " + " ".join(sys.argv[1:])
    section = (
        "## Gateway\n\n"
        f"Measured {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} with `{command.strip()}` "
        f"({args.reps} interleaved rounds, medians; {args.seconds:g} s per bulk/churn run, "
        f"{args.pings} round trips per latency run; {time.monotonic() - started:.0f} s in all).\n\n"
        f"Machine: {about}, at the end {load_end:.2f}.\n\n"
        f"{body}\n\n"
        "Ratios are to HAProxy (higher is better for throughput and churn, lower for added latency). "
        "Bulk: client → forwarder → sink, 256 KiB writes. Churn: 50 concurrent clients, each "
        "connect → 220 greeting → QUIT → 221 → close. Added latency: 64-byte round trips on one "
        "connection through the forwarder minus the direct round trip, measured alternately with "
        "a direct connection in the same run (the direct row shows the noise floor). egressmail runs "
        "`egressmail gateway run` with its access log on, as one process (`egressmail`) and as "
        "`--workers 2` (`egressmail-w2`: two processes on SO_REUSEPORT listeners); HAProxy runs "
        f"with its default thread count (one per CPU: {os.cpu_count()} here; no `nbthread` in the "
        "config), no logging, the same backends and clients; socat forks a process per "
        "connection. Backends and load generators are bench/gateway/gwbench.c (C, epoll and "
        f"threads). Churn failures: {failures}.\n\n"
        "**Provisional:** the machine has 2 cores shared with other work while this ran, and the "
        "load generator, the backends and the forwarder share those cores; re-run on a quiet "
        "machine before quoting these numbers.\n"
        + (f"\n{args.note}\n" if args.note else "")
    )
    print(section)
    if not args.no_write:
        write_doc(section)
        print(f"written to {DOC.relative_to(ROOT)}", file=sys.stderr)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
