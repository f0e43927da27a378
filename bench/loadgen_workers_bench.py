"""Requests/s of llmobs-loadgen with 1 and 2 worker processes (--workers), beside Locust with 1 and 2
processes (--processes), closed loop, against the same mock server, in one run.

    .venv/bin/python bench/loadgen_workers_bench.py                 # 3 rounds of 20 s per client
    .venv/bin/python bench/loadgen_workers_bench.py --quick         # 1 round of 8 s

The mock is nginx (Debian's nginx-light), one worker process, answering every POST to
/v1/chat/completions with one pre-rendered SSE stream (role chunk, 10 content events, usage, [DONE]:
the body of tests/loadgen/scripted_server.py --fast) from its `return` directive: a C server costs a
small fraction of a client's CPU per request, so on a 2-core machine the clients, not the server, set
the pace. (The Python mock costs about as much per request as a client: with it, two client processes
and the mock share two cores and no client can double.) Clients run one after another, interleaved over
the rounds, so load from elsewhere on the machine hits all alike; the load average is read before and
after each run and printed beside its figures.

Locust (FastHttpUser, bench/loadgen_locustfile.py) runs from its own venv (.cache/locust-venv, made
here with pip). Its `--processes 2` runs a master and two worker processes.

For ours, the report's `pool` gives the cost of running as a pool: the parent's CPU (setup, merging the
workers' snapshots, /metrics) beside the workers', and the bytes the workers sent it.
With cores to spare, give the server its own: `--client-cpus 6,7 --server-cpus 8` pins the clients
(every process of each, workers included) to two cores and nginx to a third, so a 2-core client box is
measured without the server taking a share of its cores. `--nginx PATH` names the binary (default: the
one on PATH).
Prints a Markdown block for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.procs import free_port, wait_http  # noqa: E402

CACHE = Path(os.environ.get("LLMOBS_CACHE", ROOT / ".cache"))
LOCUST_VENV = CACHE / "locust-venv"
OUTPUT_LEN = 10
PROMPT_LEN = 32


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load() -> float:
    return os.getloadavg()[0]


# -- the mock ----------------------------------------------------------------------------------------


def sse_body(tokens: int = OUTPUT_LEN) -> str:
    """The stream scripted_server.py --fast sends, as one body."""
    events = [{"choices": [{"index": 0, "delta": {"role": "assistant"}}]}]
    for i in range(tokens):
        finish = "length" if i == tokens - 1 else None
        events.append({"choices": [{"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": finish}]})
    events.append({"choices": [], "usage": {"prompt_tokens": 32, "completion_tokens": tokens,
                                             "total_tokens": 32 + tokens}})  # fmt: skip
    lines = [f"data: {json.dumps(e, separators=(',', ':'))}\n\n" for e in events] + ["data: [DONE]\n\n"]
    return "".join(lines)


Cpus = set[int] | None  # the cores a process is pinned to; None: not pinned


def pinned(cpus: Cpus) -> Callable[[], None] | None:
    """A preexec_fn that pins the child (and all it starts) to cpus; None leaves it unpinned."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def cpu_list(text: str) -> set[int]:
    """'6,7' or '6-9' or '6-7,10' as a set of core numbers."""
    cpus: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def cores(cpus: Cpus) -> str:
    return ",".join(map(str, sorted(cpus))) if cpus else "any"


@contextlib.contextmanager
def nginx_mock(workdir: Path, binary: str | None, cpus: Cpus) -> Iterator[str]:
    binary = binary or shutil.which("nginx")
    if binary is None:
        raise SystemExit("nginx not found: apt-get install nginx-light (Debian), or see the docstring")
    port = free_port()
    body = sse_body().replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    prefix = workdir / "nginx"
    prefix.mkdir()
    config = f"""
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location = /v1/chat/completions {{
            default_type text/event-stream;
            return 200 "{body}";
        }}
        location / {{ return 200 "ok"; }}
    }}
}}
"""
    (prefix / "nginx.conf").write_text(config)
    process = subprocess.Popen([binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               preexec_fn=pinned(cpus))  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/", timeout=30, process=process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


# -- the clients ---------------------------------------------------------------------------------------


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


Timed = tuple[subprocess.CompletedProcess, float, float, float]


def timed(argv: list[str], timeout: float, cpus: Cpus) -> Timed:
    """The run, its processes' CPU seconds, and the load average before and after it."""
    before_load, before_cpu = load(), children_cpu()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                            preexec_fn=pinned(cpus))  # fmt: skip
    return result, children_cpu() - before_cpu, before_load, load()


def ours(url: str, workdir: Path, cpus: Cpus, duration: float, streams: int, workers: int) -> dict:
    report_path = workdir / f"ours-{workers}.json"
    argv = [
        sys.executable, "-m", "loadgen", "run", "--url", url, "--model", "m", "--concurrency", str(streams),
        "--workers", str(workers), "--step-duration", f"{duration}s", "--output-len", str(OUTPUT_LEN),
        "--input-len", str(PROMPT_LEN), "--metrics-address", "none", "--progress", "none",
        "--output-json", str(report_path),
    ]  # fmt: skip
    result, cpu, load_before, load_after = timed(argv, duration * 4 + 120, cpus)
    if result.returncode != 0:
        raise RuntimeError(f"loadgen failed: {result.stderr[-2000:]}")
    report = json.loads(report_path.read_text())
    phase = report["phases"][0]
    row = {
        "tool": f"llmobs-loadgen --workers {workers}", "ok": phase["requests"]["succeeded"],
        "failed": phase["requests"]["failed"], "duration_s": phase["duration_s"],
        "requests_per_s": phase["requests"]["succeeded"] / phase["duration_s"], "cpu_s": cpu,
        "load_before": load_before, "load_after": load_after,
    }  # fmt: skip
    if report.get("pool"):
        row["pool"] = report["pool"]
    return row


def ensure_locust() -> Path:
    binary = LOCUST_VENV / "bin" / "locust"
    if not binary.exists():
        log(f"creating {LOCUST_VENV} (pip install locust)")
        subprocess.run([sys.executable, "-m", "venv", str(LOCUST_VENV)], check=True)
        subprocess.run([str(LOCUST_VENV / "bin" / "pip"), "install", "-q", "locust"], check=True)
    return binary


def locust(url: str, workdir: Path, cpus: Cpus, duration: float, streams: int, processes: int) -> dict:
    prefix = workdir / f"locust-{processes}"
    argv = [
        str(ensure_locust()), "-f", str(ROOT / "bench" / "loadgen_locustfile.py"), "--headless",
        "-u", str(streams), "-r", str(streams), "-t", f"{int(duration)}s", "--host", url,
        "--csv", str(prefix), "--only-summary", "--stop-timeout", "10",
        *(["--processes", str(processes)] if processes > 1 else []),
    ]  # fmt: skip
    result, cpu, load_before, load_after = timed(argv, duration * 4 + 120, cpus)
    with open(f"{prefix}_stats.csv") as handle:
        total = {row["Name"]: row for row in csv.DictReader(handle)}["Aggregated"]
    ok = int(total["Request Count"]) - int(total["Failure Count"])
    counted = re.findall(r"LOADGEN_BENCH_EVENTS (\d+) (\d+)", result.stdout + result.stderr)
    events, responses = sum(int(e) for e, _ in counted), sum(int(r) for _, r in counted)
    return {
        "tool": f"Locust FastHttpUser --processes {processes}", "ok": ok,
        "failed": int(total["Failure Count"]),
        "duration_s": duration, "requests_per_s": ok / duration, "cpu_s": cpu,
        "events_per_response": events / responses if responses else None,
        "load_before": load_before, "load_after": load_after,
    }  # fmt: skip


def locust_version() -> str:
    code = "import importlib.metadata as m; print(m.version('locust'))"
    return subprocess.run(
        [str(LOCUST_VENV / "bin" / "python"), "-c", code], capture_output=True, text=True
    ).stdout.strip()


# -- the run --------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per client run (20)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--streams", type=int, default=50, help="closed-loop users (50)")
    parser.add_argument("--quick", action="store_true", help="one round of 8 s")
    parser.add_argument("--client-cpus", type=cpu_list, help="pin the clients to these cores (e.g. 6,7)")
    parser.add_argument("--server-cpus", type=cpu_list, help="pin nginx to these cores (e.g. 8)")
    parser.add_argument("--nginx", help="the nginx binary (default: nginx on PATH)")
    args = parser.parse_args()
    duration, rounds = (8.0, 1) if args.quick else (args.duration, args.rounds)
    clients = [
        ("ours-1", lambda url, w, cpus: ours(url, w, cpus, duration, args.streams, 1)),
        ("ours-2", lambda url, w, cpus: ours(url, w, cpus, duration, args.streams, 2)),
        ("locust-1", lambda url, w, cpus: locust(url, w, cpus, duration, args.streams, 1)),
        ("locust-2", lambda url, w, cpus: locust(url, w, cpus, duration, args.streams, 2)),
    ]
    ensure_locust()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp, nginx_mock(Path(tmp), args.nginx, args.server_cpus) as url:
        for round_number in range(1, rounds + 1):
            for name, run in clients:
                log(f"round {round_number}: {name} (load {load():.1f})")
                try:
                    row = run(url, Path(tmp), args.client_cpus)
                except Exception as exc:  # one client's failure is reported, the others still run
                    row = {"tool": name, "error": str(exc)[-500:]}
                row["round"] = round_number
                rows.append(row)
                log(f"  {row}")
    print_markdown(rows, duration, args.streams, args.client_cpus, args.server_cpus)
    return 0


def print_markdown(
    rows: list[dict], duration: float, streams: int, client_cpus: Cpus, server_cpus: Cpus
) -> None:
    machine = f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}"
    setup = f"nginx mock (1 worker), Locust {locust_version()}, {streams} streams, {duration:g} s per run"
    if client_cpus or server_cpus:
        setup += f"; clients on cores {cores(client_cpus)}, nginx on cores {cores(server_cpus)}"
    print(f"\n{machine}; {setup}\n")
    head = (
        "| round | client | requests/s | CPU ms per request | load avg before / after | pool CPU s, bytes |"
    )
    print(head + "\n|---|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['round']} | {row['tool']} | error: {row['error'][:80]} | | | |")
            continue
        pool = row.get("pool")
        cost = ""
        if pool:
            workers = ", ".join(f"{c:.2f}" for c in pool["worker_cpu_s"])
            cost = f"parent {pool['parent_cpu_s']:.2f}, workers {workers}; {pool['sent_bytes']:,} B"
        per_request = 1000 * row["cpu_s"] / row["ok"] if row["ok"] else float("nan")
        print(f"| {row['round']} | {row['tool']} | {row['requests_per_s']:,.0f} | {per_request:.3f} | "
              f"{row['load_before']:.1f} / {row['load_after']:.1f} | {cost} |")  # fmt: skip
    by_tool: dict[str, list[float]] = {}
    for row in rows:
        if "error" not in row:
            by_tool.setdefault(row["tool"], []).append(row["requests_per_s"])
    medians = "; ".join(f"{tool} {sorted(v)[len(v) // 2]:,.0f}" for tool, v in by_tool.items())
    print(f"\nmedian requests/s: {medians}")


if __name__ == "__main__":
    sys.exit(main())
