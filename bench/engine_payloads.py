#!/usr/bin/env python3
"""vLLM-shaped engine targets for the exporter benchmarks: one process, one port per target.

    python3 bench/engine_payloads.py --targets 8 [--fixture FILE] [--ports-file PATH]

Each port answers `GET /metrics` with a real vLLM payload (default: vLLM 0.33 with data parallelism 2,
tests/fixtures/engines/vllm/v0.33.0-dp2-load.txt, 954 lines) whose every sample value changes from one
request to the next (all values of a request scaled by the same factor just above 1, so counters and
histogram buckets stay consistent), and `GET /version` with vLLM's `{"version": ...}`, as a vLLM server
does. The exporter therefore parses new numbers on every scrape, as it does against a live engine.
Prints (or writes to --ports-file) one port per line once every port listens; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FIXTURE = ROOT / "tests" / "fixtures" / "engines" / "vllm" / "v0.33.0-dp2-load.txt"
VERSION_BODY = b'{"version":"0.33.0"}'


class Payload:
    """The fixture split into fixed text and sample values, rendered with every value scaled."""

    def __init__(self, text: str) -> None:
        self.parts: list[tuple[str, float | None]] = []  # (text up to the value, value or None)
        for line in text.splitlines(keepends=True):
            head, _, value = line.rstrip("\n").rpartition(" ")
            if line.startswith("#") or not head:
                self.parts.append((line, None))
            else:
                self.parts.append((head + " ", float(value)))
        self.requests = 0

    def render(self) -> bytes:
        self.requests += 1
        factor = 1.0 + (self.requests % 1000) * 1e-4
        out = [text if value is None else f"{text}{value * factor!r}\n" for text, value in self.parts]
        return "".join(out).encode()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: Payload) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
            if path.startswith(b"/metrics"):
                body, kind = payload.render(), b"text/plain; version=0.0.4; charset=utf-8"
            elif path.startswith(b"/version"):
                body, kind = VERSION_BODY, b"application/json"
            else:
                body, kind = b"not found", b"text/plain"
            status = b"200 OK" if body != b"not found" else b"404 Not Found"
            keep = b"connection: close" not in head.lower()
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: " + kind
                + b"\r\nContent-Length: " + str(len(body)).encode()
                + (b"\r\n\r\n" if keep else b"\r\nConnection: close\r\n\r\n") + body
            )  # fmt: skip
            await writer.drain()
            if not keep:
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, asyncio.CancelledError):
        pass  # the client went, or the server is stopping
    finally:
        writer.close()


async def serve(count: int, fixture: Path, ports_file: Path | None) -> None:
    text = fixture.read_text()
    servers = []
    for _ in range(count):
        payload = Payload(text)  # one per target: each target's values move on its own
        server = await asyncio.start_server(
            lambda r, w, p=payload: handle(r, w, p), "127.0.0.1", 0, reuse_address=True
        )
        servers.append(server)
    ports = "".join(f"{s.sockets[0].getsockname()[1]}\n" for s in servers)
    if ports_file is not None:
        partial = ports_file.with_suffix(".partial")
        partial.write_text(ports)
        partial.replace(ports_file)
    else:
        sys.stdout.write(ports)
        sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", type=int, default=1)
    parser.add_argument("--fixture", type=Path, default=DEFAULT_FIXTURE)
    parser.add_argument("--ports-file", type=Path)
    args = parser.parse_args()
    asyncio.run(serve(args.targets, args.fixture, args.ports_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
