"""Clients that pipeline requests without reading the answers, in a process of their own.

    python -m tests.faults.pipeline_flood PORT COUNT PATH PER_WRITE

COUNT connections each send PER_WRITE requests for PATH in every write, as fast as the server takes
them, and read nothing; a connection the server closes is opened again. On SIGTERM it prints one JSON
line: {"connects": N, "bytes_sent": N}. A process of its own, so that its sending takes nothing from the
test process's timed scrapes (clients.PipelineFlood starts it).
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import time


def flood(port: int, count: int, path: str, per_write: int) -> None:
    requests = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode() * per_write
    sockets: list[socket.socket | None] = [None] * count
    totals = {"connects": 0, "bytes_sent": 0}

    def report(*_: object) -> None:
        print(json.dumps(totals), flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, report)
    while True:
        for index, sock in enumerate(sockets):
            if sock is None:
                try:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=1)
                except OSError:
                    continue
                sock.setblocking(False)
                sockets[index] = sock
                totals["connects"] += 1
            try:
                totals["bytes_sent"] += sock.send(requests)
            except BlockingIOError:
                pass  # the server is not reading: its budget holds the rest in the kernel
            except OSError:
                sock.close()
                sockets[index] = None
        time.sleep(0.01)


if __name__ == "__main__":
    flood(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
