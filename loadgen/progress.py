"""The live progress line: redrawn on a terminal, a log line every 10 s otherwise."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import IO

from loadgen import redact

__all__ = ["show_progress"]


async def show_progress(
    line_of: Callable[[], str], mode: str, stream: IO[str] = sys.stderr, interval: float | None = None
) -> None:
    """Write `line_of()` until cancelled: a live line for people at a terminal (every 0.5 s), plain
    timestamped lines otherwise (every 10 s); `mode` is --progress (auto, tty, plain, none)."""
    if mode == "none":
        return
    tty = mode == "tty" or (mode == "auto" and stream.isatty())
    interval = interval or (0.5 if tty else 10.0)
    write: Callable[[str], object] = stream.write
    try:
        while True:
            await asyncio.sleep(interval)
            line = redact.scrub(line_of())
            write(f"\r\x1b[2K{line}" if tty else f"{time.strftime('%H:%M:%S')} {line}\n")
            stream.flush()
    except asyncio.CancelledError:
        if tty:
            write("\n")
        raise
