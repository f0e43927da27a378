"""The event loop a run uses: uvloop (a dependency on Linux and macOS), else asyncio's own.

uvloop runs the loop's own work (ready callbacks, timers, socket readiness) in C: on the 2-core bench
machine, 50 closed-loop streams against the fast mock, it gave 3-4 % more requests per second than
asyncio's loop at the same CPU (about 8,650 vs 8,350 requests/s, 0.118 vs 0.122 CPU s per 1,000
requests; bench/RESULTS.md). `--event-loop asyncio` opts out. The transport only uses calls both loops
offer (add_reader, sock_connect, sock_sendall, call_later), so kernel receive timestamps work the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from loadgen.errors import EventLoopError

KINDS = ("auto", "uvloop", "asyncio")
T = TypeVar("T")


def loop_factory(kind: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """A factory for asyncio.Runner: uvloop's for "uvloop" (and "auto" when installed), None for
    asyncio's default loop."""
    if kind not in KINDS:
        raise EventLoopError(f"event loop must be one of {', '.join(KINDS)}, not {kind!r}")
    if kind == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if kind == "uvloop":
            raise EventLoopError("uvloop is not installed (pip install uvloop)") from None
        return None
    return uvloop.new_event_loop


def run(coroutine: Coroutine[Any, Any, T], kind: str = "auto") -> T:
    """asyncio.run on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory(kind)) as runner:
        return runner.run(coroutine)


def running_kind() -> str:
    """Which loop runs the calling coroutine ("uvloop" or "asyncio"), for reports."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
