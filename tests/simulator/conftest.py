"""Start a real simulator process on loopback for a test."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.procs import free_port, running


@contextlib.contextmanager
def simulator(tmp_path: Path, *args: str) -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port", str(port), *args]
    with running(argv, f"http://127.0.0.1:{port}/health", tmp_path / f"simulator-{port}.log"):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def start_simulator(tmp_path: Path) -> Iterator[Callable[..., str]]:
    with contextlib.ExitStack() as stack:
        yield lambda *args: stack.enter_context(simulator(tmp_path, *args))


def sse_events(response: httpx.Response) -> list[str]:
    """The data payloads of an SSE stream, in order."""
    return [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]
