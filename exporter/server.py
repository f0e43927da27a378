"""HTTP serving: /metrics (Prometheus text, or OpenMetrics when the Accept header asks), /healthz, /readyz.

A threaded wsgiref server from the standard library; prometheus_client's content negotiation; the body
comes pre-rendered (and pre-compressed when gzip is asked) from the exporter's snapshot (registry.py).
TLS and basic auth come from an exporter-toolkit web config file. TLS handshakes happen in the
connection's own thread, so one slow client cannot stall the others.
"""

from __future__ import annotations

import gzip
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client.exposition import gzip_accepted

from exporter.exposition import fast_encoder, render_openmetrics, render_text
from exporter.registry import Exporter
from exporter.web_config import WebConfig

log = logging.getLogger("exporter.server")

LANDING_PAGE = b"""<html><head><title>llmobs exporter</title></head><body><h1>llmobs exporter</h1>
<p><a href="/metrics">Metrics</a> | <a href="/healthz">Health</a> | <a href="/readyz">Readiness</a></p>
</body></html>"""

StartResponse = Callable[..., Any]


MAX_CONCURRENT_SCRAPES = 40  # as nvidia_gpu_exporter's --web.max-requests; more get 503 at once


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
                body = encoder(_Families(exporter.families()))
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


class _Families:
    def __init__(self, families: list) -> None:
        self._families = families

    def collect(self) -> list:
        return self._families


def _text(start_response: StartResponse, status: str, body: str) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
    return [body.encode()]


class _Handler(WSGIRequestHandler):
    timeout = 30  # seconds a connection may idle (also bounds a stalled TLS handshake)

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def handle(self) -> None:
        try:
            super().handle()
        except (ssl.SSLError, OSError) as exc:
            log.debug("connection from %s ended: %s", self.client_address[0], exc)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.client_address[0], format % args)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("request from %s failed", client_address, exc_info=True)


def _server_class(host: str) -> type[_ThreadingServer]:
    if ":" in host:

        class _IPv6Server(_ThreadingServer):
            address_family = socket.AF_INET6

        return _IPv6Server
    return _ThreadingServer


class ExporterServer:
    """Serve app on (host, port) in a background thread until close()."""

    def __init__(
        self, app: Callable, host: str, port: int, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.httpd = make_server(host, port, app, server_class=_server_class(host), handler_class=_Handler)
        if ssl_context is not None:
            self.httpd.socket = ssl_context.wrap_socket(
                self.httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port = self.httpd.server_address[1]
        self.scheme = "https" if ssl_context is not None else "http"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True)

    def start(self) -> ExporterServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)
