"""The HTTP side: one shared httpx client, one request in, one filled RequestRecord out.

Never raises for anything the server or the network does; every failure ends up as a labelled
outcome on the record (see outcomes.py). Only cancellation propagates, after being recorded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic, perf_counter_ns

import httpx
import orjson

from loadgen import redact
from loadgen.backoff import ConnectBackoff, retry_after_s
from loadgen.errors import ClientError
from loadgen.network import Network, route
from loadgen.outcomes import Outcome
from loadgen.redact import redact_url
from loadgen.sse import EventTooLarge, SSEError, SSEParser
from loadgen.timing import RequestRecord
from loadgen.tokens import TokenCounter, TokenShape, count_event_tokens, take_usage
from loadgen.transport import MalformedResponse, StackPoolTransport

log = logging.getLogger("loadgen.client")

ERROR_BODY_BYTES = 2048
MAX_RESPONSE_BYTES = 256 * 1024 * 1024  # a streamed response, all events together
MAX_BODY_BYTES = 32 * 1024 * 1024  # a non-streamed response (held whole, to be parsed)
_loads = orjson.loads  # 4x json.loads per event here; what it refuses is retried by _parse_json


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 10.0
    read_s: float = 120.0  # longest silence between two chunks of one response
    request_s: float = 900.0  # whole request, first byte sent to last byte received


class LoadClient:
    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        timeouts: Timeouts,
        max_connections: int,
        count_tokens: Callable[[str], int] | None = None,
        https_transport: httpx.AsyncBaseTransport | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_event_bytes: int | None = None,  # None: sse.MAX_EVENT_BYTES
        output_tokens_from: str = "auto",
        network: Network | None = None,
    ) -> None:
        base = httpx.URL(base_url)
        headers = {"content-type": "application/json", "user-agent": "llmobs-loadgen"}
        if api_key:
            try:
                check_header_value(api_key, "the API key")
            except ValueError as exc:
                raise ClientError(str(exc)) from None
            headers["authorization"] = f"Bearer {api_key}"
        elif base.username or base.password:  # credentials in the URL: HTTP basic auth, as httpx does
            token = base64.b64encode(f"{base.username}:{base.password}".encode()).decode("ascii")
            headers["authorization"] = f"Basic {token}"
            redact.register(token, pinned=False)  # a server that echoes the header back (from the URL)
        self.base_url = base.copy_with(username=None, password=None)  # credentials travel in the header
        redact.register(api_key)
        redact.register_url(base_url)
        self.timeouts = timeouts
        self._count_tokens = count_tokens
        self._max_response, self._max_body = max_response_bytes, max_body_bytes
        self._max_event = max_event_bytes
        self._tokens = TokenCounter(output_tokens_from)
        self.backoff = ConnectBackoff()
        self._urls: dict[str, httpx.URL] = {}  # parsed once (a large part of httpx's per-request cost)
        if https_transport is not None and base.scheme == "https":  # tests: the HTTPS path, no server
            self._transport: httpx.AsyncBaseTransport = https_transport
            self._raw: StackPoolTransport | None = None
            self.timing_path = "client read time (test transport)"
        else:
            way = route(base, network or Network(), max_connections)
            self._transport, self._raw, self.timing_path = way.transport, way.raw, way.timing_path
        # The client holds the configuration (headers, timeouts) and serves everything but the load
        # itself. Load requests skip its per-request machinery (cookie jar, redirects, auth flow,
        # Request/Response objects), which cost more than the request itself at thousands of
        # requests per second: over plain HTTP they go to the pool as pre-serialized bytes
        # (`post_raw`), over HTTPS to httpx's transport with a request built once per send.
        self._http = httpx.AsyncClient(
            headers=headers,
            transport=self._transport,
            timeout=httpx.Timeout(
                connect=timeouts.connect_s, read=timeouts.read_s, write=timeouts.read_s, pool=None
            ),
            follow_redirects=False,
            trust_env=False,
        )
        self._timeouts = {"connect": timeouts.connect_s, "read": timeouts.read_s, "write": timeouts.read_s}
        self._heads: dict[str, bytes] = {}
        self._host, self._port = self.base_url.host, self.base_url.port or 80
        # connection slots: the pool's own over plain HTTP; over HTTPS as many as httpx's pool allows
        self._slots = self._raw.slots if self._raw is not None else asyncio.Semaphore(max_connections)

    def url(self, path: str) -> httpx.URL:
        """The URL of an API path such as `/v1/chat/completions` (see endpoint_url)."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = endpoint_url(self.base_url, path)
        return url

    def _head(self, path: str) -> bytes:
        """The constant part of a load request's head, serialized once per path."""
        head = self._heads.get(path)
        if head is None:
            url = self.url(path)
            lines = [f"POST {url.raw_path.decode('ascii')} HTTP/1.1", f"host: {url.netloc.decode('ascii')}"]
            lines += [f"{k}: {v}" for k, v in self._http.headers.items() if k.lower() != "accept-encoding"]
            lines.append("accept-encoding: identity")  # bodies are read as sent, never decoded
            head = self._heads[path] = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        return head

    async def aclose(self) -> None:
        await self._http.aclose()

    async def get_json(self, path: str) -> object:
        """GET a JSON document of at most MAX_BODY_BYTES (model discovery)."""
        return _json_document(await self.get_bytes(path))

    async def get_bytes(self, path: str) -> bytes:
        """GET a body of at most MAX_BODY_BYTES (model discovery)."""
        async with self._http.stream("GET", self.url(path), timeout=self.timeouts.connect_s + 10) as response:
            response.raise_for_status()
            pieces, size = [], 0
            async for piece in response.aiter_bytes():
                size += len(piece)
                if size > self._max_body:
                    raise ValueError(f"{path} answered more than {self._max_body} bytes")
                pieces.append(piece)
        return b"".join(pieces)

    async def discover_model(self) -> str:
        """The first model id the server lists under /v1/models."""
        try:
            body = await self.get_json("/v1/models")
            return str(body["data"][0]["id"])  # type: ignore[index]
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise ClientError(
                redact.scrub(
                    f"could not discover the model from {redact_url(str(self.url('/v1/models')))} "
                    f"({exc!r}); pass --model"
                )
            ) from exc

    async def execute(
        self, path: str, body: bytes, record: RequestRecord, capture_text: bool = False
    ) -> None:
        """Send one request and fill `record`.

        `sent` is stamped once a connection slot is held: time spent waiting for one (more requests
        in flight than connections) is dispatch delay, not latency; opening a new connection is part
        of the request's latency, as it is for any client without a warm connection."""
        if capture_text:
            record.text = []
        if self._raw is not None:
            payload = b"%sx-request-id: %s\r\ncontent-length: %d\r\n\r\n%s" % (
                self._head(path),
                record.request_id.encode(),
                len(body),
                body,
            )
        else:
            headers = {"x-request-id": record.request_id}
            request = self._http.build_request("POST", self.url(path), content=body, headers=headers)
        try:
            if self.backoff.until:  # connects have been failing: wait before trying (dispatch delay)
                await self.backoff.wait()
            await self._slots.acquire()
        except asyncio.CancelledError:
            record.sent_ns = record.end_ns = perf_counter_ns()
            record.fail("cancelled", "cancelled by stop while waiting for a connection")
            raise
        record.sent_ns = perf_counter_ns()
        try:
            if self._raw is not None:  # the pool releases the slot when the response closes
                # the whole-request deadline rides on the read timers (transport.fill)
                timeouts = {**self._timeouts, "deadline": monotonic() + self.timeouts.request_s}
                response = await self._raw.post_raw(self._host, self._port, payload, timeouts)
                record.resent(response.resent_ns)
                await self._consume_and_close(response, record)
            else:
                async with asyncio.timeout(self.timeouts.request_s):
                    response = await self._transport.handle_async_request(request)
                    response.request = request
                    record.resent(request.extensions.get("loadgen_resent_ns", 0))
                    await self._consume_and_close(response, record)
        except (TimeoutError, httpx.TimeoutException) as exc:
            outcome, message = self._timed_out(exc)
            record.fail(outcome, message)
            if isinstance(exc, httpx.ConnectTimeout):
                self.backoff.failed()
        except (httpx.DecodingError, SSEError, MalformedResponse) as exc:
            record.fail("malformed", _describe(exc))
        except (httpx.ConnectError, httpx.NetworkError, httpx.RemoteProtocolError, ssl.SSLError) as exc:
            record.fail("connect", _describe(exc))  # no response at all (a TLS alert read after the
            # handshake, e.g. a client certificate refused, comes raw from anyio, past httpx's mapping)
            if isinstance(exc, httpx.ConnectError):
                self.backoff.failed()
        except asyncio.CancelledError:
            record.fail("cancelled", "cancelled by stop")
            raise
        except Exception as exc:  # a client bug must not kill a soak; it is counted and logged instead
            log.warning("unexpected error in request %s", record.request_id, exc_info=True)
            record.fail("malformed", _describe(exc))
        finally:
            if self._raw is None:
                self._slots.release()
            if not record.end_ns or not record.ok:
                record.end_ns = perf_counter_ns()
            if record.error:
                record.error = redact.scrub(record.error)
            self._tokens.settle(record)

    def _timed_out(self, exc: BaseException) -> tuple[Outcome, str]:
        """The outcome and a message that names the limit that fired (whatever the exception says)."""
        limits = self.timeouts
        if isinstance(exc, httpx.ConnectTimeout):
            return "connect", f"connect timeout: no connection in {limits.connect_s:g}s (--connect-timeout)"
        if isinstance(exc, httpx.ReadTimeout):
            return "timeout", f"read timeout: no data for {limits.read_s:g}s (--read-timeout)"
        if isinstance(exc, httpx.WriteTimeout):
            return "timeout", f"write timeout: could not send for {limits.read_s:g}s (--read-timeout)"
        # the raw path's deadline (DeadlineExceeded) or asyncio's timeout (HTTPS path)
        whole = limits.request_s
        return "timeout", f"request timeout: no complete response within {whole:g}s (--request-timeout)"

    async def _consume_and_close(self, response: httpx.Response, record: RequestRecord) -> None:
        self.backoff.answered()
        try:
            await self._consume(response, record)
        except MalformedResponse as exc:
            record.fail("malformed", _describe(exc))
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, ssl.SSLError) as exc:
            record.fail("stream_broken", _describe(exc))
        finally:
            await response.aclose()

    async def _consume(self, response: httpx.Response, record: RequestRecord) -> None:
        status = response.status_code
        record.http_status = status
        if not 200 <= status < 300:
            if status in (429, 503):  # throttled: a 429, or a 503 that says when to come back
                record.retry_after_s = retry_after_s(response.headers.get("retry-after"))
                record.throttled = status == 429 or record.retry_after_s is not None
            text = await _read_some(response)
            outcome: Outcome = "http_429" if status == 429 else "http_5xx" if status >= 500 else "http_4xx"
            record.fail(outcome if status >= 400 else "malformed", f"HTTP {status}: {text}")
            return
        if "text/event-stream" in response.headers.get("content-type", ""):
            await self._consume_stream(response, record)
        else:
            await self._consume_body(response, record)

    async def _consume_stream(self, response: httpx.Response, record: RequestRecord) -> None:
        """Read events as they arrive. Over budget (one event past the event cap, or the whole
        response past MAX_RESPONSE_BYTES) the request fails as `too_large` and reading stops; the
        connection is then closed, not reused, and what was buffered is freed."""
        parser = SSEParser(self._max_event)
        feed = parser.feed
        done = False
        shape: TokenShape | None = None
        token_times = record.token_times
        network = response.extensions.get("network_stream")
        stamped = hasattr(network, "arrival_ns")
        chunks = response.aiter_bytes() if "content-encoding" in response.headers else response.aiter_raw()
        left = self._max_response
        try:
            async for chunk in chunks:
                now = network.arrival_ns if stamped else perf_counter_ns()  # type: ignore[union-attr]
                left -= len(chunk)
                if left < 0:
                    record.fail("too_large", f"response larger than {self._max_response} bytes")
                    return
                for event, data in feed(chunk):
                    if done:
                        continue
                    if shape is not None and shape.matches(data) and not event:
                        token_times.append(now)
                        record.content_events += 1
                    elif data == b"[DONE]":
                        done = True
                    elif not (kind := self._event(event, data, now, record)):
                        return
                    elif kind is _TOKEN and record.text is None:  # (re)learned: llama.cpp's `created` ticks
                        shape = TokenShape.learn(data) or shape
        except EventTooLarge as exc:
            record.fail("too_large", str(exc))
            return
        if stamped:
            record.end_ns = network.arrival_ns  # type: ignore[union-attr]
        for event, data in parser.finish():
            if not done and data != b"[DONE]" and not self._event(event, data, perf_counter_ns(), record):
                return
            done = done or data == b"[DONE]"
        if not done and record.finish_reason is None:
            record.fail("stream_broken", "stream ended without [DONE] or a finish_reason")

    def _event(self, event: bytes, data: bytes, now: int, record: RequestRecord) -> object:
        """Account one SSE event: _TOKEN for an event that is one content token and nothing else,
        _ACCOUNTED for any other, _FAILED (falsy) when the request has failed and reading should stop."""
        try:
            obj = _parse_json(data, record)
        except ValueError:
            record.fail("malformed", f"event is not JSON: {data[:120]!r}")
            return _FAILED
        if type(obj) is not dict:
            record.fail("malformed", f"event is not a JSON object: {data[:120]!r}")
            return _FAILED
        if event == b"error" or ("error" in obj and not obj.get("choices")):
            record.fail("stream_broken", f"error event: {str(obj.get('error', obj))[:200]}")
            return _FAILED
        kind = _ACCOUNTED
        try:
            choices = obj.get("choices")
            if choices:
                choice = choices[0]
                delta = choice.get("delta")
                if delta is not None:
                    content = delta.get("content") or delta.get("tool_calls")
                    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                else:
                    content = choice.get("text")
                    reasoning = None
                if content or reasoning:
                    record.token_times.append(now)
                    tokens = count_event_tokens(choice, obj.get("usage"), record)
                    if reasoning and not content and tokens > 1:
                        record.reasoning_extra += tokens - 1
                    if content:
                        record.content_events += 1
                        if not record.first_output_ns:
                            record.first_output_ns = now
                        if isinstance(content, str):
                            if record.text is not None:
                                record.text.append(content)
                            if not reasoning and delta is not None and not event:
                                kind = _TOKEN
                    if reasoning:
                        record.reasoning_events += 1
                finish = choice.get("finish_reason")
                if finish:
                    record.finish_reason = str(finish)
                    kind = _ACCOUNTED
            usage = obj.get("usage")
            if usage:
                take_usage(usage, record)
                kind = _ACCOUNTED
        except (AttributeError, TypeError, IndexError, KeyError) as exc:
            record.fail("malformed", f"unexpected event shape ({exc!r}): {data[:120]!r}")
            return _FAILED
        return kind

    async def _consume_body(self, response: httpx.Response, record: RequestRecord) -> None:
        """A non-streamed JSON response (or a server that ignored stream=true), at most MAX_BODY_BYTES."""
        pieces, size = [], 0
        async for piece in response.aiter_bytes():
            size += len(piece)
            if size > self._max_body:
                record.fail("too_large", f"response body larger than {self._max_body} bytes")
                return
            pieces.append(piece)
        raw = b"".join(pieces)
        network = response.extensions.get("network_stream")
        record.end_ns = getattr(network, "arrival_ns", 0) or perf_counter_ns()
        try:
            obj = _parse_json(raw, record)
            choice = obj["choices"][0]
            message = choice.get("message")
            text = message.get("content") if message is not None else choice.get("text")
            reasoning = message.get("reasoning_content") or message.get("reasoning") if message else None
            record.finish_reason = choice.get("finish_reason")
            if obj.get("usage"):
                take_usage(obj["usage"], record)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            record.fail("malformed", f"response is not an OpenAI completion ({exc!r}): {raw[:120]!r}")
            return
        if record.stream:  # the whole answer arrived at once: one token event, at the end
            record.token_times.append(record.end_ns)
            record.first_output_ns = record.token_times[0]
        if record.text is not None and isinstance(text, str):
            record.text.append(text)
        if record.usage_tokens is None:
            if self._count_tokens is not None:
                record.output_tokens = self._count_tokens((text or "") + (reasoning or ""))
                record.token_source = "tokenizer"
            else:
                record.token_source = "none"


_FAILED, _ACCOUNTED, _TOKEN = None, "accounted", "token"


def _parse_json(data: bytes, record: RequestRecord) -> object:
    """`data` parsed with orjson; what orjson refuses, parsed as Python's json module would: invalid
    UTF-8 replaced (and counted on the record), NaN and Infinity accepted (some servers write them in
    logprobs). ValueError when it is not JSON at all."""
    try:
        return _loads(data)
    except ValueError:
        pass
    try:
        text = data.decode()
    except UnicodeDecodeError:
        record.invalid_utf8 += 1
        text = data.decode("utf-8", "replace")
    return _json_document(text)


def _json_document(text: str | bytes) -> object:
    """json.loads, with a document nested past the interpreter's recursion limit (`[[[[...`, which
    orjson refuses at 1,024 levels) refused as ValueError too, not raised as RecursionError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


async def _read_some(response: httpx.Response) -> str:
    data = b""
    try:
        async for chunk in response.aiter_raw():
            data += chunk
            if len(data) >= ERROR_BODY_BYTES:
                break
    except httpx.HTTPError:
        pass
    return data[:ERROR_BODY_BYTES].decode("utf-8", "replace").strip()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def endpoint_url(base: httpx.URL | str, path: str) -> httpx.URL:
    """`{base}{path}` for an API path that starts with `/v1/`: the base URL's own path is a prefix
    that is kept (`http://gw/api` -> `http://gw/api/v1/...`), a trailing `/v1` on it is dropped (so
    `http://gw/api/v1`, as OpenAI clients take it, gives the same URLs), and its query string, if any,
    is kept on every request."""
    base = httpx.URL(base) if isinstance(base, str) else base
    prefix = base.raw_path.split(b"?", 1)[0].rstrip(b"/")
    if prefix.endswith(b"/v1"):
        prefix = prefix[:-3]
    query = b"?" + base.query if base.query else b""
    return base.copy_with(raw_path=prefix + path.encode("ascii") + query, fragment=None)


def check_header_value(value: str, what: str) -> None:
    """A header value we send must be printable ASCII: a CR or LF would end the header early and let
    the rest be read as headers of its own (header injection on the raw HTTP path)."""
    if "\r" in value or "\n" in value:
        raise ValueError(f"{what} contains a line break (CR or LF); refusing to send it in a header")
    if not value.isascii() or not value.isprintable():
        raise ValueError(f"{what} must be printable ASCII")
