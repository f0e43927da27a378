#!/usr/bin/env python3
"""Scrape cost of our exporter next to nvitop-exporter, in one run on the same machine (and GPU).

    python3 bench/exporter_scrape.py [--scrapes 200] [--interval 0.2]      # latency and CPU, side by side
    python3 bench/exporter_scrape.py --keep-alive                          # reuse connections, as Prometheus
    python3 bench/exporter_scrape.py --rss-minutes 30                      # RSS over time at 1 scrape/s

Per exporter: scrape latency p50/p99/max (a new connection per scrape, body read fully, with the Accept
and Accept-Encoding headers Prometheus sends, so OpenMetrics and gzip), CPU seconds per scrape (process
CPU during the scrapes minus its idle rate measured just before), idle CPU per second (its background
threads; ours collects and renders there, every --collect-interval-seconds), RSS, series and
(decompressed) bytes per scrape; for ours also the largest age, at the moment a scrape's body arrived, of
the fast readings (exporter_snapshot_timestamp_seconds) and of the sampler's slow readings
(gpu_sample_timestamp_seconds).
Plus one `nvidia-smi --query-gpu` call's cost where nvidia-smi exists.

nvitop-exporter is not a project dependency: give `--nvitop-exporter "CMD"` (e.g. "python3 -m nvitop_exporter"
with its wheels installed), or the script uses .cache/bench-nvitop/bin/nvitop-exporter, creating that
venv with pip when it is missing (needs PyPI). Without a GPU, nvitop-exporter exits at start and our
exporter runs without NVML (gpu_nvml_available 0): the table says so rather than inventing figures.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.client
import os
import platform
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
NVITOP_VENV = ROOT / ".cache" / "bench-nvitop"
SMI_FIELDS = ",".join(
    [
        "utilization.gpu",
        "memory.used",
        "memory.total",
        "power.draw",
        "temperature.gpu",
        "clocks.sm",
        "clocks_event_reasons.active",
        "pstate",
        "fan.speed",
    ]
)


@dataclass
class Result:
    name: str
    ran: bool = False
    why_not: str = ""
    latencies: list[float] = field(default_factory=list)
    cpu_per_scrape: float = 0.0
    idle_cpu_per_second: float = 0.0
    rss_bytes: int = 0
    series: int = 0
    body_bytes: int = 0
    max_sampler_age: float | None = None
    max_snapshot_age: float | None = None
    nvml: str = ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# What Prometheus 2.x sends on every scrape; --plain asks for uncompressed text format 0.0.4 instead.
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    "Accept-Encoding": "gzip",
}
HEADERS = dict(PROMETHEUS_HEADERS)
OPTIONS = {"keep_alive": False}  # --keep-alive: one connection per exporter, reused, as Prometheus does


KEEP_ALIVE: dict[int, http.client.HTTPConnection] = {}  # port -> open connection, with --keep-alive


def scrape(port: int, timeout: float = 10.0) -> tuple[float, bytes]:
    """(seconds from connect, or from the request on a kept connection, to the last byte; the body)."""
    started = time.perf_counter()
    connection = KEEP_ALIVE.get(port) or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/metrics", headers=HEADERS)
        response = connection.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        if response.getheader("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
    except BaseException:
        KEEP_ALIVE.pop(port, None)
        connection.close()
        raise
    if port in KEEP_ALIVE or (OPTIONS["keep_alive"] and not response.will_close):
        KEEP_ALIVE[port] = connection
    else:
        connection.close()
    return elapsed, body


def wait_until_serving(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with status {process.returncode} at start")
        try:
            scrape(port, timeout=2)
            return
        except (OSError, RuntimeError, http.client.HTTPException):
            time.sleep(0.2)
    raise RuntimeError(f"not serving after {timeout:.0f} s")


def tree_cpu_seconds(process: psutil.Process) -> float:
    total = 0.0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = member.cpu_times()
            total += times.user + times.system
    return total


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total


def oldest_age(body: bytes, at: float, family_name: str) -> float | None:
    """at - the oldest timestamp in a *_timestamp_seconds family of the body, if it has one."""
    ages = [
        at - sample.value
        for family in text_string_to_metric_families(body.decode())
        if family.name == family_name
        for sample in family.samples
    ]
    return max(ages) if ages else None


def measure(name: str, argv: Sequence[str], port: int, scrapes: int, interval: float, log: Path) -> Result:
    result = Result(name)
    with open(log, "wb") as log_file:
        process = subprocess.Popen(list(argv), stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        try:
            wait_until_serving(port, process)
        except RuntimeError as exc:
            first_line = (log.read_text(errors="replace").strip().splitlines() or [""])[0]
            result.why_not = f"{exc}: {first_line[:160]}"
            return result
        handle = psutil.Process(process.pid)
        for _ in range(5):  # warm-up
            scrape(port)
        idle_window = 5.0
        cpu0 = tree_cpu_seconds(handle)
        time.sleep(idle_window)
        result.idle_cpu_per_second = (tree_cpu_seconds(handle) - cpu0) / idle_window
        cpu0, t0 = tree_cpu_seconds(handle), time.monotonic()
        body = b""
        for _ in range(scrapes):
            latency, body = scrape(port)
            received = time.time()
            result.latencies.append(latency)
            age = oldest_age(body, received, "gpu_sample_timestamp_seconds")
            if age is not None:
                result.max_sampler_age = max(age, result.max_sampler_age or 0.0)
            age = oldest_age(body, received, "exporter_snapshot_timestamp_seconds")
            if age is not None:
                result.max_snapshot_age = max(age, result.max_snapshot_age or 0.0)
            time.sleep(interval)
        elapsed = time.monotonic() - t0
        busy = tree_cpu_seconds(handle) - cpu0 - result.idle_cpu_per_second * elapsed
        result.cpu_per_scrape = max(0.0, busy) / scrapes
        result.rss_bytes = tree_rss(handle)
        families = list(text_string_to_metric_families(body.decode()))
        result.series = sum(len(f.samples) for f in families)
        result.body_bytes = len(body)  # decompressed
        result.nvml = nvml_state(families)
        result.ran = True
        return result
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def nvml_state(families: list) -> str:
    for family in families:
        if family.name == "gpu_nvml_available":
            return "NVML available" if family.samples[0].value == 1 else "no NVML (gpu_nvml_available 0)"
    gpus = {s.labels.get("uuid") for f in families for s in f.samples if s.labels.get("uuid")}
    return f"{len(gpus)} GPU(s)"


def nvitop_command(given: str | None) -> tuple[list[str] | None, str]:
    if given:
        return shlex.split(given), ""
    binary = NVITOP_VENV / "bin" / "nvitop-exporter"
    if not binary.exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", str(NVITOP_VENV)], check=True, capture_output=True)
            subprocess.run(
                [str(NVITOP_VENV / "bin" / "pip"), "install", "-q", "nvitop-exporter"],
                check=True,
                capture_output=True,
                timeout=600,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            return None, f"cannot install nvitop-exporter into {NVITOP_VENV}: {exc}"
    return [str(binary)], ""


def nvidia_smi_cost(calls: int = 10) -> str:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "n/a (no nvidia-smi on this machine)"
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        subprocess.run(
            [smi, f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader,nounits"],
            capture_output=True,
            timeout=30,
        )
        times.append(time.perf_counter() - started)
    median, worst = statistics.median(times) * 1000, max(times) * 1000
    return f"median {median:.1f} ms, max {worst:.1f} ms over {calls} calls (9 fields)"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = "no GPU visible"
    if shutil.which("nvidia-smi"):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        gpu = "; ".join(out.stdout.strip().splitlines()) or gpu
    memory = psutil.virtual_memory().total / 2**30
    python = platform.python_version()
    return f"{cpu}, {psutil.cpu_count()} logical cores, {memory:.0f} GiB; {gpu}; Python {python}"


COLUMNS = [
    "exporter",
    "state",
    "p50 ms",
    "p99 ms",
    "max ms",
    "CPU ms per scrape",
    "idle CPU ms/s",
    "RSS MB",
    "series",
    "KB per scrape (decompressed)",
    "max fast-field age s",
    "max sampler age s",
]


def row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def report(results: list[Result], scrapes: int, interval: float) -> str:
    lines = [
        f"Machine: {machine()}",
        f"{scrapes} scrapes per exporter, {interval} s apart, "
        + ("one connection kept alive, " if OPTIONS["keep_alive"] else "one new connection each, ")
        + ("text 0.0.4 uncompressed." if not HEADERS else "Prometheus's Accept headers (OpenMetrics, gzip)."),
        "",
        row(COLUMNS),
        row(["---"] * len(COLUMNS)),
    ]
    for r in results:
        if not r.ran:
            lines.append(row([r.name, f"did not run: {r.why_not}", *[""] * (len(COLUMNS) - 2)]))
            continue
        ms = [percentile(r.latencies, 0.5) * 1e3, percentile(r.latencies, 0.99) * 1e3, max(r.latencies) * 1e3]
        cells = [r.name, r.nvml, *(f"{v:.2f}" for v in ms), f"{r.cpu_per_scrape * 1e3:.2f}"]
        cells += [f"{r.idle_cpu_per_second * 1e3:.1f}", f"{r.rss_bytes / 1e6:.1f}", r.series]
        cells += [
            f"{r.body_bytes / 1e3:.1f}",
            "-" if r.max_snapshot_age is None else f"{r.max_snapshot_age:.2f}",
            "-" if r.max_sampler_age is None else f"{r.max_sampler_age:.2f}",
        ]
        lines.append(row(cells))
    ours, peer = results[0], results[1] if len(results) > 1 else None
    if ours.ran and peer is not None and peer.ran:
        ratio = percentile(ours.latencies, 0.99) / percentile(peer.latencies, 0.99)
        verdict = "met" if ratio <= 1 / 3 else "NOT met"
        lines.append(f"\nOur p99 / nvitop-exporter p99 = {ratio:.2f} (target <= 0.33: {verdict}).")
        if ours.max_snapshot_age is not None:
            age = ours.max_snapshot_age
            fresh = "met" if age <= 1.0 else "NOT met"
            lines.append(f"Oldest fast reading served: {age:.2f} s (target <= 1 s: {fresh}).")
    lines.append(f"\nOne nvidia-smi --query-gpu call: {nvidia_smi_cost()}.")
    return "\n".join(lines)


def ours_command(port: int, extra: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "exporter", "--listen-address", f"127.0.0.1:{port}", *extra]


def rss_over_time(minutes: float, extra: Sequence[str], log: Path) -> str:
    port = free_port()
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            ours_command(port, extra), stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT
        )
    try:
        wait_until_serving(port, process)
        handle = psutil.Process(process.pid)
        rows, failures, scrapes = [(0.0, tree_rss(handle))], 0, 0
        started = time.monotonic()
        next_sample = started + 60
        while time.monotonic() - started < minutes * 60:
            try:
                scrape(port)
                scrapes += 1
            except (OSError, RuntimeError, http.client.HTTPException):
                failures += 1
            if time.monotonic() >= next_sample:
                rows.append(((time.monotonic() - started) / 60, tree_rss(handle)))
                next_sample += 60
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started) % 1.0))
        rows.append(((time.monotonic() - started) / 60, tree_rss(handle)))
    finally:
        process.terminate()
        process.wait(timeout=10)
    peak = max(rss for _, rss in rows)
    lines = [
        f"Machine: {machine()}",
        f"Our exporter scraped every 1 s for {minutes:g} min: {scrapes} scrapes, {failures} failed.",
        "",
        "| minute | RSS MB |",
        "|---|---|",
        *[f"| {minute:.1f} | {rss / 1e6:.1f} |" for minute, rss in rows],
        "",
        f"Start {rows[0][1] / 1e6:.1f} MB, end {rows[-1][1] / 1e6:.1f} MB, peak {peak / 1e6:.1f} MB "
        f"(target: flat, under 80 MB: {'met' if peak < 80e6 else 'NOT met'}).",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between scrapes (default 0.2)")
    parser.add_argument(
        "--nvitop-exporter", help='command that runs nvitop-exporter, e.g. "python3 -m nvitop_exporter"'
    )
    parser.add_argument("--skip-nvitop", action="store_true", help="measure our exporter only")
    parser.add_argument(
        "--keep-alive", action="store_true", help="reuse one connection per exporter (as Prometheus does)"
    )
    parser.add_argument("--rss-minutes", type=float, help="instead: RSS over time at one scrape per second")
    parser.add_argument(
        "--exporter-arg", action="append", default=[], help="extra flag for our exporter (repeatable)"
    )
    parser.add_argument(
        "--plain", action="store_true", help="ask for text 0.0.4 without gzip (not what Prometheus asks)"
    )
    args = parser.parse_args()
    if args.plain:
        HEADERS.clear()
    OPTIONS["keep_alive"] = args.keep_alive
    logs = ROOT / ".cache" / "bench-logs"
    logs.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONPATH", str(ROOT))

    if args.rss_minutes:
        print(rss_over_time(args.rss_minutes, args.exporter_arg, logs / "ours-rss.log"))
        return 0
    port = free_port()
    results = [
        measure(
            "llmobs-exporter",
            ours_command(port, args.exporter_arg),
            port,
            args.scrapes,
            args.interval,
            logs / "ours.log",
        )
    ]
    if not args.skip_nvitop:
        command, why_not = nvitop_command(args.nvitop_exporter)
        if command is None:
            results.append(Result("nvitop-exporter", why_not=why_not))
        else:
            port = free_port()
            argv = [*command, "--bind-address", "127.0.0.1", "--port", str(port), "--interval", "1.0"]
            results.append(
                measure("nvitop-exporter", argv, port, args.scrapes, args.interval, logs / "nvitop.log")
            )
    print(report(results, args.scrapes, args.interval))
    return 0


if __name__ == "__main__":
    sys.exit(main())
