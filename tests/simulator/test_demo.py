"""`make demo` (tools/demo.py) in its quick mode: finishes, prints the report, the engine view, what the
exporter found about GPUs and (with `prometheus` on the PATH) what Prometheus answered, and leaves
nothing running: no process it started, no port it listened on."""

from __future__ import annotations

import contextlib
import ctypes.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
MARK = "LLMOBS_DEMO_TEST_MARK"


def demo_env() -> dict[str, str]:
    """The environment for one demo run, with a mark every process it starts inherits."""
    return {**os.environ, MARK: uuid.uuid4().hex}


def cmdlines() -> list[str]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            found.append(" ".join(process.info["cmdline"] or []))
    return found


def marked(mark: str) -> list[str]:
    """Processes that inherited the demo run's mark: whatever it started and did not stop."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if process.environ().get(MARK) == mark:
                found.append(" ".join(process.info["cmdline"] or []))
    return found


def children() -> set[int]:
    """This process's descendants, the session's live engines (live_vllm, live_transformers) among them."""
    return {child.pid for child in psutil.Process().children(recursive=True)}


def assert_nothing_left(output: str, mark: str, before: set[int]) -> None:
    # The demo waits for what it stopped, so this holds at once; no polling.
    assert not marked(mark)
    assert not children() - before
    ports = {int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", output)}
    assert len(ports) >= 3
    marks = {f":{port}" for port in ports} | {f"--port {port}" for port in ports}
    assert not [cmdline for cmdline in cmdlines() if any(m in cmdline for m in marks)]
    listening = {
        conn.laddr.port
        for conn in psutil.net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port in ports
    }
    assert not listening, f"ports still open after the demo: {sorted(listening)}"


def test_quick_demo_runs_reports_and_cleans_up(tmp_path: Path) -> None:
    env = demo_env()
    before = children()
    env.pop("PYTHONUNBUFFERED", None)  # as a user's shell has it: stdout to a pipe is block-buffered
    result = subprocess.run(
        [sys.executable, "tools/demo.py", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "step-3 concurrency=16" in output  # the load generator's per-step report
    assert "Time to First Token (ms)" in output
    assert "llm_requests_running{" in output  # the exporter's normalized view of the simulator
    assert "every process stopped" in output
    # piped, the demo's own lines still come before the load generator's report (they were buffered)
    assert result.stdout.index("== llmobs demo:") < result.stdout.index("== load generator report")
    assert result.stdout.index("== load generator report") < result.stdout.index("Timing: ")
    # it ends with the three answers, and keeps the report it names
    last = result.stdout.rstrip().splitlines()[-4:]
    assert last[0] == "== the three questions"
    assert re.match(
        r"How fast is it for one user\? With one user: TTFT p50 \d+ ms, [\d.]+ tokens/s received", last[1]
    )
    assert last[2].startswith("How many users can it carry? Capacity: ") or last[2].startswith(
        "How many users can it carry? No level tested meets the SLOs"
    )
    assert "p95 TTFT" in last[2] and "engine's queue" in last[2]
    assert last[3].startswith("Why did it get slow? Why it got slow at ")
    assert "load generator" in last[3] and "engine's queue" in last[3] and "KV cache" in last[3]
    report = tmp_path / "report.json"
    assert f"report kept: {report}" in result.stdout and json.loads(report.read_text())["sweep"]
    assert "--keep-running" in result.stdout
    # 16 users against the tiny engine's 8 sequences: the queue shows through the exporter
    assert int(re.search(r"max llm_requests_waiting = (\d+)", output).group(1)) > 0
    if ctypes.util.find_library("nvidia-ml") is None:  # no GPU driver here: the exporter says so
        assert re.search(r"exporter says: .*NVML unavailable.*serving host metrics only", output), output
        assert "GPU: none (no NVML)" in output
    else:
        assert re.search(r"GPU: (none \(no NVML\)|NVML shows \d+ GPU)", output), output
    if shutil.which("prometheus"):
        url = re.search(r"prometheus (http://127\.0\.0\.1:\d+)  \(project config", output)
        assert url, output
        assert f"ok   prometheus: {url.group(1)}" in output
        # Prometheus answered: every job scraped, engine and load-generator series stored
        for job in ("engines", "llmobs-exporter", "llmobs-loadgen", "prometheus"):
            assert f"max_over_time(up{{job='{job}'}}[10m]) = 1" in output
        assert int(re.search(r"max_over_time\(llm_requests_running\[10m\]\) = (\d+)", output).group(1)) > 0
        assert "ok   prometheus queries: 4 jobs scraped" in output
    else:
        assert "prometheus: not on the PATH, skipped" in output
    assert_nothing_left(output, env[MARK], before)


def test_demo_fails_clearly_and_cleans_up_when_a_part_fails(tmp_path: Path) -> None:
    env = demo_env()
    result = subprocess.run(
        [sys.executable, "tools/demo.py", "--quick", "--profile", "no-such-profile", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 1
    assert "DEMO FAILED" in result.stderr
    assert "no-such-profile" in result.stderr + result.stdout
    assert "FAIL demo" in result.stdout
    assert not marked(env[MARK])


def test_interrupted_demo_stops_everything_it_started(tmp_path: Path) -> None:
    env = demo_env()
    before = children()
    process = subprocess.Popen(
        [sys.executable, "tools/demo.py", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    lines = []
    for raw in process.stdout:  # wait until the load generator runs, then press Ctrl-C
        lines.append(raw.decode(errors="replace"))
        if "load generator report" in lines[-1]:
            break
    time.sleep(2)
    process.send_signal(signal.SIGINT)
    output = "".join(lines) + process.communicate(timeout=60)[0].decode(errors="replace")
    assert process.returncode == 1
    assert "FAIL demo: interrupted" in output
    assert_nothing_left(output, env[MARK], before)
