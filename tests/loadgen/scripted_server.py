"""A scripted OpenAI-compatible SSE server whose timing is known exactly.

Raw asyncio (stdlib only), run as its own process: `python tests/loadgen/scripted_server.py --port N`.
For every request it records, on the host's monotonic clock (time.perf_counter_ns, the same clock
as in every other process on Linux), when the request was read and when each token event was
handed to the kernel, keyed by the client's `x-request-id` header. GET /records returns them,
GET /stats returns counters (requests, events, tokens), POST /reset clears both.

Behaviour per request comes from server flags (defaults) and the request body's `mock` object:
  ttft_ms, itl_ms       delays before the first and between token events
  reasoning             reasoning_content events before the content (counted in max_tokens)
  status                answer with this HTTP status and a JSON error body
  retry_after           with `status`: a Retry-After header with this value
  echo_auth             answer 401 with the request's Authorization header in the body (a gateway
                        that echoes credentials back: the client must scrub them)
  garbage               answer with bytes that are not HTTP
  slow_headers_ms       wait this long before sending the response headers
  die_after             close the connection abruptly after this many token events
  malformed_after       send a non-JSON data event after this many token events
  nested_after          send an event nested 100,000 arrays deep after this many token events
  error_after           send an `error` event after this many token events
  invalid_utf8          put an invalid UTF-8 byte into every token (raw, inside the JSON string)
  huge_bytes            one token event carrying this many bytes of content
  event_bytes           every token event carrying this many bytes of content
  many_lines            the first token event sent as this many `data:` lines of 1,000 bytes each
  split                 write every event in two pieces (split inside a UTF-8 character)
  burst                 write the token events in groups of this many, each group in one write (so
                        the client reads a group's events in one read), itl_ms between groups
  no_done               end the stream without [DONE] and without a finish_reason
  no_usage              never send usage
  usage_factor          usage.completion_tokens = this many times the tokens actually sent
  close_after           close the keep-alive connection right after the response (no notice)
  ttft_per_in_flight_ms added to ttft_ms per request in flight (a server that slows with load)
  fault_every           apply the fault options above only to every N-th completion request (the
                        others succeed), for runs that mix successes and failures

With --tls-port, --tls-cert and --tls-key it also serves HTTPS on that port (same state). A request
in proxy form (`POST http://host/v1/... HTTP/1.1`, as a client sends to a forward proxy) is served as
if it were for this server, so a test can stand in for a proxy; its record's path keeps the form.

Any path prefix before /v1/ is accepted (a gateway's /api/v1/...); each record keeps the request's
path, its authorization header and whether usage was asked for (stream_options.include_usage).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import ssl
import time

now_ns = time.perf_counter_ns
FAULTS = ("status", "garbage", "die_after", "malformed_after", "error_after", "no_done", "slow_headers_ms")


class State:
    def __init__(self, defaults: dict, keep_records: bool) -> None:
        self.defaults = defaults
        self.keep_records = keep_records
        self.records: list[dict] = []
        self.requests = 0
        self.events = 0
        self.tokens = 0
        self.connections = 0
        self.in_flight = 0
        self.fast = False
        self.rendered: dict[int, bytes] = {}
        self.models_requests: list[dict] = []  # path and authorization of each GET .../v1/models


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _event(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict, bytes] | None:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return method, path, headers, body


def _response(status: int, body: bytes, content_type: str = "application/json", extra: str = "") -> bytes:
    reason = {200: "OK", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error"}.get(
        status, "Status"
    )
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
        f"{extra}\r\n"
    ).encode("latin-1") + body  # as a server writes header bytes (a value may hold any of them)


async def handle(state: State, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    state.connections += 1
    try:
        while True:
            try:
                request = await _read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError, ValueError):
                return
            received = now_ns()
            method, path, headers, body = request
            route = path.split("?", 1)[0]
            if route.startswith("http://"):  # proxy form: route by the path part
                route = "/" + route.split("/", 3)[3]
            if route == "/health":
                writer.write(_response(200, b"{}"))
            elif route.endswith("/v1/models"):
                state.models_requests.append({"path": path, "authorization": headers.get("authorization")})
                writer.write(_response(200, b'{"object":"list","data":[{"id":"scripted","object":"model"}]}'))
            elif route == "/records":
                writer.write(_response(200, json.dumps(state.records).encode()))
            elif route == "/stats":
                names = ("requests", "events", "tokens", "connections", "models_requests")
                stats = {k: getattr(state, k) for k in names}
                writer.write(_response(200, json.dumps(stats).encode()))
            elif route == "/reset" and method == "POST":
                state.records.clear()
                state.requests = state.events = state.tokens = 0
                writer.write(_response(200, b"{}"))
            elif route.endswith(("/v1/chat/completions", "/v1/completions")):
                if not await _complete(state, writer, path, headers, body, received):
                    return
            else:
                writer.write(_response(404, b'{"error":"not found"}'))
            await writer.drain()
    except ConnectionError:
        return
    finally:
        writer.close()


async def _complete(state, writer, path, headers, body, received) -> bool:
    """Serve one completion; False when the connection was closed on purpose."""
    request = json.loads(body)
    chat = path.split("?", 1)[0].endswith("chat/completions")
    if state.fast and request.get("stream") and "mock" not in request and chat:
        return _fast_stream(state, writer, _max_tokens(request, state.defaults["tokens"]))
    mock = {**state.defaults, **(request.get("mock") or {})}
    if mock.get("fault_every") and (state.requests + 1) % int(mock["fault_every"]):
        mock = {k: v for k, v in mock.items() if k not in FAULTS}
    stream = bool(request.get("stream"))
    tokens = _max_tokens(request, mock.get("tokens", 16))
    reasoning = int(mock.get("reasoning", 0))
    include_usage = bool((request.get("stream_options") or {}).get("include_usage")) and not mock.get(
        "no_usage"
    )
    messages = request.get("messages") or []
    record = {"id": headers.get("x-request-id"), "received_ns": received, "event_ns": [], "tokens": 0}
    record["path"] = path
    record["authorization"] = headers.get("authorization")
    record["include_usage"] = (request.get("stream_options") or {}).get("include_usage")
    record["max_tokens"] = request.get("max_tokens")
    record["assistant"] = [m.get("content") for m in messages if m.get("role") == "assistant"]
    state.requests += 1
    state.in_flight += 1
    try:
        return await _answer(
            state, writer, request, mock, record, chat, stream, tokens, reasoning, include_usage
        )
    finally:
        state.in_flight -= 1


async def _answer(
    state, writer, request, mock, record, chat, stream, tokens, reasoning, include_usage
) -> bool:
    ttft_s = (mock.get("ttft_ms", 0) + mock.get("ttft_per_in_flight_ms", 0) * state.in_flight) / 1000
    if state.keep_records:
        state.records.append(record)
    if mock.get("slow_headers_ms"):
        await asyncio.sleep(mock["slow_headers_ms"] / 1000)
    if mock.get("echo_auth"):
        writer.write(_response(401, f"rejected credentials: {record['authorization']}".encode()))
        return True
    if mock.get("garbage"):
        writer.write(b"HELLO THERE\r\n\r\n")
        return True
    if mock.get("status"):
        status = int(mock["status"])
        extra = f"retry-after: {mock['retry_after']}\r\n" if "retry_after" in mock else ""
        body = json.dumps({"error": {"message": f"scripted {status}"}}).encode()
        writer.write(_response(status, body, extra=extra))
        return True
    prompt_tokens = len(json.dumps(request.get("messages") or request.get("prompt")).split())
    completion = round(tokens * float(mock.get("usage_factor", 1)))
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }
    if reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": min(reasoning, tokens)}
    if not stream:
        text = "".join(f"tok{i} " for i in range(tokens))
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "finish_reason": "length"}
        if not chat:
            choice = {"index": 0, "text": text, "finish_reason": "length"}
        await asyncio.sleep(ttft_s + tokens * mock.get("itl_ms", 0) / 1000)
        obj = {"id": record["id"], "object": "chat.completion", "choices": [choice]}
        if not mock.get("no_usage"):
            obj["usage"] = usage
        writer.write(_response(200, json.dumps(obj).encode()))
        record["tokens"] = tokens
        state.tokens += tokens
        return True
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    if chat:
        writer.write(_chunk(_event({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})))
    await asyncio.sleep(ttft_s)
    split = bool(mock.get("split"))
    burst = int(mock.get("burst", 1))
    held: list[bytes] = []  # a burst's events not yet written
    for i in range(tokens):
        if i % burst == 0 and i:
            itl = mock.get("itl_ms", 0)
            await asyncio.sleep(itl / 1000) if itl else None
        if mock.get("die_after") is not None and i >= int(mock["die_after"]):
            writer.transport.abort()
            return False
        if mock.get("malformed_after") is not None and i == int(mock["malformed_after"]):
            writer.write(_chunk(b"data: {not json\n\n"))
        if mock.get("nested_after") is not None and i == int(mock["nested_after"]):
            writer.write(_chunk(b"data: " + b"[" * 100_000 + b"]" * 100_000 + b"\n\n"))
        if mock.get("error_after") is not None and i == int(mock["error_after"]):
            writer.write(_chunk(b'data: {"error":{"message":"scripted failure","code":500}}\n\n'))
        text = f"tok{i} "
        if mock.get("huge_bytes") and i == 0:
            text = "x" * int(mock["huge_bytes"])
        if mock.get("event_bytes"):
            text = "x" * int(mock["event_bytes"])
        if mock.get("many_lines") and i == 0:
            line = b"data: " + b"y" * 1000 + b"\n"
            writer.write(_chunk(line * int(mock["many_lines"]) + b"\n"))
            await writer.drain()
        field = "reasoning_content" if i < reasoning else "content"
        finish = "length" if i == tokens - 1 and not mock.get("no_done") else None
        if chat:
            obj = {"choices": [{"index": 0, "delta": {field: text}, "finish_reason": finish}]}
        else:
            obj = {"choices": [{"index": 0, "text": text, "finish_reason": finish}]}
        payload = _event(obj)
        if mock.get("invalid_utf8"):
            payload = payload.replace(b"tok", b"t\xffok", 1)
        if split:
            payload = payload.replace(b"tok", "tök".encode(), 1)
            cut = payload.index("ö".encode()) + 1  # inside the two-byte character
            writer.write(_chunk(payload[:cut]))
            await asyncio.sleep(0.002)  # so the two pieces reach the client in separate reads
            writer.write(_chunk(payload[cut:]))
        elif burst > 1:
            held.append(_chunk(payload))
            if len(held) == burst or i == tokens - 1:
                writer.write(b"".join(held))
                held.clear()
        else:
            writer.write(_chunk(payload))
        record["event_ns"].append(now_ns())
        record["tokens"] += 1
        state.events += 1
        state.tokens += 1
    if include_usage:
        writer.write(_chunk(_event({"choices": [], "usage": usage})))
    if not mock.get("no_done"):
        writer.write(_chunk(b"data: [DONE]\n\n"))
    writer.write(b"0\r\n\r\n")
    record["done_ns"] = now_ns()
    if mock.get("close_after"):
        await writer.drain()
        writer.transport.abort()
        return False
    return True


def _max_tokens(request: dict, default: int) -> int:
    return int(request.get("max_tokens") or request.get("max_completion_tokens") or default)


def _fast_stream(state: State, writer: asyncio.StreamWriter, tokens: int) -> bool:
    """Benchmarks: the whole stream pre-rendered, one write, no records (so the client is measured)."""
    body = state.rendered.get(tokens)
    if body is None:
        fields = state.defaults.get("chunk_fields", {})
        parts = [_chunk(_event({**fields, "choices": [{"index": 0, "delta": {"role": "assistant"}}]}))]
        for i in range(tokens):
            finish = "length" if i == tokens - 1 else None
            choice = {"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": finish}
            parts.append(_chunk(_event({**fields, "choices": [choice]})))
        usage = {"prompt_tokens": 32, "completion_tokens": tokens, "total_tokens": 32 + tokens}
        parts.append(_chunk(_event({**fields, "choices": [], "usage": usage})))
        parts.append(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        body = state.rendered[tokens] = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            + b"".join(parts)
        )
    writer.write(body)
    state.requests += 1
    state.events += tokens
    state.tokens += tokens
    return True


async def serve(
    host: str, port: int, defaults: dict, keep_records: bool, fast: bool = False,
    tls: tuple[int, str, str] | None = None,
) -> None:  # fmt: skip
    state = State(defaults, keep_records)
    state.fast = fast
    server = await asyncio.start_server(lambda r, w: handle(state, r, w), host, port, backlog=4096)
    print(f"listening on {host}:{port}", flush=True)
    if tls is not None:
        tls_port, cert, key = tls
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        secure = await asyncio.start_server(lambda r, w: handle(state, r, w), host, tls_port, ssl=context)
        print(f"listening with TLS on {host}:{tls_port}", flush=True)
        await secure.start_serving()
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--itl-ms", type=float, default=0.0)
    parser.add_argument("--tokens", type=int, default=16, help="tokens when the request has no max_tokens")
    parser.add_argument("--no-records", action="store_true", help="keep counters only (benchmarks)")
    parser.add_argument(
        "--fast", action="store_true", help="benchmarks: pre-rendered chat streams, no delays"
    )
    parser.add_argument(
        "--chunk-fields", action="store_true",
        help="--fast streams with vLLM's id, object, created and model in every chunk (AIPerf needs them)",
    )  # fmt: skip
    parser.add_argument("--tls-port", type=int, help="also serve HTTPS here (needs --tls-cert, --tls-key)")
    parser.add_argument("--tls-cert", help="PEM certificate chain for --tls-port")
    parser.add_argument("--tls-key", help="PEM private key for --tls-port")
    args = parser.parse_args()
    defaults = {"ttft_ms": args.ttft_ms, "itl_ms": args.itl_ms, "tokens": args.tokens}
    if args.chunk_fields:
        defaults["chunk_fields"] = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0,
                                    "model": "scripted"}  # fmt: skip
    tls = (args.tls_port, args.tls_cert, args.tls_key) if args.tls_port else None
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, defaults, not args.no_records, args.fast, tls))


if __name__ == "__main__":
    main()
