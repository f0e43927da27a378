"""Can the simulator carry N concurrent streams on this machine and still keep time?

Starts `python -m simulator` on loopback, drives N closed-loop streaming chat requests with a minimal
asyncio client (raw HTTP/1.1, so the client costs little), and prints, from the simulator's own
ground truth (/_simulator/stats, /metrics): how late its step loop woke up (mean, p99, max), the
token rate it produced, and the CPU it used. The host's load average is printed beside them: on a
shared machine a late step loop is often other processes' doing.

No peer runs here: llm-d-inference-sim (Go) is not installable on this machine.

    .venv/bin/python bench/simulator_streams.py --streams 500 --seconds 20 --profile h100-qwen3-4b
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def one_stream(port: int, body: bytes) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    writer.write(request)
    events = 0
    try:
        while line := await reader.readline():
            if line.startswith(b"data: "):
                events += 1
                if line.startswith(b"data: [DONE]"):
                    break
    finally:
        writer.close()
    return events


async def drive(port: int, streams: int, seconds: float, output_len: int) -> tuple[int, int]:
    deadline = time.monotonic() + seconds
    done = events = 0

    async def user(index: int) -> None:
        nonlocal done, events
        while time.monotonic() < deadline:
            # Distinct prompts of about 100 tokens, so the prefix cache does not make prefill free.
            words = " ".join(f"u{index}r{done}w{word}" for word in range(90))
            body = {"messages": [{"role": "user", "content": words}], "max_tokens": output_len,
                    "ignore_eos": True, "stream": True}  # fmt: skip
            received = await one_stream(port, json.dumps(body).encode())
            events += received
            done += 1

    await asyncio.gather(*(user(index) for index in range(streams)))
    return done, events


def counter(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise RuntimeError(f"{name} not found")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--output-len", type=int, default=50)
    parser.add_argument("--profile", default="h100-qwen3-4b")
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--profile",
            args.profile,
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        sim = psutil.Process(process.pid)
        cpu_before = sum(sim.cpu_times()[:2])
        load_before = os.getloadavg()[0]
        tokens_before = counter(url, "vllm:generation_tokens_total")
        started = time.monotonic()
        done, events = asyncio.run(drive(port, args.streams, args.seconds, args.output_len))
        elapsed = time.monotonic() - started
        cpu = sum(sim.cpu_times()[:2]) - cpu_before
        tokens = counter(url, "vllm:generation_tokens_total") - tokens_before
        stats = httpx.get(f"{url}/_simulator/stats", timeout=10).json()["step_timing"]
    finally:
        process.terminate()
        process.wait(timeout=10)

    rows = [
        ("profile", args.profile),
        ("concurrent streams", args.streams),
        ("requests completed", done),
        ("SSE events received", events),
        ("tokens generated (server)", f"{tokens:.0f} ({tokens / elapsed:.0f}/s)"),
        ("engine steps", stats["steps"]),
        ("step wake-up lag mean (ms)", f"{stats['lag_mean_seconds'] * 1e3:.2f}"),
        ("step wake-up lag p99, last 2000 steps (ms)", f"{stats['lag_p99_recent_seconds'] * 1e3:.2f}"),
        ("step wake-up lag max (ms)", f"{stats['lag_max_seconds'] * 1e3:.2f}"),
        ("simulator CPU (share of one core)", f"{cpu / elapsed:.2f}"),
        ("host load average (1m) before / after", f"{load_before:.2f} / {os.getloadavg()[0]:.2f}"),
        ("host CPUs", os.cpu_count()),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"simulator under {args.streams} streams for {elapsed:.1f}s")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
