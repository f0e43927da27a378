"""Runs a scenario: setup (run_setup.py), then phases in order (phase_loop.py), every request recorded
in the phase's stats, the live metrics and (optionally) the per-request JSONL file (sending.py).

A phase ends when its duration or request budget is used up; requests still in flight then finish
and count for that phase (the phase's duration runs to its last response), so each phase is a
benchmark of its own. stop() ends issuing at once, gives in-flight requests `grace` seconds, then
cancels them (counted as `cancelled`); the report is still written.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
from collections.abc import Coroutine
from functools import partial
from typing import Any, TypeVar

from loadgen import progress, run_setup
from loadgen import report as reports
from loadgen.bodies import PATHS, Bodies, compact_json
from loadgen.client import LoadClient
from loadgen.connection import raise_open_file_limit
from loadgen.coordination import Coordinator, Prepared
from loadgen.engine_counters import prefix_cache_delta, read_prefix_cache
from loadgen.engine_watch import EngineWatch
from loadgen.errors import LoadgenError
from loadgen.jsonl import JsonlWriter
from loadgen.metrics import LoadgenCollector, RunMetrics
from loadgen.overload import OverloadDetector
from loadgen.phase_loop import PhaseLoop
from loadgen.probes import SetupProber
from loadgen.result import Clock, RunResult
from loadgen.scenario import Scenario
from loadgen.schedules import Phase
from loadgen.sending import Sender
from loadgen.slicing import WHOLE, Slice, deal
from loadgen.starts import wait_until
from loadgen.stats import PhaseStats
from loadgen.stops import Stops
from loadgen.warmup import WARMUP
from loadgen.workloads import TextMaker, Tokenizer, Workload

__all__ = ["Run"]

log = logging.getLogger("loadgen")

T = TypeVar("T")


def _set_up(value: T | None, what: str) -> T:
    if value is None:
        raise RuntimeError(f"the run's {what} is used before setup made it")
    return value


class Run:
    def __init__(
        self,
        scenario: Scenario,
        collector: LoadgenCollector | None = None,
        *,
        part: Slice = WHOLE,
        prepared: Prepared | None = None,
        coordinator: Coordinator | None = None,
    ) -> None:
        """`part`: this process's slice of the host's share (a worker of a pool), `prepared`: setup
        done by that pool's parent, `coordinator`: the parent's say over phases (workers.py)."""
        self.scenario = scenario
        self.run_id = scenario.run_id
        self.slice = scenario.shard.within(part)  # what this process sends (slicing.py)
        self._part = part
        self._prepared = prepared
        self._coordinator = coordinator
        tags = scenario.shard.label("s") + part.label("w")  # request ids unique over shards and workers
        self._id_prefix = f"{self.run_id}-{tags}" if tags else self.run_id
        self.clock = Clock.now()
        self.phases: tuple[Phase, ...] = scenario.phases
        self.collector = collector
        self.state = "pending"
        self.error: str | None = None
        self.model_note: str | None = None  # why the requests name no model, when they do not
        self.stats: list[PhaseStats] = []
        self.warmup_stats: PhaseStats | None = None  # left out of every figure (warmup.py)
        self.current: PhaseStats | None = None
        self.report: dict | None = None
        self.started_at = self.clock.unix_s
        self.phase_index = 0  # 1-based index of the phase running now (progress: step k of N)
        self._bodies = Bodies(scenario, dict(scenario.extra_body))  # a refused field is dropped (probes.py)
        self.metrics = self._new_metrics("")
        self._stops = Stops()
        self._loop: PhaseLoop | None = None  # made by setup
        self._jsonl: JsonlWriter | None = None
        self._workload: Workload | None = None  # this slice's items (slicing.py)
        self._client: LoadClient | None = None
        self._tokenizer: Tokenizer | None = None
        self._rng = random.Random(scenario.seed)
        self._prober: SetupProber | None = None  # setup requests, reported apart from the phases
        # the engine's /metrics, read by one process of a run's pool (workers.py: worker 0)
        watch = scenario.engine_metrics and part.index == 0
        self._engine = EngineWatch(scenario.engine_metrics) if watch else None

    @property
    def model(self) -> str | None:
        """The model the requests name: the scenario's, or the one setup discovered."""
        return self._bodies.model

    @property
    def detector(self) -> OverloadDetector | None:
        """The overload detector of the open-loop phase running now."""
        return self._loop.detector if self._loop is not None else None

    # -- control -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop issuing; in-flight requests get the grace period, then are cancelled."""
        if not self._stops.stopping:
            log.info("stopping: no new requests; in-flight ones get %gs", self.scenario.grace_s)
            self._stops.requested.set()
            if self.state == "running":
                self.state = "stopping"
            if self._loop is not None:
                self._loop.stop_issuing()

    def force(self) -> None:
        """Stop without the grace period: in-flight requests are cancelled at once (a second
        Ctrl-C); the report is still built from what finished."""
        self.stop()
        if not self._stops.forced.is_set():
            log.warning("stopping now: in-flight requests are cancelled without waiting")
            self._stops.forced.set()

    @property
    def stopping(self) -> bool:
        return self._stops.stopping

    # -- the run -------------------------------------------------------------------------------

    async def execute(self) -> dict:
        self.state = "running"
        try:
            if not await self._unless_stopped(self._setup()):
                log.info("stopped during setup (model discovery, calibration): no phase was run")
            elif not await self._unless_stopped(self._ready()):
                log.info("stopped before the first phase started: no phase was run")
            gc.collect()
            gc.freeze()  # long-lived objects out of the collector's way, as vLLM's bench does
            warmup = self.scenario.warmup
            if warmup is not None and not self.stopping and self.phases:
                self.metrics.start_warmup()
                self.warmup_stats = await self._run_phase(warmup.phase(self.phases[0]))
                if self._coordinator is not None and not self.stopping:
                    await self._coordinator.warmed()
            for index, phase in enumerate(self.phases, 1):
                if self.stopping:
                    break
                self.phase_index = index
                stats = await self._run_phase(phase)
                self.stats.append(stats)
                if not await self._carry_on(stats):
                    break
            self.state = "finished"
        except LoadgenError as exc:
            self.state, self.error = "failed", str(exc)
            raise
        finally:
            gc.unfreeze()
            self.metrics.phase = "done"
            self.metrics.target_concurrency = self.metrics.target_rate = None
            await self._teardown()
        self.report = reports.build(self.result())
        reports.write(self.report, self.scenario.output_json)
        return self.report

    async def _ready(self) -> None:
        if self._coordinator is not None:
            await self._coordinator.ready()
        elif self.scenario.start_at is not None:
            await wait_until(self.scenario.start_at)

    async def _carry_on(self, stats: PhaseStats) -> bool:
        """Whether the next phase runs: a sweep stops at its first level that misses the SLOs. A shard
        sees only its slice, so shards run every level and `merge` judges the sweep."""
        if self._coordinator is not None:
            return await self._coordinator.carry_on(stats)
        if not self.scenario.sweep or self.stopping or stats.slos_met(self.scenario.slo_percentile):
            return True  # a step cut short by a stop is not judged; the stop itself ends the run
        why = "is overloaded (past saturation)" if stats.overload else "misses the SLOs"
        if not self.scenario.shard.whole:
            log.info("sweep: this shard's %s %s; shards run every level", stats.name, why)
            return True
        log.info("sweep: %s %s; stopping here", stats.name, why)
        return False

    # What setup makes (_setup, prepare): used only after it, so never None where these are read.

    @property
    def _http(self) -> LoadClient:
        return _set_up(self._client, "client")

    @property
    def _setup_requests(self) -> SetupProber:
        return _set_up(self._prober, "setup prober")

    @property
    def _phase_loop(self) -> PhaseLoop:
        return _set_up(self._loop, "phase loop")

    def result(self) -> RunResult:
        """What the run has done so far, as data (the report is built from it)."""
        return RunResult(
            run_id=self.run_id, scenario=self.scenario, model=self.model, model_note=self.model_note,
            started_at=self.started_at,
            state=self.state, stopped_early=self.stopping,
            workload=self._workload.describe() if self._workload is not None else None,
            stats=tuple(self.stats),
            setup=self._prober.summary() if self._prober else None,
            dropped_body_fields=dict(self._prober.dropped) if self._prober else {},
            warmup=self.warmup_stats,
            timing_path=self._client.timing_path if self._client else None,
            clock=self.clock,
            backoff_waits=self._client.backoff.waits if self._client else 0,
            backoff_waited_s=self._client.backoff.waited_s if self._client else 0.0,
        )  # fmt: skip

    async def _unless_stopped(self, work: Coroutine[Any, Any, None]) -> bool:
        """Run `work` unless a stop comes first, which cancels it at once (setup has nothing worth
        a grace period); False when stopped."""
        task = asyncio.create_task(work)
        stopped = asyncio.create_task(self._stops.requested.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        if task.cancelled():
            return False
        task.result()  # setup errors propagate
        return True

    # -- setup ---------------------------------------------------------------------------------

    async def prepare(self) -> Prepared:
        """Setup's requests only (model discovery, calibration, the --extra-body check), for a pool
        whose workers then ask the server nothing (workers.py); the run is not executed."""
        scenario = self.scenario
        self._client = self._new_client(1, None)
        try:
            await self._ask_server()
            text = TextMaker(None)
            synthetic = scenario.dataset is None or scenario.dataset.kind == "mooncake"
            if synthetic and scenario.tokenizer is None:
                await run_setup.calibrate(self._setup_requests, self._bodies, self._rng, text)
                calibrated = (text.tokens_per_word, text.template_tokens, text.length_source)
            else:
                calibrated = (None, None, None)
            await run_setup.check_extra_body(self._setup_requests, self._bodies)
        finally:
            await self._client.aclose()
        return Prepared(self.model, self.model_note, *calibrated, dict(self._bodies.extra_body))

    def _new_client(self, connections: int, tokenizer: Tokenizer | None) -> LoadClient:
        scenario = self.scenario
        return LoadClient(
            scenario.url,
            scenario.api_key(),
            scenario.timeouts,
            max_connections=connections,
            count_tokens=tokenizer.count if tokenizer else None,
            output_tokens_from=scenario.output_tokens_from,
            network=scenario.network,
        )

    async def _ask_server(self) -> None:
        """Model discovery, and the prober for setup requests (probes.py)."""
        if not self.model:
            self._bodies.model, self.model_note = await run_setup.discover_model(self._http)
        path = PATHS[self.scenario.endpoint]
        self._prober = SetupProber(self._http, path, self._id_prefix, self._bodies.extra_body, compact_json)

    def _new_metrics(self, shape: str) -> RunMetrics:
        scenario = self.scenario
        shard = "" if scenario.shard.whole else str(scenario.shard.index)
        return RunMetrics(scenario.name, self.run_id, self.model or "", scenario.endpoint, shape, shard)

    async def _setup(self) -> None:
        scenario = self.scenario
        tokenizer = self._tokenizer = Tokenizer(scenario.tokenizer) if scenario.tokenizer else None
        text = TextMaker(tokenizer)
        connections = run_setup.max_connections(scenario, self.slice)
        raise_open_file_limit(connections)
        self._client = self._new_client(connections, tokenizer)
        prepared = self._prepared
        if prepared is None:
            await self._ask_server()
        else:
            self._bodies.model, self.model_note = prepared.model, prepared.model_note
            self._bodies.extra_body = dict(prepared.extra_body)
        calibrate = None if tokenizer is not None else partial(self._calibrate_once, text)
        source = await run_setup.load_workload(scenario, text, self._rng, calibrate, self.slice)
        self._workload = deal(source, self.slice)  # a trace was read as this slice: itself
        if prepared is None:
            await run_setup.check_extra_body(self._setup_requests, self._bodies)
        if self._engine is not None:
            await self._engine.start()
        self.metrics = self._new_metrics(scenario.shape)
        if self.collector is not None:
            self.collector.add(self.metrics)
        if scenario.output_jsonl:
            # a pool's workers append whole lines to the file its parent created (JsonlWriter)
            self._jsonl = JsonlWriter(scenario.output_jsonl, append=not self._part.whole)
        think_rng = random.Random(f"{scenario.seed}:think:{self.slice.index}/{self.slice.count}")
        sender = Sender(
            scenario, self._http, self._bodies, self.metrics, self._stops, id_prefix=self._id_prefix,
            clock=self.clock, tokenizer=tokenizer, jsonl=self._jsonl, think_rng=think_rng,
        )  # fmt: skip
        self._loop = PhaseLoop(scenario, self.slice, sender, self.metrics, self._stops, self._workload)

    async def _calibrate_once(self, text: TextMaker) -> None:
        """Calibrate, or take what the pool's parent found (Prepared)."""
        if self._prepared is None:
            await run_setup.calibrate(self._setup_requests, self._bodies, self._rng, text)
        else:
            run_setup.apply_calibration(self._prepared, text)

    async def _teardown(self) -> None:
        if self._engine is not None:
            await self._engine.stop()
        if self._client is not None:
            await self._client.aclose()
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None

    # -- phases --------------------------------------------------------------------------------

    async def _run_phase(self, phase: Phase) -> PhaseStats:
        """One phase, with the engine's figures read beside it (its queue once a second; its prefix-cache
        counters before and after, when a hit rate was aimed at)."""
        stats = PhaseStats(phase.name, self.scenario.slos)
        # the engine's prefix-cache counters around a measured phase, when a hit rate was aimed at (by one
        # process of a pool: the counters are the engine's, for every worker's requests)
        aimed = self.scenario.prefix_hit_rate is not None and self._part.index == 0
        check_cache = aimed and phase.name != WARMUP
        before = await read_prefix_cache(self.scenario.engine_metrics) if check_cache else None
        self.current = stats
        self.metrics.phase = phase.name
        log.info("phase %s: starting", phase.name)
        view = self._engine.start_phase() if self._engine is not None else None
        await self._phase_loop.run(phase, stats, schedule=len(self.stats))
        if self._engine is not None and view is not None:
            problem = self._engine.problem
            if view.samples:
                stats.engine = {**view.summary(), **({"problem": problem} if problem else {})}
            else:
                stats.engine = {"problem": problem or "no reading in time"}
        if check_cache:
            after = await read_prefix_cache(self.scenario.engine_metrics)
            stats.prefix_cache = prefix_cache_delta(before, after)
            stats.prefix_hit_target = self.scenario.prefix_hit_rate
        log.info(
            "phase %s: %d sent, %d succeeded, %d failed in %.1fs",
            phase.name, stats.sent, stats.outcomes["success"], stats.failed, stats.duration_s,
        )  # fmt: skip
        return stats

    # -- progress --------------------------------------------------------------------------------

    def unix_s(self, perf_ns: int) -> float:
        """A perf_counter instant as Unix time (s), through the run's clock anchor."""
        return self.clock.unix(perf_ns)

    def progress_line(self) -> str:
        return progress.line(self)
