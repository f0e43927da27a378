"""One worker of a pool (`--workers N`, workers.py): a process that runs its slice of the run and
reports to the parent, which merges the workers into one run.

    python -c 'from loadgen.worker import main; main()' FD LOOP LOG_LEVEL    (started by the parent)

FD is the worker's end of a socket pair; messages are pickled tuples (channel.py):

    parent -> worker   Start (first), ("prepared", Prepared), ("go",), ("next", bool), ("stop",), ("force",)
    worker -> parent   ("ready",)            setup done, waiting for ("go",)
                       ("warmed",)           its warm-up done and drained, waiting for ("go",)
                       ("tick", phase, metrics, stats, overload)   every TICK_S: the live series
                                             (RunMetrics), every STATS_EVERY ticks the current phase's stats
                                             (PhaseStats, else None), both cumulative so a late tick costs
                                             nothing, and an open loop's overload once detected
                       ("phase", stats)      a phase is done (final stats); waits for ("next", carry_on)
                       ("done", Finished)    the run is over
                       ("error", message)    the run could not go on (a dataset that cannot be read, ...)

A worker ignores SIGINT and SIGTERM (a terminal's Ctrl-C reaches the whole process group, a
container runtime's SIGTERM the whole cgroup): the parent decides, and relays its stop. When the
parent goes away (its end of the socket closes), the worker stops at once without a grace period.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import resource
import signal
import socket
import sys
from dataclasses import dataclass

from loadgen import eventloop, redact
from loadgen.channel import Channel, ChannelClosed
from loadgen.coordination import Prepared
from loadgen.errors import LoadgenError
from loadgen.runner import Run
from loadgen.scenario import Scenario
from loadgen.slicing import Slice
from loadgen.stats import PhaseStats

__all__ = ["TICK_S", "Finished", "Start", "main"]

log = logging.getLogger("loadgen.worker")
TICK_S = 0.25
STATS_EVERY = 4  # ticks: the current phase's stats go to the parent once a second


@dataclass(frozen=True)
class Start:
    scenario: Scenario
    part: Slice  # this worker's slice of the host's share
    secrets: tuple[str, ...]  # the parent's registered secrets (redact.py), scrubbed here too


@dataclass(frozen=True)
class Finished:
    """What the parent's report needs from a worker beyond its phases."""

    workload: dict[str, object] | None
    timing_path: str | None
    backoff_waits: int
    backoff_waited_s: float
    warmup: PhaseStats | None  # its slice of the warm-up (in no figure)
    cpu_s: float  # the worker's CPU time (user + system), start-up included
    sent_bytes: int  # what it sent the parent (ticks, phases): the cost of the channel


class ParentLink:
    """The worker's side of the channel: the run's coordinator (coordination.Coordinator) and its ticker."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.run: Run | None = None
        loop = asyncio.get_running_loop()
        self._prepared: asyncio.Future[Prepared | None] = loop.create_future()
        self._go = asyncio.Event()
        self._answer: asyncio.Future[bool] | None = None
        self.gone = False

    async def listen(self) -> None:
        try:
            while True:
                self._handle(await self.channel.recv())  # type: ignore[arg-type]
        except ChannelClosed:
            self._parent_gone()

    def _handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "prepared" and not self._prepared.done():
            self._prepared.set_result(message[1])
        elif kind == "go":
            self._go.set()
        elif kind == "next" and self._answer is not None and not self._answer.done():
            self._answer.set_result(bool(message[1]))
        elif kind == "stop" and self.run is None and not self._prepared.done():
            self._prepared.set_result(None)  # stopped before setup: nothing to run
        elif kind == "stop" and self.run is not None:
            self.run.stop()
        elif kind == "force" and self.run is not None:
            self.run.force()

    def _parent_gone(self) -> None:
        if self.gone:
            return
        self.gone = True
        log.warning("the parent process is gone: stopping at once")
        if not self._prepared.done():
            self._prepared.set_result(None)
        if self.run is not None:
            self.run.force()
        self._go.set()
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(False)

    def send(self, message: tuple) -> None:
        if not self.gone:
            self.channel.send(message)

    async def prepared(self) -> Prepared | None:
        return await self._prepared

    # -- coordination.Coordinator -----------------------------------------------------------------------

    async def ready(self) -> None:
        self.send(("ready",))
        await self._go.wait()
        if self.gone and self.run is not None:  # gone while this worker set up: no phase runs
            self.run.force()

    async def warmed(self) -> None:
        if self.gone:
            return
        self._go.clear()
        self.send(("warmed",))
        await self._go.wait()

    async def carry_on(self, stats: PhaseStats) -> bool:
        if self.gone:
            return False
        self._answer = asyncio.get_running_loop().create_future()
        self.send(("phase", stats))
        return await self._answer

    async def tick(self) -> None:
        for count in itertools.count(1):
            await asyncio.sleep(TICK_S)
            self.send_tick(with_stats=count % STATS_EVERY == 0)

    def send_tick(self, with_stats: bool = True) -> None:
        """The live series; every STATS_EVERY ticks the phase's stats too (their sketches are most of
        the bytes, and only the progress line and a lost worker's last figures need them)."""
        run = self.run
        if run is not None:
            overload = run.detector.overload if run.detector is not None else None
            stats = run.current if with_stats else None
            self.send(("tick", len(run.stats), run.metrics, stats, overload))


async def _work(sock: socket.socket) -> int:
    channel = await Channel.open(sock)
    try:
        start = await channel.recv()
    except ChannelClosed:
        return 1
    assert isinstance(start, Start)
    redact.register(*start.secrets)
    link = ParentLink(channel)
    listener = asyncio.create_task(link.listen())
    try:
        return await _run(link, start)
    except Exception as exc:  # a bug: said on stderr and to the parent, which fails the run
        log.exception("worker failed")
        link.send(("error", redact.scrub(f"{type(exc).__name__}: {exc}")))
        return 1
    finally:
        listener.cancel()
        await channel.drain()
        await channel.close()


async def _run(link: ParentLink, start: Start) -> int:
    prepared = await link.prepared()
    if prepared is None:
        return 1
    scenario = dataclasses.replace(
        start.scenario, output_json=None, metrics_address=None, progress="none", start_at=None
    )
    run = link.run = Run(scenario, None, part=start.part, prepared=prepared, coordinator=link)
    ticker = asyncio.create_task(link.tick())
    try:
        await run.execute()
    except LoadgenError as exc:
        link.send(("error", str(exc)))
        return 1
    finally:
        ticker.cancel()
    result = run.result()
    link.send_tick()
    finished = Finished(
        result.workload, result.timing_path, result.backoff_waits, result.backoff_waited_s, result.warmup,
        _cpu_s(), link.channel.bytes_sent,
    )  # fmt: skip
    link.send(("done", finished))
    return 0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides and relays (see above)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    fd, loop_kind, level = (sys.argv[1:] if argv is None else argv)[:3]
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [worker]: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if level == "info":  # the parent logs the run's progress; workers only what goes wrong
        logging.getLogger("loadgen").setLevel(logging.WARNING)
    redact.LogScrubber.install()
    sock = socket.socket(fileno=int(fd))
    return eventloop.run(_work(sock), loop_kind)
