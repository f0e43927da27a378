"""Trace replay at 1,000 requests/s: how late does llmobs-loadgen send what a trace says, beside AIPerf.

    .venv/bin/python bench/trace_replay.py                 # 1,000 req/s for 20 s, then AIPerf alike
    .venv/bin/python bench/trace_replay.py --seconds 5     # shorter
    .venv/bin/python bench/trace_replay.py --no-peer       # ours only

A Mooncake trace is generated (Poisson arrivals at --rate, 1-8 blocks of 512 tokens per prompt drawn
from a pool of shared hash ids, 8 output tokens) and replayed against the fast mock
(tests/loadgen/scripted_server.py --fast: pre-rendered streams, no delays), so the client's own
scheduling is what is measured. Ours: `llmobs-loadgen run --dataset mooncake:TRACE`, its arrival error
(sent - due) from the JSON report, and the share of requests it completed. AIPerf (the peer whose
Mooncake replay this format comes from) runs the same trace with `--fixed-schedule` from its own venv
(.cache/aiperf-venv, `pip install aiperf==0.13.0`) against the same mock; its schedule lag is what it
reports, where it reports one. Prints a Markdown block for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.loadgen_bench import mock_server  # noqa: E402

AIPERF = ROOT / ".cache" / "aiperf-venv" / "bin" / "aiperf"
TARGET_P99_S = 0.005


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def make_trace(path: Path, rate: float, seconds: float, seed: int = 1) -> int:
    rng = random.Random(seed)
    now, lines = 0.0, []
    while now < seconds:
        blocks = rng.randint(1, 8)
        shared = rng.randint(0, blocks)  # a prefix of ids from a small pool, the rest unique
        ids = [rng.randrange(64) for _ in range(shared)] + [
            10_000 + len(lines) * 8 + k for k in range(blocks - shared)
        ]
        length = 512 * (blocks - 1) + rng.randint(1, 512)
        lines.append(
            {"timestamp": round(now * 1000, 3), "input_length": length, "output_length": 8, "hash_ids": ids}
        )
        now += rng.expovariate(rate)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return len(lines)


def run_ours(url: str, trace: Path, workdir: Path) -> dict:
    report = workdir / "ours.json"
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable, "-m", "loadgen", "--log-level", "warning", "run", "--url", url,
            "--model", "scripted", "--dataset", f"mooncake:{trace}", "--metrics-address", "none",
            "--progress", "none", "--output-json", str(report),
        ],
        check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    wall = time.perf_counter() - started
    phase = json.loads(report.read_text())["phases"][0]
    arrival = phase["latency_s"]["dispatch"]
    return {
        "sent": phase["requests"]["sent"],
        "succeeded": phase["requests"]["succeeded"],
        "achieved_rps": phase["throughput"]["requests_per_s"],
        "p50_ms": arrival["median"] * 1e3,
        "p99_ms": arrival["p99"] * 1e3,
        "max_ms": arrival["max"] * 1e3,
        "wall_s": wall,
    }


def run_aiperf(url: str, trace: Path, workdir: Path) -> dict | str:
    if not AIPERF.exists():
        return (
            f"not installed ({AIPERF.relative_to(ROOT)} missing: python3 -m venv .cache/aiperf-venv "
            "&& .cache/aiperf-venv/bin/pip install aiperf==0.13.0)"
        )
    artifacts = workdir / "aiperf"
    command = [
        str(AIPERF), "profile", "--model", "scripted", "--url", url, "--endpoint-type", "chat", "--streaming",
        "--input-file", str(trace), "--custom-dataset-type", "mooncake_trace", "--fixed-schedule",
        "--artifact-dir", str(artifacts), "--tokenizer", "gpt2",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        return f"failed (exit {result.returncode}): " + " | ".join(tail)[:400]
    exported = next(artifacts.rglob("profile_export_aiperf.json"), None)
    if exported is None:
        return "ran, but wrote no profile_export_aiperf.json"
    data = json.loads(exported.read_text())
    lag = next((v for k, v in data.items() if "schedule" in k.lower() and "lag" in k.lower()), None)
    requests = (
        data.get("request_count", {}).get("avg") if isinstance(data.get("request_count"), dict) else None
    )
    return {"requests": requests, "schedule_lag": lag, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--no-peer", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trace-bench-") as tmp:
        workdir = Path(tmp)
        trace = workdir / "trace.jsonl"
        count = make_trace(trace, args.rate, args.seconds)
        log(f"trace: {count} requests over {args.seconds:g} s ({args.rate:g}/s Poisson)")
        with mock_server(workdir, "--fast", "--no-records") as url:
            ours = run_ours(url, trace, workdir)
            log(f"ours: {ours}")
            peer = "not run (--no-peer)" if args.no_peer else run_aiperf(url, trace, workdir)
            log(f"aiperf: {peer}")
    verdict = "met" if ours["p99_ms"] < TARGET_P99_S * 1e3 else "NOT met"
    machine = f"{time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} CPUs"
    row = (
        f"| llmobs-loadgen | {ours['sent']} / {ours['succeeded']} | {ours['achieved_rps']:.0f} | "
        f"{ours['p50_ms']:.2f} ms | {ours['p99_ms']:.2f} ms | {ours['max_ms']:.1f} ms |"
    )
    print(f"""
### Trace replay at {args.rate:g} requests/s ({machine})

`.venv/bin/python bench/trace_replay.py --rate {args.rate:g} --seconds {args.seconds:g}`: a Mooncake trace
of {count} requests (Poisson, {args.seconds:g} s) replayed against the fast mock on the same machine.

| client | sent / completed | achieved req/s | arrival error p50 | p99 | max |
| --- | --- | --- | --- | --- | --- |
{row}

Target p99 under {TARGET_P99_S * 1e3:g} ms: {verdict}. AIPerf 0.13 `--fixed-schedule`: {peer}.
""")


if __name__ == "__main__":
    main()
