"""The worker process of the crash proof: ``Worker.run()`` on an outbox, plain SMTP to loopback.

    python -m tests.proof.worker_main --outbox outbox.db --port 2525 --lease 2
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from egressmail.mail.outbox import Outbox
from egressmail.mail.retry import RetryPolicy
from egressmail.mail.worker import Worker, WorkerOptions
from tests.integration.outbox.support import direct_factory

# Short delays so that a proof with outages finishes in seconds; the logic is the production one.
PROOF_POLICY = RetryPolicy(min_delay_s=0.2, max_delay_s=1.0, jitter=0.5, max_lifetime_s=3600)


async def run(db: str, port: int, lease_s: float, concurrency: int) -> None:
    with Outbox(db) as outbox:
        worker = Worker(outbox, direct_factory(port, timeout=2.0), PROOF_POLICY,
                        options=WorkerOptions(concurrency=concurrency, batch_size=10, lease_s=lease_s,
                                              poll_interval_s=0.05, idle_close_s=1.0,
                                              attempt_timeout_s=5.0))
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, worker.stop)
        await worker.arun()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--outbox", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(run(args.outbox, args.port, args.lease, args.concurrency))


if __name__ == "__main__":
    main()
