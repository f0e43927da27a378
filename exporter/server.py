"""HTTP serving: /metrics (Prometheus text, or OpenMetrics when the Accept header asks), /healthz, /readyz.

The app is plain WSGI; ExporterServer, a small threaded HTTP/1.1 server with keep-alive, serves it.
prometheus_client's content negotiation; the body comes pre-rendered (and pre-compressed when gzip is
asked) from the exporter's snapshot (registry.py). TLS and basic auth come from an exporter-toolkit web
config file. TLS handshakes happen in the connection's own thread, so one slow client cannot stall others.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.exposition import gzip_accepted

from exporter.exposition import Families, fast_encoder, render_openmetrics, render_text
from exporter.registry import Exporter
from exporter.web_config import WebConfig

log = logging.getLogger("exporter.server")

LANDING_PAGE = b"""<html><head><title>llmobs exporter</title></head><body><h1>llmobs exporter</h1>
<p><a href="/metrics">Metrics</a> | <a href="/healthz">Health</a> | <a href="/readyz">Readiness</a></p>
</body></html>"""

StartResponse = Callable[..., Any]


MAX_CONCURRENT_SCRAPES = 40  # as nvidia_gpu_exporter's --web.max-requests; more get 503 at once
MAX_CONNECTIONS = 256  # open connections (a thread each); more are closed at once
MAX_HEAD_BYTES = 64 * 1024
IDLE_TIMEOUT_SECONDS = 30  # a connection may idle this long (also bounds a stalled TLS handshake)


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


class ExporterServer:
    """Serve a WSGI app on (host, port) from background threads until close().

    A small HTTP/1.1 server of our own, in place of wsgiref: it keeps connections alive (Prometheus
    reuses its connection from scrape to scrape, so a scrape costs no TCP handshake and no new thread)
    and parses only what the exporter needs (request line, headers); wsgiref's request handling was a
    large part of a scrape once the body came pre-rendered (bench/RESULTS.md). One thread per
    connection, so a slow client or a stalled TLS handshake holds only its own; connections beyond
    MAX_CONNECTIONS are closed at once.
    """

    def __init__(
        self, app: Callable, host: str, port: int, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.app, self.ssl_context = app, ssl_context
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((host, port))
            self.socket.listen(128)
        except OSError:
            self.socket.close()
            raise
        self.port = self.socket.getsockname()[1]
        self.scheme = "https" if ssl_context is not None else "http"
        self._connections = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept_forever, name="http", daemon=True)

    def start(self) -> ExporterServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)
        self.socket.close()
        self._thread.join(timeout=5)

    def _accept_forever(self) -> None:
        while not self._closing.is_set():
            try:
                connection, address = self.socket.accept()
            except OSError:
                if self._closing.is_set():
                    return
                time.sleep(0.01)  # e.g. out of file descriptors: do not spin
                continue
            if not self._connections.acquire(blocking=False):
                connection.close()
                continue
            threading.Thread(
                target=self._serve_connection, args=(connection, address[0]), name="http-conn", daemon=True
            ).start()

    def _serve_connection(self, connection: socket.socket, client: str) -> None:
        try:
            connection.settimeout(IDLE_TIMEOUT_SECONDS)
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                connection = self.ssl_context.wrap_socket(connection, server_side=True)
            _HttpConnection(connection, self.app).serve()
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            log.debug("connection from %s ended: %s", client, exc)
        finally:
            with contextlib.suppress(OSError):
                connection.close()
            self._connections.release()


class _BadRequest(Exception):
    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


class _HttpConnection:
    """Requests of one connection, one after another, until either side closes it."""

    def __init__(self, connection: socket.socket, app: Callable) -> None:
        self.connection, self.app = connection, app
        self.buffer = b""

    def serve(self) -> None:
        while True:
            try:
                request = self._read_head()
            except _BadRequest as bad:
                self._respond(bad.status, [("Content-Type", "text/plain; charset=utf-8")], [], False, False)
                return
            if request is None:
                return
            method, path, version, headers = request
            keep_alive = _keep_alive(version, headers.get("connection", ""))
            if not self._skip_body(headers):
                keep_alive = False
            if method not in ("GET", "HEAD"):
                body = [b"method not allowed\n"]
                extra = [("Allow", "GET, HEAD"), ("Content-Type", "text/plain; charset=utf-8")]
                self._respond("405 Method Not Allowed", extra, body, keep_alive, False)
            else:
                self._call_app(method, path, headers, keep_alive)
            if not keep_alive:
                return

    def _read_head(self) -> tuple[str, str, str, dict[str, str]] | None:
        while b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise _BadRequest("431 Request Header Fields Too Large")
            chunk = self.connection.recv(65536)
            if not chunk:
                return None  # closed between requests (or mid-head: nothing to answer)
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        if len(head) > MAX_HEAD_BYTES:
            raise _BadRequest("431 Request Header Fields Too Large")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest("400 Bad Request")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip() or line[0] in " \t":
                raise _BadRequest("400 Bad Request")
            headers[name.lower()] = value.strip()
        method, target, version = parts
        return method, target.split("?", 1)[0], version, headers

    def _skip_body(self, headers: dict[str, str]) -> bool:
        """Discard a request body (none is expected); False when the connection cannot be reused."""
        if "transfer-encoding" in headers:
            return False
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            return False
        if length < 0 or length > MAX_HEAD_BYTES:
            return False
        while len(self.buffer) < length:
            chunk = self.connection.recv(65536)
            if not chunk:
                return False
            self.buffer += chunk
        self.buffer = self.buffer[length:]
        return True

    def _call_app(self, method: str, path: str, headers: dict[str, str], keep_alive: bool) -> None:
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "HTTP_ACCEPT": headers.get("accept"),
            "HTTP_ACCEPT_ENCODING": headers.get("accept-encoding", ""),
            "HTTP_AUTHORIZATION": headers.get("authorization"),
        }
        response: list[Any] = []

        def start_response(status: str, response_headers: list[tuple[str, str]], *_: Any) -> None:
            response[:] = [status, response_headers]

        try:
            body = self.app(environ, start_response)
        except Exception:
            log.exception("request for %s failed", path)
            body, response[:] = [b"internal error\n"], ["500 Internal Server Error", []]
        self._respond(response[0], response[1], body, keep_alive, method == "HEAD")

    def _respond(
        self, status: str, headers: list[tuple[str, str]], body: Iterable[bytes], keep_alive: bool, head: bool
    ) -> None:
        payload = b"".join(body)
        lines = [f"HTTP/1.1 {status}", *(f"{name}: {value}" for name, value in headers)]
        connection = "keep-alive" if keep_alive else "close"
        lines += [f"Content-Length: {len(payload)}", f"Connection: {connection}"]
        message = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.connection.sendall(message if head else message + payload)


def _keep_alive(version: str, connection_header: str) -> bool:
    tokens = {token.strip().lower() for token in connection_header.split(",")}
    if version == "HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens
