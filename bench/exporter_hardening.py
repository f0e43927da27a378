#!/usr/bin/env python3
"""Exporter scrape latency idle, under 500 slow clients, and with one 30 MB engine target, in one run.

    python3 bench/exporter_hardening.py                       # ours; uvicorn and waitress serving our app
    python3 bench/exporter_hardening.py --baseline-rev 9e4d1db  # also ours at an older revision
    python3 bench/exporter_hardening.py --servers ours --big-mb 0   # ours only, no 30 MB target

Exporters run without NVML (none here) and, unless --engine-target, without engine targets, so a
scrape is the HTTP server plus the cached host snapshot: what slow clients can slow down. Per server:
- idle: --scrapes scrapes, --interval apart, with Prometheus's headers (OpenMetrics, gzip), alternately
  over one kept-alive connection (as Prometheus scrapes) and over a new connection each (as after a
  restart or an evicted connection: the case a full server refuses); latency from request to last byte;
- slow: the same while --slow connections each send a request head that never ends, one byte every
  --slow-byte-interval seconds (slowloris), reconnecting whenever the server closes them; the table gives
  how many were open when the scrapes began, how many the server closed, and the longest one lived;
- 30 MB (ours only): the same scrapes with one engine target serving a valid vLLM /metrics of --big-mb MB
  (about 300,000 series); engines are fetched on each scrape, so this is bounded by the target's budgets.
All servers run at once and are scraped in turn (round-robin, rotating order), so they share the
machine's load as it moves. "ours" is this tree's `python -m exporter`; "uvicorn" and "waitress" serve
the same app through
bench/exporter_peer_server.py (waitress is not a dependency: `pip install waitress`, else its row says
not installed). A failed scrape is counted and left out of the percentiles, never counted as 0.
Target: ours, p99 under slow clients within 2x of idle.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import http.client
import http.server
import importlib.util
import itertools
import multiprocessing
import os
import platform
import selectors
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def process(argv: list[str], ready_url: str, cwd: Path = ROOT) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[:4]} exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(ready_url, timeout=2).status_code < 500:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{ready_url} did not answer in 60 s")
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# the hostile clients


class Slowloris:
    """`count` connections sending a never-ending head, one byte per `byte_interval` s, reconnecting when
    closed; in a process of its own, so its work does not share the measuring client's interpreter."""

    def __init__(self, port: int, count: int, byte_interval: float) -> None:
        self.port, self.count, self.byte_interval = port, count, byte_interval
        self.open = multiprocessing.Value("i", 0)
        self.stats: dict[str, float] = {}
        self._parent, child = multiprocessing.Pipe()
        self._process = multiprocessing.Process(
            target=_slowloris, args=(port, count, byte_interval, self.open, child), daemon=True
        )

    def __enter__(self) -> Slowloris:
        self._process.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.finish()

    def open_now(self) -> int:
        return self.open.value

    def finish(self) -> dict[str, float]:
        """Stop; the counts: closed_by_server, longest_lived_s, connect_failures."""
        if not self.stats and self._process.is_alive():
            self._parent.send("stop")
            if self._parent.poll(30):
                self.stats = self._parent.recv()
            self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
        return self.stats


def _slowloris(port: int, count: int, byte_interval: float, open_count, pipe) -> None:
    head = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    header = b"X-Slow: 1\r\n"
    selector = selectors.DefaultSelector()
    due: list[tuple[float, int, socket.socket]] = []  # heap: next send time, tie-break, socket
    slots: dict[socket.socket, tuple[float, int]] = {}  # opened, bytes sent
    stats = {"closed_by_server": 0, "longest_lived_s": 0.0, "connect_failures": 0}
    order = itertools.count()

    def connect(first_send: float) -> None:
        sock = socket.socket()
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            stats["connect_failures"] += 1
            sock.close()
            return
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        slots[sock] = (time.monotonic(), 0)
        heapq.heappush(due, (first_send, next(order), sock))

    def lost(sock: socket.socket) -> None:
        opened, _ = slots.pop(sock)
        stats["closed_by_server"] += 1
        stats["longest_lived_s"] = max(stats["longest_lived_s"], time.monotonic() - opened)
        selector.unregister(sock)
        sock.close()

    start = time.monotonic()
    for i in range(count):
        connect(start + i * byte_interval / count)
    open_count.value = len(slots)
    missing = count - len(slots)
    while not pipe.poll():
        wait = max(0.0, min(0.05, due[0][0] - time.monotonic())) if due else 0.05
        for key, _ in selector.select(timeout=wait):
            lost(key.fileobj)  # type: ignore[arg-type]
            missing += 1
        now = time.monotonic()
        while due and due[0][0] <= now:
            _, _, sock = heapq.heappop(due)
            if sock not in slots:
                continue  # lost meanwhile
            opened, sent = slots[sock]
            position = sent - len(head)
            data = head[sent : sent + 1] if position < 0 else header[position % len(header) :][:1]
            try:
                sock.send(data)
            except OSError:
                lost(sock)
                missing += 1
                continue
            slots[sock] = (opened, sent + 1)
            heapq.heappush(due, (now + byte_interval, next(order), sock))
        for _ in range(min(missing, 50)):  # reconnect, at most 50 per pass: no busy loop
            connect(time.monotonic())
            missing -= 1
        open_count.value = len(slots)
    now = time.monotonic()
    for sock, (opened, _) in slots.items():
        stats["longest_lived_s"] = max(stats["longest_lived_s"], now - opened)
        sock.close()
    pipe.send(stats)


# the 30 MB target


def big_payload(megabytes: float) -> bytes:
    lines = [
        "# HELP vllm:num_requests_running Number of requests in model execution batches.",
        "# TYPE vllm:num_requests_running gauge",
        'vllm:num_requests_running{engine="0",model_name="big"} 1.0',
        "# HELP vllm:request_success_total Count of successfully processed requests.",
        "# TYPE vllm:request_success_total counter",
    ]
    size, i = sum(map(len, lines)), 0
    while size < megabytes * 1e6:
        labels = f'engine="0",finished_reason="stop",model_name="big",x="{i:08d}"'
        line = f"vllm:request_success_total{{{labels}}} {i}.0"
        lines.append(line)
        size += len(line) + 1
        i += 1
    return ("\n".join(lines) + "\n").encode()


@contextlib.contextmanager
def static_target(body: bytes) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, *_: object) -> None:
            pass  # the exporter dropping the connection at its deadline is expected here

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# measuring


@dataclass
class Phase:
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    note: str = ""

    def pct(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def scrape_phase(url: str, count: int, interval: float, timeout: float = 10) -> tuple[Phase, Phase]:
    """count scrapes of one server, alternating a kept-alive connection and a new one each."""
    phases = interleaved({"one": url}, count, interval, timeout)
    return phases[("one", KEPT)], phases[("one", NEW)]


KEPT, NEW = "", ", new connections"


def interleaved(
    urls: dict[str, str], count: int, interval: float, timeout: float = 10
) -> dict[tuple[str, str], Phase]:
    """count rounds; in each, every server is scraped once (in a rotating order), on even rounds over
    its kept-alive connection (as Prometheus), on odd ones over a new connection. Interleaving puts the
    servers under the same machine load, which on a shared machine moves by tens of percent a minute.
    http.client, not httpx: a new httpx client costs about 50 ms here (its TLS context), which would
    swamp what is measured."""
    phases = {(name, kind): Phase() for name in urls for kind in (KEPT, NEW)}
    kept: dict[str, http.client.HTTPConnection] = {}
    names = list(urls)
    for i in range(count):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            phase = phases[(name, KEPT if i % 2 == 0 else NEW)]
            host, port = urls[name].split("/")[2].split(":")
            if i % 2 == 0:
                connection = kept.get(name) or http.client.HTTPConnection(host, int(port), timeout=timeout)
                kept[name] = connection
            else:
                connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
            started = time.perf_counter()
            try:
                connection.request("GET", "/metrics", headers=PROMETHEUS_HEADERS)
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    raise http.client.HTTPException(f"status {response.status}")
                phase.latencies.append(time.perf_counter() - started)
            except (OSError, http.client.HTTPException) as exc:
                phase.failures.append(type(exc).__name__)
                connection.close()
                kept.pop(name, None)
            if i % 2:
                connection.close()
            time.sleep(interval)
    for connection in kept.values():
        connection.close()
    return phases


def exporter_argv(server: str, port: int, targets: list[str]) -> list[str]:
    args = ["--listen-address", f"127.0.0.1:{port}", "--no-collector.gpu"]
    for target in targets:
        args += ["--target", target]
    if server.startswith("ours"):
        return [PYTHON, "-m", "exporter", *args]
    return [PYTHON, str(ROOT / "bench" / "exporter_peer_server.py"), server, *args]


def close_reasons(url: str) -> str:
    lines = httpx.get(url, timeout=30).text.splitlines()
    counted = [
        line.removeprefix("exporter_http_connections_closed_total{reason=").replace('"} ', " ")
        for line in lines
        if line.startswith("exporter_http_connections_closed_total{") and not line.endswith(" 0.0")
    ]
    return "closed by reason: " + ", ".join(counted) if counted else ""


def measure_servers(
    servers: list[str], targets: list[str], args: argparse.Namespace
) -> dict[tuple[str, str], Phase]:
    """Every server started at once; idle rounds, then rounds with --slow slowloris clients on each."""
    with contextlib.ExitStack() as stack:
        urls: dict[str, str] = {}
        ports: dict[str, int] = {}
        for server in servers:
            cwd = ROOT
            if "@" in server:
                cwd = stack.enter_context(revision_tree(server.split("@", 1)[1]))
            ports[server] = free_port()
            urls[server] = f"http://127.0.0.1:{ports[server]}/metrics"
            argv = exporter_argv(server, ports[server], targets)
            stack.enter_context(process(argv, urls[server], cwd=cwd))
        interleaved(urls, 10, args.interval)  # warm-up: first connections, first renders
        idle = interleaved(urls, args.scrapes, args.interval)
        slow = {
            s: stack.enter_context(Slowloris(ports[s], args.slow, args.slow_byte_interval)) for s in servers
        }
        time.sleep(2)
        open_at_start = {server: attack.open_now() for server, attack in slow.items()}
        under = interleaved(urls, args.scrapes, args.interval)
        results: dict[tuple[str, str], Phase] = {}
        for server, attack in slow.items():
            closed, longest, failures = attack.finish().values()
            note = (
                f"{open_at_start[server]} slow open at start; server closed {closed:.0f}; "
                f"longest lived {longest:.1f} s; connect failures {failures:.0f}"
            )
            if server == "ours" and (reasons := close_reasons(urls[server])):
                note += "; " + reasons
            for kind in (KEPT, NEW):
                results[(server, "idle" + kind)] = idle[(server, kind)]
                results[(server, "slow" + kind)] = under[(server, kind)]
                under[(server, kind)].note = note
    return results


def measure_big(args: argparse.Namespace) -> Phase:
    body = big_payload(args.big_mb)
    with static_target(body) as big_url:
        port = free_port()
        argv = exporter_argv("ours", port, [f"big={big_url},kind=vllm"])
        url = f"http://127.0.0.1:{port}/metrics"
        with process(argv, f"http://127.0.0.1:{port}/healthz") as exporter:
            phase = merge(*scrape_phase(url, args.big_scrapes, args.interval, timeout=60))
            lines = httpx.get(url, timeout=60).text.splitlines()
            rss = psutil.Process(exporter.pid).memory_info().rss / 2**20
    counted = [
        line.split("{", 1)[1]
        for line in lines
        if line.startswith(("llm_target_up{", "llm_target_errors_total{")) and not line.endswith(" 0.0")
    ]
    phase.note = f"{len(body) / 1e6:.1f} MB payload; exporter RSS after {rss:.0f} MB; " + "; ".join(counted)
    return phase


def merge(*phases: Phase) -> Phase:
    return Phase([x for p in phases for x in p.latencies], [x for p in phases for x in p.failures])


@contextlib.contextmanager
def revision_tree(revision: str) -> Iterator[Path]:
    """The exporter package of another revision, unpacked into a temporary folder to run from."""
    with tempfile.TemporaryDirectory(prefix="exporter-rev-") as folder:
        archive = subprocess.run(
            ["git", "archive", revision, "exporter"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        path = Path(folder) / "exporter.tar"
        path.write_bytes(archive)
        with tarfile.open(path) as tar:
            tar.extractall(folder, filter="data")
        yield Path(folder)


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.2f}"


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so the servers it started are stopped
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="ours,uvicorn,waitress")
    parser.add_argument("--baseline-rev", help="also run ours at this git revision (e.g. before a change)")
    parser.add_argument("--scrapes", type=int, default=200, help="per phase, half on a new connection")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between scrapes (0.05)")
    parser.add_argument("--slow", type=int, default=500)
    parser.add_argument("--slow-byte-interval", type=float, default=10.0)
    parser.add_argument("--big-mb", type=float, default=30.0, help="0: skip the big-target phase")
    parser.add_argument("--big-scrapes", type=int, default=20)
    parser.add_argument(
        "--engine-target", action="store_true", help="idle and slow phases with the simulator as a target"
    )
    args = parser.parse_args()
    rows: list[tuple[str, str, Phase]] = []
    sim_port = free_port()
    sim_argv = [
        PYTHON,
        "-m",
        "simulator",
        "--profile",
        "tiny",
        "--host",
        "127.0.0.1",
        "--port",
        f"{sim_port}",
    ]
    with process(sim_argv, f"http://127.0.0.1:{sim_port}/health"):
        sim_url = f"http://127.0.0.1:{sim_port}"
        servers = args.servers.split(",") + ([f"ours@{args.baseline_rev}"] if args.baseline_rev else [])
        if "waitress" in servers and importlib.util.find_spec("waitress") is None:
            servers.remove("waitress")
            rows.append(("waitress", "idle", Phase(note="not installed (pip install waitress)")))
        targets = [f"sim={sim_url},kind=vllm"] if args.engine_target else []
        results = measure_servers(servers, targets, args)
        for server in servers:
            for name in ("idle", "slow", "idle" + NEW, "slow" + NEW):
                rows.append((server, name, results[(server, name)]))
        if args.big_mb > 0:
            phase = measure_big(args)
            rows.append(("ours", f"{args.big_mb:.0f} MB target", phase))
    print(report(rows, args))
    return 0


def report(rows: list[tuple[str, str, Phase]], args: argparse.Namespace) -> str:
    lines = [
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the end",
        "",
        "| server | phase | scrapes ok | failed | p50 ms | p99 ms | max ms | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for server, name, phase in rows:
        top = max(phase.latencies) if phase.latencies else None
        failed = ", ".join(f"{k} {phase.failures.count(k)}" for k in sorted(set(phase.failures))) or "0"
        lines.append(
            f"| {server} | {name} | {len(phase.latencies)} | {failed} | {fmt(phase.pct(50))} | "
            f"{fmt(phase.pct(99))} | {fmt(top)} | {phase.note} |"
        )
    by = {(s, n): p for s, n, p in rows}
    lines.append("")
    for server in dict.fromkeys(s for s, _, _ in rows):
        for suffix in ("", ", new connections"):
            idle, slow = by.get((server, "idle" + suffix)), by.get((server, "slow" + suffix))
            if idle and slow and idle.pct(99) and slow.pct(99):
                ratio = slow.pct(99) / idle.pct(99)  # type: ignore[operator]
                what = f"p99 under {args.slow} slow clients / p99 idle"
                lines.append(f"- {server}{suffix}: {what} = {ratio:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
