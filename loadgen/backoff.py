"""Waiting when the server says so: connect back-off, and Retry-After.

ConnectBackoff: when connections fail one after another (the server is down, or refuses), new
requests wait before they try: nothing after the first failure, then 50 ms, doubling up to 2 s; any
response at all (whatever its status) ends it. The wait happens before a request takes a connection
slot, so it is dispatch delay, never latency, and the report counts the waits. A server that is down
gets tens of attempts per second instead of tens of thousands.

retry_after_s: the delay a 429 or 503 response asks for in its Retry-After header (delta-seconds or
an HTTP date), capped at a day; None when there is none or it cannot be read.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from time import monotonic

__all__ = ["ConnectBackoff", "retry_after_s"]

MAX_RETRY_AFTER_S = 86400.0


class ConnectBackoff:
    def __init__(self, first_s: float = 0.05, most_s: float = 2.0) -> None:
        self.first_s, self.most_s = first_s, most_s
        self._delay = 0.0  # the next pause; 0 until a second failure in a row
        self._failures = 0  # connect failures since the last response
        self.until = 0.0  # time.monotonic() before which new requests wait; 0: none
        self.waits = 0  # requests that waited
        self.waited_s = 0.0  # their waits, summed

    def failed(self) -> None:
        """A connect failed: the next requests wait (from the second failure in a row)."""
        self._failures += 1
        if self._failures > 1:
            self._delay = min(self.most_s, max(self.first_s, self._delay * 2))
            self.until = max(self.until, monotonic() + self._delay)

    def answered(self) -> None:
        """A response came: the server is there, no more waiting."""
        if self._failures:
            self._failures, self._delay, self.until = 0, 0.0, 0.0

    async def wait(self) -> None:
        """Wait out the back-off, if any (callers skip the call while `until` is 0)."""
        pause = self.until - monotonic()
        if pause > 0:
            self.waits += 1
            self.waited_s += pause
            await asyncio.sleep(pause)


def retry_after_s(value: str | None) -> float | None:
    """Seconds from a Retry-After header: `120`, or `Fri, 31 Dec 1999 23:59:59 GMT`."""
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():  # 1*DIGIT; str.isdigit alone takes '²' (a header is latin-1)
        seconds = float(text)
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)
