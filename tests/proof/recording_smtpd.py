"""A real aiosmtpd server process for the crash proof: accepts everything and appends each
message's Message-ID to a file (flushed before the 250 reply, so a SIGKILL cannot lose a record
of a message the client was told about).

    python -m tests.proof.recording_smtpd --port 2525 --record ids.txt
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys

from aiosmtpd.smtp import SMTP

from tests.integration.outbox.support import RecordingHandler


async def serve(port: int, record: str) -> None:
    loop = asyncio.get_running_loop()
    with open(record, "a", encoding="ascii") as out:  # noqa: ASYNC230 - opened once at start
        handler = RecordingHandler(record_file=out)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Restarted on the same port right after a SIGKILL: do not wait for TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        server = await loop.create_server(lambda: SMTP(handler, hostname="proof.test", loop=loop),
                                          sock=sock)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await stop.wait()
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.record))
    sys.exit(0)


if __name__ == "__main__":
    main()
