"""How close does the rtx4090d-qwen3-4b-fp8 profile come to the published figures it was fitted to?

Published (Locust against Qwen3-4B-FP8 under vLLM on an RTX 4090D 24 GB, 50 output tokens; Locust users
wait between requests, so the load is stated here as requests in flight, from Little's law):
  50 users:  30.71 req/s, mean 1.18 s, p95 1.20 s  -> 30.71 x 1.18 = 36 in flight
  500 users: 91.77 req/s, mean 3.21 s, p95 3.70 s  -> 91.77 x 3.21 = 295 in flight
  500 users, 512 output tokens: TTFT about 15 s, about 7,500 output tokens/s
The prompt length was not published; ~100 tokens is assumed (the profile's README says so).

This script runs the simulator and a closed loop of that many streaming clients for each case and
prints the published and simulated figures side by side (client-side timing, monotonic clock). On a
GPU machine, `--real-port` measures a real vLLM server with the same client first, so a profile can
be fitted to it (prompts are 100 token ids, so both servers see exactly 100 prompt tokens):

    .venv/bin/python bench/simulator_calibration.py
    vllm serve Qwen/Qwen3-4B --port 8000 &   # then, on the H100:
    .venv/bin/python bench/simulator_calibration.py --real-port 8000 --profile h100-qwen3-4b
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Case:
    name: str
    in_flight: int
    output_tokens: int
    warmup: float
    seconds: float
    published: dict[str, float]


CASES = [
    Case("50 users, 50 tokens", 36, 50, 5, 20, {"req/s": 30.71, "mean e2e s": 1.18, "p95 e2e s": 1.20}),
    Case("500 users, 50 tokens", 295, 50, 8, 25, {"req/s": 91.77, "mean e2e s": 3.21, "p95 e2e s": 3.70}),
    Case("500 users, 512 tokens", 500, 512, 40, 40, {"mean TTFT s": 15.0, "output tok/s": 7500.0}),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def timed_stream(port: int, body: bytes) -> tuple[float, float, float, int]:
    """(start, first token, end, tokens) of one streamed request."""
    start = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    first, tokens = 0.0, 0
    try:
        while line := await reader.readline():
            if line.startswith(b"data: [DONE]"):
                break
            if line.startswith(b"data: "):
                tokens += 1
                first = first or time.monotonic()
    finally:
        writer.close()
    return start, first, time.monotonic(), tokens


async def closed_loop(port: int, case: Case, model: str | None) -> list[tuple[float, float, float, int]]:
    stop = time.monotonic() + case.warmup + case.seconds
    results: list[tuple[float, float, float, int]] = []

    async def user(index: int) -> None:
        turn = 0
        while time.monotonic() < stop:
            # Exactly 100 prompt tokens on any server: token ids, unique per request (no prefix-cache hits)
            seed = index * 7919 + turn * 104729
            prompt = [1000 + (seed + word * 31) % 90000 for word in range(100)]
            body = {"prompt": prompt, "max_tokens": case.output_tokens, "ignore_eos": True, "stream": True}
            if model:
                body["model"] = model
            results.append(await timed_stream(port, json.dumps(body).encode()))
            turn += 1

    await asyncio.gather(*(user(index) for index in range(case.in_flight)))
    return results


def measure(case: Case, port: int, model: str | None = None) -> dict[str, float]:
    """Drive the server on 127.0.0.1:port with this case; client-side figures over the window."""
    began = time.monotonic()
    results = asyncio.run(closed_loop(port, case, model))
    window_start, window_end = began + case.warmup, began + case.warmup + case.seconds
    done = [r for r in results if window_start <= r[2] <= window_end]
    e2e = sorted(end - start for start, _, end, _ in done)
    return {
        "req/s": len(done) / case.seconds,
        "mean e2e s": statistics.fmean(e2e),
        "p95 e2e s": e2e[int(len(e2e) * 0.95)],
        "mean TTFT s": statistics.fmean(first - start for start, first, _, _ in done),
        "output tok/s": sum(tokens for *_, tokens in done) / case.seconds,
    }


def simulate(case: Case, profile: str) -> dict[str, float]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port", str(port), "--profile", profile],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(150):
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        figures = measure(case, port)
        lag = httpx.get(f"http://127.0.0.1:{port}/_simulator/stats", timeout=5).json()["step_timing"]
    finally:
        process.terminate()
        process.wait(timeout=10)
    return {**figures, "step lag mean ms": lag["lag_mean_seconds"] * 1e3}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="rtx4090d-qwen3-4b-fp8")
    parser.add_argument("--case", type=int, action="append", help="run only these cases (1-based)")
    parser.add_argument(
        "--real-port",
        type=int,
        help="also measure a real vLLM server on 127.0.0.1:PORT with the same client (GPU machine)",
    )
    args = parser.parse_args()
    model = None
    if args.real_port:
        models = httpx.get(f"http://127.0.0.1:{args.real_port}/v1/models", timeout=10).json()
        model = models["data"][0]["id"]
    for number, case in enumerate(CASES, start=1):
        if args.case and number not in args.case:
            continue
        real = measure(case, args.real_port, model) if args.real_port else {}
        simulated = simulate(case, args.profile)
        print(f"{case.name} ({case.in_flight} in flight, profile {args.profile})")
        print(f"  {'figure':<18} {'published':>10} {'real':>10} {'simulated':>10}")
        for key, value in simulated.items():
            columns = [case.published.get(key), real.get(key), value]
            print(
                f"  {key:<18} " + " ".join(f"{c:10.2f}" if c is not None else f"{'-':>10}" for c in columns)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
