#!/usr/bin/env python3
"""Where one engine target's scrape spends its CPU, stage by stage, in the exporter's own process.

    .venv/bin/python bench/exporter_engine_stages.py [--targets 1] [--scrapes 200]

Builds the exporter in this process (engines only: no GPU or host collector) against bench/engine_payloads.py
(vLLM 0.33's dp-2 payload, values changing on every request), scrapes it as Prometheus would (OpenMetrics,
gzip) every 50 ms, and wraps each stage in a thread-CPU timer: parsing (read loop, then the end-of-payload
checks), normalizing, building the families, rendering, gzip; HTTP and the event loop are the fetch's total
minus its parsing. Prints ms per scrape per stage and the process's CPU per scrape; the difference is the
rest (thread hand-off, self-metrics, bookkeeping). Stages nest: only the indented ones add up.
"""

from __future__ import annotations

import argparse
import collections
import functools
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import exporter.registry as registry  # noqa: E402
from exporter.config import load_config  # noqa: E402
from exporter.engines import collector, parse, scraper  # noqa: E402
from exporter.engines.vllm import Vllm  # noqa: E402

spent: collections.Counter[str] = collections.Counter()


def timed(owner: Any, name: str, label: str) -> None:
    function: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent[label] += time.thread_time() - started

    setattr(owner, name, wrapper)


def timed_async(owner: Any, name: str, label: str) -> None:
    function = getattr(owner, name)

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()  # one target: nothing else runs on the loop meanwhile
        try:
            return await function(*args, **kwargs)
        finally:
            spent[label] += time.thread_time() - started

    setattr(owner, name, wrapper)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", type=int, default=1)
    parser.add_argument("--scrapes", type=int, default=200)
    args = parser.parse_args()
    timed_async(scraper.HttpFetch, "metrics", "fetch and parse")
    timed(parse.ExpositionReader, "feed", "  parse: read loop")
    timed(parse.ExpositionReader, "close", "  parse: end checks")
    timed(Vllm, "normalize", "normalize")
    timed(collector, "build_families", "build families")
    timed(registry, "render_families", "render")
    timed(registry, "_finish", "gzip")
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "engine_payloads.py"), "--targets", str(args.targets)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    ports = [int(server.stdout.readline()) for _ in range(args.targets)]
    flags = ["--no-collector.gpu", "--no-collector.host"]
    flags += [f"--target=e{i}=http://127.0.0.1:{port},kind=vllm" for i, port in enumerate(ports)]
    exporter = registry.build_exporter(load_config(flags, environ={}), start_threads=False)
    try:
        for _ in range(5):  # the heads are learned from the second good payload
            exporter.scrape(openmetrics=True, gzipped=True)
        spent.clear()
        started = time.process_time()
        for _ in range(args.scrapes):
            exporter.scrape(openmetrics=True, gzipped=True)
            time.sleep(0.05)
        total = (time.process_time() - started) / args.scrapes * 1e3
    finally:
        exporter.close()
        server.terminate()
        server.wait()
    per = {label: seconds / args.scrapes * 1e3 for label, seconds in spent.items()}
    parsing = per["  parse: read loop"] + per["  parse: end checks"]
    print(f"{args.targets} target(s), {args.scrapes} scrapes: process CPU {total:.2f} ms per scrape")
    for label in ("fetch and parse", "  parse: read loop", "  parse: end checks"):
        print(f"  {label:24s} {per[label]:6.2f} ms")
    print(f"  {'  HTTP and event loop':24s} {per['fetch and parse'] - parsing:6.2f} ms")
    for label in ("normalize", "build families", "render", "gzip"):
        print(f"  {label:24s} {per[label]:6.2f} ms")
    counted = per["fetch and parse"] + sum(per[k] for k in ("normalize", "build families", "render", "gzip"))
    print(f"  {'rest':24s} {total - counted:6.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
