"""Stopping: a stop during setup (model discovery, calibration) is honoured at once and still gives a
report; a second Ctrl-C skips the grace period."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from loadgen.metrics import LoadgenCollector
from loadgen.report import render
from loadgen.runner import Run
from loadgen.scenario import Scenario
from tests.loadgen.test_cli_api import wait_state
from tests.support.procs import free_port, killed_at_exit, running


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A server that accepts connections (in the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_stop_during_model_discovery_is_immediate_and_reported(black_hole):
    scenario = Scenario.build(None, {
        "url": black_hole, "concurrency": "1,2", "sweep": True, "slo": ["ttft<=1s"], "requests": 4,
        "grace": "5s", "metrics_address": "none", "progress": "none",
    })  # fmt: skip
    run = Run(scenario, LoadgenCollector())

    async def main() -> tuple[dict, float]:
        task = asyncio.create_task(run.execute())
        await asyncio.sleep(0.3)
        assert run.model is None  # still discovering (the server never answers)
        stopped_at = time.monotonic()
        run.stop()
        report = await task
        return report, time.monotonic() - stopped_at

    report, took = asyncio.run(main())
    assert took < 1.0
    assert report["state"] == "finished" and report["stopped_early"] is True
    assert report["phases"] == [] and report["totals"]["sent"] == 0
    assert report["sweep"]["capacity"] is None and "No level was tested" in report["sweep"]["sentence"]
    assert "No level was tested" in render(report)


def loadgen_run(*args: str) -> contextlib.AbstractContextManager[subprocess.Popen]:
    """`loadgen run ARGS` for a with-block, killed at its end if still running."""
    return killed_at_exit(subprocess.Popen(
        [sys.executable, "-m", "loadgen", "run", "--progress", "none", "--metrics-address", "none", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ))  # fmt: skip


def test_sigint_during_calibration_exits_with_a_report(black_hole, tmp_path):
    # --model given: setup goes straight to calibration, whose probe never gets an answer
    report_path = tmp_path / "report.json"
    with loadgen_run("--url", black_hole, "--model", "m", "--concurrency", "1", "--requests", "3",
                     "--grace", "10s", "--output-json", str(report_path)) as process:  # fmt: skip
        time.sleep(1.5)
        signalled = time.monotonic()
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    assert time.monotonic() - signalled < 5
    assert process.returncode == 130, stderr
    assert "stopped during setup" in stderr and "Traceback" not in stderr
    report = json.loads(report_path.read_text())
    assert report["stopped_early"] is True and report["phases"] == []
    assert "=" * 78 in stdout


def test_a_second_sigint_skips_the_grace_period(scripted, tmp_path):
    # each request streams for ~10 s; the grace period (60 s) would let them finish
    report_path = tmp_path / "report.json"
    with loadgen_run(
        "--url", scripted.url, "--model", "scripted", "--concurrency", "2", "--soak", "--output-len", "200",
        "--extra-body", '{"mock": {"itl_ms": 50}}', "--grace", "60s", "--output-json", str(report_path),
    ) as process:  # fmt: skip
        time.sleep(2)
        process.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert process.poll() is None  # the first stop waits for in-flight requests
        signalled = time.monotonic()
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    assert time.monotonic() - signalled < 5, stderr
    assert process.returncode == 130
    requests = json.loads(report_path.read_text())["phases"][0]["requests"]
    assert requests["by_outcome"]["cancelled"] == 2 and requests["sent"] == requests["finished"] == 2
    assert "Time to First Token" not in stdout  # nothing succeeded, yet the report is printed
    assert "Errors by class" in stdout and "cancelled=2" in stdout


def test_api_stop_during_setup_finishes_the_run_with_a_report(black_hole, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "loadgen", "serve", "--listen-address", f"127.0.0.1:{port}"]
    with running(argv, f"{url}/healthz", tmp_path / "serve.log"):
        scenario = {"url": black_hole, "concurrency": 1, "requests": 2, "grace": "10s"}
        run_id = httpx.post(f"{url}/runs", json=scenario, timeout=10).json()["run_id"]
        time.sleep(0.5)
        assert httpx.get(f"{url}/runs/{run_id}", timeout=10).json()["state"] == "running"
        stopped_at = time.monotonic()
        assert httpx.post(f"{url}/runs/{run_id}/stop", timeout=10).status_code == 202
        done = wait_state(url, run_id, {"finished", "failed"}, timeout=5)
        assert time.monotonic() - stopped_at < 3
        assert done["state"] == "finished" and done["report"]["phases"] == []
        assert done["report"]["stopped_early"] is True
