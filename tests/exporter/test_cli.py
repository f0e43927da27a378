"""`python -m exporter` as a process: starts, serves, stops cleanly on SIGTERM, says why it cannot listen."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.procs import free_port, wait_http


def test_serves_until_sigterm_then_exits_0(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--listen-address", f"127.0.0.1:{port}", "--no-collector.gpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", process=process)
        body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert "host_memory_total_bytes" in body and "gpu_" not in body
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert f"serving http://127.0.0.1:{port}/metrics (collectors: host, http)" in output
    assert "shutting down" in output


def test_an_address_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "exporter", "--listen-address", f"127.0.0.1:{port}", "--no-collector.gpu"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
