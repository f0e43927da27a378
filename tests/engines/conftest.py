"""A scriptable engine impersonator on loopback (real HTTP) and helpers to read what the collector exports."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.engines.parse import Exposition, parse

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "engines"


@dataclass
class Reply:
    body: bytes | str = b""
    status: int = 200
    content_type: str = "text/plain; version=0.0.4"
    delay: float = 0.0  # seconds before answering
    truncate: bool = False  # announce the full length, send half, close
    chunked_cut: bool = False  # chunked encoding: half the body in one chunk, close without the last one
    trickle: float = 0.0  # seconds between lines: headers at once, then a slow drip
    chunked: bool = False  # chunked encoding, 64 KiB chunks, no Content-Length
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeEngine:
    url: str
    routes: dict[str, Reply] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    client_ports: list[int] = field(default_factory=list)  # per request: its connection's client port
    stop: threading.Event = field(default_factory=threading.Event)

    def serve(self, path: str, body: bytes | str = b"", **reply) -> None:
        self.routes[path] = Reply(body, **reply)

    def serve_fixture(self, path: str, relative: str) -> None:
        self.serve(path, (FIXTURES / relative).read_bytes())


@pytest.fixture
def fake_engine() -> Iterator[FakeEngine]:
    with _fake_engine() as engine:
        yield engine


@pytest.fixture
def fake_engines() -> Iterator[list[FakeEngine]]:
    """Several independent fake engines, each on its own port."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(_fake_engine()) for _ in range(6)]


class _Handler(BaseHTTPRequestHandler):
    engine: FakeEngine

    def do_GET(self) -> None:
        self.engine.requests.append((self.path, dict(self.headers)))
        self.engine.client_ports.append(self.client_address[1])
        reply = self.engine.routes.get(self.path.split("?")[0], Reply(b"not found\n", status=404))
        if reply.delay and self.engine.stop.wait(reply.delay):
            return
        body = reply.body.encode() if isinstance(reply.body, str) else reply.body
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        for name, header in reply.headers.items():
            self.send_header(name, header)
        if reply.chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(body), 65536):
                piece = body[start : start + 65536]
                if not _write(self.wfile, b"%x\r\n%s\r\n" % (len(piece), piece)):
                    return
            _write(self.wfile, b"0\r\n\r\n")
            return
        if reply.chunked_cut:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            half = body[: len(body) // 2]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(half), half))
            self.wfile.flush()
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if reply.trickle:
            for line in body.splitlines(keepends=True):
                if self.engine.stop.wait(reply.trickle):
                    return
                self.wfile.write(line)
                self.wfile.flush()
            return
        if reply.truncate:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        _write(self.wfile, body)

    def log_message(self, *args) -> None:
        pass


def _write(stream, data: bytes) -> bool:
    """False when the exporter hung up (it stopped reading: over budget or past its deadline)."""
    try:
        stream.write(data)
        stream.flush()
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


@pytest.fixture
def keep_alive_engine() -> Iterator[FakeEngine]:
    """A fake engine that keeps connections open between requests (HTTP/1.1), as engines' servers do."""
    with _fake_engine(protocol_version="HTTP/1.1") as engine:
        yield engine


@contextlib.contextmanager
def _fake_engine(protocol_version: str = "HTTP/1.0") -> Iterator[FakeEngine]:
    handler = type("Handler", (_Handler,), {"protocol_version": protocol_version})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    engine = FakeEngine(f"http://127.0.0.1:{server.server_address[1]}")
    handler.engine = engine
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield engine
    finally:
        engine.stop.set()
        server.shutdown()
        server.server_close()


def scrape(collector) -> Exposition:
    """One exporter scrape through prometheus_client's real writer, read back with the strict parser."""
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        return parse(generate_latest(registry).decode())
    finally:
        registry.unregister(collector)


def value(exposition: Exposition, name: str, **labels: str) -> float | None:
    samples = exposition.samples(name)
    matches = [s.value for s in samples if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) <= 1, (name, labels, matches)
    return matches[0] if matches else None


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)
