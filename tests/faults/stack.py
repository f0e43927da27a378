"""The real processes of the fault matrix, each on loopback, with its output in a log file.

    with stack.simulator(tmp) as sim, stack.exporter(tmp, "--target", f"sim={sim.url},kind=vllm") as exp:
        ...                               # exp.url, exp.port, exp.log_path, exp.process, exp.resources()
    run = stack.run_to_exit(tmp, "exporter", "--target", "x=http://u:SECRET@h:99999")   # a start that fails
    with stack.loadgen(tmp, "--url", sim.url, "--concurrency", "2", "--soak") as gen: ...  # /metrics live
    run = stack.run_to_exit(tmp, "loadgen", "run", "--url", sim.url, "--requests", "10", ...)  # to the end

Every process is stopped when its block ends (SIGTERM, then SIGKILL after 10 s).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil

from tests.support.procs import free_port, running

PYTHON = sys.executable


@dataclasses.dataclass(frozen=True)
class Resources:
    rss_bytes: int
    fds: int
    threads: int


@dataclasses.dataclass
class Proc:
    name: str
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"{self.url}/metrics"

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def resources(self) -> Resources:
        return resources(self.process.pid)


@dataclasses.dataclass(frozen=True)
class Finished:
    returncode: int
    output: str  # stdout and stderr, interleaved
    log_path: Path


def resources(pid: int) -> Resources:
    process = psutil.Process(pid)
    with process.oneshot():
        return Resources(process.memory_info().rss, process.num_fds(), process.num_threads())


@contextlib.contextmanager
def _started(
    tmp: Path, name: str, argv: list[str], port: int, ready_path: str, env: dict[str, str] | None
) -> Iterator[Proc]:
    log_path = tmp / f"{name}-{port}.log"
    with running(argv, f"http://127.0.0.1:{port}{ready_path}", log_path, timeout=60, env=env) as process:
        yield Proc(name, process, port, log_path)


@contextlib.contextmanager
def simulator(tmp: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Proc]:
    """The vLLM-shaped simulator (`--profile tiny` unless args give another)."""
    port = free_port()
    profile = [] if "--profile" in args else ["--profile", "tiny"]
    argv = [PYTHON, "-m", "simulator", *profile, "--host", "127.0.0.1", "--port", str(port), *args]
    with _started(tmp, "simulator", argv, port, "/health", env) as proc:
        yield proc


@contextlib.contextmanager
def exporter(tmp: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Proc]:
    """The exporter on a free port; no GPU collector here (no NVML), unless args turn it on."""
    port = free_port()
    gpu = [] if any(a.endswith("collector.gpu") for a in args) else ["--no-collector.gpu"]
    argv = [PYTHON, "-m", "exporter", "--listen-address", f"127.0.0.1:{port}", *gpu, *args]
    with _started(tmp, "exporter", argv, port, "/healthz", env) as proc:
        yield proc


@contextlib.contextmanager
def loadgen(tmp: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Proc]:
    """`loadgen run ARGS` serving /metrics on a free port while it runs (give --soak or a long duration)."""
    port = free_port()
    argv = [PYTHON, "-m", "loadgen", "run", "--progress", "none", "--metrics-address", f"127.0.0.1:{port}"]
    with _started(tmp, "loadgen", [*argv, *args], port, "/metrics", env) as proc:
        yield proc


@contextlib.contextmanager
def loadgen_serve(tmp: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Proc]:
    """`loadgen serve ARGS` (control API and /metrics) on a free port."""
    port = free_port()
    argv = [PYTHON, "-m", "loadgen", "serve", "--listen-address", f"127.0.0.1:{port}", *args]
    with _started(tmp, "loadgen-serve", argv, port, "/healthz", env) as proc:
        yield proc


def run_to_exit(
    tmp: Path, module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> Finished:
    """`python -m MODULE ARGS` until it exits (a failed start, or a bounded load-generator run)."""
    log_path = tmp / f"{module}-run-{len(list(tmp.glob(f'{module}-run-*')))}.log"
    with open(log_path, "wb") as log:
        result = subprocess.run(
            [PYTHON, "-m", module, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            timeout=timeout,
            check=False,
        )
    return Finished(result.returncode, log_path.read_text(errors="replace"), log_path)
