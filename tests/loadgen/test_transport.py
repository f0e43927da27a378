"""The raw HTTP/1.1 pool's resource handling: sockets never leak, the open-file limit is raised."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import subprocess
import sys

from loadgen import transport


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_connect_cancelled_midway_closes_its_socket():
    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        started = asyncio.Event()

        async def never_connects(sock: socket.socket, address) -> None:
            started.set()
            await asyncio.Event().wait()

        loop.sock_connect = never_connects  # type: ignore[method-assign]
        scratch = memoryview(bytearray(1024))
        before = open_fds()
        task = asyncio.create_task(transport._Connection.open("127.0.0.1", 9, None, None, scratch))
        await started.wait()
        during = open_fds()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()
        return during - before, open_fds() - before

    opened, left = asyncio.run(main())
    assert opened == 1 and left == 0


def test_the_open_file_limit_is_raised_for_many_connections(scripted, tmp_path):
    # a soft limit of 128 open files, 200 concurrent streams: without raising it, EMFILE
    report = tmp_path / "report.json"

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    result = subprocess.run(
        [sys.executable, "-m", "loadgen", "run", "--url", scripted.url, "--model", "scripted",
         "--concurrency", "200", "--requests", "200", "--output-len", "2", "--metrics-address", "none",
         "--progress", "none", "--extra-body", '{"mock": {"ttft_ms": 500}}', "--output-json", str(report)],
        capture_output=True, text=True, timeout=120, preexec_fn=low_limit,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "raised the open-file limit from 128 to 264 for 200 connections" in result.stderr
    requests = json.loads(report.read_text())["phases"][0]["requests"]
    assert requests["succeeded"] == 200, requests
