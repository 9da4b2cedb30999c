"""Durable enqueue rate of the outbox: messages per second, each on disk (fsync'd) when its
``enqueue`` returns.

Three ways of calling it, same file settings (WAL, synchronous=FULL):

- one caller, one message at a time: one transaction and one fsync per message;
- many concurrent callers (threads, and asyncio tasks with ``aenqueue``): the writer thread commits
  whatever is waiting in one transaction (group commit), so one fsync covers many messages;
- ``enqueue_many`` (one caller with a batch) for reference.

    .venv/bin/python -m bench.outbox.enqueue [--messages 20000] [--size 2048]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
from pathlib import Path

from egressmail.mail.envelope import Envelope
from egressmail.mail.outbox import Outbox


def make(n: int, size: int) -> Envelope:
    mid = f"<bench-{n}@bench.test>"
    head = f"From: a@bench.test\r\nTo: b@bench.test\r\nMessage-ID: {mid}\r\nSubject: bench\r\n\r\n"
    body = ("x" * 74 + "\r\n") * max(1, (size - len(head)) // 76)
    return Envelope("a@bench.test", ("b@bench.test",), (head + body).encode(), mid)


def sequential(path: Path, n: int, size: int) -> dict[str, float]:
    envs = [make(i, size) for i in range(n)]
    with Outbox(path) as box:
        t = time.perf_counter()
        for e in envs:
            box.enqueue(e)
        dt = time.perf_counter() - t
        return {"messages": n, "seconds": dt, "rate": n / dt, "commits": box.commits}


def threaded(path: Path, n: int, size: int, threads: int) -> dict[str, float]:
    envs = [make(i, size) for i in range(n)]
    per = n // threads
    barrier = threading.Barrier(threads + 1)
    with Outbox(path) as box:
        def run(k: int) -> None:
            barrier.wait()
            for e in envs[k * per:(k + 1) * per]:
                box.enqueue(e)
        ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
        for th in ts:
            th.start()
        barrier.wait()
        t = time.perf_counter()
        for th in ts:
            th.join()
        dt = time.perf_counter() - t
        return {"messages": per * threads, "seconds": dt, "rate": per * threads / dt,
                "commits": box.commits, "threads": threads}


def tasks(path: Path, n: int, size: int, concurrency: int) -> dict[str, float]:
    envs = [make(i, size) for i in range(n)]

    async def main(box: Outbox) -> float:
        sem = asyncio.Semaphore(concurrency)

        async def one(e: Envelope) -> None:
            async with sem:
                await box.aenqueue(e)
        t = time.perf_counter()
        await asyncio.gather(*(one(e) for e in envs))
        return time.perf_counter() - t

    with Outbox(path) as box:
        dt = asyncio.run(main(box))
        return {"messages": n, "seconds": dt, "rate": n / dt, "commits": box.commits,
                "concurrency": concurrency}


def batched(path: Path, n: int, size: int, batch: int) -> dict[str, float]:
    envs = [make(i, size) for i in range(n)]
    with Outbox(path) as box:
        t = time.perf_counter()
        for i in range(0, n, batch):
            box.enqueue_many(envs[i:i + batch])
        dt = time.perf_counter() - t
        return {"messages": n, "seconds": dt, "rate": n / dt, "commits": box.commits, "batch": batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    n, size = args.messages, args.size
    results = {}
    with tempfile.TemporaryDirectory(prefix="egressmail-bench-") as tmp:
        d = Path(tmp)
        results["sequential"] = sequential(d / "seq.db", min(n, 3000), size)
        results["threads_32"] = threaded(d / "thr.db", n, size, 32)
        results["asyncio_256"] = tasks(d / "async.db", n, size, 256)
        results["enqueue_many_100"] = batched(d / "batch.db", n, size, 100)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"durable enqueue, {size}-byte messages, WAL + synchronous=FULL (one fsync per commit)")
    for name, r in results.items():
        print(f"  {name:18} {r['rate']:9.0f} msg/s  ({int(r['messages'])} messages, "
              f"{int(r['commits'])} commits, {r['messages'] / r['commits']:.1f} per fsync)")


if __name__ == "__main__":
    main()
