"""A lean HTTP/1.1 transport for httpx: O(1) keep-alive pool, one write per request, body chunks
handed over per socket read, and kernel receive timestamps.

Why not httpx's default (httpcore + h11): its pool rescans every connection, and for each one every
connection again, whenever a request starts or ends (at 500 streams that held the event loop for
seconds); it writes headers, body and end-of-message in three syscalls; and h11 hands every HTTP
chunk (one per SSE event) up through several generator layers. Here idle connections are a stack
(the most recently used one that is still open is taken; one the server closed while idle is
readable and is dropped, never reused), a request is one send(), and each socket read yields the
de-chunked bytes it completed, in one piece.

Each read asks the kernel for its receive timestamp (SO_TIMESTAMPNS, converted to the perf_counter
clock): `arrival_ns` of the response's "network_stream" extension is when the bytes of the latest
read reached the host. When many streams receive tokens at once (a decode step sends one to every
stream), the event loop parses them one after another, but the stamps stay those of arrival, so one
stream's parsing does not shift another stream's token times (connection.py). Plain HTTP only;
LoadClient uses httpx's own transport for https (times then taken when the client reads).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from time import perf_counter_ns

import httpx

from loadgen.connection import Connection

__all__ = ["MalformedResponse", "RawResponse", "StackPoolTransport"]

_READ_BYTES = 256 * 1024
_MAX_HEAD_BYTES = 64 * 1024


class MalformedResponse(httpx.RemoteProtocolError):
    """The server's bytes are not valid HTTP/1.1 (status line, headers, chunked framing)."""


class _Body(httpx.AsyncByteStream):
    """The response body: de-chunked bytes, one piece per socket read; releases the connection."""

    def __init__(
        self,
        pool: StackPoolTransport,
        connection: Connection,
        request: httpx.Request | None,
        read_s: float | None,
        length: int | None,
        chunked: bool,
        keep_alive: bool,
        deadline: float | None = None,
    ) -> None:
        self._pool = pool
        self._connection = connection
        self._request = request
        self._length = length
        self._chunked = chunked
        self._keep_alive = keep_alive
        self._complete = False
        self._read_s = read_s
        self._deadline = deadline

    def __aiter__(self) -> AsyncIterator[bytes]:
        # the framing's own generator, not a wrapper around it: one async-generator layer per piece
        if self._chunked:
            return self._chunks()
        if self._length is not None:
            return self._sized(self._length)
        return self._until_close()

    async def _more(self) -> None:
        if not await self._connection.fill(self._read_s, self._request, self._deadline):
            raise httpx.RemoteProtocolError(
                "connection closed before the response ended", request=self._request
            )

    async def _sized(self, remaining: int) -> AsyncIterator[bytes]:
        buffer = self._connection.buffer
        while True:
            if buffer:
                piece = bytes(buffer[:remaining])
                del buffer[: len(piece)]
                remaining -= len(piece)
                yield piece
            if remaining <= 0:
                self._complete = True
                return
            await self._more()

    async def _until_close(self) -> AsyncIterator[bytes]:
        connection = self._connection
        while True:
            if connection.buffer:
                piece = bytes(connection.buffer)
                connection.buffer.clear()
                yield piece
            if not await connection.fill(self._read_s, self._request, self._deadline):
                self._complete = True
                return

    async def _chunks(self) -> AsyncIterator[bytes]:
        # Parsed by index over one copy of what has arrived, consumed from the buffer once per read
        # (deleting from the front of a bytearray chunk by chunk cost more than the parsing).
        buffer = self._connection.buffer
        need = -1  # data bytes of the current chunk still to come; -1: a size line is next
        while True:
            data = bytes(buffer)
            pieces = []
            at = 0
            while True:
                if need < 0:
                    end = data.find(b"\r\n", at)
                    if end < 0:
                        break
                    try:
                        need = int(data[at:end], 16)
                    except ValueError:  # chunk extensions (`;name=value`), or not a size at all
                        need = _chunk_size(data[at:end], self._request)
                    if need < 0:
                        raise MalformedResponse("negative chunk size", request=self._request)
                    if need == 0:  # the last chunk, then optional trailers and a blank line
                        stop = data.find(b"\r\n\r\n", end)
                        if stop < 0:
                            need = -1
                            break  # wait for the end of the trailers
                        del buffer[: stop + 4]
                        if pieces:
                            yield b"".join(pieces)
                        self._complete = True
                        return
                    at = end + 2
                stop = at + need
                if len(data) >= stop + 2:
                    if data[stop : stop + 2] != b"\r\n":
                        raise MalformedResponse("chunk not followed by CRLF", request=self._request)
                    if need:
                        pieces.append(data[at:stop])
                    at = stop + 2
                    need = -1
                    continue
                take = min(len(data) - at, need)  # a large chunk: hand over what has arrived
                if take > 0:
                    pieces.append(data[at : at + take])
                    at += take
                    need -= take
                break
            del buffer[:at]
            if pieces:
                yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
            await self._more()

    async def aclose(self) -> None:
        self._pool.release(self._connection, reusable=self._complete and self._keep_alive)


class RawResponse:
    """What the load client reads from a response on the fast path (a subset of httpx.Response)."""

    __slots__ = ("_body", "extensions", "headers", "resent_ns", "status_code")

    def __init__(
        self, status: int, headers: dict[str, str], connection: Connection, resent_ns: int, body: _Body
    ):
        self.status_code = status
        self.headers = headers
        self.extensions = {"network_stream": connection}
        self.resent_ns = resent_ns  # when the request was sent again on a fresh connection; 0: it was not
        self._body = body

    def aiter_raw(self) -> AsyncIterator[bytes]:
        return self._body.__aiter__()

    aiter_bytes = aiter_raw  # the load path asks for identity encoding

    async def aread(self) -> bytes:
        return b"".join([piece async for piece in self._body])

    async def aclose(self) -> None:
        await self._body.aclose()


class StackPoolTransport(httpx.AsyncBaseTransport):
    def __init__(self, max_connections: int) -> None:
        self._idle: list[Connection] = []
        self._scratch = memoryview(bytearray(_READ_BYTES))
        # One slot per connection. post_raw's caller takes a slot before it stamps a request as sent
        # (so time spent waiting for a connection is dispatch delay, not latency); the slot comes back
        # when the response is closed, or when the exchange fails.
        self.slots = asyncio.Semaphore(max_connections)
        self.opened = 0  # connections opened, for tests and reports

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout") or {}
        url = request.url
        payload = _serialize(request, await request.aread())
        await self.slots.acquire()
        connection, status, reason, headers, resent_ns = await self._exchange(
            url.host, url.port or 80, payload, timeouts, request
        )
        if resent_ns:
            request.extensions["loadgen_resent_ns"] = resent_ns
        length, chunked, keep_alive = _framing(request.method, status, headers, request)
        body = _Body(self, connection, request, timeouts.get("read"), length, chunked, keep_alive)
        return httpx.Response(
            status_code=status,
            headers=headers,
            stream=body,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason, "network_stream": connection},
        )

    async def post_raw(self, host: str, port: int, payload: bytes, timeouts: dict) -> RawResponse:
        """The load path: a serialized POST in, a minimal response out (no httpx.Request/Response
        objects, whose construction cost more than the rest of a request at thousands per second).
        The caller holds one of `slots`; it is released when the response is closed or on failure."""
        connection, status, _, headers, resent_ns = await self._exchange(host, port, payload, timeouts, None)
        length, chunked, keep_alive = _framing("POST", status, headers, None)
        deadline = timeouts.get("deadline")
        body = _Body(self, connection, None, timeouts.get("read"), length, chunked, keep_alive, deadline)
        names = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in headers}
        return RawResponse(status, names, connection, resent_ns, body)

    async def _exchange(
        self, host: str, port: int, payload: bytes, timeouts: dict, request: httpx.Request | None
    ) -> tuple[Connection, int, bytes, list[tuple[bytes, bytes]], int]:
        """Send and read the response head, holding a slot the caller took. A reused connection
        that turns out dead before any response byte (the server closed it as we sent) is replaced
        by a fresh one, once; the last item returned is when that re-send began (perf_counter_ns,
        0 without one)."""
        resent_ns = 0
        try:
            connection = self._take_idle()
            while True:
                reused = connection is not None
                if connection is None:
                    connection = await Connection.open(
                        host, port, timeouts.get("connect"), request, self._scratch
                    )
                    self.opened += 1
                try:
                    await connection.send(payload, timeouts.get("write"), request)
                    status, reason, headers = await self._head(
                        connection, timeouts.get("read"), request, timeouts.get("deadline")
                    )
                    return connection, status, reason, headers, resent_ns
                except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
                    connection.close()
                    if not reused or connection.received:
                        raise
                    resent_ns = perf_counter_ns()
                    connection = None
                except BaseException:
                    connection.close()
                    raise
        except BaseException:
            self.slots.release()
            raise

    async def _head(
        self,
        connection: Connection,
        timeout: float | None,
        request: httpx.Request | None,
        deadline: float | None = None,
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        buffer = connection.buffer
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buffer) > _MAX_HEAD_BYTES:
                raise MalformedResponse("response head too large", request=request)
            if not await connection.fill(timeout, request, deadline):
                raise httpx.RemoteProtocolError(
                    "server closed the connection without a response", request=request
                )
        head = bytes(buffer[:end])
        del buffer[: end + 4]
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise MalformedResponse(f"bad status line {lines[0][:80]!r}", request=request)
        status = int(parts[1])
        if 100 <= status < 200:  # an interim response: the real one follows
            return await self._head(connection, timeout, request, deadline)
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise MalformedResponse(f"bad header line {line[:80]!r}", request=request)
            headers.append((name.strip(), value.strip()))
        return status, parts[2] if len(parts) > 2 else b"", headers

    def release(self, connection: Connection, reusable: bool) -> None:
        self.slots.release()
        if reusable and not connection.buffer and not connection.reads:
            connection.received = False
            self._idle.append(connection)
        else:
            connection.close()

    def _take_idle(self) -> Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if connection.usable():
                return connection
            connection.close()
        return None

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


def _serialize(request: httpx.Request, body: bytes) -> bytes:
    url = request.url
    target = url.raw_path
    lines = [request.method.encode() + b" " + target + b" HTTP/1.1"]
    lines += [name + b": " + value for name, value in request.headers.raw]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _chunk_size(line: bytes, request: httpx.Request | None) -> int:
    try:
        return int(line.split(b";", 1)[0], 16)
    except ValueError:
        raise MalformedResponse(f"bad chunk size line {line[:40]!r}", request=request) from None


def _framing(
    method: str, status: int, headers: list[tuple[bytes, bytes]], request: httpx.Request | None
) -> tuple[int | None, bool, bool]:
    """(content length, chunked, keep-alive) of a response."""
    length = None
    chunked = False
    keep_alive = True
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif lowered == b"content-length":
            try:
                length = int(value)
            except ValueError:
                raise MalformedResponse("bad content-length", request=request) from None
        elif lowered == b"connection" and b"close" in value.lower():
            keep_alive = False
    if method == "HEAD" or status in (204, 304):
        return 0, False, keep_alive
    if chunked:
        return None, True, keep_alive
    if length is None:
        return None, False, False  # delimited by the connection closing
    return length, False, keep_alive
