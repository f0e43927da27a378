"""One HTTP/1.1 connection of the exporter's server, read by the event loop under deadlines.

The event loop reads request heads and writes responses; only a complete request reaches a worker
thread (the WSGI app). So a client that trickles its head, sends nothing, or never reads its answer holds
a file descriptor and a few hundred bytes, never a thread, and only until a deadline:

- idle: a connection waiting for a request (new, or kept alive after a response) may say nothing for
  30 s;
- request: from its first byte, a request's whole head (and body, if any) must arrive within 10 s,
  however it is trickled (the limit is on the whole, not on each read);
- write: a response must drain into the socket within 30 s;
- TLS: the handshake must finish within 10 s.

Pipelining (RFC 9112 9.3) is served, within a budget: a request whose bytes came before the answer to
the one before it was written is pipelined. At most 16 are answered in a row on a connection; the 16th
answer says `Connection: close` and the connection ends (`pipelined`). Pipelined requests take at most 2
workers at once and wait their turn otherwise, so a client that waits for its answers (Prometheus) finds
a worker however many requests others send without reading. While a request is answered, at most a
read's worth of the next is read ahead; the rest waits in the kernel, where the client's writes stall. A
connection busy with a pipelined request is the first evicted at the cap (server._eviction_order).

ServerLimits holds these and the sizes (head 64 KiB, body 64 KiB, 512 connections).

Each connection that ends for a reason other than the client closing it is counted by that reason
(CLOSE_REASONS). A line may end in CRLF or a bare LF (RFC 9112 2.2); a stray CR inside a line is a 400.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

log = logging.getLogger("exporter.server")


@dataclass(frozen=True, kw_only=True)
class ServerLimits:
    """Budgets of every connection (the defaults serve; tests shorten the timeouts)."""

    max_connections: int = 512  # open connections, each a file descriptor and no thread
    max_head_bytes: int = 64 * 1024
    max_body_bytes: int = 64 * 1024  # no request needs a body; one is read and discarded up to this
    idle_timeout_seconds: float = 30.0  # waiting for a request to begin
    request_timeout_seconds: float = 10.0  # a whole head and body, from its first byte
    write_timeout_seconds: float = 30.0  # a whole response, into the socket
    tls_handshake_timeout_seconds: float = 10.0
    max_pipelined_requests: int = 16  # answered in a row to a client that sends before it reads
    pipelined_workers: int = 2  # worker threads that pipelined requests may take at once


CloseReason = Literal[
    "idle_timeout",  # nothing sent for idle_timeout_seconds while a request was awaited
    "request_timeout",  # a request head (and body) not complete within request_timeout_seconds
    "write_timeout",  # a response not taken by the client within write_timeout_seconds
    "tls_handshake",  # a TLS handshake that failed or did not finish in time
    "bad_request",  # answered 400 (malformed head), 431 (head too large) or 413 (body too large)
    "pipelined",  # closed after answering max_pipelined_requests pipelined requests in a row
    "evicted",  # the oldest waiting connection, closed to make room for a new one at the cap
    "refused",  # a new connection at the cap when no connection was waiting to be evicted
]
CLOSE_REASONS: tuple[CloseReason, ...] = CloseReason.__args__  # type: ignore[attr-defined]

Request = tuple[str, str, str, dict[str, str]]  # method, path, version, headers (names lower-case)


class HttpStats:
    """What the server did with connections, for /metrics: a collector (registry.ExporterCollector) that
    registry.py lists as `http`.

    Written by the server's event-loop thread, read by the refresher: plain integers under a lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = dict.fromkeys(CLOSE_REASONS, 0)
        self._open = 0

    def closed(self, reason: CloseReason) -> None:
        with self._lock:
            self._closed[reason] += 1

    def set_open(self, count: int) -> None:
        self._open = count

    def closed_by_reason(self) -> dict[str, int]:
        with self._lock:
            return dict(self._closed)

    def open_connections(self) -> int:
        return self._open

    def collect(self) -> Iterator[Metric]:
        closed = CounterMetricFamily(
            "exporter_http_connections_closed_total",
            "Connections the HTTP server closed itself, by reason (deadline, eviction, bad request).",
            labels=["reason"],
        )
        for reason, count in self.closed_by_reason().items():
            closed.add_metric([reason], count)
        yield closed
        yield GaugeMetricFamily(
            "exporter_http_connections_open", "Open HTTP connections.", value=self.open_connections()
        )

    def ready(self) -> bool:
        return True

    def error_counts(self) -> Mapping[str, int]:
        return {}  # the closes are counted in their own family, by reason

    def close(self) -> None:
        pass


class BadRequest(Exception):
    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


class Server(Protocol):
    """What a connection needs from its server."""

    app: Callable
    executor: Executor
    limits: ServerLimits
    ssl_context: ssl.SSLContext | None
    pipeline_lane: asyncio.Semaphore  # limits.pipelined_workers

    def admit(self, connection: HttpConnection) -> bool: ...

    def forget(self, connection: HttpConnection, reason: CloseReason | None) -> None: ...


READ_BYTES = 16 * 1024  # taken from the socket at a time (asyncio's own reads take up to 256 KiB)


class HttpConnection(asyncio.BufferedProtocol):
    """Requests of one connection, one at a time, until either side closes it or a deadline passes.

    A BufferedProtocol, so that each read is at most READ_BYTES: what a connection holds is one head (up to
    max_head_bytes) and one read ahead, not whatever the client managed to send.
    """

    def __init__(self, server: Server) -> None:
        self.server, self.limits = server, server.limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.incoming = bytearray(READ_BYTES)  # where the transport reads into
        self.scanned = 0  # how much of the buffer was searched for the end of the head
        self.head: tuple[Request, bool, int] | None = None  # a head whose body is still coming
        self.busy = False  # a request is with a worker or its response is being written
        self.receiving = False  # a request has begun (blank lines before it count) and is not complete
        self.stalled_since: float | None = None  # since when the client has not taken the response
        self.pipelined = 0  # requests in a row whose bytes came before the answer to the one before
        self.pipelining_since: float | None = None  # since when it has sent requests without waiting
        self.close_reason: CloseReason | None = None  # counted when the connection ends after it
        self.waiting_since = time.monotonic()  # when it began waiting for its current request
        self.served = 0  # requests answered on it: a connection that was ever answered is evicted last
        self.closed = False
        self.eof = False
        self._task: asyncio.Task[None] | None = None  # the loop keeps only a weak reference
        self._timer: asyncio.TimerHandle | None = None
        self._drained: asyncio.Future[None] | None = None

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.server.admit(self):
            self._close("refused")
            return
        if self.server.ssl_context is not None:
            self._arm(self.limits.tls_handshake_timeout_seconds, "tls_handshake")
            self._task = self.loop.create_task(self._start_tls(transport, self.server.ssl_context))
        else:
            self._start(transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.incoming)

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self.incoming[:nbytes])

    def data_received(self, data: bytes | bytearray) -> None:
        if not self.receiving and not self.busy:  # the request's first byte: its deadline starts
            self.receiving = True  # blank lines before a request-line count, so they cannot restart it
            self._arm(self.limits.request_timeout_seconds, "request_timeout")
        self.buffer += data
        if not self.busy:
            self._next_request()
        elif self.transport is not None:
            self.transport.pause_reading()  # one read ahead tells it is pipelined; the rest waits

    def eof_received(self) -> bool:
        """The client will send no more: answer a request already complete, then close."""
        self.eof = True
        if not self.busy:
            self._next_request()
        return self.busy and self.server.ssl_context is None  # TLS cannot stay half-open (asyncio)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if not self.closed:
            self.closed = True
            self.server.forget(self, None)

    def pause_writing(self) -> None:
        self._drained = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # the connection's life

    def evict(self) -> None:
        self._close("evicted")
        if self._task is not None and self._task is not asyncio.current_task(self.loop):
            self._task.cancel()  # a request still queued for a worker is dropped, not computed

    def _close(self, reason: CloseReason) -> None:
        if self.closed:
            return
        self.closed = True
        self._disarm()
        self.server.forget(self, reason)
        if self.transport is not None:
            self.transport.abort()

    def _arm(self, seconds: float, reason: CloseReason) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._close, reason)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _start(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=0)  # pause_writing whenever a write is not taken at once
        self._await_request()

    async def _start_tls(self, raw: asyncio.Transport, context: ssl.SSLContext) -> None:
        try:
            timeout = self.limits.tls_handshake_timeout_seconds
            transport = await self.loop.start_tls(
                raw, self, context, server_side=True, ssl_handshake_timeout=timeout
            )
        except Exception as exc:  # ssl.SSLError, ConnectionError, TimeoutError
            log.debug("TLS handshake failed: %r", exc)
            self._close("tls_handshake")
            return
        if self.closed or transport is None:
            if transport is not None:
                transport.abort()
            return
        assert isinstance(transport, asyncio.Transport)
        self._start(transport)

    def _await_request(self) -> None:
        self.waiting_since = time.monotonic()
        self.receiving = bool(self.buffer)
        if self.buffer and self.served:  # sent before its previous answer was written: pipelined
            self.pipelined += 1
            self.pipelining_since = self.pipelining_since or self.waiting_since
        else:
            self.pipelined, self.pipelining_since = 0, None
        if self.buffer:
            self._arm(self.limits.request_timeout_seconds, "request_timeout")
            self._next_request()
        else:
            self._arm(self.limits.idle_timeout_seconds, "idle_timeout")

    def _next_request(self) -> None:
        """Serve the request at the front of the buffer once its head (and body) is complete."""
        try:
            found = self._take_request()
        except BadRequest as bad:
            self._answer_and_close(bad.status)
            return
        if found is None:
            return
        request, keep_alive = found
        self.busy = True
        self._disarm()
        if self.buffer and self.transport is not None:
            self.transport.pause_reading()  # it holds the next request already
        if self.pipelined >= self.limits.max_pipelined_requests:
            keep_alive, self.close_reason = False, "pipelined"
        last = not keep_alive or (self.eof and not self.buffer)  # EOF: answer what came, then close
        self._task = self.loop.create_task(self._serve(request, not last, self.pipelined > 0))

    def _take_request(self) -> tuple[Request, bool] | None:
        if self.head is None:
            self.head = self._take_head()
            if self.head is None:
                return None
        request, keep_alive, length = self.head
        if len(self.buffer) < length:
            return None  # the body is still coming, under the same deadline as the head
        del self.buffer[:length]  # no request needs its body: discarded
        self.head = None
        return request, keep_alive

    def _take_head(self) -> tuple[Request, bool, int] | None:
        """The head at the front of the buffer, taken out of it, and the length of the body after it."""
        if not self.scanned:
            del self.buffer[: len(self.buffer) - len(self.buffer.lstrip(b"\r\n"))]  # RFC 9112 2.2
        end = head_end(self.buffer, max(0, self.scanned - 2))
        self.scanned = len(self.buffer)
        if end < 0:
            if len(self.buffer) > self.limits.max_head_bytes:
                raise BadRequest("431 Request Header Fields Too Large")
            return None
        if end > self.limits.max_head_bytes:
            raise BadRequest("431 Request Header Fields Too Large")
        request = parse_head(bytes(self.buffer[:end]))
        del self.buffer[:end]
        self.scanned = 0
        headers = request[3]
        keep_alive = wants_keep_alive(request[2], headers.get("connection", ""))
        if "transfer-encoding" in headers:
            return request, False, 0  # we do not read chunked framing, and need no body: answer, close
        declared = headers.get("content-length", "0")
        if not (declared.isascii() and declared.isdigit()):  # 1*DIGIT (RFC 9110 8.6): not int()'s "+1_0"
            raise BadRequest("400 Bad Request")
        length = int(declared)
        if length > self.limits.max_body_bytes:
            raise BadRequest("413 Content Too Large")
        return request, keep_alive, length

    async def _serve(self, request: Request, keep_alive: bool, pipelined: bool) -> None:
        try:
            if pipelined:
                async with self.server.pipeline_lane:
                    response = await self._respond(request, keep_alive)
            else:
                response = await self._respond(request, keep_alive)
        except Exception:  # the executor shut down (server closing), or the response could not be built
            log.exception("request for %s failed", request[1])
            self._close("bad_request")
            return
        if self.closed or self.transport is None:
            return
        self.transport.write(response)
        if self._drained is not None and not self._drained.done():
            self._arm(self.limits.write_timeout_seconds, "write_timeout")
            self.stalled_since = time.monotonic()  # evictable at the cap (server._eviction_order)
            await self._drained
            self.stalled_since = None
            if self.closed:
                return
        self.served += 1
        if not keep_alive:
            self._finish()
            return
        self.busy = False
        self.transport.resume_reading()
        self._await_request()
        if self.eof and not self.busy and not self.closed:
            self._finish()  # the client said all it will: what is left is no complete request

    async def _respond(self, request: Request, keep_alive: bool) -> bytes:
        app, executor = self.server.app, self.server.executor
        return await self.loop.run_in_executor(executor, respond, app, request, keep_alive)

    def _finish(self) -> None:
        """Close after the last response (already written in full)."""
        self.closed = True
        self._disarm()
        self.server.forget(self, self.close_reason)
        assert self.transport is not None
        self.transport.close()

    def _answer_and_close(self, status: str) -> None:
        assert self.transport is not None
        self.busy = True
        self._disarm()
        self.transport.pause_reading()
        body = [status.split(" ", 1)[1].lower().encode() + b"\n"]
        self.transport.write(response_bytes(status, [("Content-Type", "text/plain; charset=utf-8")], body))
        self.closed = True
        self.server.forget(self, "bad_request")
        self.transport.close()
        self.loop.call_later(self.limits.write_timeout_seconds, self.transport.abort)  # if never read


def head_end(buffer: bytearray, start: int) -> int:
    """Index just past the blank line that ends the head (CRLF or bare LF lines), or -1."""
    ends = [i + len(sep) for sep in (b"\n\n", b"\n\r\n") if (i := buffer.find(sep, start)) >= 0]
    return min(ends) if ends else -1


def parse_head(head: bytes) -> Request:
    lines = [line.removesuffix("\r") for line in head.decode("latin-1").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    if any("\r" in line for line in lines):
        raise BadRequest("400 Bad Request")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
        raise BadRequest("400 Bad Request")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or line[0] in " \t":
            raise BadRequest("400 Bad Request")
        name, value = name.lower(), value.strip()
        if name == "content-length" and headers.get(name, value) != value:  # which framing? (RFC 9112 6.3)
            raise BadRequest("400 Bad Request")
        headers[name] = value
    method, target, version = parts
    return method, target.split("?", 1)[0], version, headers


def wants_keep_alive(version: str, connection_header: str) -> bool:
    tokens = {token.strip().lower() for token in connection_header.split(",")}
    if version == "HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens


def respond(app: Callable, request: Request, keep_alive: bool) -> bytes:
    """The whole response to one request (run on a worker thread: the app may take its time)."""
    method, path, _, headers = request
    text = [("Content-Type", "text/plain; charset=utf-8")]
    if method not in ("GET", "HEAD"):
        allow = [("Allow", "GET, HEAD"), *text]
        return response_bytes("405 Method Not Allowed", allow, [b"method not allowed\n"], keep_alive)
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
        body = app(environ, start_response)
    except Exception:
        log.exception("request for %s failed", path)
        body, response[:] = [b"internal error\n"], ["500 Internal Server Error", text]
    return response_bytes(response[0], response[1], body, keep_alive, head=method == "HEAD")


def response_bytes(
    status: str,
    headers: list[tuple[str, str]],
    body: Iterable[bytes],
    keep_alive: bool = False,
    head: bool = False,
) -> bytes:
    payload = b"".join(body)
    lines = [f"HTTP/1.1 {status}", *(f"{name}: {value}" for name, value in headers)]
    lines += [f"Content-Length: {len(payload)}", f"Connection: {'keep-alive' if keep_alive else 'close'}"]
    message = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return message if head else message + payload
