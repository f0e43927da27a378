"""A run's stop signals, shared by everything that waits: `stop` (no new requests; in-flight ones
get the grace period) and `force` (a second stop: no grace period)."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["Stops"]


class Stops:
    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.forced = asyncio.Event()

    @property
    def stopping(self) -> bool:
        return self.requested.is_set()

    async def sleep(self, seconds: float) -> None:
        """Sleep for `seconds`, cut short by a stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.requested.wait(), seconds)
