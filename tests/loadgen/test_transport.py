"""The raw HTTP/1.1 pool: chunked framing however the reads split it, sockets never leak, the
open-file limit is raised."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import subprocess
import sys

import httpx
import pytest

from loadgen import transport
from loadgen.connection import Connection

CHUNKED = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n1A\r\n" + b"z" * 26 + b"\r\n0\r\nx-trailer: 1\r\n\r\n"


class _Reads:
    """A connection that delivers `data` in the given pieces, one per fill()."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.buffer = bytearray()
        self.pieces = list(pieces)

    async def fill(self, *_args: object) -> bool:
        if not self.pieces:
            return False
        self.buffer += self.pieces.pop(0)
        return True


def _dechunk(pieces: list[bytes]) -> tuple[bytes, bool, bytes]:
    """(body, complete, bytes left on the connection) of a chunked response read in `pieces`."""
    connection = _Reads(pieces[1:])
    connection.buffer += pieces[0]
    body = transport._Body(None, connection, None, None, None, True, True)  # type: ignore[arg-type]

    async def read() -> bytes:
        return b"".join([piece async for piece in body])

    data = asyncio.run(read())
    return data, body._complete, bytes(connection.buffer)


def test_chunked_bodies_come_out_whole_however_the_reads_split_them():
    expected = b"hello, world" + b"z" * 26
    assert _dechunk([CHUNKED + b"NEXT"]) == (expected, True, b"NEXT")  # the next response stays
    for cut in range(1, len(CHUNKED)):
        assert _dechunk([CHUNKED[:cut], CHUNKED[cut:]]) == (expected, True, b""), cut
    assert _dechunk([bytes([byte]) for byte in CHUNKED]) == (expected, True, b"")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"zz\r\nhello\r\n0\r\n\r\n", "bad chunk size"),
        (b"-5\r\nhello\r\n0\r\n\r\n", "negative chunk size"),
        (b"5\r\nhelloXX0\r\n\r\n", "not followed by CRLF"),
    ],
)
def test_bad_chunked_framing_is_malformed(body: bytes, message: str):
    with pytest.raises(transport.MalformedResponse, match=message):
        _dechunk([body])


def test_a_chunked_body_cut_short_is_a_protocol_error():
    with pytest.raises(httpx.RemoteProtocolError, match="closed before the response ended"):
        _dechunk([CHUNKED[:20]])


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
        task = asyncio.create_task(Connection.open("127.0.0.1", 9, None, None, scratch))
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
