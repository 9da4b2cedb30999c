"""The outbox crash proof: messages survive SIGKILLed workers and a server that goes away.

Theory of operation: the harness queues the messages in waves (mail keeps arriving), runs the
worker as a real subprocess (``egressmail worker run`` with the real SMTP transport) and the SMTP
server as another (aiosmtpd, recording every Message-ID it accepts to a file). Between waves it
SIGKILLs the worker at a random point of the wave's delivery, and restarts it; at random waves it
SIGKILLs the server, keeps it down for a moment, and starts it again on the same port. At the end it checks:

- every message is ``sent`` in the outbox and its Message-ID is at the server;
- a Message-ID the server got more than once belongs to a message whose history records an
  ``unknown`` attempt (a lost reply, or a worker that died holding it) — no other duplicates;
- nothing is held or failed.

    python -m tests.proof.crash                 # full: 1000 messages, 20 kills, 3 outages
    EGRESSMAIL_PROOF_SCALE=ci python -m tests.proof.crash
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from egressmail.mail.outbox import Outbox
from egressmail.mail.outbox_model import Status
from tests.unit.outbox.helpers import envelope

ROOT = Path(__file__).resolve().parents[2]
SCALES = {"ci": (200, 6, 1), "full": (1000, 20, 3)}


@dataclass
class ProofResult:
    messages: int
    kills: int
    outages: int
    seconds: float
    counts: dict[str, int]
    at_server: int
    missing: list[str]
    duplicates: dict[str, int]
    unexplained_duplicates: list[str]
    unknown_recorded: int
    log: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (not self.missing and not self.unexplained_duplicates
                and self.counts.get("sent", 0) == self.messages)

    def summary(self) -> str:
        return (f"{'PASS' if self.ok else 'FAIL'}: {self.messages} messages, {self.kills} worker "
                f"SIGKILLs, {self.outages} server outages in {self.seconds:.1f}s; outbox {self.counts}; "
                f"{self.at_server} deliveries at the server, {len(self.duplicates)} duplicated "
                f"Message-IDs (all recorded unknown: {not self.unexplained_duplicates}), "
                f"{self.unknown_recorded} messages with an unknown attempt; missing {len(self.missing)}")


def scale_from_env() -> tuple[int, int, int]:
    """(messages, kills, outages) from ``EGRESSMAIL_PROOF_SCALE``: ``ci``, ``full`` or ``N,K,O``."""
    text = os.environ.get("EGRESSMAIL_PROOF_SCALE", "ci").strip().lower()
    if text in SCALES:
        return SCALES[text]
    try:
        n, k, o = (int(x) for x in text.split(","))
    except ValueError:
        raise SystemExit(f"EGRESSMAIL_PROOF_SCALE={text!r}: use ci, full or MESSAGES,KILLS,OUTAGES "
                         "(e.g. 500,10,2)") from None
    return n, k, o


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Procs:
    def __init__(self, workdir: Path, port: int, env: dict[str, str]) -> None:
        self.workdir, self.port, self.env = workdir, port, env
        self.server: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        config = workdir / "com.day.cq.mailer.DefaultMailService.cfg.json"
        config.write_text(json.dumps({
            "smtp.host": "127.0.0.1", "smtp.port": port, "smtp.ssl": False, "smtp.starttls": True,
            "smtp.requiretls": False, "from.address": "from@example.test"}))
        # The real command with the real transport; short delays so that outages cost seconds.
        self.worker_cmd = [sys.executable, "-m", "egressmail", "worker", "run", str(config),
                           "--concurrency", "4", "--batch", "10", "--lease", "2s", "--poll", "0.05s",
                           "--min-delay", "0.2s", "--max-delay", "1s", "--max-lifetime", "1h"]
        self.env = dict(env, EGRESSMAIL_HOME=str(workdir))

    def start_server(self) -> None:
        with open(self.workdir / "smtpd.log", "ab") as errors:
            self.server = subprocess.Popen(
                [sys.executable, "-m", "tests.proof.recording_smtpd", "--port", str(self.port),
                 "--record", str(self.workdir / "received.txt")],
                cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=errors)
        assert self.server.stdout is not None
        line = self.server.stdout.readline()  # "ready" once listening
        self.server.stdout.close()
        if line.strip() != b"ready":
            raise RuntimeError(f"the SMTP server did not start (see {self.workdir / 'smtpd.log'})")

    def kill_server(self) -> None:
        if self.server is not None:
            self.server.send_signal(signal.SIGKILL)
            self.server.wait(10)
            self.server = None

    def start_worker(self) -> None:
        with open(self.workdir / "worker.log", "ab") as errors:
            self.worker = subprocess.Popen(self.worker_cmd, cwd=ROOT, env=self.env,
                                           stdout=subprocess.DEVNULL, stderr=errors)

    def kill_worker(self) -> None:
        if self.worker is not None:
            self.worker.send_signal(signal.SIGKILL)
            self.worker.wait(10)
            self.worker = None

    def stop_all(self) -> None:
        for proc in (self.worker, self.server):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


def _received(path: Path) -> list[str]:
    try:
        return [x for x in path.read_text().splitlines() if x]
    except FileNotFoundError:
        return []


def _wait_for(received_file: Path, more: int, timeout_s: float = 10.0) -> None:
    """Wait until the server has recorded ``more`` new deliveries (or the timeout)."""
    target = len(_received(received_file)) + more
    t0 = time.monotonic()
    while len(_received(received_file)) < target and time.monotonic() - t0 < timeout_s:
        time.sleep(0.002)


def run_proof(messages: int, kills: int, outages: int, workdir: Path, *, seed: int | None = None,
              deadline_s: float = 600.0) -> ProofResult:
    """Run the proof in ``workdir`` (kept for inspection) and return what it found."""
    rng = random.Random(seed)
    start = time.monotonic()
    log: list[str] = []
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'src'}")
    procs = _Procs(workdir, _free_port(), env)
    db = workdir / "outbox.db"
    received_file = workdir / "received.txt"
    waves = kills + 1
    outage_waves = set(rng.sample(range(waves), min(outages, waves)))
    queued = 0
    try:
        procs.start_server()
        procs.start_worker()
        with Outbox(db) as outbox:
            for wave in range(waves):
                n = messages // waves + (1 if wave < messages % waves else 0)
                outbox.enqueue_many([envelope(queued + i, size=2048) for i in range(n)])
                queued += n
                if wave == waves - 1:
                    break
                # Strike at a random point of this wave's delivery, i.e. mid-batch.
                if wave in outage_waves:
                    _wait_for(received_file, rng.randint(1, max(1, n // 2)))
                    procs.kill_server()
                    down = rng.uniform(0.3, 1.2)
                    log.append(f"wave {wave}: server SIGKILLed after "
                               f"{len(_received(received_file))} deliveries, down {down:.1f}s")
                    time.sleep(down)
                    procs.start_server()
                _wait_for(received_file, rng.randint(1, max(1, n - 1)))
                time.sleep(rng.uniform(0, 0.005))
                procs.kill_worker()
                log.append(f"wave {wave}: worker SIGKILLed after {len(_received(received_file))} "
                           "deliveries")
                procs.start_worker()
            while time.monotonic() - start < deadline_s:
                counts = outbox.counts()
                if counts[Status.SENT] == messages or counts[Status.HELD] or counts[Status.FAILED]:
                    break
                time.sleep(0.1)
            counts = outbox.counts()
    finally:
        procs.stop_all()
    got = collections.Counter(_received(received_file))
    expected = {f"<{i}@test>" for i in range(messages)}
    conn = sqlite3.connect(db)
    unknown = {row[0] for row in conn.execute(
        "SELECT DISTINCT m.message_id FROM attempts a JOIN messages m ON m.id = a.message "
        "WHERE a.outcome = 'unknown'")}
    conn.close()
    duplicates = {mid: n for mid, n in got.items() if n > 1}
    return ProofResult(
        messages=messages, kills=kills, outages=outages, seconds=time.monotonic() - start,
        counts={s.value: n for s, n in counts.items() if n}, at_server=sum(got.values()),
        missing=sorted(expected - set(got)), duplicates=duplicates,
        unexplained_duplicates=sorted(set(duplicates) - unknown), unknown_recorded=len(unknown),
        log=log)


def main() -> None:
    messages, kills, outages = scale_from_env()
    workdir = Path(tempfile.mkdtemp(prefix="egressmail-proof-"))
    print(f"crash proof: {messages} messages, {kills} worker kills, {outages} server outages "
          f"(work folder {workdir})", flush=True)
    result = run_proof(messages, kills, outages, workdir)
    for line in result.log:
        print("  " + line)
    print(result.summary())
    if result.unexplained_duplicates:
        print("duplicates without an unknown attempt:", result.unexplained_duplicates[:10])
    if result.missing:
        print("missing:", result.missing[:10])
    sys.exit(0 if result.ok else 1)


if __name__ == "__main__":
    main()
