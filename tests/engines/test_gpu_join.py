"""Engine -> GPU join: real process trees (and real network namespaces where the kernel lets us make one)
on this machine; only NVML's process list is faked (no GPU here)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import pytest

from exporter.collectors.host import EngineMatcher
from exporter.config import Config, EngineProcessPattern, TargetConfig
from exporter.engines import gpu_join
from exporter.engines.collector import EnginesCollector
from exporter.engines.gpu_join import GpuJoin, JoinTarget, local_port
from tests.engines.conftest import scrape, value
from tests.support.procs import free_port
from tests.support.real import missing

GIB = 1 << 30
# A server that listens on a port and starts `workers` children (vLLM's API server and engine cores);
# it prints {"server": pid, "port": port, "workers": [pids]}. argv: port [workers] [bind address]
SERVER = """
import json, os, socket, subprocess, sys, time
port, workers = int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1
bind = sys.argv[3] if len(sys.argv) > 3 and not sys.argv[3].startswith("-") else "127.0.0.1"
sock = socket.socket(); sock.bind((bind, port)); sock.listen()
python = os.environ["TEST_PYTHON"]  # sys.executable is empty when argv[0] is an engine's name
children = [subprocess.Popen([python, "-c", "import time; time.sleep(120)"]) for _ in range(workers)]
# one write() of the whole line: servers sharing a pipe must not interleave their lines
line = json.dumps({"server": os.getpid(), "port": port, "workers": [c.pid for c in children]}) + "\\n"
os.write(1, line.encode())
time.sleep(120)
"""
# TGI's layout: the launcher starts the router (which listens) and the GPU shards, side by side.
LAUNCHER = """
import json, os, subprocess, sys, time
python = os.environ["TEST_PYTHON"]
router = subprocess.Popen(["text-generation-router", "-c", sys.argv[1], sys.argv[2], "0"],
                          executable=python, stdout=subprocess.PIPE, text=True)
shard = ["text-generation-server", "-c", "import time; time.sleep(120)"]
shards = [subprocess.Popen(shard, executable=python) for _ in range(2)]
listening = json.loads(router.stdout.readline())
os.write(1, (json.dumps({"router": listening["server"], "shards": [s.pid for s in shards]}) + "\\n").encode())
time.sleep(120)
"""
ENV = {**os.environ, "TEST_PYTHON": sys.executable, "TEST_SERVER": SERVER}


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


def start(argv: list[str], argv0: str | None = None) -> tuple[subprocess.Popen, dict]:
    process = subprocess.Popen(
        [argv0 or argv[0], *argv[1:]], executable=argv[0], stdout=subprocess.PIPE, text=True, env=ENV,
        start_new_session=True,
    )  # fmt: skip
    line = process.stdout.readline()
    assert line, f"{argv0 or argv[0]} did not start"
    return process, json.loads(line)


def kill_tree(process: subprocess.Popen) -> None:
    """The process, its descendants, and whatever else is left in its session (each test process is
    started in a session of its own, so engines a shell backgrounded and orphaned go too)."""
    try:
        root = psutil.Process(process.pid)
        for member in [*root.children(recursive=True), root]:
            member.kill()
    except psutil.Error:
        pass
    for member in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getsid(member.pid) == process.pid:
                member.kill()
    process.wait(timeout=10)


@pytest.fixture
def engine_tree() -> Iterator[EngineTree]:
    port = free_port()
    server, pids = start([sys.executable, "-c", SERVER, str(port)])
    try:
        yield EngineTree(port, pids["server"], pids["workers"][0])
    finally:
        kill_tree(server)


@pytest.fixture
def kind() -> str:
    """An engine kind (and program name) no other process on this machine uses."""
    return f"llmobstest{uuid.uuid4().hex[:8]}"


def test_join_finds_the_gpus_of_the_listening_process_tree(engine_tree: EngineTree) -> None:
    processes = [
        FakeGpuProcess("0", "GPU-aaaa", engine_tree.worker_pid, 20 * GIB),
        FakeGpuProcess("1", "GPU-bbbb", engine_tree.worker_pid, 10 * GIB),
        FakeGpuProcess("1", "GPU-bbbb", engine_tree.server_pid, None),
        FakeGpuProcess("2", "GPU-cccc", 999_999_999, 5 * GIB),  # somebody else's process
    ]
    join = GpuJoin(lambda: processes)
    targets = [
        JoinTarget("engine", f"http://127.0.0.1:{engine_tree.port}"),
        JoinTarget("remote", "http://10.1.2.3:8000", engine_kind="vllm", answered=True),
    ]
    assert [(u.target, u.gpu, u.uuid, u.memory_bytes) for u in join.join(targets)] == [
        ("engine", "0", "GPU-aaaa", 20 * GIB),
        ("engine", "1", "GPU-bbbb", 10 * GIB),  # the server's unknown usage adds nothing, invents nothing
    ]
    assert join.ambiguous == set()


def test_no_gpu_processes_means_no_process_scans() -> None:
    def listeners(port: int) -> set[int]:
        raise AssertionError("scanned sockets although no GPU process exists")

    assert GpuJoin(list, listeners=listeners).join([JoinTarget("t", "http://127.0.0.1:8000")]) == []


def test_listener_lookup_is_cached_while_the_server_lives(engine_tree: EngineTree) -> None:
    scans: list[int] = []

    def counting_listeners(port: int) -> set[int]:
        scans.append(port)
        return gpu_join.listening_pids(port)

    processes = [FakeGpuProcess("0", "GPU-aaaa", engine_tree.worker_pid, 1)]
    join = GpuJoin(lambda: processes, listeners=counting_listeners)
    for _ in range(3):
        assert len(join.join([JoinTarget("t", f"http://localhost:{engine_tree.port}")])) == 1
    assert scans == [engine_tree.port]


def test_local_port() -> None:
    assert local_port("http://127.0.0.1:8000") == 8000
    assert local_port("http://localhost/metrics") == 80
    assert local_port("https://[::1]:9443") == 9443
    assert local_port("http://10.255.255.1:8000") is None
    assert local_port("http://engine.example.com:8000") is None


def test_tgi_router_and_shards_are_siblings_under_the_launcher() -> None:
    """The router listens, the shards hold the GPUs: the join walks up to the launcher and takes its tree."""
    port = free_port()
    launcher, pids = start([sys.executable, "-c", LAUNCHER, SERVER, str(port)], "text-generation-launcher")
    try:
        processes = [
            FakeGpuProcess(str(i), f"GPU-{i}", pid, (i + 1) * GIB) for i, pid in enumerate(pids["shards"])
        ]
        join = GpuJoin(lambda: processes)
        uses = join.join([JoinTarget("tgi", f"http://127.0.0.1:{port}", engine_kind="tgi")])
        by_process = GpuJoin(lambda: processes).join(
            [JoinTarget("tgi", "http://127.0.0.1:1", process=r"text-generation-launcher")]
        )
    finally:
        kill_tree(launcher)
    assert [(u.gpu, u.memory_bytes) for u in uses] == [("0", GIB), ("1", 2 * GIB)]
    assert [(u.gpu, u.memory_bytes) for u in by_process] == [("0", GIB), ("1", 2 * GIB)]


def test_a_process_regex_matching_two_engines_is_ambiguous(kind: str) -> None:
    trees = [start([sys.executable, "-c", SERVER, str(free_port())], kind) for _ in range(2)]
    try:
        processes = [
            FakeGpuProcess(str(i), f"GPU-{i}", pids["workers"][0], GIB) for i, (_, pids) in enumerate(trees)
        ]
        join = GpuJoin(lambda: processes)
        assert join.join([JoinTarget("t", "http://engine:8000", process=kind)]) == []
        assert join.ambiguous == {"t"}
    finally:
        for process, _ in trees:
            kill_tree(process)


def test_kind_fallback_only_for_the_hosts_only_engine_of_that_kind(kind: str) -> None:
    """A target on this host that answered, whose listener holds no GPU (a proxy, docker-proxy)."""
    matcher = EngineMatcher([EngineProcessPattern(kind, rf"^{kind}\b")])
    proxy_port = free_port()
    proxy, _ = start([sys.executable, "-c", SERVER, str(proxy_port), "0"])
    engine, pids = start([sys.executable, "-c", SERVER, str(free_port())], kind)
    try:
        processes = [FakeGpuProcess("0", "GPU-0", pids["workers"][0], GIB)]
        url = f"http://127.0.0.1:{proxy_port}"
        answered = JoinTarget("t", url, engine_kind=kind, answered=True)
        assert [u.gpu for u in GpuJoin(lambda: processes, matcher).join([answered])] == ["0"]
        # Not answering: the engine behind the proxy is not known to be up, so no guess.
        silent = JoinTarget("t", url, engine_kind=kind, answered=False)
        assert GpuJoin(lambda: processes, matcher).join([silent]) == []
        # Two targets would get the same guess: neither does.
        twice = GpuJoin(lambda: processes, matcher)
        assert twice.join([answered, JoinTarget("u", url, engine_kind=kind, answered=True)]) == []
        assert twice.ambiguous == {"t", "u"}
        # A second engine of the kind on the host (without GPUs): ambiguous.
        second, _ = start([sys.executable, "-c", SERVER, str(free_port()), "0"], kind)
        try:
            other = GpuJoin(lambda: processes, matcher)
            assert other.join([answered]) == []
            assert other.ambiguous == {"t"}
        finally:
            kill_tree(second)
    finally:
        kill_tree(engine)
        kill_tree(proxy)


# --- another network namespace: an engine in "another container", a target named by DNS -----------------


def in_namespace(address: str, script: str) -> list[str]:
    """argv that runs bash in a new (user +) network namespace whose loopback owns `address`."""
    setup = f"ip link set lo up && ip addr add {address}/32 dev lo && {script}"
    return ["unshare", "--user", "--map-root-user", "--net", "bash", "-c", setup]


@pytest.fixture
def namespaces() -> Iterator[list[subprocess.Popen]]:
    if not shutil.which("unshare") or not shutil.which("ip"):
        missing("unshare and ip", "util-linux and iproute2, to make a network namespace")
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--net", "true"], capture_output=True)
    if probe.returncode != 0:
        missing("unprivileged network namespaces", probe.stderr.decode().strip())
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        kill_tree(process)


def engine_in_namespace(
    started: list[subprocess.Popen], address: str, port: int, argv0: str = "vllm"
) -> dict:
    script = f'exec -a {argv0} "$TEST_PYTHON" -c "$TEST_SERVER" {port} 2 0.0.0.0'
    process = subprocess.Popen(
        in_namespace(address, script), stdout=subprocess.PIPE, text=True, env=ENV, start_new_session=True
    )
    started.append(process)
    line = process.stdout.readline()
    assert line, "the server in the new network namespace did not start"
    return json.loads(line)


def test_a_target_named_by_dns_joins_the_engine_in_its_own_network_namespace(
    namespaces: list[subprocess.Popen], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`http://engine:8000` in compose: the engine's namespace owns the address the exporter connected to
    and listens on the port; an engine in another namespace on the same port is left alone."""
    port = free_port()
    engine = engine_in_namespace(namespaces, "10.231.0.1", port)
    decoy = engine_in_namespace(namespaces, "10.231.0.2", port)  # same port, another "container"
    processes = [
        *(FakeGpuProcess(str(i), f"GPU-{i}", pid, 40 * GIB) for i, pid in enumerate(engine["workers"])),
        *(FakeGpuProcess(str(i + 2), f"GPU-{i + 2}", pid, GIB) for i, pid in enumerate(decoy["workers"])),
    ]
    target = JoinTarget("engine", f"http://engine:{port}", engine_kind="vllm", peer=("10.231.0.1", port))
    join = GpuJoin(lambda: processes)
    assert [(u.gpu, u.memory_bytes) for u in join.join([target])] == [("0", 40 * GIB), ("1", 40 * GIB)]
    # Without permission to read other processes' fds, the namespace's GPU processes all belong to one
    # engine tree, so the join stands.
    monkeypatch.setattr(gpu_join, "socket_inodes", lambda pid: None)
    assert [u.gpu for u in GpuJoin(lambda: processes).join([target])] == ["0", "1"]
    # An address nobody owns: no join, no guess.
    lost = JoinTarget(
        "lost", f"http://engine:{port}", engine_kind="vllm", peer=("10.231.0.9", port), answered=True
    )
    assert GpuJoin(lambda: processes).join([lost]) == []


def test_two_engines_in_one_namespace_need_the_socket_owner(
    namespaces: list[subprocess.Popen], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, other_port = free_port(), free_port()
    script = (
        f'(exec -a vllm "$TEST_PYTHON" -c "$TEST_SERVER" {port} 1 0.0.0.0 &) && '
        f'(exec -a vllm "$TEST_PYTHON" -c "$TEST_SERVER" {other_port} 1 0.0.0.0 &) && sleep 120'
    )
    shell = subprocess.Popen(
        in_namespace("10.231.0.3", script), stdout=subprocess.PIPE, text=True, env=ENV, start_new_session=True
    )
    namespaces.append(shell)
    first, second = (json.loads(shell.stdout.readline()) for _ in range(2))
    served = first if first["port"] == port else second
    processes = [
        FakeGpuProcess("0", "GPU-0", first["workers"][0], GIB),
        FakeGpuProcess("1", "GPU-1", second["workers"][0], GIB),
    ]
    target = JoinTarget("t", f"http://engine:{port}", engine_kind="vllm", peer=("10.231.0.3", port))
    [use] = GpuJoin(lambda: processes).join([target])
    assert use.gpu == ("0" if served is first else "1")
    monkeypatch.setattr(gpu_join, "socket_inodes", lambda pid: None)  # the owner cannot be told
    join = GpuJoin(lambda: processes)
    assert join.join([target]) == []
    assert join.ambiguous == {"t"}


def test_a_port_published_by_docker_proxy_leads_to_the_container(namespaces: list[subprocess.Popen]) -> None:
    port, published = free_port(), free_port()
    engine = engine_in_namespace(namespaces, "10.231.0.4", port)
    proxy, _ = start(
        [
            sys.executable,
            "-c",
            SERVER,
            str(published),
            "0",
            "-container-ip",
            "10.231.0.4",
            "-container-port",
            str(port),
        ],
        "docker-proxy",
    )
    try:
        processes = [FakeGpuProcess("0", "GPU-0", engine["workers"][0], GIB)]
        uses = GpuJoin(lambda: processes).join([JoinTarget("t", f"http://127.0.0.1:{published}")])
    finally:
        kill_tree(proxy)
    assert [u.gpu for u in uses] == ["0"]


# --- through the collector -------------------------------------------------------------------------------


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
    assert value(exposition, "llm_engine_gpu_join_ambiguous", target="tree") == 0
    assert value(exposition, "llm_target_errors_total", target="tree", kind="timeout") == 1


def test_collector_counts_an_ambiguous_join_and_the_process_setting_settles_it(kind: str) -> None:
    trees = [start([sys.executable, "-c", SERVER, str(free_port())], f"{kind}-{i}") for i in range(2)]
    try:
        processes = [
            FakeGpuProcess(str(i), f"GPU-{i}", pids["workers"][0], GIB) for i, (_, pids) in enumerate(trees)
        ]
        targets = (
            TargetConfig("both", "http://127.0.0.1:9", kind="vllm", timeout_seconds=0.3, process=kind),
            TargetConfig("one", "http://127.0.0.1:9", kind="vllm", timeout_seconds=0.3, process=f"{kind}-1"),
        )
        collector = EnginesCollector(Config(targets=targets), gpu_processes=lambda: processes)
        try:
            exposition = scrape(collector)
        finally:
            collector.close()
    finally:
        for process, _ in trees:
            kill_tree(process)
    assert value(exposition, "llm_engine_gpu_join_ambiguous", target="both") == 1
    assert not [s for s in exposition.samples("llm_engine_gpu_info") if s.labels["target"] == "both"]
    assert value(exposition, "llm_engine_gpu_join_ambiguous", target="one") == 0
    assert value(exposition, "llm_engine_gpu_info", target="one", gpu="1") == 1


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
