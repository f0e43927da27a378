"""Hostile and ordinary HTTP clients over real sockets: trickled heads, idle connections, timed scrapes.

with clients.SlowClients(port, 500, b"GET /metrics HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n", interval=1.0) as slow:
    latencies = clients.timed_scrapes(url, 20)       # legitimate scrapes meanwhile
    slow.wait_all_closed(timeout=15)                 # the server ended them (the deadline)
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx


def raw_exchange(port: int, request: bytes, timeout: float = 5) -> bytes:
    """Send bytes, read until the server closes the connection (or timeout: socket.timeout raised)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        raw.sendall(request)
        received = b""
        while chunk := raw.recv(65536):
            received += chunk
    return received


class SlowClients:
    """n connections that each send `payload` one byte every `interval` seconds, from one thread.

    A connection counts as closed when the server closes or resets it; `closed_after` holds how long
    after it opened. Nothing is read otherwise (a response, if any, is taken as a close).
    """

    def __init__(self, port: int, count: int, payload: bytes, interval: float = 1.0) -> None:
        self.port, self.count, self.payload, self.interval = port, count, payload, interval
        self.sockets: list[socket.socket] = []
        self.opened: dict[int, float] = {}
        self.closed_after: dict[int, float] = {}
        self.answers: dict[int, bytes] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, name="slow-clients", daemon=True)

    def __enter__(self) -> SlowClients:
        for _ in range(self.count):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            sock.setblocking(False)
            self.opened[sock.fileno()] = time.monotonic()
            self.sockets.append(sock)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for sock in self.sockets:
            sock.close()

    def open_count(self) -> int:
        return self.count - len(self.closed_after)

    def wait_all_closed(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.open_count() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert self.open_count() == 0, f"{self.open_count()} of {self.count} still open after {timeout}s"

    def _trickle(self) -> None:
        selector = selectors.DefaultSelector()
        for sock in self.sockets:
            selector.register(sock, selectors.EVENT_READ)
        sent = dict.fromkeys((s.fileno() for s in self.sockets), 0)
        spread = self.interval / max(1, self.count)  # connections take their turns evenly
        next_send = {s.fileno(): time.monotonic() + i * spread for i, s in enumerate(self.sockets)}
        while not self._stop.is_set():
            for key, _ in selector.select(timeout=0.05):
                self._closed(key.fileobj, selector)  # type: ignore[arg-type]
            now = time.monotonic()
            for sock in self.sockets:
                fd = sock.fileno()
                if fd in self.closed_after or fd < 0 or next_send[fd] > now or sent[fd] >= len(self.payload):
                    continue
                try:
                    sock.send(self.payload[sent[fd] : sent[fd] + 1])
                    sent[fd] += 1
                except OSError:
                    self._closed(sock, selector)
                next_send[fd] = now + self.interval
        selector.close()

    def _closed(self, sock: socket.socket, selector: selectors.BaseSelector) -> None:
        fd = sock.fileno()
        if fd in self.closed_after:
            return
        with contextlib.suppress(OSError):
            self.answers[fd] = sock.recv(65536)
        self.closed_after[fd] = time.monotonic() - self.opened[fd]
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(sock)


@contextlib.contextmanager
def idle_connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    """count connections that say nothing."""
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """Whether the server closed the connection (EOF or reset) within `within` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionError:
        return True
    except TimeoutError:
        return False


def timed_scrapes(url: str, count: int, interval: float = 0.05, timeout: float = 10) -> list[float]:
    """Latencies (seconds) of count GETs of url over one kept-alive connection, as Prometheus scrapes."""
    latencies = []
    with httpx.Client(timeout=timeout) as client:
        for _ in range(count):
            started = time.perf_counter()
            response = client.get(url)
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)
            time.sleep(interval)
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class ReconnectingIdle:
    """count connections that say nothing and reconnect as soon as the server closes one (from a thread)."""

    def __init__(self, port: int, count: int) -> None:
        self.port, self.count, self.reconnects = port, count, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reconnecting-idle", daemon=True)

    def __enter__(self) -> ReconnectingIdle:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        for _ in range(self.count):
            selector.register(
                socket.create_connection(("127.0.0.1", self.port), timeout=10), selectors.EVENT_READ
            )
        while not self._stop.is_set():
            for key, _ in selector.select(timeout=0.05):
                selector.unregister(key.fileobj)
                key.fileobj.close()  # type: ignore[union-attr]
                with contextlib.suppress(OSError):
                    sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                    selector.register(sock, selectors.EVENT_READ)
                    self.reconnects += 1
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        selector.close()


class PipelineFlood:
    """count connections that pipeline `per_write` requests for `path` per write and never read, from
    a process of their own (tests/faults/pipeline_flood.py); closed ones reconnect. After the block,
    `connects` and `bytes_sent` say what it did."""

    def __init__(self, port: int, count: int, path: str = "/healthz", per_write: int = 100) -> None:
        self.argv = [sys.executable, "-m", "tests.faults.pipeline_flood", str(port), str(count), path]
        self.argv.append(str(per_write))
        self.connects = self.bytes_sent = 0

    def __enter__(self) -> PipelineFlood:
        self._process = subprocess.Popen(self.argv, stdout=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *_: object) -> None:
        self._process.terminate()
        try:
            out, _ = self._process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            out, _ = self._process.communicate()
        if out.strip():
            totals = json.loads(out.strip().splitlines()[-1])
            self.connects, self.bytes_sent = totals["connects"], totals["bytes_sent"]


def exchange_on(sock: socket.socket, request: bytes) -> bytes:
    """One request on a kept-alive socket; the response up to its Content-Length (b"" if closed)."""
    sock.sendall(request)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            return received
        received += chunk
    head, body = received.split(b"\r\n\r\n", 1)
    length = int(
        next(
            line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body
