"""`make demo` (tools/demo.py) in its quick mode: finishes, prints the report and the engine view, and
leaves no process running."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]


def cmdlines() -> list[str]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            found.append(" ".join(process.info["cmdline"] or []))
    return found


def test_quick_demo_runs_reports_and_cleans_up() -> None:
    result = subprocess.run(
        [sys.executable, "tools/demo.py", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "step-3 concurrency=16" in output  # the load generator's per-step report
    assert "Time to First Token (ms)" in output
    assert "llm_requests_running{" in output  # the exporter's normalized view of the simulator
    assert "every process stopped" in output
    # 16 users against the tiny engine's 8 sequences: the queue shows through the exporter
    assert int(re.search(r"max llm_requests_waiting = (\d+)", output).group(1)) > 0
    # Every process the demo started has one of the ports it printed on its command line.
    ports = set(re.findall(r"127\.0\.0\.1:(\d+)", output))
    assert len(ports) >= 3
    marks = {f":{port}" for port in ports} | {f"--port {port}" for port in ports}
    leftovers = [cmdline for cmdline in cmdlines() if any(mark in cmdline for mark in marks)]
    assert not leftovers, leftovers


def test_demo_fails_clearly_and_cleans_up_when_a_part_fails() -> None:
    result = subprocess.run(
        [sys.executable, "tools/demo.py", "--quick", "--profile", "no-such-profile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "DEMO FAILED" in result.stderr
    assert "no-such-profile" in result.stderr + result.stdout
    assert "FAIL demo" in result.stdout


def test_interrupted_demo_stops_everything_it_started() -> None:
    process = subprocess.Popen(
        [sys.executable, "tools/demo.py", "--quick"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
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
    ports = set(re.findall(r"127\.0\.0\.1:(\d+)", output))
    marks = {f":{port}" for port in ports} | {f"--port {port}" for port in ports}
    assert len(ports) >= 3
    assert not [cmdline for cmdline in cmdlines() if any(mark in cmdline for mark in marks)]
