"""When the background readers read: shortly before each scrape Prometheus is expected to make, never while
nobody scrapes.

Prometheus scrapes a target every `scrape_interval` at a fixed offset within it, so its next scrape is
foreseeable from its last ones. Each /metrics request is told to the Pacer (`scraped`). A reader (the
refresher pass, the NVML sampler) asks `due(lead, last)` when to start its next pass so that the pass is done
`lead` seconds after it starts, just before a foreseen scrape, and at most `max_age` old when that scrape
reads it:

- the period is the smallest interval seen twice in a row between the recent scrapes (so two Prometheus
  servers scraping with offsets, or one every 15 s, are each foreseen); every scrape within the last
  period foresees one a period later;
- a pass serves every foreseen scrape within `max_age` of its start, so scrapes more often than `max_age`
  get a pass every `max_age` at most, not one each;
- while scrapes come but no period is seen yet (the first ones, an irregular client), passes run every
  `max_age` as before;
- no scrape for IDLE_PERIODS periods (at least IDLE_SECONDS): no passes, until the next scrape.

What foresight misses (an unforeseen client, the first scrape after a quiet spell) the scrape makes up for
itself: registry.Exporter renews a snapshot older than `max_age` before answering. Costs, and why: the
refresher and sampler passes are most of the exporter's CPU on a GPU host (bench/RESULTS.md).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

MIN_PERIOD_SECONDS = 0.05
MAX_PERIOD_SECONDS = 600.0
IDLE_SECONDS = 30.0
IDLE_PERIODS = 3
HISTORY = 16  # scrapes remembered: enough for two scrapers' periods to show twice
JITTER_SECONDS = 0.05  # how late a foreseen scrape may come and still be served by the pass made for it


def tolerance(period: float) -> float:
    """How far apart two intervals may be and still be one period (Prometheus's own jitter is milliseconds;
    our HTTP server and a loaded host add some)."""
    return 0.02 + 0.05 * period


class Pacer:
    def __init__(self, max_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age = max_age
        self.clock = clock
        self._arrivals: deque[float] = deque(maxlen=HISTORY)
        self._count = 0  # scrapes told so far
        self._period: float | None = None
        self._lock = threading.Lock()
        self._scrape_came = threading.Condition(self._lock)

    # --- what the HTTP side tells -----------------------------------------------------------------------

    def scraped(self, at: float | None = None) -> None:
        """A /metrics request arrived (now, or at `at` on this Pacer's clock)."""
        with self._lock:
            self._arrivals.append(self.clock() if at is None else at)
            self._count += 1
            self._period = _period(list(self._arrivals))
            self._scrape_came.notify_all()

    # --- what readers ask -------------------------------------------------------------------------------

    @property
    def period(self) -> float | None:
        """The scrape interval seen, if any."""
        with self._lock:
            return self._period

    def active(self) -> bool:
        """Scrapes come: the last one is recent enough for another to be expected."""
        with self._lock:
            return self._active(self.clock())

    def due(self, lead: float, last: float | None, min_spacing: float = 0.0) -> float | None:
        """When (on this Pacer's clock) a reader should start its next pass, for a pass that takes `lead`
        seconds to be ready and a last pass that started at `last`, at most one every `min_spacing`;
        None while nobody scrapes."""
        with self._lock:
            now = self.clock()
            if not self._active(now):
                return None
            floor = now if last is None else max(now, last + min_spacing)
            period = self._period
            if period is None:  # scrapes, but no period yet: every 3/4 of the age bound, as a timer would
                return floor if last is None else max(floor, last + 0.75 * self.max_age)
            # The scrapes a pass serves: the one it was started `lead` before (give or take the scrape's
            # jitter), and any more within 90 % of the age bound after its start.
            reach = max(lead + JITTER_SECONDS, 0.9 * self.max_age)
            due = None
            for arrival in self._arrivals:
                if arrival < self._arrivals[-1] - period + tolerance(period):
                    continue  # an earlier scrape of a scraper that has scraped again since
                expected = arrival + period
                while expected <= now or (last is not None and expected - last <= reach):
                    expected += period  # gone by, or the last pass serves it
                due = expected - lead if due is None else min(due, expected - lead)
            return floor if due is None else max(floor, due)

    def wait(self, until: float | None, stop: threading.Event) -> None:
        """Sleep until `until`, or, when None (nobody scrapes), until the next scrape; `stop` ends it too."""
        with self._lock:
            seen = self._count
            while not stop.is_set():
                now = self.clock()
                if until is not None and now >= until:
                    return
                if until is None and self._count != seen:
                    return
                # `stop` is an Event of its own: wake() notifies, and no wait lasts more than a second
                self._scrape_came.wait(1.0 if until is None else min(1.0, until - now))

    def wake(self) -> None:
        """Let every waiting reader look at its `stop` now (they are stopping)."""
        with self._lock:
            self._scrape_came.notify_all()

    def _active(self, now: float) -> bool:
        if not self._arrivals:
            return False
        quiet = max(IDLE_SECONDS, IDLE_PERIODS * (self._period or 0.0))
        return now - self._arrivals[-1] <= quiet


def _period(arrivals: list[float]) -> float | None:
    """The smallest interval from the latest scrape back to an earlier one that the scrapes before repeat."""
    if len(arrivals) < 3:
        return None
    latest = arrivals[-1]
    for index in range(len(arrivals) - 2, 0, -1):
        period = latest - arrivals[index]
        if period < MIN_PERIOD_SECONDS:
            continue
        if period > MAX_PERIOD_SECONDS:
            return None
        before = arrivals[index] - period
        if any(abs(earlier - before) <= tolerance(period) for earlier in arrivals[:index]):
            return period
    return None


__all__ = ["Pacer"]
