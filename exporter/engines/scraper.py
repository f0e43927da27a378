"""Scraping one target: HTTP with its timeout, auth, TLS and budgets, engine discovery, up/error bookkeeping.

A target's whole scrape (every request it needs, discovery included) runs under one deadline,
`timeout_seconds`, and within its budgets: at most `max_bytes` of body and `max_series` series, both
enforced while the payload is read, which is parsed as it arrives (chunk by chunk on the event loop, so
the deadline stops the parsing too: nothing runs on after it). Whatever goes wrong becomes one counted
error of a known kind (schema.ErrorKind) for that target only: connect, tls (handshake or certificate),
timeout, http_status, auth (401/403 or its auth variable unset), truncated (the connection ended before
the announced or chunked body was complete), too_large, too_many_series, parse (HTML, garbage, a payload
cut at a line boundary, malformed JSON), unknown_engine (no known names, or not the kind it was
configured as), no_known_metrics (the engine's own names, but none this exporter reads: an engine
version that renamed them all). The scrape never raises.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import os
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit

from exporter.config import MAX_TARGET_TIMEOUT_SECONDS, TargetConfig
from exporter.engines.base import Engine, ScrapeError
from exporter.engines.connection import BodyCut, ConnectError, Head, TargetConnection
from exporter.engines.detect import discover, engine_for_payload
from exporter.engines.parse import Exposition, ExpositionReader, ParseError, SeriesHeads, TooManySeries
from exporter.engines.registry import ENGINES
from exporter.engines.schema import DROP_REASONS, ERROR_KINDS, DropReason, ErrorKind, Normalized

log = logging.getLogger("exporter.engines")
MAX_JSON_BYTES = 1024 * 1024  # status pages (/props, /info, /version, Ollama's /api/ps) are small
METRICS_PATHS = ("/prometheus/metrics", "/v1/metrics", "/metrics")  # longest first
UNKNOWN_KIND = "unknown"
MAX_MODELS_PER_TARGET = 64  # the collector publishes the first 64 models of a target (bounded cardinality)
# A target's connection is kept between scrapes while it idles less than this: well under the keep-alive
# timeout engines' servers close idle connections after (uvicorn and llama.cpp's cpp-httplib: 5 s), so a
# request never races the server closing it. Scraped every 15 s, each scrape connects anew.
KEEPALIVE_SECONDS = 2.0
STATIC_PAGE_SECONDS = 60.0  # base.optional_json(static=True): /version, /props, /info read again after this


@dataclass
class TargetMemory:
    """What one target's scrapes hand on to the next: its series heads (parse.SeriesHeads) and the static
    pages read with optional_json(static=True), each with the monotonic time it was read."""

    heads: SeriesHeads = field(default_factory=SeriesHeads)
    pages: dict[str, tuple[float, Any]] = field(default_factory=dict)


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
    dropped: dict[DropReason, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    normalized: Normalized | None = None
    exposition: Exposition | None = None
    engine: Engine | None = None
    peer: tuple[str, int] | None = None  # the address the last answer of this target came from


class HttpFetch:
    """GETs against one target. A URL path ending in `/metrics` is the exact metrics URL and what precedes
    its well-known metrics path (`/metrics`, `/v1/metrics`, `/prometheus/metrics`) is the base; any other
    path is a base (a proxy prefix). Every other request (status pages, discovery probes) goes to base +
    the engine's path, and the URL's query, if any, goes with every request (llama.cpp router mode:
    `?model=...`). Bodies are asked for uncompressed (a compressed one could expand past the budget
    before it is counted) and read within the target's budgets."""

    def __init__(
        self,
        connection: TargetConnection,
        target: TargetConfig,
        headers: dict[str, str],
        memory: TargetMemory | None = None,
    ) -> None:
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
        self.connection, self.target = connection, target
        self.memory = memory if memory is not None else TargetMemory()
        self.headers = {**headers, "Accept-Encoding": "identity"}
        self.peer: tuple[str, int] | None = None  # the address the last answer came from
        self.bytes_read = 0  # this scrape's bodies so far: what a timeout message reports
        self.series_read = 0

    async def metrics(self, default_path: str) -> Exposition:
        """The exposition at the target URL's own path when it has one, else at default_path, parsed as
        it arrives; ParseError when it is not valid exposition text."""
        path = self.explicit_path or self.base + default_path
        reader = ExpositionReader(self.target.max_series, self.memory.heads)
        try:
            async with contextlib.aclosing(self._read(path, self.target.max_bytes)) as chunks:
                async for text in chunks:
                    reader.feed(text)
                    self.series_read = reader.series
                    await asyncio.sleep(0)  # between chunks, let deadlines and other targets run
            return reader.close()
        except TooManySeries as exc:
            raise ScrapeError("too_many_series", f"{path}: {exc}") from None

    async def json(self, path: str) -> Any:
        path = self.base + path
        async with contextlib.aclosing(self._read(path, MAX_JSON_BYTES)) as chunks:
            body = "".join([text async for text in chunks])
        try:
            return json.loads(body)
        except ValueError:
            raise ScrapeError("parse", f"{path}: not JSON") from None

    async def static_page(self, path: str, read: Callable[[], Awaitable[Any]]) -> Any:
        remembered, now = self.memory.pages.get(path), time.monotonic()
        if remembered is not None and now - remembered[0] < STATIC_PAGE_SECONDS:
            return remembered[1]
        value = await read()
        self.memory.pages[path] = (now, value)
        return value

    async def _read(self, path: str, max_bytes: int) -> AsyncIterator[str]:
        """The body as decoded text, chunk by chunk; ScrapeError for every way the read can fail."""
        try:
            head = await self.connection.request(path + self.query, self.headers)
        except ssl.SSLError as exc:  # the handshake, the certificate, or an alert after it (TLS 1.3: a
            # client certificate refused, read with the response head)
            raise ScrapeError("tls", f"{path}: {type(exc).__name__}: {exc}") from None
        except ConnectError as exc:  # refused, reset, DNS, a protocol error before the answer
            raise ScrapeError("connect", f"{path}: {exc}") from None
        self.peer = self.connection.peer or self.peer
        async with contextlib.aclosing(self.connection.body()) as chunks:  # closed unread: connection too
            _check_answer(head, path)
            announced = head.headers.get("content-length", "")
            if announced.isdigit() and int(announced) > max_bytes:
                raise ScrapeError("too_large", f"{path}: announces {announced} bytes, over {max_bytes}")
            # Every async generator here is closed when its reader stops, deadline or not: one left to the
            # garbage collector is closed by a task the loop starts whenever that runs, after the deadline.
            async with contextlib.aclosing(_decoded_body(chunks, path, max_bytes, self)) as texts:
                async for text in texts:
                    yield text


def _check_answer(head: Head, path: str) -> None:
    if head.status in (401, 403):
        raise ScrapeError("auth", f"{path}: HTTP {head.status}", head.status)
    if not 200 <= head.status < 300:
        raise ScrapeError("http_status", f"{path}: HTTP {head.status}", head.status)
    encoding = head.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise ScrapeError("parse", f"{path}: Content-Encoding {encoding} although identity was asked for")


async def _decoded_body(
    chunks: AsyncIterator[bytes], path: str, max_bytes: int, fetch: HttpFetch
) -> AsyncIterator[str]:
    """UTF-8 text of the body as it arrives, at most max_bytes; the connection failing once the answer
    has begun is a truncated payload."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    size = 0
    try:
        async for chunk in chunks:
            size += len(chunk)
            fetch.bytes_read += len(chunk)
            if size > max_bytes:
                raise ScrapeError("too_large", f"{path}: body larger than {max_bytes} bytes")
            try:
                yield decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                where = size - len(chunk) + exc.start
                raise ScrapeError("parse", f"{path}: not UTF-8 ({exc.reason} near byte {where})") from None
        yield decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise ScrapeError("parse", f"{path}: not UTF-8 ({exc.reason} at its end)") from None
    except BodyCut as exc:  # Content-Length not reached, chunked body cut, reset mid-body
        raise ScrapeError("truncated", f"{path}: body cut after {size} bytes ({exc})") from None


def target_port(parts: SplitResult) -> int:
    """The URL's port, else its scheme's (the configuration accepts http and https URLs only)."""
    return parts.port or (443 if parts.scheme == "https" else 80)


def _forget_frames(exc: BaseException | None) -> None:
    """Drop the tracebacks of a failed scrape's exceptions. asyncio keeps an exception in a cycle with its
    task, and the traceback's frames hold what the scrape had read: without this, a refused payload's
    series would stay in memory until a full garbage collection."""
    while exc is not None:
        exc.__traceback__ = None
        exc = exc.__cause__ or exc.__context__


@dataclass
class TargetScraper:
    """Scrapes one configured target and remembers what it learned: the engine kind, errors, last success."""

    target: TargetConfig
    clock: Any = time.time
    engine: Engine | None = None
    errors: dict[ErrorKind, int] = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))
    dropped: dict[DropReason, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    last_success: float | None = None
    peer: tuple[str, int] | None = None
    _was_up: bool | None = None
    _dropping: frozenset[DropReason] = frozenset()
    _too_many_models = False

    def __post_init__(self) -> None:
        if self.target.kind:
            self.engine = ENGINES[self.target.kind]
        # The configuration refuses more; a TargetConfig built in code is held to the same bound.
        self.timeout = min(self.target.timeout_seconds, MAX_TARGET_TIMEOUT_SECONDS)
        self.tls_context = self.target.tls.context()
        self._progress: HttpFetch | None = None
        self._memory = TargetMemory()
        parts = urlsplit(self.target.url)
        self._connection = TargetConnection(
            parts.scheme,
            parts.hostname or "",
            target_port(parts),
            self.tls_context,
            self.target.server_name,
            KEEPALIVE_SECONDS,
        )

    async def scrape(self) -> TargetResult:
        """One scrape, on the target's connection when the last scrape used it less than KEEPALIVE_SECONDS
        ago, else on a new one; a failed scrape closes it and forgets the static pages."""
        started = time.perf_counter()
        normalized = exposition = None
        error_kind: ErrorKind | None = None
        message = ""
        try:
            normalized, exposition = await asyncio.wait_for(self._scrape(), self.timeout)
        except TimeoutError as exc:
            error_kind = "timeout"
            message = f"no complete answer within {self.timeout:g}s{self._read_so_far()}"
            _forget_frames(exc)
        except ScrapeError as exc:
            error_kind, message = exc.kind, str(exc)
            _forget_frames(exc)
        except ParseError as exc:
            error_kind, message = "parse", str(exc)
            _forget_frames(exc)
        except Exception as exc:  # an adapter tripped over a payload shape nobody foresaw
            if self._was_up is not False:
                log.exception("engine target %s: unexpected failure", self.target.name)
            error_kind, message = "parse", f"{type(exc).__name__}: {exc}"
            _forget_frames(exc)
        self._progress = None
        if error_kind is not None:
            self._memory.pages.clear()  # an engine that failed may come back as another version
            await self.close()
        return self._record(error_kind, message, time.perf_counter() - started, normalized, exposition)

    async def close(self) -> None:
        """Close the kept connection (if any); the next scrape opens a new one."""
        self._connection.close()

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
            self._count_dropped(exposition, normalized)
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
            dropped=dict(self.dropped),
            normalized=normalized,
            exposition=exposition,
            engine=self.engine,
            peer=self.peer,
        )

    async def _scrape(self) -> tuple[Normalized, Exposition | None]:
        fetch = self._progress = HttpFetch(self._connection, self.target, self._headers(), self._memory)
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
        self._note_models(normalized)
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

    def _read_so_far(self) -> str:
        fetch = self._progress
        return f" ({fetch.bytes_read} bytes, {fetch.series_read} series read)" if fetch else ""

    def _count_dropped(self, exposition: Exposition | None, normalized: Normalized | None) -> None:
        """Series left out of this good scrape; one warning when a target starts dropping them."""
        dropped: Counter[DropReason] = Counter()
        for source in (exposition, normalized):
            if source is not None:
                dropped.update(source.dropped)
        for reason, count in dropped.items():
            self.dropped[reason] += count
        started = set(dropped) - self._dropping
        if started:
            summary = ", ".join(f"{dropped[r]} {r}" for r in sorted(started))
            log.warning("engine target %s: series dropped (%s); see llm_target_series_dropped_total",
                        self.target.name, summary)  # fmt: skip
        self._dropping = frozenset(dropped)

    def _note_models(self, normalized: Normalized) -> None:
        """One warning when a target starts reporting more models than are published."""
        models = {p.labels.get("model", "") for p in normalized.points}
        models |= {h.labels.get("model", "") for h in normalized.histograms}
        too_many = len(models) > MAX_MODELS_PER_TARGET
        if too_many and not self._too_many_models:
            log.warning("engine target %s reports %d models; publishing the first %d", self.target.name,
                        len(models), MAX_MODELS_PER_TARGET)  # fmt: skip
        self._too_many_models = too_many
