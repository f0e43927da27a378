"""Start real processes on loopback and wait until they answer HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    last_error = "no attempt"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2.0).status_code < 500:
                return
            last_error = "5xx"
        except httpx.HTTPError as exc:
            last_error = repr(exc)
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last_error}")


@contextlib.contextmanager
def killed_at_exit(process: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """`process` for the block; killed when the block ends if still running, so a test that fails
    before it stops the process (a failed assertion, a timeout) leaves nothing behind."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@contextlib.contextmanager
def running(
    argv: Sequence[str],
    ready_url: str,
    log_path: Path,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
    own_session: bool = False,
) -> Iterator[subprocess.Popen]:
    """Run argv until the with-block ends; its output goes to log_path, shown when start-up fails.

    own_session: start it in a session of its own and stop the whole session at the end, for servers that
    start processes of their own (vLLM's engine core and workers) which must not outlive the test.
    """
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=own_session,
        )
        try:
            try:
                wait_http(ready_url, timeout=timeout, process=process)
            except (RuntimeError, TimeoutError) as exc:
                log.flush()
                tail = log_path.read_text(errors="replace")[-4000:]
                raise RuntimeError(f"{exc}\n--- {log_path} ---\n{tail}") from exc
            yield process
        finally:
            _stop(process, own_session)


def _stop(process: subprocess.Popen, own_session: bool) -> None:
    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig) if own_session else process.send_signal(sig)

    send(signal.SIGTERM)
    try:
        process.wait(timeout=10 if not own_session else 30)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait()
    if own_session:
        send(signal.SIGKILL)  # whatever the leader left behind in its session
