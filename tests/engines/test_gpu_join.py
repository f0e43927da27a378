"""Engine -> GPU join: a real process tree on this machine, NVML's process list faked (no GPU here)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import pytest

from exporter.config import Config, TargetConfig
from exporter.engines.collector import EnginesCollector
from exporter.engines.gpu_join import GpuJoin, local_port
from tests.engines.conftest import scrape, value
from tests.support.procs import free_port

# A "server" that listens on a port and starts a "worker" child, like vLLM's API server and engine core.
SERVER = """
import socket, subprocess, sys, time
sock = socket.socket(); sock.bind(("127.0.0.1", int(sys.argv[1]))); sock.listen()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


@dataclass(frozen=True)
class FakeGpuProcess:
    gpu: str
    uuid: str
    pid: int
    used_memory_bytes: int | None


@dataclass(frozen=True)
class EngineTree:
    port: int
    server_pid: int
    worker_pid: int


@pytest.fixture
def engine_tree() -> Iterator[EngineTree]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], stdout=subprocess.PIPE, text=True)
    try:
        worker_pid = int(server.stdout.readline())
        yield EngineTree(port, server.pid, worker_pid)
    finally:
        for process in [*psutil.Process(server.pid).children(recursive=True), psutil.Process(server.pid)]:
            process.kill()
        server.wait()


def test_join_finds_the_gpus_of_the_listening_process_tree(engine_tree: EngineTree) -> None:
    gib = 1 << 30
    processes = [
        FakeGpuProcess("0", "GPU-aaaa", engine_tree.worker_pid, 20 * gib),
        FakeGpuProcess("1", "GPU-bbbb", engine_tree.worker_pid, 10 * gib),
        FakeGpuProcess("1", "GPU-bbbb", engine_tree.server_pid, None),
        FakeGpuProcess("2", "GPU-cccc", 999_999_999, 5 * gib),  # somebody else's process
    ]
    join = GpuJoin(lambda: processes)
    uses = join.join([("engine", f"http://127.0.0.1:{engine_tree.port}"), ("remote", "http://10.1.2.3:8000")])
    assert [(u.target, u.gpu, u.uuid, u.memory_bytes) for u in uses] == [
        ("engine", "0", "GPU-aaaa", 20 * gib),
        ("engine", "1", "GPU-bbbb", 10 * gib),  # the server's unknown usage adds nothing, invents nothing
    ]


def test_no_gpu_processes_means_no_process_scans() -> None:
    def listeners(port: int) -> set[int]:
        raise AssertionError("scanned sockets although no GPU process exists")

    assert GpuJoin(list, listeners=listeners).join([("t", "http://127.0.0.1:8000")]) == []


def test_listener_lookup_is_cached_while_the_server_lives(engine_tree: EngineTree) -> None:
    scans: list[int] = []

    def counting_listeners(port: int) -> set[int]:
        from exporter.engines.gpu_join import listening_pids

        scans.append(port)
        return listening_pids(port)

    processes = [FakeGpuProcess("0", "GPU-aaaa", engine_tree.worker_pid, 1)]
    join = GpuJoin(lambda: processes, listeners=counting_listeners)
    for _ in range(3):
        assert len(join.join([("t", f"http://localhost:{engine_tree.port}")])) == 1
    assert scans == [engine_tree.port]


def test_local_port() -> None:
    assert local_port("http://127.0.0.1:8000") == 8000
    assert local_port("http://localhost/metrics") == 80
    assert local_port("https://[::1]:9443") == 9443
    assert local_port("http://10.255.255.1:8000") is None
    assert local_port("http://engine.example.com:8000") is None


def test_collector_publishes_the_join_even_while_the_engine_does_not_answer(engine_tree: EngineTree) -> None:
    # The tree's server accepts connections but never answers HTTP: its scrape times out, its GPUs still show.
    processes = [FakeGpuProcess("3", "GPU-dddd", engine_tree.worker_pid, 123)]
    target = TargetConfig("tree", f"http://127.0.0.1:{engine_tree.port}", kind="vllm", timeout_seconds=0.3)
    collector = EnginesCollector(Config(targets=(target,)), gpu_processes=lambda: processes)
    try:
        exposition = scrape(collector)
    finally:
        collector.close()
    labels = {"target": "tree", "gpu": "3", "uuid": "GPU-dddd", "engine_kind": "vllm"}
    assert value(exposition, "llm_engine_gpu_info", **labels) == 1
    assert value(exposition, "llm_engine_gpu_memory_used_bytes", **labels) == 123
    assert value(exposition, "llm_target_errors_total", target="tree", kind="timeout") == 1


def test_a_failing_gpu_side_costs_only_the_join(engine_tree: EngineTree) -> None:
    def broken() -> list[FakeGpuProcess]:
        raise RuntimeError("NVML went away")

    target = TargetConfig("tree", f"http://127.0.0.1:{engine_tree.port}", kind="vllm", timeout_seconds=0.3)
    collector = EnginesCollector(Config(targets=(target,)), gpu_processes=broken)
    try:
        exposition = scrape(collector)
    finally:
        collector.close()
    assert value(exposition, "llm_target_up", target="tree") == 0
    assert not exposition.samples("llm_engine_gpu_info")
