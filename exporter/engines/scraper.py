"""Scraping one target: HTTP with its timeout and auth, engine discovery, and the up/error bookkeeping.

A target's whole scrape (every request it needs, discovery included) runs under one deadline,
`timeout_seconds`. Whatever goes wrong becomes one counted error of a known kind for that target only:
connect, timeout, http_status, auth (401/403 or its auth variable unset), truncated (the connection
ended before the announced or chunked body was complete), parse (HTML, garbage, a payload cut at a line
boundary, an oversized payload, malformed JSON), unknown_engine (no known names, or not the kind it was
configured as), no_known_metrics (the engine's own names, but none this exporter reads: an engine
version that renamed them all). The scrape never raises.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from exporter.config import MAX_TARGET_TIMEOUT_SECONDS, TargetConfig
from exporter.engines.base import Engine, ScrapeError
from exporter.engines.detect import discover, engine_for_payload
from exporter.engines.parse import Exposition, ParseError
from exporter.engines.registry import ENGINES
from exporter.engines.schema import ERROR_KINDS, ErrorKind, Normalized

log = logging.getLogger("exporter.engines")
MAX_BODY_BYTES = 32 * 1024 * 1024
METRICS_PATHS = ("/prometheus/metrics", "/v1/metrics", "/metrics")  # longest first
UNKNOWN_KIND = "unknown"


@dataclass(frozen=True)
class TargetResult:
    """One scrape of one target, as the collector publishes it."""

    name: str
    url: str
    engine_kind: str
    up: bool
    duration_seconds: float
    last_success_timestamp: float | None
    errors: dict[ErrorKind, int]
    normalized: Normalized | None = None
    exposition: Exposition | None = None
    engine: Engine | None = None
    peer: tuple[str, int] | None = None  # the address the last answer of this target came from


class HttpFetch:
    """GETs against one target. A URL path ending in `/metrics` is the exact metrics URL and what precedes
    its well-known metrics path (`/metrics`, `/v1/metrics`, `/prometheus/metrics`) is the base; any other
    path is a base (a proxy prefix). Every other request (status pages, discovery probes) goes to base +
    the engine's path, and the URL's query, if any, goes with every request (llama.cpp router mode:
    `?model=...`)."""

    def __init__(self, client: httpx.AsyncClient, target: TargetConfig, headers: dict[str, str]) -> None:
        parts = urlsplit(target.url)
        self.origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"  # never send URL credentials
        path = parts.path.rstrip("/")
        self.query = f"?{parts.query}" if parts.query else ""
        self.explicit_path: str | None = None
        self.base = path
        if path.endswith("/metrics"):
            self.explicit_path = path
            suffix = next(known for known in METRICS_PATHS if path.endswith(known))
            self.base = path[: -len(suffix)]
        self.client, self.target, self.headers = client, target, headers
        self.peer: tuple[str, int] | None = None  # the address the last answer came from

    async def metrics(self, default_path: str) -> str:
        return await self._text(self.explicit_path or self.base + default_path)

    async def text(self, path: str) -> str:
        return await self._text(self.base + path)

    async def json(self, path: str) -> Any:
        path = self.base + path
        body = await self._get(path)
        try:
            return json.loads(body)
        except ValueError:
            raise ScrapeError("parse", f"{path}: not JSON") from None

    async def _text(self, path: str) -> str:
        body = await self._get(path)
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ScrapeError("parse", f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None

    async def _get(self, path: str) -> bytes:
        url = self.origin + path + self.query
        try:
            async with self.client.stream("GET", url, headers=self.headers) as response:
                self.peer = _server_address(response) or self.peer
                if response.status_code in (401, 403):
                    raise ScrapeError("auth", f"{path}: HTTP {response.status_code}", response.status_code)
                if not 200 <= response.status_code < 300:
                    raise ScrapeError(
                        "http_status", f"{path}: HTTP {response.status_code}", response.status_code
                    )
                return await _read_body(response, path)
        except httpx.TimeoutException:
            raise ScrapeError("timeout", f"{path}: timed out") from None
        except httpx.HTTPError as exc:  # refused, reset, DNS, protocol errors before the body
            raise ScrapeError("connect", f"{path}: {type(exc).__name__}: {exc}") from None


def _server_address(response: httpx.Response) -> tuple[str, int] | None:
    """Where the connection went (the resolved address, for the GPU join of a target named by DNS)."""
    stream = response.extensions.get("network_stream")
    address = stream.get_extra_info("server_addr") if stream is not None else None
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return None


async def _read_body(response: httpx.Response, path: str) -> bytes:
    """The whole body; the connection failing once the answer has begun is a truncated payload."""
    chunks, size = [], 0
    try:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise ScrapeError("parse", f"{path}: payload larger than {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
    except httpx.TimeoutException:
        raise
    except httpx.HTTPError as exc:  # Content-Length not reached, chunked body cut, reset mid-body
        message = f"{path}: body cut after {size} bytes ({type(exc).__name__})"
        raise ScrapeError("truncated", message) from None
    return b"".join(chunks)


@dataclass
class TargetScraper:
    """Scrapes one configured target and remembers what it learned: the engine kind, errors, last success."""

    target: TargetConfig
    clock: Any = time.time
    engine: Engine | None = None
    errors: dict[ErrorKind, int] = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))
    last_success: float | None = None
    peer: tuple[str, int] | None = None
    _was_up: bool | None = None

    def __post_init__(self) -> None:
        if self.target.kind:
            self.engine = ENGINES[self.target.kind]
        # The configuration refuses more; a TargetConfig built in code is held to the same bound.
        self.timeout = min(self.target.timeout_seconds, MAX_TARGET_TIMEOUT_SECONDS)

    async def scrape(self, client: httpx.AsyncClient) -> TargetResult:
        started = time.perf_counter()
        normalized = exposition = None
        error_kind: ErrorKind | None = None
        message = ""
        try:
            normalized, exposition = await asyncio.wait_for(self._scrape(client), self.timeout)
        except TimeoutError:
            error_kind, message = "timeout", f"no complete answer within {self.timeout:g}s"
        except ScrapeError as exc:
            error_kind, message = exc.kind, str(exc)
        except ParseError as exc:
            error_kind, message = "parse", str(exc)
        except Exception as exc:  # an adapter tripped over a payload shape nobody foresaw
            if self._was_up is not False:
                log.exception("engine target %s: unexpected failure", self.target.name)
            error_kind, message = "parse", f"{type(exc).__name__}: {exc}"
        return self._record(error_kind, message, time.perf_counter() - started, normalized, exposition)

    def round_overrun(self, seconds: float) -> TargetResult:
        """The collector's round deadline passed before this target's scrape finished: a timeout."""
        return self._record("timeout", f"the engines round passed its {seconds:g}s deadline", seconds)

    def _record(
        self,
        error_kind: ErrorKind | None,
        message: str,
        duration: float,
        normalized: Normalized | None = None,
        exposition: Exposition | None = None,
    ) -> TargetResult:
        up = error_kind is None
        if error_kind is None:
            self.last_success = self.clock()
        else:
            self.errors[error_kind] += 1
        self._log_transition(up, error_kind or "", message)
        return TargetResult(
            name=self.target.name,
            url=self.target.url,
            engine_kind=self.engine.kind if self.engine else UNKNOWN_KIND,
            up=up,
            duration_seconds=duration,
            last_success_timestamp=self.last_success,
            errors=dict(self.errors),
            normalized=normalized,
            exposition=exposition,
            engine=self.engine,
            peer=self.peer,
        )

    async def _scrape(self, client: httpx.AsyncClient) -> tuple[Normalized, Exposition | None]:
        fetch = HttpFetch(client, self.target, self._headers())
        try:
            return await self._scrape_with(fetch)
        finally:
            self.peer = fetch.peer or self.peer

    async def _scrape_with(self, fetch: HttpFetch) -> tuple[Normalized, Exposition | None]:
        if self.target.kind:
            engine = ENGINES[self.target.kind]
            scraped = await engine.scrape(fetch)
            if scraped.exposition is not None and not engine.detect(scraped.exposition):
                raise ScrapeError("unknown_engine", f"payload carries no {engine.kind} metric names")
        elif self.engine is None:
            engine, scraped = await discover(fetch, explicit_path=fetch.explicit_path is not None)
        else:
            engine, scraped = await self._scrape_known(fetch, self.engine)
        self.engine = engine
        normalized = engine.normalize(scraped, self.target.model)
        if scraped.exposition is not None and not normalized.families() - {"llm_engine_info"}:
            count = len(scraped.exposition.families)
            raise ScrapeError(
                "no_known_metrics",
                f"{engine.kind} payload ({count} families) carries none of the names this exporter reads; "
                "this engine version may have renamed them",
            )
        return normalized, scraped.exposition

    async def _scrape_known(self, fetch: HttpFetch, engine: Engine):
        """Scrape as the kind found before; if the answer says the engine changed, discover again."""
        try:
            scraped = await engine.scrape(fetch)
        except ScrapeError as exc:
            if exc.status != 404:
                raise
            return await discover(fetch, explicit_path=fetch.explicit_path is not None)
        if scraped.exposition is not None and not engine.detect(scraped.exposition):
            other = engine_for_payload(scraped.exposition)
            if other is None:
                raise ScrapeError("unknown_engine", f"payload no longer carries {engine.kind} metric names")
            log.info(
                "engine target %s: kind changed from %s to %s", self.target.name, engine.kind, other.kind
            )
            return other, await other.scrape(fetch, scraped.exposition)
        return engine, scraped

    def _headers(self) -> dict[str, str]:
        variable = self.target.auth_header_env
        if not variable:
            return {}
        value = os.environ.get(variable)
        if not value:
            raise ScrapeError("auth", f"${variable} (its Authorization header) is not set")
        return {"Authorization": value}

    def _log_transition(self, up: bool, error_kind: str, message: str) -> None:
        if up and self._was_up is False:
            log.info("engine target %s is up again", self.target.name)
        elif not up and self._was_up is not False:
            log.warning("engine target %s is down: %s: %s", self.target.name, error_kind, message)
        self._was_up = up
