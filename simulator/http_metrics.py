"""The HTTP families a real vLLM API server serves beside its engine families: `http_*`, from
prometheus-fastapi-instrumentator as vLLM configures it (vllm/entrypoints/serve/instrumentator/metrics.py,
0.32 and 0.33: `Instrumentator(excluded_handlers=[...]).add()`).

Per request, except the excluded handlers: `http_requests_total{handler, method, status}` (status grouped
as `2xx`), the request's and the response's Content-Length as summaries by handler (0 without the
header: a streamed response has none), and its duration, first byte in to last byte out, in two
histograms: many buckets without labels, few buckets by handler and method. A path without a route is
the handler `none`. Names, help texts (trailing spaces included) and buckets are the instrumentator's,
as a live vLLM 0.32 server printed them (tests/simulator/test_fidelity_live_vllm.py diffs them).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, Summary

__all__ = ["HttpMetrics"]

EXCLUDED = frozenset({"/metrics", "/health", "/load", "/ping", "/version", "/server_info"})
HIGHR_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1,
    1.5,
    2,
    2.5,
    3,
    3.5,
    4,
    4.5,
    5,
    7.5,
    10,
    30,
    60,
)
HANDLER_BUCKETS = (0.1, 0.5, 1)
App = Callable[[dict, Any, Any], Awaitable[None]]


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry, routes: Collection[str]) -> None:
        self.routes = frozenset(routes)
        self.requests = Counter(
            "http_requests",
            "Total number of requests by method, status and handler.",
            ("handler", "method", "status"),
            registry=registry,
        )
        self.request_size = Summary(
            "http_request_size_bytes",
            "Content length of incoming requests by handler. Only value of header is respected. "
            "Otherwise ignored. No percentile calculated. ",
            ("handler",),
            registry=registry,
        )
        self.response_size = Summary(
            "http_response_size_bytes",
            "Content length of outgoing responses by handler. Only value of header is respected. "
            "Otherwise ignored. No percentile calculated. ",
            ("handler",),
            registry=registry,
        )
        self.latency_highr = Histogram(
            "http_request_duration_highr_seconds",
            "Latency with many buckets but no API specific labels. Made for more accurate percentile "
            "calculations. ",
            buckets=HIGHR_BUCKETS,
            registry=registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Latency with only few buckets by handler. Made to be only used if aggregation by handler is "
            "important. ",
            ("handler", "method"),
            buckets=HANDLER_BUCKETS,
            registry=registry,
        )

    def wrap(self, app: App) -> App:
        async def instrumented(scope: dict, receive: Any, send: Any) -> None:
            path = scope.get("path", "")
            if scope["type"] != "http" or path in EXCLUDED or path.startswith("/_simulator/"):
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            response: dict[str, Any] = {"status": 500, "size": 0}

            async def watching_send(message: dict) -> None:
                if message["type"] == "http.response.start":
                    response["status"] = message["status"]
                    response["size"] = _content_length(message.get("headers", ()))
                await send(message)

            try:
                await app(scope, receive, watching_send)
            finally:
                self._observe(scope, path, response, time.perf_counter() - started)

        return instrumented

    def _observe(self, scope: dict, path: str, response: dict[str, Any], seconds: float) -> None:
        handler = path if path in self.routes else "none"
        method = scope.get("method", "")
        self.requests.labels(handler, method, f"{str(response['status'])[0]}xx").inc()
        self.request_size.labels(handler).observe(_content_length(scope.get("headers", ())))
        self.response_size.labels(handler).observe(response["size"])
        self.latency_highr.observe(seconds)
        self.latency.labels(handler, method).observe(seconds)


def _content_length(headers) -> int:
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0
