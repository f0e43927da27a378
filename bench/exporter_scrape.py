#!/usr/bin/env python3
"""CPU, latency and freshness of our exporter beside nvitop-exporter, in one run on the same machine.

    python3 bench/exporter_scrape.py                              # both, 200 scrapes 0.2 s apart
    python3 bench/exporter_scrape.py --window 600 --interval 15 --interval 1   # 10 minutes at 15 s and at 1 s
    python3 bench/exporter_scrape.py --engines 1,8                # ours with 0, 1 and 8 vLLM dp-2 targets
    python3 bench/exporter_scrape.py --engines 1,8 --against ee05397   # and an older exporter beside it
    python3 bench/exporter_scrape.py --nvml-stub 1                # no GPU: bench/nvml_stub.c as the driver
    python3 bench/exporter_scrape.py --rss-minutes 30             # our RSS over time at one scrape per second

Each exporter runs as its own process (our defaults; nvitop-exporter `--interval 1.0`). All the lanes of a
run (an exporter at a scrape interval) run at the same time, side by side, except with --engines (one after
the other). A lane:
1. starts its exporter and waits until it serves (ours: /healthz, which is no scrape);
2. background: its CPU over --idle-seconds while nobody scrapes;
3. scraped: every interval (--scrapes times, or for --window seconds), with the Accept and Accept-Encoding
   headers Prometheus sends (OpenMetrics, gzip; --plain: text 0.0.4), a new connection each time unless
   --keep-alive. Latency is from connect to the last byte.
Reported per lane, with the number of samples each figure rests on: background CPU (ms/s); CPU per scrape
above that background (not clipped: a negative figure is within the resolution, 10 ms per CPU reading, which
the table states); the lane's total CPU per scrape interval, measured (what a host pays per scrape of
Prometheus at that interval); scrape p50/p99/max; the age of the fast readings
(exporter_snapshot_timestamp_seconds) and of the oldest slow NVML reading (gpu_sample_timestamp_seconds)
when the scrape started (Prometheus stamps the samples with that time), p50/p99/max (nvitop-exporter
publishes no timestamp); RSS, series and bytes. CPU is user + system of the
process from /proc (psutil). Ours with --engines N also scrapes N vLLM-shaped targets with data parallelism 2
(bench/engine_payloads.py: vLLM 0.33's dp-2 /metrics, values changing on every request) and reports the
CPU of each target per scrape: (CPU with N targets - CPU with none) / scrapes / N, at the same interval.

nvitop-exporter is not a project dependency: give `--nvitop-exporter "CMD"` (e.g. "python3 -m nvitop_exporter"
with its wheels installed), or the script installs nvitop-exporter 1.7.2 into .cache/bench-nvitop with pip.
Without NVML, nvitop-exporter exits at start and ours serves `gpu_nvml_available 0`: the table says so.
--json FILE also writes every figure as JSON (tools/gpu-exporter-cpu.sh collects it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from exporter_procs import (
    CPU_RESOLUTION_SECONDS,
    PROMETHEUS_HEADERS,
    ROOT,
    Exporter,
    Scraper,
    ages,
    cpu_seconds,
    describe,
    free_port,
    machine,
    nvitop,
    nvitop_command,
    nvml_stub_env,
    ours,
    percentile,
    rss_bytes,
    running,
)

LOGS = ROOT / ".cache" / "bench-logs"


@dataclass
class Lane:
    """One exporter scraped at one interval, and what was measured."""

    name: str
    interval: float
    targets: int = 0
    state: str = ""
    ran: bool = False
    why_not: str = ""
    idle_seconds: float = 0.0
    idle_cpu: float = 0.0
    scraped_seconds: float = 0.0
    scraped_cpu: float = 0.0
    scrapes: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    warmup_latencies: list[float] = field(default_factory=list)  # seconds; a failed one is NaN
    fast_ages: list[float] = field(default_factory=list)
    slow_ages: list[float] = field(default_factory=list)
    rss_bytes: int = 0
    series: int = 0
    body_bytes: int = 0

    @property
    def background_ms_per_s(self) -> float:
        return self.idle_cpu / self.idle_seconds * 1e3 if self.idle_seconds else float("nan")

    @property
    def per_scrape_ms(self) -> float:
        """CPU per scrape above the background rate (may be negative within the resolution)."""
        background = self.idle_cpu / self.idle_seconds * self.scraped_seconds if self.idle_seconds else 0.0
        return (self.scraped_cpu - background) / self.scrapes * 1e3 if self.scrapes else float("nan")

    @property
    def per_interval_ms(self) -> float:
        """CPU per scrape interval while scraped at this interval, measured: scraped CPU / scrapes."""
        return self.scraped_cpu / self.scrapes * 1e3 if self.scrapes else float("nan")

    @property
    def resolution_ms(self) -> float:
        """The per-scrape figure's uncertainty from the clock-tick resolution of its four CPU readings."""
        return 4 * CPU_RESOLUTION_SECONDS / self.scrapes * 1e3 if self.scrapes else float("nan")


def measure(lanes: Sequence[tuple[Lane, Exporter]], args: argparse.Namespace) -> None:
    """Run the lanes side by side: start all, background window, then every lane scraped at its interval."""
    LOGS.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        started = []
        for index, (lane, exporter) in enumerate(lanes):
            log = LOGS / f"{lane.name}-{lane.interval:g}s-{lane.targets}t-{index}.log"
            stack.enter_context(running(exporter, log))
            if exporter.why_not:
                lane.why_not = exporter.why_not
            else:
                started.append((lane, exporter))
        if not started:
            return
        cpu0 = {id(lane): cpu_seconds(exporter.handle) for lane, exporter in started}
        time.sleep(args.idle_seconds)
        for lane, exporter in started:
            lane.idle_seconds = args.idle_seconds
            lane.idle_cpu = cpu_seconds(exporter.handle) - cpu0[id(lane)]
        threads = [
            threading.Thread(target=scrape_lane, args=(lane, exporter, index / len(started), args))
            for index, (lane, exporter) in enumerate(started)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def scrape_lane(lane: Lane, exporter: Exporter, phase: float, args: argparse.Namespace) -> None:
    """Scrape at the lane's interval (`phase` of it after the other lanes) for its count or window."""
    headers = {} if args.plain else dict(PROMETHEUS_HEADERS)
    scraper = Scraper(exporter.port, headers, keep_alive=args.keep_alive)
    count = max(1, int(args.window // lane.interval)) if args.window else args.scrapes
    assert exporter.handle is not None
    for _ in range(args.warmup):
        try:
            lane.warmup_latencies.append(scraper.scrape()[0])
        except Exception:
            lane.warmup_latencies.append(float("nan"))
    time.sleep(phase * lane.interval)
    cpu0, t0 = cpu_seconds(exporter.handle), time.monotonic()
    body = b""
    for number in range(count):
        time.sleep(max(0.0, t0 + number * lane.interval - time.monotonic()))
        sent = time.time()  # Prometheus stamps a scrape's samples with the time it started
        try:
            latency, body = scraper.scrape()
        except Exception:
            lane.failed += 1
            continue
        found = ages(body, sent)
        lane.latencies.append(latency)
        if "fast" in found:
            lane.fast_ages.append(found["fast"])
        if "slow" in found:
            lane.slow_ages.append(found["slow"])
    # the lane ends one interval after its last scrape: the background work for the next one is its share
    time.sleep(max(0.0, t0 + count * lane.interval - time.monotonic()))
    lane.scraped_seconds = time.monotonic() - t0
    lane.scraped_cpu = cpu_seconds(exporter.handle) - cpu0
    lane.scrapes = len(lane.latencies)
    lane.rss_bytes = rss_bytes(exporter.handle)
    lane.body_bytes = len(body)
    if body:
        lane.series, lane.state = describe(body)
    lane.ran = lane.scrapes > 0
    scraper.close()


# --- lanes ------------------------------------------------------------------------------------------------


def peer_lanes(args: argparse.Namespace, env: dict[str, str]) -> list[tuple[Lane, Exporter]]:
    lanes: list[tuple[Lane, Exporter]] = []
    command, why_not = (None, "--skip-nvitop") if args.skip_nvitop else nvitop_command(args.nvitop_exporter)
    for interval in args.interval:
        lanes.append((Lane("llmobs-exporter", interval), ours(free_port(), args.exporter_arg, env)))
        for rev in args.against:
            older = ours(free_port(), args.exporter_arg, env)
            older.cwd = tree(rev)
            lanes.append((Lane(f"llmobs-exporter@{rev}", interval), older))
        if command is not None:
            lanes.append((Lane("nvitop-exporter", interval), nvitop(free_port(), command, env)))
        elif not args.skip_nvitop:
            lanes.append((Lane("nvitop-exporter", interval, why_not=why_not), None))  # type: ignore[arg-type]
    return lanes


@contextlib.contextmanager
def payload_server(targets: int) -> Iterator[list[int]]:
    ports_file = LOGS / f"payload-ports-{os.getpid()}.txt"
    ports_file.unlink(missing_ok=True)
    argv = [sys.executable, str(ROOT / "bench" / "engine_payloads.py"), "--targets", str(targets)]
    process = subprocess.Popen([*argv, "--ports-file", str(ports_file)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while not ports_file.exists():
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the engine payload server did not start")
            time.sleep(0.1)
        yield [int(line) for line in ports_file.read_text().split()]
    finally:
        process.terminate()
        process.wait(timeout=10)
        ports_file.unlink(missing_ok=True)


def engine_runs(args: argparse.Namespace, env: dict[str, str]) -> list[Lane]:
    counts = [0, *sorted({int(n) for n in args.engines.split(",")})]
    interval = args.interval[0]
    trees = [("llmobs-exporter", ROOT), *((f"llmobs-exporter@{rev}", tree(rev)) for rev in args.against)]
    done: list[Lane] = []
    LOGS.mkdir(parents=True, exist_ok=True)
    with payload_server(max(counts)) as ports:
        for name, cwd in trees:
            for count in counts:
                targets = [
                    f"--target=e{i}=http://127.0.0.1:{port},kind=vllm" for i, port in enumerate(ports[:count])
                ]
                lane = Lane(name, interval, targets=count)
                exporter = ours(free_port(), [*args.exporter_arg, *targets], env)
                exporter.cwd = cwd
                measure([(lane, exporter)], args)
                done.append(lane)
    return done


def tree(rev: str) -> Path:
    """A checkout of `rev` under .cache (made once), whose exporter runs with this tree's venv."""
    path = ROOT / ".cache" / f"bench-{rev}"
    if not path.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev], check=True)
    return path


# --- report -----------------------------------------------------------------------------------------------


def fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"


def spread(values: Sequence[float]) -> str:
    if not values:
        return "not published"
    return (
        f"{percentile(values, 0.5):.2f} / {percentile(values, 0.99):.2f} / {max(values):.2f} ({len(values)})"
    )


COLUMNS = [
    "exporter",
    "interval s",
    "state",
    "background CPU ms/s (over s)",
    "CPU ms per scrape above it (± resolution)",
    "CPU ms per interval, measured (scrapes)",
    "p50 / p99 / max ms",
    "fast-field age s p50 / p99 / max (n)",
    "slow-reading age s p50 / p99 / max (n)",
    "RSS MB",
    "series",
    "KB",
]


def lane_row(lane: Lane) -> list[str]:
    if not lane.ran:
        return [lane.name, f"{lane.interval:g}", f"did not run: {lane.why_not}", *[""] * (len(COLUMNS) - 3)]
    ms = [percentile(lane.latencies, q) * 1e3 for q in (0.5, 0.99)] + [max(lane.latencies) * 1e3]
    return [
        lane.name + (f" + {lane.targets} vLLM targets" if lane.targets else ""),
        f"{lane.interval:g}",
        lane.state + (f", {lane.failed} failed" if lane.failed else ""),
        f"{fmt(lane.background_ms_per_s)} ({lane.idle_seconds:g})",
        f"{fmt(lane.per_scrape_ms)} (± {fmt(lane.resolution_ms)})",
        f"{fmt(lane.per_interval_ms)} ({lane.scrapes})",
        " / ".join(f"{v:.2f}" for v in ms),
        spread(lane.fast_ages),
        spread(lane.slow_ages),
        f"{lane.rss_bytes / 1e6:.1f}",
        str(lane.series),
        f"{lane.body_bytes / 1e3:.1f}",
    ]


def table(lanes: Sequence[Lane]) -> list[str]:
    rows = [COLUMNS, ["---"] * len(COLUMNS), *(lane_row(lane) for lane in lanes)]
    return ["| " + " | ".join(row) + " |" for row in rows]


def verdicts(lanes: Sequence[Lane]) -> list[str]:
    """The issue's targets, for every interval where both exporters ran."""
    lines = []
    for interval in sorted({lane.interval for lane in lanes}):
        at = {
            lane.name: lane for lane in lanes if lane.interval == interval and lane.ran and not lane.targets
        }
        ours_, peer = at.get("llmobs-exporter"), at.get("nvitop-exporter")
        if ours_ is None or peer is None:
            continue
        limit = 1.0 if interval >= 15 else 1.5
        cpu = ours_.per_interval_ms / peer.per_interval_ms
        p99 = percentile(ours_.latencies, 0.99) / percentile(peer.latencies, 0.99)
        age = max(ours_.fast_ages) if ours_.fast_ages else float("nan")
        lines.append(
            f"- every {interval:g} s: our CPU per interval / nvitop-exporter's = {cpu:.2f} "
            f"(target <= {limit:g}: "
            f"{'met' if cpu <= limit else 'NOT met'}); p99 ratio {p99:.2f} (target <= 0.33: "
            f"{'met' if p99 <= 1 / 3 else 'NOT met'}); oldest fast reading served {fmt(age)} s (target <= 1: "
            f"{'met' if age <= 1.0 else 'NOT met'})"
        )
    return lines


def engine_lines(lanes: Sequence[Lane]) -> list[str]:
    lines = []
    for lane in lanes:
        base = next((b for b in lanes if b.name == lane.name and b.targets == 0 and b.ran), None)
        if lane.targets and lane.ran and base is not None:
            each = (lane.per_interval_ms - base.per_interval_ms) / lane.targets
            verdict = "met" if each <= 5.0 else "NOT met"
            lines.append(
                f"- {lane.name}, {lane.targets} target(s): {each:.2f} ms CPU per engine target per scrape "
                f"({lane.scrapes} and {base.scrapes} scrapes; target <= 5: {verdict})"
            )
    return lines


def warmup_lines(lanes: Sequence[Lane]) -> list[str]:
    """The warm-up scrapes, which no figure counts (the first after an exporter starts is its coldest)."""
    return [
        f"- warm-up scrapes of {lane.name} at {lane.interval:g} s (not in the figures): "
        + ", ".join(f"{latency * 1e3:.2f}" for latency in lane.warmup_latencies)
        + " ms"
        for lane in lanes
        if lane.warmup_latencies
    ]


def report(lanes: Sequence[Lane], args: argparse.Namespace, stub: str) -> str:
    how = "one connection kept alive" if args.keep_alive else "a new connection each"
    what = "text 0.0.4 uncompressed" if args.plain else "Prometheus's Accept headers (OpenMetrics, gzip)"
    span = f"for {args.window:g} s" if args.window else f"{args.scrapes} scrapes"
    lines = [
        f"Machine: {machine()}",
        f"{stub}Each lane scraped {span} ({how}; {what}) after {args.idle_seconds:g} s of background with no "
        f"scrape; {args.warmup} warm-up scrapes first. CPU: user + system from /proc, 10 ms per reading.",
        "",
        *table(lanes),
    ]
    extra = verdicts(lanes) + engine_lines(lanes) + warmup_lines(lanes)
    return "\n".join(lines + (["", *extra] if extra else []))


def rss_over_time(minutes: float, args: argparse.Namespace, env: dict[str, str]) -> str:
    exporter = ours(free_port(), args.exporter_arg, env)
    LOGS.mkdir(parents=True, exist_ok=True)
    rows, failures, scrapes = [], 0, 0
    with running(exporter, LOGS / "ours-rss.log"):
        if exporter.why_not:
            return f"did not run: {exporter.why_not}"
        assert exporter.handle is not None
        scraper = Scraper(exporter.port)
        rows.append((0.0, rss_bytes(exporter.handle)))
        started = time.monotonic()
        next_sample = started + 60
        while time.monotonic() - started < minutes * 60:
            try:
                scraper.scrape()
                scrapes += 1
            except Exception:
                failures += 1
            if time.monotonic() >= next_sample:
                rows.append(((time.monotonic() - started) / 60, rss_bytes(exporter.handle)))
                next_sample += 60
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started) % 1.0))
        rows.append(((time.monotonic() - started) / 60, rss_bytes(exporter.handle)))
    peak = max(rss for _, rss in rows)
    return "\n".join(
        [
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
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scrapes", type=int, default=200, help="scrapes per lane (default 200)")
    parser.add_argument(
        "--interval", type=float, action="append", help="seconds between scrapes; repeat for more lanes (0.2)"
    )
    parser.add_argument("--window", type=float, help="scrape each lane for this many seconds instead")
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="background window (default 20)")
    parser.add_argument(
        "--warmup", type=int, default=0, help="scrapes before the measured ones, reported apart (default 0)"
    )
    parser.add_argument("--engines", help="ours with 0 and these numbers of vLLM dp-2 targets, e.g. 1,8")
    parser.add_argument(
        "--against", action="append", default=[], help="also this git revision's exporter (repeatable)"
    )
    parser.add_argument(
        "--nvitop-exporter", help='command that runs nvitop-exporter, e.g. "python3 -m nvitop_exporter"'
    )
    parser.add_argument("--skip-nvitop", action="store_true", help="measure our exporter only")
    parser.add_argument(
        "--keep-alive", action="store_true", help="reuse one connection per lane (Prometheus does)"
    )
    parser.add_argument("--plain", action="store_true", help="ask for text 0.0.4 without gzip")
    parser.add_argument(
        "--nvml-stub", type=int, metavar="GPUS", help="no GPU: bench/nvml_stub.c as the driver"
    )
    parser.add_argument("--exporter-arg", action="append", default=[], help="extra flag for our exporter")
    parser.add_argument(
        "--rss-minutes", type=float, help="instead: our RSS over time at one scrape per second"
    )
    parser.add_argument("--json", type=Path, help="also write every figure as JSON to this file")
    args = parser.parse_args()
    args.interval = args.interval or [0.2]
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    env = nvml_stub_env(args.nvml_stub) if args.nvml_stub else {}
    stub = (
        f"NVML: bench/nvml_stub.c with {args.nvml_stub} GPU(s), a constructed stand-in for the driver: the "
        "figures are the exporters' own Python, without the driver's cost.\n"
        if args.nvml_stub
        else ""
    )
    if args.rss_minutes:
        print(rss_over_time(args.rss_minutes, args, env))
        return 0
    if args.engines:
        lanes = engine_runs(args, env)
    else:
        pairs = peer_lanes(args, env)
        measure([(lane, exporter) for lane, exporter in pairs if exporter is not None], args)
        lanes = [lane for lane, _ in pairs]
    print(report(lanes, args, stub))
    if args.json:
        record = {"machine": machine(), "stub": args.nvml_stub, "args": vars(args) | {"json": str(args.json)}}
        record["lanes"] = [asdict(lane) | {"per_interval_ms": lane.per_interval_ms} for lane in lanes]
        args.json.write_text(json.dumps(record, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
