"""An independent reference client for TTFT and TPOT: raw asyncio streams, written for the tests, sharing
no code with the load generator (no httpx, no loadgen transport, SSE parser or token accounting).

Per request: open a fresh TCP connection, write one HTTP/1.1 POST (`Connection: close`) for a streamed
chat completion with `stream_options.include_usage`, read the status line and headers, de-chunk the body
(`Transfer-Encoding: chunked`, or read to EOF), split it into SSE events. The clock starts just before
connecting (so a connect counts, as it does for any client without a warm connection) and each event is
stamped when its bytes arrive.

Definitions, as loadgen/README.md states them: TTFT = first event whose delta carries non-empty
`content` or `reasoning_content` - start; E2E = `[DONE]` (else the end of the body) - start;
TPOT = (E2E - TTFT) / (tokens - 1), tokens from the final `usage.completion_tokens`.

    results = asyncio.run(run(url, bodies, concurrency=4))   # one Result per body, in order
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Result", "run"]


@dataclass(frozen=True)
class Result:
    ttft_s: float
    e2e_s: float
    tokens: int

    @property
    def tpot_s(self) -> float | None:
        return (self.e2e_s - self.ttft_s) / (self.tokens - 1) if self.tokens > 1 else None


async def run(url: str, bodies: list[dict], concurrency: int) -> list[Result]:
    gate = asyncio.Semaphore(concurrency)

    async def one(body: dict) -> Result:
        async with gate:
            return await request(url, body)

    return list(await asyncio.gather(*(one(b) for b in bodies)))


async def request(url: str, body: dict) -> Result:
    parts = urlsplit(url)
    payload = json.dumps({**body, "stream": True, "stream_options": {"include_usage": True}}).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nConnection: close\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode()
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(head + payload)
        await writer.drain()
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"reference client: {status!r}")
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        chunks = _chunks(reader) if headers.get("transfer-encoding") == "chunked" else _to_eof(reader)
        first_token, done, tokens, buffer = None, None, 0, b""
        async for chunk in chunks:
            now = time.perf_counter()
            buffer += chunk
            *events, buffer = buffer.replace(b"\r\n", b"\n").split(b"\n\n")
            for event in events:
                data = b"".join(line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:"))
                if data == b"[DONE]":
                    done = now
                if not data or data == b"[DONE]":
                    continue
                message = json.loads(data)
                if first_token is None and _carries_a_token(message):
                    first_token = now
                if message.get("usage"):
                    tokens = message["usage"]["completion_tokens"]
        end = done or time.perf_counter()
    finally:
        writer.close()
    if first_token is None:
        raise RuntimeError("reference client: no token in the stream")
    return Result(ttft_s=first_token - start, e2e_s=end - start, tokens=tokens)


def _carries_a_token(message: dict) -> bool:
    for choice in message.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("reasoning_content"):
            return True
    return False


async def _chunks(reader: asyncio.StreamReader):
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        if size == 0:
            return
        yield await reader.readexactly(size)
        await reader.readexactly(2)  # the CRLF after each chunk


async def _to_eof(reader: asyncio.StreamReader):
    while chunk := await reader.read(65536):
        yield chunk


def main() -> None:
    """`python -m tests.support.reference_client URL BODIES.json CONCURRENCY START_MONOTONIC OUT.json`:
    the same run in a process of its own (no event loop or GIL shared with the client it is compared
    with), starting at a time.monotonic() instant both agreed on."""
    import sys

    url, bodies_path, concurrency, start_at, out_path = sys.argv[1:6]
    with open(bodies_path) as source:
        bodies = json.load(source)
    time.sleep(max(0.0, float(start_at) - time.monotonic()))
    results = asyncio.run(run(url, bodies, int(concurrency)))
    with open(out_path, "w") as out:
        json.dump([{"ttft_s": r.ttft_s, "e2e_s": r.e2e_s, "tokens": r.tokens} for r in results], out)


if __name__ == "__main__":
    main()
