"""Exporter processes for bench/exporter_scrape.py: starting them, scraping them as Prometheus does, reading
their CPU time, the age of what they serve, and the machine they run on."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
NVITOP_VENV = ROOT / ".cache" / "bench-nvitop"
STUB_DIR = ROOT / ".cache" / "nvml-stub"
# What Prometheus 2.x sends on every scrape; --plain asks for uncompressed text format 0.0.4 instead.
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    "Accept-Encoding": "gzip",
}
CPU_RESOLUTION_SECONDS = 0.01  # /proc/<pid>/stat counts clock ticks (USER_HZ = 100)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Scraper:
    """Scrapes one exporter: a new connection each time, or one kept (as Prometheus keeps it)."""

    port: int
    headers: dict[str, str] = field(default_factory=lambda: dict(PROMETHEUS_HEADERS))
    keep_alive: bool = False
    _connection: http.client.HTTPConnection | None = None

    def scrape(self, timeout: float = 10.0) -> tuple[float, bytes]:
        """(seconds from connect, or from the request on a kept connection, to the last byte; the body)."""
        started = time.perf_counter()
        connection = self._connection or http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("GET", "/metrics", headers=self.headers)
            response = connection.getresponse()
            body = response.read()
            elapsed = time.perf_counter() - started
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
            if response.getheader("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
        except BaseException:
            self._connection = None
            connection.close()
            raise
        if self.keep_alive and not response.will_close:
            self._connection = connection
        else:
            self._connection = None
            connection.close()
        return elapsed, body

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def cpu_seconds(handle: psutil.Process) -> float:
    """User + system CPU seconds of the process and its children (from /proc, clock-tick resolution)."""
    total = 0.0
    for member in [handle, *handle.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = member.cpu_times()
            total += times.user + times.system
    return total


def rss_bytes(handle: psutil.Process) -> int:
    total = 0
    for member in [handle, *handle.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total


@dataclass
class Exporter:
    name: str
    argv: list[str]
    port: int
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/metrics"  # ours: /healthz, so that waiting for it is no scrape (it paces on those)
    cwd: Path = ROOT  # the tree whose exporter runs (`python -m exporter` imports the working directory's)
    process: subprocess.Popen | None = None
    handle: psutil.Process | None = None
    why_not: str = ""


@contextlib.contextmanager
def running(exporter: Exporter, log: Path) -> Iterator[Exporter]:
    """The exporter started and serving (`why_not` says why not, and the body is skipped), then stopped."""
    with open(log, "wb") as out:
        exporter.process = subprocess.Popen(
            exporter.argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=exporter.cwd,
            env={**os.environ, **exporter.env},
        )
    try:
        try:
            wait_until_serving(exporter.port, exporter.process, exporter.ready_path)
            exporter.handle = psutil.Process(exporter.process.pid)
        except RuntimeError as exc:
            lines = log.read_text(errors="replace").strip().splitlines()
            reason = next((line for line in lines if "ERROR" in line), lines[-1] if lines else "")
            exporter.why_not = f"{exc}: {reason.strip()[:200]}"
        yield exporter
    finally:
        exporter.process.terminate()
        try:
            exporter.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            exporter.process.kill()
            exporter.process.wait()


def wait_until_serving(port: int, process: subprocess.Popen, path: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with status {process.returncode} at start")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            connection.close()
        time.sleep(0.2)
    raise RuntimeError(f"not serving after {timeout:.0f} s")


def ours(port: int, extra: Sequence[str] = (), env: dict[str, str] | None = None) -> Exporter:
    argv = [sys.executable, "-m", "exporter", "--listen-address", f"127.0.0.1:{port}", *extra]
    return Exporter("llmobs-exporter", argv, port, dict(env or {}), ready_path="/healthz")


def nvitop(port: int, command: list[str], env: dict[str, str] | None = None) -> Exporter:
    argv = [*command, "--bind-address", "127.0.0.1", "--port", str(port), "--interval", "1.0"]
    return Exporter("nvitop-exporter", argv, port, dict(env or {}))


def nvitop_command(given: str | None) -> tuple[list[str] | None, str]:
    """The command that runs nvitop-exporter: `given`, or a venv under .cache made with pip (needs PyPI)."""
    if given:
        return shlex.split(given), ""
    binary = NVITOP_VENV / "bin" / "nvitop-exporter"
    if not binary.exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", str(NVITOP_VENV)], check=True, capture_output=True)
            subprocess.run(
                [str(NVITOP_VENV / "bin" / "pip"), "install", "-q", "nvitop-exporter==1.7.2"],
                check=True,
                capture_output=True,
                timeout=600,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            return None, f"cannot install nvitop-exporter into {NVITOP_VENV}: {exc}"
    return [str(binary)], ""


def nvml_stub_env(gpus: int) -> dict[str, str]:
    """Environment that makes pynvml load bench/nvml_stub.c (built here with gcc) instead of a driver."""
    STUB_DIR.mkdir(parents=True, exist_ok=True)
    library = STUB_DIR / "libnvidia-ml.so.1"
    source = ROOT / "bench" / "nvml_stub.c"
    if not library.exists() or library.stat().st_mtime < source.stat().st_mtime:
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    return {"LD_LIBRARY_PATH": str(STUB_DIR), "STUB_NVML_GPUS": str(gpus)}


def ages(body: bytes, at: float) -> dict[str, float]:
    """Age at `at` of what the body says it read: `fast` (exporter_snapshot_timestamp_seconds), `slow` (the
    oldest gpu_sample_timestamp_seconds); absent when the exporter publishes no such timestamp."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        if family.name == "exporter_snapshot_timestamp_seconds" and family.samples:
            found["fast"] = at - family.samples[0].value
        elif family.name == "gpu_sample_timestamp_seconds" and family.samples:
            found["slow"] = max(at - s.value for s in family.samples)
    return found


def describe(body: bytes) -> tuple[int, str]:
    """(series, NVML state) of a body."""
    families = list(text_string_to_metric_families(body.decode()))
    series = sum(len(f.samples) for f in families)
    for family in families:
        if family.name == "gpu_nvml_available":
            return series, "NVML available" if family.samples[
                0
            ].value == 1 else "no NVML (gpu_nvml_available 0)"
    gpus = {s.labels.get("uuid") for f in families for s in f.samples if s.labels.get("uuid")}
    return series, f"{len(gpus)} GPU(s)"


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = "no GPU visible"
    if shutil.which("nvidia-smi"):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        gpu = "; ".join(out.stdout.strip().splitlines()) or gpu
    memory = psutil.virtual_memory().total / 2**30
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    python = platform.python_version()
    return (
        f"{cpu}, {psutil.cpu_count()} logical cores, {memory:.0f} GiB; {gpu}; Python {python}; "
        f"load average {load} at the start"
    )
