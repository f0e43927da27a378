"""One keep-alive TCP connection of the load client's transport (transport.py): a raw non-blocking
socket read as soon as the event loop sees it readable, each read stamped with the kernel's receive
time (SO_TIMESTAMPNS, converted to the perf_counter clock), handed to the response parser one read at
a time so that bytes keep their own arrival time when the parser is behind. Also: the open-file limit
a run's connections need.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import sys
import time
from collections import deque
from time import monotonic, perf_counter_ns

import httpx

__all__ = ["TIMESTAMPS", "Connection", "DeadlineExceeded", "raise_open_file_limit"]

# SO_TIMESTAMPNS == SCM_TIMESTAMPNS; Python's socket module does not name it (35 on Linux)
_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform == "linux" else None)
_ANCILLARY = socket.CMSG_SPACE(16) if _TIMESTAMPNS is not None else 0
TIMESTAMPS = _TIMESTAMPNS is not None  # reads carry the kernel's receive time
_HIGH_WATER = 4 * 1024 * 1024

log = logging.getLogger("loadgen")
_limit_logged = False


def raise_open_file_limit(connections: int, headroom: int = 64) -> None:
    """Raise the soft open-file limit (RLIMIT_NOFILE) toward the hard one when `connections` sockets
    plus `headroom` (files, the listener, the event loop) would not fit: a default soft limit of
    1024 would otherwise turn a 1,000-stream run into connect errors (EMFILE). Logged once."""
    global _limit_logged
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = connections + headroom
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            target = soft
            log.debug("could not raise the open-file limit: %s", exc)
    if _limit_logged:
        return
    _limit_logged = True
    if target < needed:
        log.warning(
            "open-file limit %d is below the %d this run may need (%d connections): expect connect "
            "errors; raise it (ulimit -n) or lower the concurrency", target, needed, connections,
        )  # fmt: skip
    else:
        log.info("raised the open-file limit from %d to %d for %d connections", soft, target, connections)


class DeadlineExceeded(httpx.TimeoutException):
    """The request's whole-exchange deadline (`timeouts["deadline"]`, time.monotonic) passed while reading."""


class Connection:
    """One keep-alive TCP connection: raw socket, receive buffer, arrival stamp of the last read.

    The socket is read as soon as the event loop sees it readable (a reader callback registered
    for the connection's life, like asyncio's own transports), into `buffer`; the response parser
    waits in fill() for bytes it has not seen. An idle connection whose server closes it reads
    end-of-stream right away and is never handed out again."""

    __slots__ = ("arrival_ns", "buffer", "eof", "error", "fd", "loop", "pending", "reading", "reads",
                 "received", "scratch", "sock", "waiter")  # fmt: skip

    def __init__(self, sock: socket.socket, scratch: memoryview) -> None:
        self.sock = sock
        self.scratch = scratch  # the pool's read buffer, shared by its connections (see _on_readable)
        self.fd = sock.fileno()
        self.loop = asyncio.get_running_loop()
        self.buffer = bytearray()
        self.arrival_ns = 0
        self.eof = False
        self.error: OSError | None = None
        self.reads: deque[tuple[bytes, int]] = deque()  # (bytes, arrival) not yet handed to the parser
        self.pending = 0  # bytes in `reads`
        self.received = False  # any byte of the current response
        self.waiter: asyncio.Future | None = None
        self.loop.add_reader(self.fd, self._on_readable)
        self.reading = True

    @classmethod
    async def open(
        cls, host: str, port: int, timeout: float | None, request: httpx.Request | None, scratch: memoryview
    ) -> Connection:
        loop = asyncio.get_running_loop()
        sock = None
        try:
            async with asyncio.timeout(timeout):
                family, kind, proto, _, address = (
                    await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                )[0]
                sock = socket.socket(family, kind, proto)
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if _TIMESTAMPNS is not None:
                    sock.setsockopt(socket.SOL_SOCKET, _TIMESTAMPNS, 1)
                await loop.sock_connect(sock, address)
        except BaseException as exc:  # cancellation (a stop) included: the socket never leaks
            if sock is not None:
                sock.close()
            if isinstance(exc, TimeoutError):
                raise httpx.ConnectTimeout(
                    f"no connection to {host}:{port} within {timeout:g}s", request=request
                ) from None
            if isinstance(exc, OSError):
                raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
            raise
        return cls(sock, scratch)

    def usable(self) -> bool:
        """An idle connection is usable unless the server closed it or sent something unasked."""
        return not (self.eof or self.buffer or self.reads or self.error is not None)

    def _on_readable(self) -> None:
        # Into a buffer allocated once, then copied out at the size read: recvmsg(n) allocates n
        # bytes per read, which for 256 KiB is an mmap, mremap and munmap per read (strace; half
        # the client's system time at 4,000 requests/s). The copy happens before anything else
        # runs on the loop, so one buffer serves every connection of the pool.
        try:
            size, ancillary, _, _ = self.sock.recvmsg_into((self.scratch,), _ANCILLARY)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.error = exc
            size = 0
        if size:
            data = bytes(self.scratch[:size])
            stamp = 0
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == _TIMESTAMPNS and len(payload) >= 16:
                    seconds, nanoseconds = struct.unpack("qq", payload[:16])
                    stamp = seconds * 1_000_000_000 + nanoseconds - (time.time_ns() - perf_counter_ns())
            self.reads.append((data, stamp or perf_counter_ns()))
            self.received = True
            self.pending += len(data)
            if self.pending > _HIGH_WATER:
                self._pause()  # the parser is behind: let TCP flow control slow the server down
        else:
            self.eof = True
            self._pause()
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def _pause(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.fd)
            self.reading = False

    async def send(self, data: bytes, timeout: float | None, request: httpx.Request | None) -> None:
        try:
            sent = self.sock.send(data)  # a request almost always fits the socket buffer at once
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__, request=request) from exc
        if sent == len(data):
            return
        try:
            async with asyncio.timeout(timeout):
                await self.loop.sock_sendall(self.sock, data[sent:])
        except TimeoutError:
            raise httpx.WriteTimeout(f"could not send for {timeout:g}s", request=request) from None
        except OSError as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__, request=request) from exc

    async def fill(
        self, timeout: float | None, request: httpx.Request | None, deadline: float | None = None
    ) -> bool:
        """Move the next read into `buffer` (waiting for one if needed) and make its arrival time
        `arrival_ns`; False at end of stream. One read at a time, so that when the parser is behind,
        bytes that arrived earlier still carry their own, earlier, arrival time.

        `timeout` bounds the silence before this read, `deadline` (time.monotonic) the whole exchange: one
        timer serves both, so a request needs no asyncio.timeout of its own (a few microseconds each,
        which counts at thousands of requests per second)."""
        loop = self.loop
        if deadline is not None and monotonic() >= deadline:
            raise DeadlineExceeded("the request deadline passed", request=request)
        if not self.reads and not self.eof:
            if not self.reading:
                loop.add_reader(self.fd, self._on_readable)
                self.reading = True
            wait = timeout
            # the limit that sets the timer is the one that fired (timers may fire a little early,
            # so the clock alone cannot tell a whole-request deadline from a read timeout)
            by_deadline = deadline is not None and (wait is None or deadline - monotonic() < wait)
            if by_deadline:
                wait = deadline - monotonic()  # type: ignore[operator]
            waiter = self.waiter = loop.create_future()
            timer = loop.call_later(wait, _wake, waiter, False) if wait is not None else None
            try:
                arrived = await waiter
            finally:
                self.waiter = None
                if timer is not None:
                    timer.cancel()
            if not arrived:
                if by_deadline:
                    raise DeadlineExceeded("the request deadline passed", request=request)
                raise httpx.ReadTimeout(f"no data for {timeout:g}s", request=request)
        if self.reads:
            data, self.arrival_ns = self.reads.popleft()
            self.pending -= len(data)
            self.buffer += data
            if not self.reading and not self.eof and self.pending < _HIGH_WATER:
                self.loop.add_reader(self.fd, self._on_readable)
                self.reading = True
            return True
        if self.error is not None:
            raise httpx.ReadError(str(self.error) or type(self.error).__name__, request=request)
        return False

    def close(self) -> None:
        self._pause()
        self.sock.close()


def _wake(waiter: asyncio.Future, readable: bool) -> None:
    if not waiter.done():
        waiter.set_result(readable)
