"""Memory of a trace replay over worker processes: peak RSS of each process of `llmobs-loadgen run
--workers N --dataset mooncake:TRACE` on a large trace, this tree beside another revision's.

    .venv/bin/python bench/trace_workers_memory.py --against main            # 1M lines, 2 workers
    .venv/bin/python bench/trace_workers_memory.py --lines 200000 --workers 4 --against HEAD~3

A Mooncake trace of --lines lines is generated once (bench/trace_replay.py's generator: Poisson arrivals
at 1,000/s, 1-8 blocks of 512 tokens from a pool of shared ids) and replayed for its first --requests
requests against the fast mock (tests/loadgen/scripted_server.py --fast), so loading the trace is what
the processes spend their memory on. Each process's peak RSS is the kernel's high-water mark (VmHWM in
/proc/PID/status, read every 20 ms while it runs; a process that ends between two reads keeps the last
value read, so a figure is at most 20 ms of growth short); the RSS while replaying is the one read a
second before the worker's last reading. The other revision's `loadgen` package is taken with
`git archive` into a temporary directory and run from there. Prints a Markdown block for
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.loadgen_bench import mock_server  # noqa: E402
from bench.trace_replay import make_trace  # noqa: E402

MIB = 1024 * 1024
POLL_S = 0.02
HELD_BEFORE_END_S = 1.0  # the replay of the default 3,000 requests at 1,000/s lasts 3 s


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def memory(pid: int) -> tuple[int, int] | None:
    """(VmHWM, VmRSS) of a process, in bytes; None once it is gone."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        return int(fields["VmHWM"].split()[0]) * 1024, int(fields["VmRSS"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def checkout(revision: str, into: Path) -> Path:
    """The `loadgen` package of `revision` (git archive), as a directory to run `-m loadgen` from."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision, "loadgen"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def run(tree: Path, url: str, trace: Path, workers: int, requests: int, workdir: Path) -> dict:
    """One replay: the peak RSS of the parent and of each worker (bytes), each worker's RSS as last read
    (while it replays, after loading), and the wall time."""
    report = workdir / f"report-{tree.name}.json"
    argv = [
        sys.executable, "-m", "loadgen", "--log-level", "warning", "run", "--url", url, "--model", "scripted",
        "--dataset", f"mooncake:{trace}", "--workers", str(workers), "--requests", str(requests),
        "--metrics-address", "none", "--progress", "none", "--output-json", str(report),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=tree, env=env, stdout=subprocess.DEVNULL)
    peaks: dict[int, int] = {}
    readings: dict[int, list[tuple[float, int]]] = {}
    try:
        parent = psutil.Process(process.pid)
        while process.poll() is None:
            try:
                pids = [process.pid, *(child.pid for child in parent.children(recursive=True))]
            except psutil.NoSuchProcess:
                break
            for pid in pids:
                read = memory(pid)
                if read is not None:
                    peaks[pid] = max(peaks.get(pid, 0), read[0])
                    readings.setdefault(pid, []).append((time.perf_counter(), read[1]))
            time.sleep(POLL_S)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    if process.returncode != 0:
        raise SystemExit(f"{tree}: loadgen exited {process.returncode}")
    workers = sorted(pid for pid in peaks if pid != process.pid)
    return {
        "parent": peaks.get(process.pid, 0),
        "workers": [peaks[pid] for pid in workers],
        "held": [_replaying(readings[pid]) for pid in workers],
        "wall_s": time.perf_counter() - started,
    }


def _replaying(readings: list[tuple[float, int]]) -> int:
    """The RSS read HELD_BEFORE_END_S before a process's last reading: the trace loaded, the replay on."""
    end = readings[-1][0]
    return next((rss for at, rss in reversed(readings) if at <= end - HELD_BEFORE_END_S), readings[0][1])


def row(name: str, figures: dict) -> str:
    workers = figures["workers"]
    each = ", ".join(f"{peak / MIB:,.0f}" for peak in workers)
    held = ", ".join(f"{rss / MIB:,.0f}" for rss in figures["held"])
    total = figures["parent"] + sum(workers)
    parent, wall = figures["parent"] / MIB, figures["wall_s"]
    return f"| {name} | {parent:,.0f} | {each} | {total / MIB:,.0f} | {held} | {wall:.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--requests", type=int, default=3000, help="requests replayed (the trace's first)")
    parser.add_argument("--against", help="another revision to run beside this tree (e.g. main)")
    parser.add_argument("--trace", type=Path, help="a trace to use (default: generated in a temporary dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trace-mem-") as temp:
        workdir = Path(temp)
        trace = args.trace or workdir / "trace.jsonl"
        if args.trace is None:
            log(f"generating {args.lines:,} lines")
            lines = make_trace(trace, rate=1000.0, seconds=args.lines / 1000.0)
        else:
            lines = sum(1 for _ in trace.open("rb"))
        size = trace.stat().st_size
        trees = [("this tree", ROOT)]
        if args.against:
            trees.append((args.against, checkout(args.against, workdir / "against")))
        results = {}
        with mock_server(workdir, "--fast") as url:
            for name, tree in trees:
                log(f"{name}: {args.workers} workers")
                results[name] = run(tree, url, trace, args.workers, args.requests, workdir)
        load = os.getloadavg()
    print(f"Trace replay memory: {lines:,}-line Mooncake trace ({size / MIB:,.0f} MiB), "
          f"--workers {args.workers}, {args.requests} requests replayed; peak RSS (VmHWM), MiB")  # fmt: skip
    print()
    print("| tree | parent peak | each worker's peak | all peaks | each worker's RSS replaying | wall s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, figures in results.items():
        print(row(name, figures))
    print()
    print(f"Machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {load[0]:.1f} at the end")  # fmt: skip


if __name__ == "__main__":
    main()
