"""HTTP/1.1 to one engine target: h11 over an asyncio stream, the connection kept between requests.

Why not httpx (which the exporter used here until issue 16): reading vLLM's 90 KB payload over a kept
connection cost 1.1 ms of CPU through httpx and 0.2 ms through h11 alone (bench/RESULTS.md), and the
engines side is scraped on every Prometheus scrape. h11 (httpx's own HTTP/1.1 parser, already a dependency
through httpcore) does the protocol: request framing, Content-Length and chunked bodies, keep-alive rules,
a body cut short. This module only connects (TCP or TLS with the target's SSLContext and server name),
writes and reads.

A connection is reused while it idles less than `keepalive_seconds`, only after a response was read whole;
anything else (an error, a cancelled scrape, a body left unread, the server saying `Connection: close`)
closes it. A request on a reused connection that the server had closed meanwhile is sent again once on a
new one. Errors: ConnectError (no connection: refused, DNS, reset before an answer), ssl.SSLError (the
handshake or certificate), BodyCut (the answer began but did not end well).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import h11

READ_BYTES = 65536
MAX_HEAD_BYTES = 64 * 1024  # h11's default is 16 KiB; engines' heads are a few hundred bytes


class ConnectError(OSError):
    """No answer began: the connection could not be made or was lost before the response."""


class BodyCut(Exception):
    """The response began but its body did not end as announced (or the stream broke)."""


@dataclass(frozen=True)
class Head:
    status: int
    headers: dict[str, str]  # lower-case names


class TargetConnection:
    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        tls: ssl.SSLContext | None,
        server_name: str | None,
        keepalive_seconds: float,
    ) -> None:
        self.host, self.port, self.keepalive_seconds = host, port, keepalive_seconds
        self.tls = tls if scheme == "https" else None
        self.server_name = (server_name or host) if self.tls is not None else None
        default = 443 if scheme == "https" else 80
        name = f"[{host}]" if ":" in host else host
        self.host_header = name if port == default else f"{name}:{port}"
        self.peer: tuple[str, int] | None = None  # the address the connection went to
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._protocol: h11.Connection | None = None
        self._idle_since = 0.0

    async def request(self, target: str, headers: dict[str, str]) -> Head:
        """Send GET `target` and read the response head (a kept connection first, a new one if it fails)."""
        fresh = not self._reusable()
        if fresh:
            await self._connect()
        try:
            return await self._exchange(target, headers)
        except ConnectError:
            if fresh:
                raise
        await self._connect()  # the kept connection had been closed by the server meanwhile
        return await self._exchange(target, headers)

    async def body(self) -> AsyncIterator[bytes]:
        """The response body as it arrives; the connection is kept only once the body was read whole."""
        protocol, whole = self._protocol, False
        assert protocol is not None
        try:
            while True:
                event = await self._next_event()
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    whole = True
                    return
        except (h11.ProtocolError, OSError) as exc:
            raise BodyCut(f"{type(exc).__name__}: {exc}") from None
        finally:
            if whole and protocol.our_state is h11.DONE and protocol.their_state is h11.DONE:
                protocol.start_next_cycle()
                self._idle_since = time.monotonic()
            else:
                self.close()

    def close(self) -> None:
        writer, self._writer, self._reader, self._protocol = self._writer, None, None, None
        if writer is not None:
            writer.close()

    def _reusable(self) -> bool:
        protocol, reader = self._protocol, self._reader
        return (
            protocol is not None
            and reader is not None
            and protocol.our_state is h11.IDLE
            and not reader.at_eof()
            and time.monotonic() - self._idle_since < self.keepalive_seconds
        )

    async def _connect(self) -> None:
        self.close()
        try:
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.tls, server_hostname=self.server_name, limit=READ_BYTES
            )
        except ssl.SSLError:
            raise
        except OSError as exc:
            raise ConnectError(exc.errno, f"{type(exc).__name__}: {exc}") from None
        address = self._writer.get_extra_info("peername")
        if isinstance(address, tuple) and len(address) >= 2:
            self.peer = (str(address[0]), int(address[1]))
        self._protocol = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)

    async def _exchange(self, target: str, headers: dict[str, str]) -> Head:
        protocol, writer = self._protocol, self._writer
        assert protocol is not None and writer is not None
        fields = [("Host", self.host_header), ("User-Agent", "llmobs-exporter"), ("Accept", "*/*")]
        fields += list(headers.items())
        try:
            writer.write(protocol.send(h11.Request(method="GET", target=target, headers=fields)))
            writer.write(protocol.send(h11.EndOfMessage()))
            await writer.drain()
            event = await self._next_event()
        except ssl.SSLError:
            self.close()
            raise
        except (OSError, h11.ProtocolError) as exc:
            self.close()
            raise ConnectError(None, f"{type(exc).__name__}: {exc}") from None
        except BaseException:  # cancelled (the target's deadline): the exchange is in an unknown state
            self.close()
            raise
        if not isinstance(event, h11.Response):
            self.close()
            raise ConnectError(None, f"unexpected {type(event).__name__} before the response")
        names = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in event.headers}
        return Head(event.status_code, names)

    async def _next_event(self) -> h11.Event:
        protocol, reader = self._protocol, self._reader
        assert protocol is not None and reader is not None
        while True:
            event = protocol.next_event()
            if event is not h11.NEED_DATA:
                if isinstance(event, h11.InformationalResponse):
                    continue  # 100 Continue and the like: the real answer follows
                return event
            protocol.receive_data(await reader.read(READ_BYTES))  # b"" at EOF: h11 says what it means


__all__ = ["BodyCut", "ConnectError", "Head", "TargetConnection"]
