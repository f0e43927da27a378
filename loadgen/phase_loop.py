"""One phase's requests: who sends them and when, until the phase's duration or request budget is used.

- closed loop: users 0, 1, ... up to the phase's (ramping) concurrency, each sending its next request
  when its last one is answered (after its think time, or the wait a Retry-After asked for);
- open loop: arrivals on the phase's seeded schedule, or a trace's own timeline, each sent when due
  whether or not earlier ones were answered (waiting for a slot under --max-concurrency), while an
  overload detector reads the backlog once a second.

Each slice of a sharded or pooled run sends only what it owns (slicing.py). The requests still in flight
when issuing ends finish and count for the phase; after a stop (or a sweep's cut of an overloaded phase)
they get the grace period, then are cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Coroutine, Iterator
from time import perf_counter_ns
from typing import Any

from loadgen.metrics import RunMetrics
from loadgen.overload import OverloadDetector, Reading
from loadgen.scenario import Scenario
from loadgen.schedules import Phase, RequestBudget, arrival_offsets
from loadgen.sending import FOREVER_NS, Sender
from loadgen.slicing import Slice
from loadgen.stats import PhaseStats
from loadgen.stops import Stops
from loadgen.traces import Trace
from loadgen.workloads import WorkItem, Workload

__all__ = ["PhaseLoop"]

log = logging.getLogger("loadgen")


class PhaseLoop:
    """Runs phases one at a time for one slice of a run. `items`: this slice's workload (of a trace:
    this slice's requests, with their due times)."""

    def __init__(
        self,
        scenario: Scenario,
        part: Slice,
        sender: Sender,
        metrics: RunMetrics,
        stops: Stops,
        items: Workload,
    ) -> None:
        self.scenario = scenario
        self.slice = part
        self.sender = sender
        self.metrics = metrics
        self.stops = stops
        self.items = items
        self.detector: OverloadDetector | None = None  # the open-loop phase running now
        self._in_flight: set[asyncio.Task] = set()
        self._issuer: asyncio.Task | None = None
        self._cut = asyncio.Event()  # a sweep ends an overloaded phase early: no new requests, grace, cancel

    def stop_issuing(self) -> None:
        if self._issuer is not None:
            self._issuer.cancel()

    async def run(self, phase: Phase, stats: PhaseStats, schedule: int) -> None:
        """The phase, to its last response (`schedule`: which seeded arrival schedule an open loop draws)."""
        self.metrics.target_concurrency = self.slice.users(phase.level) if phase.closed else None
        self.metrics.target_rate = None if phase.closed else phase.level / self.slice.count
        stats.start_ns = stats.end_ns = perf_counter_ns()
        deadline = stats.start_ns + (
            int(phase.duration_s * 1e9) if math.isfinite(phase.duration_s) else FOREVER_NS
        )
        self._cut.clear()
        dispersion = 1 / phase.burstiness if phase.arrival == "gamma" else 1.0  # the arrivals' noise
        self.detector = None if phase.closed else OverloadDetector(dispersion=dispersion)
        observer = asyncio.create_task(self._observe(phase, stats)) if self.detector else None
        issue = (
            self._issue_closed(phase, stats, deadline)
            if phase.closed
            else self._issue_open(phase, stats, deadline, schedule)
        )
        self._issuer = asyncio.create_task(issue)
        await asyncio.wait([self._issuer])
        self._issuer = None
        await self._drain()
        if observer is not None:
            observer.cancel()
            await asyncio.gather(observer, return_exceptions=True)
        stats.interrupted = self.stops.stopping
        stats.overload = self.detector.overload if self.detector else None

    # -- issuing -------------------------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task:
        task = asyncio.create_task(coroutine)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        return task

    async def _issue_closed(self, phase: Phase, stats: PhaseStats, deadline: int) -> None:
        """Users 0, 1, ... up to the phase's (ramping) concurrency: this slice's own (slicing.py)."""
        budget = RequestBudget(None if phase.max_requests is None else self.slice.share(phase.max_requests))
        users = 0  # the next user number of the whole run to start (or to leave to another slice)
        start = stats.start_ns

        async def user(index: int) -> None:
            while not self.stops.stopping and budget.take():
                now = perf_counter_ns()
                if now >= deadline or index >= phase.target_at((now - start) * 1e-9):
                    budget.give_back()
                    return
                record = await self.sender.session(self.items.next(), now, stats)
                if record.retry_after_s and self.scenario.honor_retry_after and not budget.exhausted:
                    await self._retry_after(record.retry_after_s, deadline, stats)
                await self.sender.think(deadline)

        while not self.stops.stopping:
            now = perf_counter_ns()
            wanted = phase.target_at((now - start) * 1e-9)
            target = max(1, math.floor(wanted))
            self.metrics.target_concurrency = wanted if self.slice.whole else self.slice.users(wanted)
            while users < target:
                if self.slice.owns(users):
                    self._spawn(user(users))
                users += 1
            if phase.ramp_to is None or now >= deadline or budget.exhausted:
                return
            await asyncio.sleep(min(0.05, (deadline - now) * 1e-9))

    async def _issue_open(self, phase: Phase, stats: PhaseStats, deadline: int, schedule: int) -> None:
        """The phase's arrival schedule (its own seeded generator, the same in every slice), dealt:
        arrival a goes out only from the slice that owns it (slicing.py); a trace holds only this slice's
        requests, each with its index in the segment (traces.py)."""
        cap = phase.max_concurrency
        slots = asyncio.Semaphore(self.slice.share(cap)) if cap else None
        start = stats.start_ns
        timeline: Iterator[tuple[int, float, WorkItem | None]]
        if phase.replay:  # the trace says when, and what: this slice's requests of it
            trace = self.items
            assert isinstance(trace, Trace)
            timeline = trace.arrivals(phase.max_requests, (deadline - start) * 1e-9)
        else:  # the phase's own seeded schedule, the same in every slice
            arrivals = random.Random(f"{self.scenario.seed}:arrivals:{schedule}")
            offsets = enumerate(arrival_offsets(phase, arrivals))
            timeline = ((issued, offset, None) for issued, offset in offsets if self.slice.owns(issued))
        for issued, offset, item in timeline:
            due = start + int(offset * 1e9)
            if due >= deadline or (phase.max_requests is not None and issued >= phase.max_requests):
                return
            await _sleep_until(due)
            if phase.ramp_to is not None:
                self.metrics.target_rate = phase.target_at(offset) / self.slice.count
            self._spawn(self._arrival(item or self.items.next(), due, stats, slots))

    async def _arrival(
        self, item: WorkItem, due: int, stats: PhaseStats, slots: asyncio.Semaphore | None
    ) -> None:
        if slots is None:
            await self.sender.session(item, due, stats)
            return
        async with slots:
            if not self.stops.stopping:  # arrivals still queued for a slot when a stop came are never sent
                await self.sender.session(item, due, stats)

    async def _retry_after(self, seconds: float, deadline: int, stats: PhaseStats) -> None:
        """Closed loop with --honor-retry-after: the user waits as the server asked before its next
        request (until the phase ends or a stop comes at the latest). The open loop never waits:
        its schedule is the experiment, so throttled requests are only counted."""
        pause = min(seconds, (deadline - perf_counter_ns()) * 1e-9)
        if pause <= 0:
            return
        began = perf_counter_ns()
        await self.stops.sleep(pause)
        stats.retry_after_waited_s += (perf_counter_ns() - began) * 1e-9

    # -- the end of a phase ----------------------------------------------------------------------

    async def _drain(self) -> None:
        """Wait for in-flight requests; after a stop (or a sweep's cut of an overloaded phase), only
        for the grace period, then cancel them."""
        while self._in_flight:
            pending = set(self._in_flight)
            ended = {asyncio.create_task(self.stops.requested.wait()), asyncio.create_task(self._cut.wait())}
            await asyncio.wait(pending | ended, return_when=asyncio.FIRST_COMPLETED)
            for task in ended:
                task.cancel()
            if self.stops.stopping or self._cut.is_set():
                await self._grace()
                for task in list(self._in_flight):
                    task.cancel()
                if self._in_flight:
                    await asyncio.wait(set(self._in_flight))
                return

    async def _grace(self) -> None:
        """Wait for in-flight requests for the grace period, or until a forced stop."""
        if not self._in_flight or self.stops.forced.is_set():
            return
        finished = asyncio.create_task(asyncio.wait(set(self._in_flight)))
        forced = asyncio.create_task(self.stops.forced.wait())
        try:
            await asyncio.wait(
                {finished, forced}, timeout=self.scenario.grace_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            finished.cancel()  # cancelling the wait leaves the requests themselves alone
            forced.cancel()

    async def _observe(self, phase: Phase, stats: PhaseStats) -> None:
        """Once a second, an open loop's completions and backlog (arrivals not yet answered, waiting
        for a slot included) go to the overload detector; the first detection is logged."""
        assert self.detector is not None
        while True:
            await asyncio.sleep(1.0)
            if self._issuer is None or self._issuer.done():
                return  # arrivals have ended: what drains now says nothing about the offered rate
            elapsed = (perf_counter_ns() - stats.start_ns) * 1e-9
            answered = stats.finished - stats.outcomes["cancelled"]
            offered = phase.target_at(elapsed) / self.slice.count  # this slice's part of the arrivals
            reading = Reading(elapsed, answered, len(self._in_flight), offered)
            known = self.detector.overload is not None
            overload = self.detector.add(reading, stats.dist["e2e"].percentile(10))
            if overload is not None and not known:
                log.warning("phase %s: %s", phase.name, overload.sentence())
                if self.scenario.sweep:  # the verdict is in; more arrivals would only grow the queue
                    log.info("sweep: %s is past saturation; ending it (grace %gs)", phase.name,
                             self.scenario.grace_s)  # fmt: skip
                    self._cut.set()
                    self.stop_issuing()


async def _sleep_until(due_ns: int) -> None:
    """Sleep until a perf_counter instant (the event loop's timers fire up to ~1 ms late: epoll's
    timeout is in milliseconds; dispatch delay measures what that costs). Spinning for the last
    millisecond was tried: on a shared 2-core machine it took CPU from everything else and made the
    tail worse."""
    delay = (due_ns - perf_counter_ns()) * 1e-9
    await asyncio.sleep(delay if delay > 0 else 0)
