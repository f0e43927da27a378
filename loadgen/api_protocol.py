"""uvicorn's h11 protocol with deadlines and a connection cap, for the load generator's own HTTP server.

uvicorn alone gives a new connection no deadline at all, and resets its keep-alive timer on every byte
received, so a client that trickles its request head (or says nothing) holds a connection and its file
descriptor for as long as it likes; a few thousand such clients take every descriptor the process has,
its connections to the engine included. GuardedH11Protocol adds what the exporter's server has
(exporter/http_protocol.py):

- request: a request's head and body must be in within 10 s of when the connection began waiting for it
  (its opening, or the end of the answer before), however it is trickled; past that it is closed
  (`request_timeout`). uvicorn's keep-alive timeout (5 s of silence after an answer) still applies.
- cap: at most 256 connections. A new one beyond that closes the connection that has waited longest for
  its request, one never answered first, then an idle kept-alive one (`evicted`), so Prometheus's scrape,
  whose head comes in one packet, finds room among any number of slow clients; when every connection is
  being answered, the new one is closed (`refused`).
- body: a request body over 1 MiB is answered 413 (`MaxBody`, an ASGI middleware: a scenario is a few KB).

ApiHttpStats counts these for /metrics (loadgen_http_connections_closed_total{reason},
loadgen_http_connections_open).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import h11
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from uvicorn.protocols.http.h11_impl import H11Protocol

CloseReason = Literal["request_timeout", "evicted", "refused"]
CLOSE_REASONS: tuple[CloseReason, ...] = ("request_timeout", "evicted", "refused")


@dataclass(frozen=True, kw_only=True)
class ApiLimits:
    max_connections: int = 256
    request_timeout_s: float = 10.0  # a request's head and body, from when the connection awaits it
    max_body_bytes: int = 1024 * 1024


class ApiHttpStats:
    """Connections the server closed itself, by reason, and those open: a prometheus_client collector.
    Written and read on the event loop only (the /metrics route is async)."""

    def __init__(self) -> None:
        self.closed = dict.fromkeys(CLOSE_REASONS, 0)
        self.open = 0

    def collect(self) -> Iterator[Metric]:
        closed = CounterMetricFamily(
            "loadgen_http_connections_closed_total",
            "Connections the load generator's HTTP server closed itself, by reason.",
            labels=["reason"],
        )
        for reason, count in self.closed.items():
            closed.add_metric([reason], count)
        yield closed
        yield GaugeMetricFamily("loadgen_http_connections_open", "Open HTTP connections.", value=self.open)


def guarded_protocol(limits: ApiLimits, stats: ApiHttpStats) -> type[H11Protocol]:
    """The protocol class to give uvicorn.Config(http=...), bound to these limits and counters."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits, "stats": stats})


class GuardedH11Protocol(H11Protocol):
    limits = ApiLimits()
    stats = ApiHttpStats()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.awaiting_since: float | None = None  # when it began waiting for its request; None: has it
        self.answered = 0
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections and not self._make_room():
            self._end("refused")
            return
        self.stats.open = len(self.connections)
        self._await_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
        self.stats.open = len(self.connections)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_request()

    def on_response_complete(self) -> None:
        self.answered += 1
        super().on_response_complete()  # may take a pipelined request already received
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._await_request()
        self._follow_request()

    # the deadline and the cap

    def _await_request(self) -> None:
        self.awaiting_since = time.monotonic()
        self._disarm()
        self._deadline = self.loop.call_later(self.limits.request_timeout_s, self._end, "request_timeout")

    def _follow_request(self) -> None:
        """Once the request is in whole (head and body), its deadline is over."""
        if self.conn.their_state is not h11.IDLE and self.conn.their_state is not h11.SEND_BODY:
            self.awaiting_since = None
            self._disarm()

    def _make_room(self) -> bool:
        waiting = [
            c
            for c in self.connections
            if isinstance(c, GuardedH11Protocol) and c.awaiting_since is not None and c is not self
        ]
        if not waiting:
            return False
        min(waiting, key=lambda c: (c.answered > 0, c.awaiting_since))._end("evicted")
        return True

    def _end(self, reason: CloseReason) -> None:
        self.stats.closed[reason] += 1
        self._disarm()
        self.awaiting_since = None
        self.connections.discard(self)  # at once: the next connection of the same burst counts right
        self.stats.open = len(self.connections)
        self.transport.abort()

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


class MaxBody:
    """ASGI middleware: the request body is read here first, up to `limit` bytes; past that the answer is
    413 and the app never sees the request (raising from the app's receive would be its 500)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.limit:
            await _too_large(send, self.limit)
            return
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.limit:
                await _too_large(send, self.limit)
                return
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay() -> dict:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


async def _too_large(send: Any, limit: int) -> None:
    body = f"request body over {limit} bytes\n".encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
