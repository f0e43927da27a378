"""The host collector with real psutil on this machine, and real processes posing as engines."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from exporter.collectors.host import EngineMatcher, HostCollector, program_names
from exporter.config import EngineProcessPattern
from tests.exporter.metrics_util import samples_of
from tests.support.procs import free_port, wait_http

ENGINE_SCRIPT = textwrap.dedent(
    """\
    #!{python}
    import subprocess, sys, time
    while time.process_time() < 0.2:  # burn a known amount of CPU
        pass
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    open(sys.argv[1], "w").write(str(child.pid))
    time.sleep(120)
    """
)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[subprocess.Popen]:
    """A real process running a script called llama-server, with one child process."""
    script = tmp_path / "llama-server"
    script.write_text(ENGINE_SCRIPT.format(python=sys.executable))
    script.chmod(0o755)
    ready = tmp_path / "child.pid"
    process = subprocess.Popen([sys.executable, str(script), str(ready), "--api-key", "sk-SECRET"])
    try:
        deadline = time.monotonic() + 60
        while not (ready.exists() and ready.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), "the fake engine did not start"
        yield process
    finally:
        for pid in [int((tmp_path / "child.pid").read_text() or 0)] if ready.exists() else []:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        process.kill()
        process.wait()


@pytest.mark.parametrize(
    ("argv", "kind"),
    [
        (["/opt/venv/bin/python3", "/opt/venv/bin/vllm", "serve", "Qwen/Qwen3-4B"], "vllm"),
        (["python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "m"], "vllm"),
        (["python", "-u", "-m", "sglang.launch_server", "--model-path", "m"], "sglang"),
        (["/usr/local/bin/lmdeploy", "serve", "api_server", "m"], "lmdeploy"),
        (["/usr/bin/python3.11", "/usr/local/bin/xinference-local", "-H", "0.0.0.0"], "xinference"),
        (["/usr/local/bin/ollama", "serve"], "ollama"),
        (["/usr/local/bin/ollama", "runner", "--model", "x"], "ollama"),
        (["./build/bin/llama-server", "-m", "model.gguf"], "llamacpp"),
        (["text-generation-launcher", "--model-id", "m"], "tgi"),
        (["/opt/tritonserver/bin/tritonserver", "--model-repository", "/models"], "triton_trtllm"),
        (["trtllm-serve", "m"], "trtllm_serve"),
        (["python3", "-m", "pytest", "tests/test_vllm.py"], None),
        (["vim", "vllm.py"], None),
        (["llmobs-exporter", "--target", "vllm=http://127.0.0.1:8000"], None),
        ([], None),
    ],
)
def test_engine_kind_from_program_name_not_from_arguments(argv: list[str], kind: str | None) -> None:
    assert EngineMatcher().kind(argv) == kind


def test_configured_patterns_search_the_whole_command_line_first() -> None:
    matcher = EngineMatcher([EngineProcessPattern("custom", r"serve_llm\.py --port \d+")])
    assert matcher.kind(["python3", "/srv/serve_llm.py", "--port", "9000"]) == "custom"
    assert matcher.kind(["ollama", "serve"]) == "ollama"


def test_program_names_for_python_entry_points() -> None:
    assert program_names(["python3.11", "-X", "dev", "-m", "sglang.launch_server"]) == [
        "python3.11",
        "sglang.launch_server",
    ]
    assert program_names(["/usr/bin/python", "/x/bin/vllm", "serve"]) == ["python", "vllm"]
    assert program_names(["python3", "-c", "import vllm"]) == ["python3"]


def test_cpu_utilization_averages_a_sliding_window_not_the_last_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passes every 0.5 s, Prometheus every 15 s: the gauge must average the 15 s, not the last 0.5 s."""
    from collections import namedtuple

    from exporter.collectors import host

    Times = namedtuple("Times", "user system idle iowait")
    clock = {"now": 1000.0, "busy": 0.0, "idle": 0.0}

    def cpu_times(percpu: bool = False) -> object:
        reading = Times(clock["busy"], 0.0, clock["idle"], 0.0)
        return [reading] if percpu else reading

    monkeypatch.setattr(host.psutil, "cpu_times", cpu_times)
    monkeypatch.setattr(host.time, "monotonic", lambda: clock["now"])
    collector = HostCollector(start_threads=False)

    def pass_after(seconds: float, busy_share: float) -> float:
        clock["now"] += seconds
        clock["busy"] += seconds * busy_share
        clock["idle"] += seconds * (1 - busy_share)
        return samples_of(collector.collect()).value("host_cpu_utilization_ratio")

    for _ in range(28):  # 14 s fully busy
        pass_after(0.5, 1.0)
    assert pass_after(0.5, 1.0) == pytest.approx(1.0)
    # 1 s idle after 14 s busy: the window still holds the busy part
    pass_after(0.5, 0.0)
    assert pass_after(0.5, 0.0) == pytest.approx(14 / 15, abs=0.04)
    for _ in range(40):  # long idle: the busy part has left the window, and the window stays bounded
        value = pass_after(0.5, 0.0)
    assert value == pytest.approx(0.0)
    assert len(collector._cpu_readings) <= 32


def test_host_readings_match_psutil() -> None:
    collector = HostCollector(start_threads=False)
    samples_of(collector.collect())  # the first scrape opens the CPU window
    time.sleep(0.3)  # let CPU time pass
    m = samples_of(collector.collect())
    cores = psutil.cpu_count()
    assert m.value("host_cpu_cores") == cores
    assert 0 <= m.value("host_cpu_utilization_ratio") <= 1
    core_samples = m.all("host_cpu_core_utilization_ratio")
    assert len(core_samples) <= cores
    assert all(0 <= value <= 1 for _, value in core_samples)
    assert {labels["period"] for labels, _ in m.all("host_load_average")} == {"1m", "5m", "15m"}
    assert m.value("host_memory_total_bytes") == psutil.virtual_memory().total
    assert 0 < m.value("host_memory_available_bytes") <= m.value("host_memory_total_bytes")
    assert m.value("host_swap_total_bytes") == psutil.swap_memory().total
    assert m.value("host_network_receive_bytes_total", {"interface": "lo"}) >= 0
    for labels, _ in m.all("host_disk_read_bytes_total"):
        assert not labels["device"].startswith(("loop", "ram"))
    assert collector.error_counts() == {}


def test_engine_process_tree_is_found_and_measured(engine: subprocess.Popen, tmp_path: Path) -> None:
    child_pid = int((tmp_path / "child.pid").read_text())
    collector = HostCollector(start_threads=False)
    assert not collector.ready()
    collector.scan_engines()
    assert collector.ready()
    m = samples_of(collector.collect())
    pid = str(engine.pid)
    info = m.labels("host_engine_process_info", {"pid": pid})
    assert info["engine_kind"] == "llamacpp"
    assert info["process"].startswith("python")
    assert "llama-server" in info["command"]
    assert "sk-SECRET" not in info["command"]
    roots = [labels["pid"] for labels, _ in m.all("host_engine_process_info")]
    assert pid in roots and str(child_pid) not in roots  # the child is part of the tree, not a 2nd root
    user = m.value("host_engine_process_cpu_seconds_total", {"pid": pid, "mode": "user"})
    system = m.value("host_engine_process_cpu_seconds_total", {"pid": pid, "mode": "system"})
    # the script burnt 0.2 s of CPU (clock_gettime) before starting its child; /proc counts whole 10 ms
    # ticks, truncated, per field
    assert user + system >= 0.2 - 0.03
    own = psutil.Process(engine.pid).memory_info().rss + psutil.Process(child_pid).memory_info().rss
    rss = m.value("host_engine_process_resident_memory_bytes", {"pid": pid, "engine_kind": "llamacpp"})
    assert rss == pytest.approx(own, rel=0.2)  # the tree: engine and child
    assert m.value("host_engine_process_threads", {"pid": pid}) >= 2

    engine.kill()
    engine.wait()
    m = samples_of(collector.collect())
    assert m.all("host_engine_process_info", {"pid": pid}) == []  # gone before the next scan: not served


def test_argv0_engines_configured_patterns_and_the_limit(tmp_path: Path) -> None:
    started = [
        subprocess.Popen(["bash", "-c", "exec -a llama-server sleep 120"]),
        subprocess.Popen(["bash", "-c", "exec -a my_serving_thing sleep 121"]),
        subprocess.Popen(["bash", "-c", "exec -a trtllm-serve sleep 122"]),
    ]
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            names = [psutil.Process(p.pid).cmdline()[:1] for p in started]
            if names == [["llama-server"], ["my_serving_thing"], ["trtllm-serve"]]:
                break
            time.sleep(0.05)
        patterns = [EngineProcessPattern("custom", r"^my_serving_thing\b")]
        collector = HostCollector(engine_patterns=patterns, start_threads=False)
        collector.scan_engines()
        kinds = {tree.pid: tree.engine_kind for tree in collector.engine_trees()}
        assert kinds.get(started[0].pid) == "llamacpp"
        assert kinds.get(started[1].pid) == "custom"
        assert kinds.get(started[2].pid) == "trtllm_serve"
        assert os.getpid() not in kinds

        limited = HostCollector(engine_process_limit=1, start_threads=False)
        limited.scan_engines()
        assert len(limited.engine_trees()) == 1
    finally:
        for process in started:
            process.kill()
            process.wait()


def test_background_scan_runs_and_stops() -> None:
    collector = HostCollector(scan_interval_seconds=0.1)
    try:
        deadline = time.monotonic() + 20
        while not collector.ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert collector.ready()
    finally:
        collector.close()
    assert collector._thread is None or not collector._thread.is_alive()


def test_a_process_that_execs_into_an_engine_is_recognised_at_the_next_scan() -> None:
    process = subprocess.Popen(
        ["bash", "-c", "read -t 30 line; exec -a llama-server sleep 60"], stdin=subprocess.PIPE
    )
    try:
        collector = HostCollector(start_threads=False)
        collector.scan_engines()
        assert process.pid not in {tree.pid for tree in collector.engine_trees()}
        assert process.stdin is not None
        process.stdin.write(b"go\n")
        process.stdin.flush()
        deadline = time.monotonic() + 20
        while psutil.Process(process.pid).cmdline()[:1] != ["llama-server"] and time.monotonic() < deadline:
            time.sleep(0.05)
        collector.scan_engines()
        assert {tree.pid: tree.engine_kind for tree in collector.engine_trees()}.get(
            process.pid
        ) == "llamacpp"
    finally:
        process.kill()
        process.wait()


def test_two_engines_of_one_kind_are_told_apart_by_their_target(tmp_path: Path) -> None:
    """Two real HTTP servers recognised as one kind, each a configured target on its own port: each
    engine tree carries the target whose port one of its processes listens on; an engine that is no
    target carries "", and a target in another network namespace (not loopback) resolves to none."""
    ports = [free_port() for _ in range(3)]
    servers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                str(port),
                "--directory",
                str(tmp_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    try:
        for port in ports:
            wait_http(f"http://127.0.0.1:{port}/", timeout=30)
        targets = [("left", f"http://127.0.0.1:{ports[0]}"), ("right", f"http://localhost:{ports[1]}/v1"),
                   ("elsewhere", f"http://engine:{ports[2]}")]  # fmt: skip
        patterns = [EngineProcessPattern("custom", r"-m http\.server --bind 127\.0\.0\.1")]
        collector = HostCollector(patterns, start_threads=False, targets=targets)
        collector.scan_engines()
        m = samples_of(collector.collect())
        target_of = {labels["pid"]: labels["target"] for labels, _ in m.all("host_engine_process_info")}
        assert [target_of[str(s.pid)] for s in servers] == ["left", "right", ""]
        rss = {labels["target"] for labels, _ in m.all("host_engine_process_resident_memory_bytes")}
        assert {"left", "right", ""} <= rss
    finally:
        for server in servers:
            server.kill()
            server.wait()
