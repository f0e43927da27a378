"""A run over several processes of one host (`--workers N`): the parent and its workers.

One process drives one core. With `--workers N` the parent starts N worker processes (worker.py),
each running a slice of the run (slicing.py: users, arrivals and data items dealt among them), and
stays the run as people see it: one /metrics, one progress line, one control API, one report, one
exit status, exactly those of a single process given the same requests:

- Setup happens once, in the parent (model discovery, calibration, the --extra-body check), so the
  server sees the setup requests of one run; the workers get its findings (coordination.Prepared).
- Phases start together (after every worker's setup, and --start-at) and end together: each worker
  reports its final stats of a phase and waits; the parent merges them (counters add, distributions
  merge bucket by bucket: stats.PhaseStats.merge) and decides whether the next phase runs (a
  sweep's SLO verdict on the merged stats), so a sweep stops where one process would.
- Live figures: every worker sends its cumulative series and current phase stats every
  worker.TICK_S (0.25 s; the phase stats once a second); /metrics and the progress line show their
  sum, at most that much behind.
  Cumulative snapshots rather than per-request records keep the parent's work independent of the
  request rate: the workers aggregate as one process would, in parallel (bench/RESULTS.md has the
  cost).
- Stop: SIGINT/SIGTERM or POST /runs/{id}/stop reach the parent, which relays them; the workers
  themselves ignore signals. A worker that ends before the run (killed, crashed) fails the run: the
  report says which and how, and what it did since its last tick is not counted.
- Per-request JSONL: the parent creates the file and every worker appends whole lines (jsonl.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from loadgen import progress, redact
from loadgen import report as reports
from loadgen.channel import Channel, ChannelClosed
from loadgen.coordination import Prepared
from loadgen.errors import LoadgenError
from loadgen.jsonl import JsonlWriter
from loadgen.metrics import LoadgenCollector, RunMetrics
from loadgen.overload import Overload
from loadgen.result import RunResult
from loadgen.runner import Run
from loadgen.scenario import Scenario
from loadgen.schedules import Phase
from loadgen.slicing import Slice
from loadgen.starts import wait_until
from loadgen.stats import PhaseStats, merged_overload
from loadgen.warmup import WARMUP
from loadgen.worker import Finished, Start

__all__ = ["AnyRun", "WorkerError", "WorkerPool", "make_run"]

log = logging.getLogger("loadgen")
EXIT_WAIT_S = 10.0  # a worker gets this long to exit after its last message, then is killed
PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])
# not `-m loadgen.worker`: its classes would be __main__'s, which the parent cannot unpickle
WORKER_MAIN = "import sys; from loadgen.worker import main; sys.exit(main())"


class WorkerError(LoadgenError):
    """A worker could not run (its setup failed: a dataset or tokenizer it cannot read, ...)."""


def make_run(
    scenario: Scenario, collector: LoadgenCollector | None = None, event_loop: str = "auto"
) -> AnyRun:
    """A Run in this process, or a WorkerPool with `scenario.workers` processes."""
    if scenario.workers == 1:
        return Run(scenario, collector)
    return WorkerPool(scenario, collector, event_loop)


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen
    channel: Channel
    listener: asyncio.Task | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    warmed: asyncio.Event = field(default_factory=asyncio.Event)  # its warm-up done and drained
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # done, error, or gone
    phases: list[PhaseStats] = field(default_factory=list)  # final stats of each phase it ran
    phase_done: asyncio.Event = field(default_factory=asyncio.Event)
    tick_phase: int = -1  # the phase its last tick was in
    metrics: RunMetrics | None = None
    current: PhaseStats | None = None
    overload: Overload | None = None
    finished: Finished | None = None
    error: str | None = None  # why it ended early
    said: bool = False  # the error is the worker's own message (its setup failed), not its loss

    def send(self, message: object) -> None:
        if not self.ended.is_set():
            self.channel.send(message)


class WorkerPool:
    """The parent of `scenario.workers` processes: the same face as runner.Run (execute, stop, force,
    state, metrics, progress_line, report), so the command line and the control API use either."""

    def __init__(
        self, scenario: Scenario, collector: LoadgenCollector | None = None, event_loop: str = "auto"
    ) -> None:
        self.scenario = scenario
        self.run_id = scenario.run_id
        self.collector = collector
        self.event_loop = event_loop
        self.state = "pending"
        self.error: str | None = None
        self.stats: list[PhaseStats] = []
        self.report: dict | None = None
        self._setup = Run(scenario)  # asks the server what setup asks, once (Run.prepare)
        self.clock = self._setup.clock
        self.started_at = self.clock.unix_s
        self.metrics = self._setup.metrics
        self._workers: list[_Worker] = []
        self._stop = asyncio.Event()
        self._forced = False
        self._phase = -1

    # -- control -------------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        if not self._stop.is_set():
            log.info("stopping: no new requests; in-flight ones get %gs", self.scenario.grace_s)
            self._stop.set()
            if self.state == "running":
                self.state = "stopping"
            self._halt()

    def _halt(self) -> None:
        """Every worker stops issuing (a stop, or a worker lost: then the run fails, exit status 1)."""
        for worker in self._workers:
            worker.send(("stop",))

    def force(self) -> None:
        self.stop()
        if not self._forced:
            log.warning("stopping now: in-flight requests are cancelled without waiting")
            self._forced = True
            for worker in self._workers:
                worker.send(("force",))

    @property
    def current(self) -> PhaseStats | None:
        """The phase under way, merged from the workers' last ticks."""
        parts = [w.current for w in self._workers if w.current is not None and w.tick_phase == self._phase]
        return PhaseStats.merged(parts) if parts else None

    # what progress.line reads of a run
    @property
    def phases(self) -> tuple[Phase, ...]:
        return self.scenario.phases

    @property
    def phase_index(self) -> int:
        return self._phase + 1

    @property
    def detector(self) -> SimpleNamespace:
        """The workers' live overload findings of the phase under way, merged."""
        found = None
        for worker in self._workers:
            if worker.tick_phase == self._phase:
                found = merged_overload(found, worker.overload)
        return SimpleNamespace(overload=found)

    def progress_line(self) -> str:
        return progress.line(self)

    # -- the run -------------------------------------------------------------------------------

    async def execute(self) -> dict:
        self.state = "running"
        scenario = self.scenario
        try:
            if scenario.output_jsonl:
                JsonlWriter(scenario.output_jsonl).close()  # created (emptied) here; workers append
            await self._start_workers()
            prepared = await self._prepare()
            if prepared is not None and await self._all_ready(prepared):
                await self._run_phases()
        except LoadgenError as exc:
            self.state, self.error = "failed", str(exc)
            self._halt()
            raise
        finally:
            self.metrics.phase = "done"
            self.metrics.target_concurrency = self.metrics.target_rate = None
            await self._end_workers()
        self.state = "finished"  # with its report at once: GET /runs never shows one without the other
        self.report = reports.build(self.result())
        reports.write(self.report, scenario.output_json)
        return self.report

    async def _start_workers(self) -> None:
        count = self.scenario.workers
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, (PACKAGE_ROOT, os.environ.get("PYTHONPATH")))),
        }
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
        for index in range(count):
            mine, theirs = socket.socketpair()
            process = subprocess.Popen(
                [sys.executable, "-c", WORKER_MAIN, str(theirs.fileno()), self.event_loop, level],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env,
            )  # fmt: skip
            theirs.close()
            worker = _Worker(index, process, await Channel.open(mine))
            self._workers.append(worker)
            worker.send(Start(self.scenario, Slice(index, count), redact.registered()))
            worker.listener = asyncio.create_task(self._listen(worker))
        log.info("%d workers started (pids %s)", count, ", ".join(str(w.process.pid) for w in self._workers))

    async def _prepare(self) -> Prepared | None:
        """The setup requests, unless a stop comes first (then None)."""
        task = asyncio.create_task(self._setup.prepare())
        stopped = asyncio.create_task(self._stop.wait())
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
            log.info("stopped during setup (model discovery, calibration): no phase was run")
            return None
        prepared = task.result()
        self.metrics.info["model"] = redact.scrub(prepared.model or "")
        self.metrics.info["shape"] = self.scenario.shape
        if self.collector is not None:
            self.collector.add(self.metrics)
        return prepared

    async def _all_ready(self, prepared: Prepared) -> bool:
        for worker in self._workers:
            worker.send(("prepared", prepared))
        await self._until(lambda w: w.ready)
        self._raise_for_errors()
        if any(w.ended.is_set() for w in self._workers):  # lost during setup: the run fails
            return False
        if self.scenario.start_at is not None and not self.stopping:
            waiting = asyncio.create_task(wait_until(self.scenario.start_at))
            stopped = asyncio.create_task(self._stop.wait())
            await asyncio.wait({waiting, stopped}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            stopped.cancel()
        if self.stopping:
            log.info("stopped before the first phase started: no phase was run")
            return False
        for worker in self._workers:
            worker.send(("go",))
        return True

    async def _run_phases(self) -> None:
        if self.scenario.warmup is not None:  # the measured phases start when every warm-up has drained
            self.metrics.phase = WARMUP
            await self._until(lambda w: w.warmed)
            for worker in self._workers:
                worker.send(("go",))
        for number, phase in enumerate(self.scenario.phases):
            self._phase = number
            self.metrics.phase = phase.name
            log.info("phase %s: starting", phase.name)
            await self._until(lambda w: w.phase_done)
            parts = [w.phases[number] for w in self._workers if len(w.phases) > number]
            parts += [  # a worker that ended during the phase: what its last tick had
                w.current for w in self._workers
                if len(w.phases) <= number and w.error and w.current and w.tick_phase == number
            ]  # fmt: skip
            if not parts:  # every worker ended before this phase (a stop during setup)
                return
            stats = PhaseStats.merged(parts)
            self.stats.append(stats)
            log.info(
                "phase %s: %d sent, %d succeeded, %d failed in %.1fs",
                phase.name, stats.sent, stats.outcomes["success"], stats.failed, stats.duration_s,
            )  # fmt: skip
            carry_on = not self.stopping and not any(w.error for w in self._workers)
            missed = self.scenario.sweep and not stats.slos_met(self.scenario.slo_percentile)
            if carry_on and missed and self.scenario.shard.whole:  # shards run every level (runner)
                log.info("sweep: %s misses the SLOs; stopping here", phase.name)
                carry_on = False
            for worker in self._workers:
                worker.phase_done.clear()
                worker.send(("next", carry_on))
            if not carry_on:
                return

    async def _until(self, event_of: Callable[[_Worker], asyncio.Event]) -> None:
        """Until every worker has set the event (or ended)."""
        waits = [asyncio.create_task(_either(event_of(w), w.ended)) for w in self._workers]
        await asyncio.wait(waits)

    def _raise_for_errors(self) -> None:
        """A worker whose setup failed says why (a dataset it cannot read): a configuration error,
        as in one process."""
        errors = [w.error for w in self._workers if w.said and not w.ready.is_set()]
        if errors:
            raise WorkerError(errors[0])

    async def _end_workers(self) -> None:
        """Every worker's last message, then its exit (killed after EXIT_WAIT_S)."""
        waits = [asyncio.create_task(w.ended.wait()) for w in self._workers]
        if waits:
            await asyncio.wait(waits, timeout=EXIT_WAIT_S + self.scenario.grace_s)
        for worker in self._workers:
            if worker.listener is not None:
                worker.listener.cancel()
            await worker.channel.close()
            try:
                await asyncio.to_thread(worker.process.wait, EXIT_WAIT_S)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                await asyncio.to_thread(worker.process.wait)
            if worker.finished is None and not worker.said:
                worker.error = _exit_reason(worker.process.returncode)

    # -- messages from the workers ----------------------------------------------------------------

    async def _listen(self, worker: _Worker) -> None:
        try:
            while True:
                self._handle(worker, await worker.channel.recv())  # type: ignore[arg-type]
        except ChannelClosed:
            if not worker.ended.is_set():
                worker.error = "its connection closed before the run ended"  # how: when it has exited
                worker.ended.set()
                if not self.stopping:
                    log.error("worker %d ended before the run did; stopping the others", worker.index)
                    self._halt()

    def _handle(self, worker: _Worker, message: tuple) -> None:
        kind = message[0]
        if kind == "tick":
            _, phase, worker.metrics, current, worker.overload = message
            if current is not None or phase != worker.tick_phase:
                worker.tick_phase, worker.current = phase, current
            self.metrics.set_sum([w.metrics for w in self._workers if w.metrics is not None])
        elif kind == "ready":
            worker.ready.set()
        elif kind == "warmed":
            worker.warmed.set()
        elif kind == "phase":
            worker.phases.append(message[1])
            worker.phase_done.set()
        elif kind == "done":
            worker.finished = message[1]
            worker.ended.set()
        elif kind == "error":
            worker.error, worker.said = str(message[1]), True
            worker.ended.set()
            if not self.stopping:
                log.error("worker %d: %s", worker.index, worker.error)
                self._halt()

    # -- the result ------------------------------------------------------------------------------

    def _cost(self, finished: list[Finished]) -> dict[str, object]:
        """What running as a pool cost: the parent's CPU (setup, merging, /metrics) beside the workers'
        (sending included), and the bytes the workers sent it."""
        return {
            "parent_cpu_s": _cpu_s(),
            "worker_cpu_s": [f.cpu_s for f in finished],
            "sent_bytes": sum(f.sent_bytes for f in finished),
        }

    def result(self) -> RunResult:
        setup = self._setup.result()
        finished = [w.finished for w in self._workers if w.finished is not None]
        failures = tuple(
            f"{w.index} (pid {w.process.pid}): {w.error}"
            for w in self._workers
            if w.error and w.finished is None
        )
        return RunResult(
            run_id=self.run_id, scenario=self.scenario, model=setup.model, model_note=setup.model_note,
            started_at=self.started_at, state=self.state, stopped_early=self.stopping,
            workload=finished[0].workload if finished else None,
            stats=tuple(self.stats), setup=setup.setup, dropped_body_fields=setup.dropped_body_fields,
            timing_path=finished[0].timing_path if finished else None,
            backoff_waits=sum(f.backoff_waits for f in finished),
            backoff_waited_s=sum(f.backoff_waited_s for f in finished),
            clock=self.clock, workers=self.scenario.workers, worker_failures=failures,
            pool=self._cost(finished),
            warmup=PhaseStats.merged(warm) if (warm := [f.warmup for f in finished if f.warmup]) else None,
        )  # fmt: skip


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _either(first: asyncio.Event, second: asyncio.Event) -> None:
    waits = [asyncio.create_task(first.wait()), asyncio.create_task(second.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for wait in waits:
        wait.cancel()


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        return f"killed by signal {-code} before the run ended"
    return f"exited with status {code} before the run ended"


AnyRun = Run | WorkerPool  # what the command line and the control API drive
