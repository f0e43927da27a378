"""HTTP serving: /metrics (Prometheus text, or OpenMetrics when the Accept header asks), /healthz, /readyz.

The app is plain WSGI; ExporterServer, a small HTTP/1.1 server with keep-alive, serves it: one event-loop
thread reads request heads and writes responses for every connection under deadlines
(exporter/http_protocol.py), and a pool of worker threads runs the app on complete requests only.
prometheus_client's content negotiation; the body comes pre-rendered (and pre-compressed when gzip is
asked) from the exporter's snapshot (registry.py). TLS and basic auth come from an exporter-toolkit web
config file.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client.exposition import gzip_accepted

from exporter.exposition import Families, fast_encoder, render_openmetrics, render_text
from exporter.http_protocol import CloseReason, HttpConnection, HttpStats, ServerLimits
from exporter.registry import Exporter
from exporter.web_config import WebConfig

log = logging.getLogger("exporter.server")

LANDING_PAGE = b"""<html><head><title>llmobs exporter</title></head><body><h1>llmobs exporter</h1>
<p><a href="/metrics">Metrics</a> | <a href="/healthz">Health</a> | <a href="/readyz">Readiness</a></p>
</body></html>"""

StartResponse = Callable[..., Any]


MAX_CONCURRENT_SCRAPES = 40  # as nvidia_gpu_exporter's --web.max-requests; more get 503 at once
MAX_WORKERS = MAX_CONCURRENT_SCRAPES + 8  # so /healthz is answered while every scrape slot is taken
LISTEN_BACKLOG = 512


def make_app(
    exporter: Exporter, web_config: WebConfig, max_concurrent_scrapes: int = MAX_CONCURRENT_SCRAPES
) -> Callable[[dict, StartResponse], Iterable[bytes]]:
    scrape_slots = threading.BoundedSemaphore(max_concurrent_scrapes)

    def metrics_app(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        if not scrape_slots.acquire(blocking=False):
            return _text(start_response, "503 Service Unavailable", "too many concurrent scrapes\n")
        try:
            encoder, content_type = fast_encoder(environ.get("HTTP_ACCEPT"))
            gzipped = gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", ""))
            if encoder in (render_text, render_openmetrics):
                body = exporter.scrape(openmetrics=encoder is render_openmetrics, gzipped=gzipped)
            else:  # an unusual negotiation (e.g. another escaping scheme): prometheus_client renders it
                body = encoder(Families(exporter.families()))
                body = gzip.compress(body, compresslevel=1) if gzipped else body
        finally:
            scrape_slots.release()
        headers = [("Content-Type", content_type)]
        if gzipped:
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [body]

    def app(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if not web_config.check_authorization(environ.get("HTTP_AUTHORIZATION")):
            start_response(
                "401 Unauthorized",
                [("WWW-Authenticate", 'Basic realm="llmobs-exporter"'), ("Content-Type", "text/plain")],
            )
            return [b"Unauthorized\n"]
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/healthz":
            return _text(start_response, "200 OK", "ok\n")
        if path == "/readyz":
            if exporter.ready():
                return _text(start_response, "200 OK", "ready\n")
            return _text(start_response, "503 Service Unavailable", "not ready: first collection pending\n")
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [LANDING_PAGE]
        return _text(start_response, "404 Not Found", "not found\n")

    return app


def _text(start_response: StartResponse, status: str, body: str) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
    return [body.encode()]


def _evictable(connection: HttpConnection) -> bool:
    """Waiting for a request, or busy for a client that does not wait for its answers."""
    return not connection.busy or _hurried_since(connection) is not None


def _hurried_since(connection: HttpConnection) -> float | None:
    """Since when the client has not waited for its answers: a stalled write or pipelined requests."""
    times = [t for t in (connection.stalled_since, connection.pipelining_since) if t is not None]
    return min(times, default=None)


def _eviction_order(connection: HttpConnection) -> tuple[int, float]:
    """Who makes room first at the cap: a connection whose client does not wait for its answers (a stalled
    write, pipelined requests), then one never answered (a slow or empty head), then an idle answered one
    (Prometheus's kept connection); the longest waiting first within each. A client that shows it does not
    wait goes before a new connection whose request has not come in yet (a scrape's, maybe)."""
    hurried = _hurried_since(connection)
    if hurried is not None:
        return 0, hurried
    return (1 if connection.served == 0 else 2), connection.waiting_since


class ExporterServer:
    """Serve a WSGI app on (host, port) from background threads until close().

    A small HTTP/1.1 server of our own, in place of wsgiref: it keeps connections alive (Prometheus
    reuses its connection from scrape to scrape, so a scrape costs no TCP handshake) and parses only what
    the exporter needs (request line, headers); wsgiref's request handling was a large part of a scrape
    once the body came pre-rendered (bench/RESULTS.md). The event loop holds every connection; a worker
    thread is taken only by a complete request, so slow or idle clients cannot hold the workers. At most
    `limits.max_connections` are open: a new one beyond that evicts a connection whose client does not
    wait for its answers (pipelined requests, a response it stopped reading), else the one that has
    waited longest for its request among those never answered (a slow or empty head), else among the
    rest (an idle keep-alive, as Prometheus holds), and is refused only when every connection is being
    answered for a client that waits. So clients that reconnect as fast as they are evicted churn among
    themselves, not through Prometheus's connection. `stats` (HttpStats, the `http` collector) counts
    connections ended by a deadline, an eviction, a bad request or the pipelining budget.
    """

    def __init__(
        self,
        app: Callable,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None = None,
        limits: ServerLimits | None = None,
        stats: HttpStats | None = None,
    ) -> None:
        self.app, self.ssl_context, self.limits = app, ssl_context, limits or ServerLimits()
        self.stats = stats or HttpStats()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((host, port))
            self.socket.listen(LISTEN_BACKLOG)
        except OSError:
            self.socket.close()
            raise
        self.port = self.socket.getsockname()[1]
        self.scheme = "https" if ssl_context is not None else "http"
        self.executor = ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix="http-worker")
        self.connections: dict[HttpConnection, None] = {}  # in the loop's thread only
        self.pipeline_lane = asyncio.Semaphore(self.limits.pipelined_workers)  # bound to the loop on use
        self._loop = asyncio.new_event_loop()
        self._listening = threading.Event()
        self._thread = threading.Thread(target=self._serve_forever, name="http", daemon=True)

    def start(self) -> ExporterServer:
        self._thread.start()
        self._listening.wait(10)
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.socket.close()

    def closed_by_reason(self) -> dict[str, int]:
        """Connections the server ended, by CloseReason (every reason present, zeros included)."""
        return self.stats.closed_by_reason()

    # called by connections, in the loop's thread

    def admit(self, connection: HttpConnection) -> bool:
        if len(self.connections) >= self.limits.max_connections:
            evictable = [c for c in self.connections if _evictable(c)]
            if not evictable:
                return False
            min(evictable, key=_eviction_order).evict()
        self.connections[connection] = None
        self.stats.set_open(len(self.connections))
        return True

    def forget(self, connection: HttpConnection, reason: CloseReason | None) -> None:
        self.connections.pop(connection, None)
        self.stats.set_open(len(self.connections))
        if reason is not None:
            self.stats.closed(reason)

    def _serve_forever(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(
            loop.create_server(lambda: HttpConnection(self), sock=self.socket, backlog=LISTEN_BACKLOG)
        )
        self._listening.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            for connection in list(self.connections):
                connection.evict()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()
