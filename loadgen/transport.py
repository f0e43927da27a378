"""An httpx transport for many concurrent streams: an O(1) keep-alive pool and arrival timestamps.

httpx's default pool (httpcore.AsyncConnectionPool) rescans every connection, and for each one
every connection again, whenever a request starts or ends; at 500 concurrent streams that held the
event loop long enough to add tens of milliseconds to measured latencies. This pool keeps idle
connections in a stack: a request takes the most recently used one that is still open (a
connection the server closed while idle is readable, and is dropped, not reused), or opens a new
one while under the limit. Connections are httpcore's own HTTP/1.1 connections.

Plain-HTTP sockets ask the kernel for receive timestamps (SO_TIMESTAMPNS): each read carries the
time its bytes reached the host, converted to the perf_counter clock. When many streams receive
tokens at once (a server's decode step sends one to every stream) the event loop parses them one
after another, but the timestamps stay those of arrival, so one stream's parsing does not shift
another stream's token times. The stamp of the read that completed an event is
`network_stream.arrival_ns` (response extension "network_stream"). HTTPS uses httpcore's own
backend; its times are taken when the client reads the bytes.
"""

from __future__ import annotations

import asyncio
import select
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from time import perf_counter_ns
from typing import Any

import httpcore
import httpx

_EXCEPTIONS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
)


_CORE_ERRORS = tuple(source for source, _ in _EXCEPTIONS)


def _mapped(exc: Exception) -> Exception:
    for source, target in _EXCEPTIONS:
        if isinstance(exc, source):
            return target(str(exc))
    return exc


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        self._stream = stream
        self._release = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        except _CORE_ERRORS as exc:
            raise _mapped(exc) from exc

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()  # type: ignore[attr-defined]
        except _CORE_ERRORS as exc:
            raise _mapped(exc) from exc
        finally:
            self._release()


class StackPoolTransport(httpx.AsyncBaseTransport):
    def __init__(self, max_connections: int, keepalive_expiry: float = 30.0) -> None:
        self._idle: list[httpcore.AsyncHTTPConnection] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._keepalive_expiry = keepalive_expiry
        self.opened = 0  # connections opened, for tests and reports

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self._slots.acquire()
        url = request.url
        connection = self._take_idle()
        if connection is None:
            origin = httpcore.Origin(
                url.raw_scheme, url.raw_host, url.port or (443 if url.scheme == "https" else 80)
            )
            connection = httpcore.AsyncHTTPConnection(
                origin,
                keepalive_expiry=self._keepalive_expiry,
                network_backend=_BACKEND if url.scheme == "http" else None,
            )
            self.opened += 1
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw,
            content=request.stream,  # type: ignore[arg-type]
            extensions=request.extensions,
        )
        try:
            response = await connection.handle_async_request(core_request)
        except BaseException as exc:
            self._slots.release()
            await connection.aclose()
            if isinstance(exc, _CORE_ERRORS):
                raise _mapped(exc) from exc
            raise

        def release() -> None:
            self._slots.release()
            if connection.is_idle() and not connection.has_expired():
                self._idle.append(connection)

        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream, release),  # type: ignore[arg-type]
            extensions=response.extensions,
        )

    def _take_idle(self) -> httpcore.AsyncHTTPConnection | None:
        while self._idle:
            connection = self._idle.pop()
            if connection.is_idle() and not connection.has_expired():
                return connection
            self._close_soon(connection)
        return None

    @staticmethod
    def _close_soon(connection: httpcore.AsyncHTTPConnection) -> None:
        task = asyncio.get_running_loop().create_task(connection.aclose())
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.aclose()


# SO_TIMESTAMPNS == SCM_TIMESTAMPNS; Python's socket module does not name it (35 on Linux)
_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform == "linux" else None)
_ANCILLARY = socket.CMSG_SPACE(16) if _TIMESTAMPNS is not None else 0
_READ_BYTES = 256 * 1024


def _realtime_to_monotonic(realtime_ns: int) -> int:
    return realtime_ns - (time.time_ns() - perf_counter_ns())


class _TimedStream(httpcore.AsyncNetworkStream):
    """A non-blocking TCP socket read with recvmsg(); `arrival_ns` is the kernel's receive timestamp
    of the bytes (SO_TIMESTAMPNS, converted to the perf_counter clock), so a busy event loop does
    not shift measured token times. Without kernel stamps it is the time of the read."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self.arrival_ns = 0

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        sock = self._sock
        while True:
            try:
                data, ancillary, _, _ = sock.recvmsg(_READ_BYTES, _ANCILLARY)
            except (BlockingIOError, InterruptedError):
                await self._readable(timeout)
                continue
            except OSError as exc:
                raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc
            stamp = 0
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == _TIMESTAMPNS and len(payload) >= 16:
                    seconds, nanoseconds = struct.unpack("qq", payload[:16])
                    stamp = _realtime_to_monotonic(seconds * 1_000_000_000 + nanoseconds)
            self.arrival_ns = stamp or perf_counter_ns()
            return data

    async def _readable(self, timeout: float | None) -> None:
        waiter = self._loop.create_future()
        fd = self._sock.fileno()
        self._loop.add_reader(fd, _wake, waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            raise httpcore.ReadTimeout(f"no data for {timeout:g}s") from None
        finally:
            self._loop.remove_reader(fd)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._loop.sock_sendall(self._sock, buffer)
        except TimeoutError:
            raise httpcore.WriteTimeout(f"could not write for {timeout:g}s") from None
        except OSError as exc:
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        self._sock.close()

    async def start_tls(self, ssl_context, server_hostname=None, timeout=None) -> httpcore.AsyncNetworkStream:
        raise httpcore.UnsupportedProtocol("TLS goes through httpcore's own backend")

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # idle keep-alive connection: readable means the server closed it
            if self._sock.fileno() < 0:
                return True
            return bool(select.select([self._sock], [], [], 0)[0])
        if info == "socket":
            return self._sock
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        return None


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _TimedBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        sock = None
        try:
            async with asyncio.timeout(timeout):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                family, kind, proto, _, address = infos[0]
                sock = socket.socket(family, kind, proto)
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if _TIMESTAMPNS is not None:
                    sock.setsockopt(socket.SOL_SOCKET, _TIMESTAMPNS, 1)
                if local_address:
                    sock.bind((local_address, 0))
                await loop.sock_connect(sock, address)
        except TimeoutError:
            if sock is not None:
                sock.close()
            raise httpcore.ConnectTimeout(f"no TCP connection to {host}:{port} within {timeout:g}s") from None
        except OSError as exc:
            if sock is not None:
                sock.close()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        return _TimedStream(sock)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.UnsupportedProtocol("unix sockets are not supported")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


_BACKEND = _TimedBackend()
