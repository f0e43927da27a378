"""A vLLM-bench-style client (runs in the peers' venv: needs aiohttp), for bench/loadgen_bench.py.

The request function follows `vllm/benchmarks/lib/endpoint_request_func.py` (openai-chat): one shared
aiohttp session with a TCPConnector limited to the concurrency, `async for` over response.content
lines, `json.loads` of every data line, TTFT/ITL from time.perf_counter(). The load is either a closed
loop (`--concurrency N`) or vLLM's arrival schedule at a constant rate (`--rate R`, gaps of 1/R,
precomputed, as `--request-rate R --burstiness inf`); the send delay against the schedule is what
vLLM later added as client_queue_time. Prints one JSON line of results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp


async def request(session: aiohttp.ClientSession, url: str, payload: dict) -> tuple[bool, int, float]:
    start = time.perf_counter()
    most_recent = start
    ttft = 0.0
    itl: list[float] = []
    events = 0
    async with session.post(url, json=payload, headers={"Content-Type": "application/json"}) as response:
        if response.status != 200:
            return False, 0, 0.0
        async for chunk_bytes in response.content:
            chunk_bytes = chunk_bytes.strip()
            if not chunk_bytes:
                continue
            chunk = chunk_bytes.decode("utf-8").removeprefix("data: ")
            if chunk == "[DONE]":
                continue
            timestamp = time.perf_counter()
            data = json.loads(chunk)
            if choices := data.get("choices"):
                content = choices[0]["delta"].get("content")
                if content:
                    events += 1
                if ttft == 0.0:
                    ttft = timestamp - start
                else:
                    itl.append(timestamp - most_recent)
            most_recent = timestamp
    return True, events, ttft


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--output-len", type=int, default=10)
    args = parser.parse_args()
    limit = args.concurrency or 0
    connector = aiohttp.TCPConnector(limit=limit, keepalive_timeout=60, ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=6 * 60 * 60)
    prompt = " ".join(["the"] * 32)
    payload = {
        "model": "m",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": args.output_len,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    url = args.url.rstrip("/") + "/v1/chat/completions"
    ok = failed = events = 0
    delays: list[float] = []
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, read_bufsize=10 * 1024**2
    ) as session:

        async def one(scheduled: float | None) -> None:
            nonlocal ok, failed, events
            if scheduled is not None:
                delays.append(time.perf_counter() - scheduled)
            try:
                success, n, _ = await request(session, url, payload)
            except aiohttp.ClientError:
                success, n = False, 0
            ok += success
            failed += not success
            events += n

        start = time.perf_counter()
        end = start + args.duration
        if args.concurrency:

            async def user() -> None:
                while time.perf_counter() < end:
                    await one(None)

            await asyncio.gather(*(user() for _ in range(args.concurrency)))
        else:
            tasks = []
            count = int(args.rate * args.duration)
            for i in range(count):
                scheduled = start + i / args.rate
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(scheduled)))
            await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    delays.sort()
    p99 = delays[max(0, int(len(delays) * 0.99) - 1)] if delays else None
    print(
        json.dumps({"ok": ok, "failed": failed, "events": events, "duration": elapsed, "dispatch_p99": p99})
    )


if __name__ == "__main__":
    asyncio.run(main())
