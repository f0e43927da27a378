"""A GET-only HTTP proxy on loopback that remembers the last body it passed on for each path.

Put it between the exporter and a real engine, and the test holds exactly the /metrics text the exporter
read in a scrape: the engine's own numbers and the exporter's normalized ones, sampled in the same
instant, however fast the engine's gauges move under load.

    with recording_proxy(engine_url) as proxy:
        proxy.url                   # point the exporter's target here
        proxy.last("/metrics")      # the body of the last /metrics answer passed on (str)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


class RecordingProxy:
    def __init__(self, url: str, upstream: str) -> None:
        self.url = url
        self.upstream = upstream
        self._bodies: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def last(self, path: str) -> str:
        with self._lock:
            return self._bodies[path].decode()

    def _remember(self, path: str, body: bytes) -> None:
        with self._lock:
            self._bodies[path] = body


class _Handler(BaseHTTPRequestHandler):
    proxy: RecordingProxy

    def do_GET(self) -> None:
        response = httpx.get(self.proxy.upstream + self.path, timeout=30)
        body = response.content
        if response.status_code == 200:
            self.proxy._remember(self.path.split("?")[0], body)
        self.send_response(response.status_code)
        self.send_header("Content-Type", response.headers.get("content-type", "text/plain"))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def recording_proxy(upstream: str) -> Iterator[RecordingProxy]:
    handler = type("Handler", (_Handler,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    proxy = RecordingProxy(f"http://127.0.0.1:{server.server_address[1]}", upstream.rstrip("/"))
    handler.proxy = proxy
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
