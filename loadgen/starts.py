"""`--start-at`: the wall-clock instant at which a run's first phase starts, so that the shards of a
run on several hosts (each done with its own setup: model discovery, calibration) begin together.

Given as RFC 3339 with a zone (`2026-12-05T10:00:00Z`, `2026-12-05T11:00:00.5+01:00`) or as Unix
seconds (`1796464800`). A time without a zone is refused: hosts may not share one. An instant more
than MAX_WAIT_S ahead is refused (a typo would otherwise hold a run for days); one in the past starts
at once, with a warning that says how late (a pod scheduled after the others).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime

from loadgen.errors import ScenarioError

__all__ = ["MAX_WAIT_S", "parse_start_at", "wait_until"]

log = logging.getLogger("loadgen")
MAX_WAIT_S = 24 * 3600.0


def parse_start_at(value: object, now: float | None = None) -> float:
    """Unix seconds of a `--start-at` value."""
    text = str(value).strip()
    at = _unix_seconds(text) if not isinstance(value, bool) else None
    if at is None:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ScenarioError(
                f"bad start_at {value!r}: use RFC 3339 with a zone (2026-12-05T10:00:00Z) or Unix seconds"
            ) from None
        if moment.tzinfo is None:
            raise ScenarioError(f"start_at {value!r} has no time zone: add Z or an offset such as +01:00")
        at = moment.timestamp()
    now = time.time() if now is None else now
    if not at == at or at - now > MAX_WAIT_S:  # NaN, or too far ahead
        raise ScenarioError(f"start_at {value!r} is more than {MAX_WAIT_S / 3600:g} h ahead")
    return at


def _unix_seconds(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


async def wait_until(at: float) -> None:
    """Sleep until Unix time `at` (at once when it has passed, saying how late)."""
    delay = at - time.time()
    if delay <= 0:
        log.warning("start_at passed %.3f s ago: starting now", -delay)
        return
    log.info("waiting %.1f s for start_at", delay)
    while (delay := at - time.time()) > 0:  # in steps, so a wall clock stepped by NTP is followed
        await asyncio.sleep(min(delay, 1.0))
