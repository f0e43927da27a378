"""Runs a scenario: phases in order, requests dispatched by the phase's shape, every result
accounted in the phase's stats, the live metrics and (optionally) the per-request JSONL file.

A phase ends when its duration or request budget is used up; requests still in flight then finish
and count for that phase (the phase's duration runs to its last response), so each phase is a
benchmark of its own. stop() ends issuing at once, gives in-flight requests `grace` seconds, then
cancels them (counted as `cancelled`); the report is still written.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import math
import random
from collections.abc import Coroutine
from time import perf_counter_ns
from typing import Any, TypeVar

import httpx
import orjson

from loadgen import progress
from loadgen import report as reports
from loadgen.client import ClientError, LoadClient
from loadgen.coordination import Coordinator, Prepared
from loadgen.engine_counters import prefix_cache_delta, read_prefix_cache
from loadgen.engine_watch import EngineWatch
from loadgen.errors import LoadgenError
from loadgen.jsonl import JsonlWriter
from loadgen.metrics import LoadgenCollector, RunMetrics
from loadgen.overload import OverloadDetector, Reading
from loadgen.probes import SetupProber
from loadgen.result import Clock, RunResult
from loadgen.scenario import Scenario
from loadgen.schedules import Phase, RequestBudget, arrival_offsets
from loadgen.sessions import BLOCK_TOKENS, MESSAGE_TOKENS, system_prompt_tokens
from loadgen.slicing import WHOLE, Slice, deal
from loadgen.starts import wait_until
from loadgen.stats import PhaseStats
from loadgen.timing import RequestRecord
from loadgen.traces import TRACE_KINDS, Trace, load_trace
from loadgen.transport import raise_open_file_limit
from loadgen.warmup import WARMUP
from loadgen.workloads import (
    LengthDist,
    Synthetic,
    TextMaker,
    Tokenizer,
    WorkItem,
    Workload,
    load_jsonl,
    load_sharegpt,
    random_words,
)

log = logging.getLogger("loadgen")

PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
OPEN_LOOP_CONNECTIONS = 1000  # connection cap of an open loop without --max-concurrency
SYNTHETIC_OUTPUT_LEN = LengthDist("fixed", (128.0,))  # max_tokens of synthetic requests without --output-len


T = TypeVar("T")


def _set_up(value: T | None, what: str) -> T:
    if value is None:
        raise RuntimeError(f"the run's {what} is used before setup made it")
    return value


def _compact_json(obj: object) -> bytes:
    """Compact JSON (20x json.dumps here: one body and one JSONL line per request); keys that are
    not strings (a YAML `extra_body` may have them) are written as strings, as json.dumps does."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # what orjson does not write (integers beyond 64 bits), written as json.dumps does
        return json.dumps(obj, separators=(",", ":")).encode()


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
        self.model: str | None = scenario.model
        self.model_note: str | None = None  # why the requests name no model, when they do not
        self.stats: list[PhaseStats] = []
        self.warmup_stats: PhaseStats | None = None  # left out of every figure (warmup.py)
        self.current: PhaseStats | None = None
        self.report: dict | None = None
        self.started_at = self.clock.unix_s
        self.phase_index = 0  # 1-based index of the phase running now (progress: step k of N)
        self.detector: OverloadDetector | None = None  # the open-loop phase running now
        self.metrics = self._new_metrics("")
        self._stop = asyncio.Event()
        self._forced = asyncio.Event()  # a second stop: no grace period
        self._in_flight: set[asyncio.Task] = set()
        self._issuer: asyncio.Task | None = None
        self._cut = asyncio.Event()  # a sweep ends an overloaded phase early: no new requests, grace, cancel
        self._seq = 0
        self._jsonl: JsonlWriter | None = None
        self._workload: Workload | None = None  # this slice's items (slicing.py)
        self._source: Workload | None = None  # all of them: a trace's timeline is dealt by arrival
        self._client: LoadClient | None = None
        self._tokenizer: Tokenizer | None = None
        self._rng = random.Random(scenario.seed)
        # think times drawn apart from the prompts: pauses end in an order timing decides, and drawn from
        # the workload's generator they made the prompts of one seed differ from run to run
        self._think_rng = random.Random(f"{scenario.seed}:think:{self.slice.index}/{self.slice.count}")
        self._extra_body = dict(scenario.extra_body)  # a field the server refuses is dropped (probes.py)
        self._prober: SetupProber | None = None  # setup requests, reported apart from the phases
        # the engine's /metrics, read by one process of a run's pool (workers.py: worker 0)
        watch = scenario.engine_metrics and part.index == 0
        self._engine = EngineWatch(scenario.engine_metrics) if watch else None

    # -- control -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop issuing; in-flight requests get the grace period, then are cancelled."""
        if not self._stop.is_set():
            log.info("stopping: no new requests; in-flight ones get %gs", self.scenario.grace_s)
            self._stop.set()
            if self.state == "running":
                self.state = "stopping"
            if self._issuer is not None:
                self._issuer.cancel()

    def force(self) -> None:
        """Stop without the grace period: in-flight requests are cancelled at once (a second
        Ctrl-C); the report is still built from what finished."""
        self.stop()
        if not self._forced.is_set():
            log.warning("stopping now: in-flight requests are cancelled without waiting")
            self._forced.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

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
    def _items(self) -> Workload:
        return _set_up(self._workload, "workload")

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
        stopped = asyncio.create_task(self._stop.wait())
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
                await self._calibrate(text)
                calibrated = (text.tokens_per_word, text.template_tokens, text.length_source)
            else:
                calibrated = (None, None, None)
            await self._check_extra_body()
        finally:
            await self._client.aclose()
        return Prepared(self.model, self.model_note, *calibrated, dict(self._extra_body))

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
            self.model = await self._discover_model()
        path = PATHS[self.scenario.endpoint]
        self._prober = SetupProber(self._http, path, self._id_prefix, self._extra_body, _compact_json)

    def _new_metrics(self, shape: str) -> RunMetrics:
        scenario = self.scenario
        shard = "" if scenario.shard.whole else str(scenario.shard.index)
        return RunMetrics(scenario.name, self.run_id, self.model or "", scenario.endpoint, shape, shard)

    async def _setup(self) -> None:
        scenario = self.scenario
        tokenizer = self._tokenizer = Tokenizer(scenario.tokenizer) if scenario.tokenizer else None
        text = TextMaker(tokenizer)
        connections = self._max_connections()
        raise_open_file_limit(connections)
        self._client = self._new_client(connections, tokenizer)
        prepared = self._prepared
        if prepared is None:
            await self._ask_server()
        else:
            self.model, self.model_note = prepared.model, prepared.model_note
            self._extra_body = dict(prepared.extra_body)
        # an explicit output length applies to every workload; without one, datasets keep their own
        # lengths (ShareGPT answers, JSONL max_tokens) and synthetic prompts ask for 128 tokens
        output_len = scenario.output_len
        dataset = scenario.dataset
        if dataset is not None and dataset.kind in TRACE_KINDS:
            if dataset.kind == "mooncake" and tokenizer is None:
                await self._calibrate_once(text)  # block texts are sized in tokens
            self._workload = load_trace(
                dataset.kind, dataset.path, text, self._rng, output_len, scenario.time_scale
            )
        elif dataset is not None:
            if dataset.kind == "sharegpt":
                self._workload = load_sharegpt(dataset.path, self._rng, output_len, text, scenario.turns)
            else:
                self._workload = load_jsonl(dataset.path, self._rng, output_len)
        else:
            output = output_len or SYNTHETIC_OUTPUT_LEN
            self._workload = Synthetic(
                scenario.input_len, output, text, self._rng,
                scenario.prefix_groups, scenario.prefix_len, scenario.turns,
            )  # fmt: skip
            if tokenizer is None:
                await self._calibrate_once(text)
            if scenario.prefix_hit_rate is not None:
                self._workload.system_len = await self._system_prompt_len(text, output)
        self._source, self._workload = self._workload, deal(self._workload, self.slice)
        if prepared is None:
            await self._check_extra_body()
        if self._engine is not None:
            await self._engine.start()
        self.metrics = self._new_metrics(scenario.shape)
        if self.collector is not None:
            self.collector.add(self.metrics)
        if scenario.output_jsonl:
            # a pool's workers append whole lines to the file its parent created (JsonlWriter)
            self._jsonl = JsonlWriter(scenario.output_jsonl, append=not self._part.whole)

    async def _discover_model(self) -> str | None:
        """The first model /v1/models lists. When the server is up but cannot list its models (seen:
        `transformers serve` answers 500 without a Hugging Face cache), requests go without a `model`
        field, which a single-model server answers with its own; said in the log and the report."""
        try:
            return await self._http.discover_model()
        except ClientError as exc:
            cause = exc.__cause__
            status = cause.response.status_code if isinstance(cause, httpx.HTTPStatusError) else None
            if status in (401, 403) or isinstance(cause, httpx.TransportError):
                raise  # wrong credentials or no server: every request would fail the same way
            why = f"HTTP {status}" if status else type(cause).__name__ if cause else str(exc)
            self.model_note = f"not discovered (/v1/models: {why}); requests carry no model field"
            log.warning("model %s: pass --model to name one", self.model_note)
            return None

    def _max_connections(self) -> int:
        """--max-connections, else the peak closed-loop concurrency or open-loop --max-concurrency,
        else OPEN_LOOP_CONNECTIONS: this slice's part of it (at least 1). Requests beyond it wait
        for a connection: dispatch delay."""
        if self.scenario.max_connections:
            return max(1, self.slice.share(self.scenario.max_connections))
        peak = 1
        for phase in self.phases:
            if phase.closed:
                peak = max(peak, self.slice.users(math.ceil(phase.peak())))
            else:
                peak = max(peak, self.slice.share(phase.max_concurrency or OPEN_LOOP_CONNECTIONS))
        return peak

    async def _teardown(self) -> None:
        if self._engine is not None:
            await self._engine.stop()
        if self._client is not None:
            await self._client.aclose()
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None

    async def _system_prompt_len(self, text: TextMaker, output: LengthDist) -> int:
        """The shared system prompt that aims at --prefix-hit-rate (sessions.py), sized with the engine's KV
        block (vllm:cache_config_info) and the chat template's tokens (calibration) where known."""
        scenario = self.scenario
        cache = await read_prefix_cache(self._http)
        block = cache.block_size if cache and cache.block_size else BLOCK_TOKENS
        message = text.template_tokens / 2 if text.template_tokens is not None else MESSAGE_TOKENS
        rate, user, answer = scenario.prefix_hit_rate, scenario.input_len.mean(), output.mean()
        return system_prompt_tokens(rate, user, answer, scenario.turns, block, message)  # type: ignore[arg-type]

    async def _calibrate_once(self, text: TextMaker) -> None:
        """Calibrate, or take what the pool's parent found (Prepared)."""
        prepared = self._prepared
        if prepared is None:
            await self._calibrate(text)
        elif prepared.tokens_per_word is not None:
            text.tokens_per_word, text.template_tokens = prepared.tokens_per_word, prepared.template_tokens
            text.length_source = prepared.length_source  # type: ignore[assignment]

    async def _calibrate(self, text: TextMaker) -> None:
        """Tokens per word of our synthetic text, from the server's prompt-token counts of two probes."""
        counts = []
        for words in (16, 216):
            prompt = random_words(self._rng, words)
            body = self._body_fields(WorkItem(({"role": "user", "content": prompt},), 1), stream=False)
            purpose = "calibration of prompt lengths (max_tokens=1, not streamed)"
            record = await self._setup_requests.send(f"calibrate-{words}", purpose, body)
            if not record.ok:
                log.warning(
                    "calibration probe failed (%s): prompt lengths assume 1 token per word", record.error
                )
                return
            counts.append(record.prompt_tokens)
        if None in counts or counts[1] <= counts[0]:
            log.warning("server sent no usage: prompt lengths assume 1 token per word")
            return
        text.tokens_per_word = (counts[1] - counts[0]) / 200
        # what the prompt costs beyond its words: the chat template around one message and the
        # generation prompt (BOS alone for completions)
        text.template_tokens = max(0.0, counts[0] - 16 * text.tokens_per_word)
        text.length_source = f"calibrated from server usage ({text.tokens_per_word:.3f} tokens/word)"

    async def _check_extra_body(self) -> None:
        """Without calibration, one setup request finds out whether the server takes --extra-body."""
        if self._extra_body and not self._setup_requests.records:
            body = self._body_fields(WorkItem(({"role": "user", "content": "hello"},), 1), stream=False)
            await self._setup_requests.send(
                "check-extra-body", "check of the --extra-body fields (max_tokens=1)", body
            )

    def _body(self, item: WorkItem, stream: bool | None = None, messages: list | None = None) -> bytes:
        return _compact_json({**self._body_fields(item, stream, messages), **self._extra_body})

    def _body_fields(self, item: WorkItem, stream: bool | None = None, messages: list | None = None) -> dict:
        """A request's body without the --extra-body fields."""
        stream = self.scenario.stream if stream is None else stream
        body: dict = {"model": self.model, "stream": stream} if self.model else {"stream": stream}
        if self.scenario.endpoint == "chat":
            body["messages"] = messages if messages is not None else list(item.messages)
        else:
            body["prompt"] = item.prompt_text(messages)
        if item.max_tokens:
            body["max_tokens"] = item.max_tokens
        if stream:
            body["stream_options"] = (
                {"include_usage": True, "continuous_usage_stats": True}
                if self.scenario.continuous_usage
                else {"include_usage": True}
            )
        return body

    # -- phases --------------------------------------------------------------------------------

    async def _run_phase(self, phase: Phase) -> PhaseStats:
        stats = PhaseStats(phase.name, self.scenario.slos)
        # the engine's prefix-cache counters around a measured phase, when a hit rate was aimed at (by one
        # process of a pool: the counters are the engine's, for every worker's requests)
        aimed = self.scenario.prefix_hit_rate is not None and self._part.index == 0
        check_cache = aimed and phase.name != WARMUP
        before = await read_prefix_cache(self._http) if check_cache else None
        self.current = stats
        self.metrics.phase = phase.name
        self.metrics.target_concurrency = self.slice.users(phase.level) if phase.closed else None
        self.metrics.target_rate = None if phase.closed else phase.level / self.slice.count
        log.info("phase %s: starting", phase.name)
        stats.start_ns = stats.end_ns = perf_counter_ns()
        deadline = stats.start_ns + (
            int(phase.duration_s * 1e9) if math.isfinite(phase.duration_s) else 2**62
        )
        self._cut.clear()
        view = self._engine.start_phase() if self._engine is not None else None
        dispersion = 1 / phase.burstiness if phase.arrival == "gamma" else 1.0  # the arrivals' noise
        self.detector = None if phase.closed else OverloadDetector(dispersion=dispersion)
        observer = asyncio.create_task(self._observe(phase, stats)) if self.detector else None
        issue = self._issue_closed if phase.closed else self._issue_open
        self._issuer = asyncio.create_task(issue(phase, stats, deadline))
        await asyncio.wait([self._issuer])
        self._issuer = None
        await self._drain()
        if observer is not None:
            observer.cancel()
            await asyncio.gather(observer, return_exceptions=True)
        stats.interrupted = self.stopping
        stats.overload = self.detector.overload if self.detector else None
        if self._engine is not None and view is not None:
            problem = self._engine.problem
            if view.samples:
                stats.engine = {**view.summary(), **({"problem": problem} if problem else {})}
            else:
                stats.engine = {"problem": problem or "no reading in time"}
        if check_cache:
            after = await read_prefix_cache(self._http)
            stats.prefix_cache = prefix_cache_delta(before, after)
            stats.prefix_hit_target = self.scenario.prefix_hit_rate
        log.info(
            "phase %s: %d sent, %d succeeded, %d failed in %.1fs",
            phase.name, stats.sent, stats.outcomes["success"], stats.failed, stats.duration_s,
        )  # fmt: skip
        return stats

    async def _drain(self) -> None:
        """Wait for in-flight requests; after stop() (or a sweep's cut of an overloaded phase), only
        for the grace period, then cancel them."""
        while self._in_flight:
            pending = set(self._in_flight)
            ended = {asyncio.create_task(self._stop.wait()), asyncio.create_task(self._cut.wait())}
            await asyncio.wait(pending | ended, return_when=asyncio.FIRST_COMPLETED)
            for task in ended:
                task.cancel()
            if self.stopping or self._cut.is_set():
                await self._grace()
                for task in list(self._in_flight):
                    task.cancel()
                if self._in_flight:
                    await asyncio.wait(set(self._in_flight))
                return

    async def _grace(self) -> None:
        """Wait for in-flight requests for the grace period, or until force()."""
        if not self._in_flight or self._forced.is_set():
            return
        finished = asyncio.create_task(asyncio.wait(set(self._in_flight)))
        forced = asyncio.create_task(self._forced.wait())
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
                    if self._issuer is not None:
                        self._issuer.cancel()

    async def _think(self, deadline: int) -> None:
        """A user's pause after an answer (--think-time): before the next turn of its conversation, or a
        closed-loop user's next request; cut short by a stop or the deadline."""
        think = self.scenario.think_time
        if think is None:
            return
        pause = min(think.draw(self._think_rng), max(0.0, (deadline - perf_counter_ns()) * 1e-9))
        if pause > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), pause)

    def _spawn(self, coroutine) -> asyncio.Task:
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
            while not self.stopping and budget.take():
                now = perf_counter_ns()
                if now >= deadline or index >= phase.target_at((now - start) * 1e-9):
                    budget.give_back()
                    return
                record = await self._session(self._items.next(), now, stats)
                if record.retry_after_s and self.scenario.honor_retry_after and not budget.exhausted:
                    await self._retry_after(record.retry_after_s, deadline, stats)
                await self._think(deadline)

        while not self.stopping:
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

    async def _issue_open(self, phase: Phase, stats: PhaseStats, deadline: int) -> None:
        """The phase's arrival schedule (its own seeded generator, the same in every slice), dealt:
        arrival a goes out only from the slice that owns it (slicing.py)."""
        cap = phase.max_concurrency
        slots = asyncio.Semaphore(self.slice.share(cap)) if cap else None
        start = stats.start_ns
        workload = self._source  # the undealt workload: a trace says when, and what
        if phase.replay:  # the trace says when; the arrival error is each request's dispatch delay
            assert isinstance(workload, Trace)
            timeline = workload.arrivals(phase.max_requests, (deadline - start) * 1e-9)
        else:  # the phase's own seeded schedule, the same in every slice
            arrivals = random.Random(f"{self.scenario.seed}:arrivals:{len(self.stats)}")
            timeline = ((offset, None) for offset in arrival_offsets(phase, arrivals))
        for issued, (offset, item) in enumerate(timeline):
            due = start + int(offset * 1e9)
            if due >= deadline or (phase.max_requests is not None and issued >= phase.max_requests):
                return
            if not self.slice.owns(issued):
                continue
            await _sleep_until(due)
            if phase.ramp_to is not None:
                self.metrics.target_rate = phase.target_at(offset) / self.slice.count
            self._spawn(self._arrival(item or self._items.next(), due, stats, slots))

    async def _arrival(
        self, item: WorkItem, due: int, stats: PhaseStats, slots: asyncio.Semaphore | None
    ) -> None:
        if slots is None:
            await self._session(item, due, stats)
            return
        async with slots:
            if not self.stopping:  # arrivals still queued for a slot when a stop came are never sent
                await self._session(item, due, stats)

    async def _retry_after(self, seconds: float, deadline: int, stats: PhaseStats) -> None:
        """Closed loop with --honor-retry-after: the user waits as the server asked before its next
        request (until the phase ends or a stop comes at the latest). The open loop never waits:
        its schedule is the experiment, so throttled requests are only counted."""
        pause = min(seconds, (deadline - perf_counter_ns()) * 1e-9)
        if pause <= 0:
            return
        began = perf_counter_ns()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), pause)
        stats.retry_after_waited_s += (perf_counter_ns() - began) * 1e-9

    async def _session(self, item: WorkItem, scheduled: int, stats: PhaseStats) -> RequestRecord:
        """One request, or one multi-turn conversation (each turn a request, replies fed back);
        the last request's record."""
        messages = list(item.messages)
        known = item.prompt_tokens  # synthetic prompts: the length drawn; None for datasets
        record = await self._request(
            self._body(item), scheduled, stats, bool(item.followups), messages, item, known
        )
        turn_lengths = item.followup_tokens or (None,) * len(item.followups)
        for turn, turn_tokens in zip(item.followups, turn_lengths, strict=True):
            if not record.ok or self.stopping:
                return record
            await self._think(2**62)  # the user reads the answer and types: not part of any latency
            if self.stopping:
                return record
            messages += [
                {"role": "assistant", "content": "".join(record.text or ())},
                {"role": "user", "content": turn},
            ]
            if known is not None and turn_tokens is not None:  # the transcript so far, and the new turn
                known = (record.prompt_tokens or known) + record.output_tokens + turn_tokens
            record = await self._request(
                self._body(item, messages=list(messages)), perf_counter_ns(), stats, True,
                list(messages), item, known,
            )  # fmt: skip
        return record

    async def _request(
        self,
        body: bytes,
        scheduled: int,
        stats: PhaseStats,
        capture: bool,
        messages: list[dict],
        item: WorkItem,
        known_prompt_tokens: int | None,
    ) -> RequestRecord:
        self._seq += 1
        record = RequestRecord(f"{self._id_prefix}-{self._seq}", stats.name, scheduled, self.scenario.stream)
        metrics = self.metrics.series(stats.name)
        metrics.on_sent()
        stats.sent += 1
        try:
            await self._http.execute(PATHS[self.scenario.endpoint], body, record, capture)
        finally:
            if record.prompt_tokens is None and record.ok:
                self._estimate_prompt_tokens(record, messages, item, known_prompt_tokens)
            metrics.on_done(record)
            stats.add(record)
            if self._jsonl is not None:
                line = record.as_json()
                line["sent_unix_s"] = self.unix_s(record.sent_ns) if record.sent_ns else None
                self._jsonl.write(_compact_json(line) + b"\n")
        return record

    def _estimate_prompt_tokens(
        self, record: RequestRecord, messages: list[dict], item: WorkItem, known: int | None
    ) -> None:
        """Prompt tokens when the server sent no usage: counted with the tokenizer if there is one
        (the prompt's text, without the chat template's tokens), else the synthetic length drawn."""
        if self._tokenizer is not None:
            record.prompt_tokens = self._tokenizer.count(item.prompt_text(messages))
            record.prompt_source = "tokenizer"
        elif known is not None:
            record.prompt_tokens = known
            record.prompt_source = "synthetic"

    # -- progress --------------------------------------------------------------------------------

    def unix_s(self, perf_ns: int) -> float:
        """A perf_counter instant as Unix time (s), through the run's clock anchor."""
        return self.clock.unix(perf_ns)

    def progress_line(self) -> str:
        return progress.line(self)


async def _sleep_until(due_ns: int) -> None:
    """Sleep until a perf_counter instant (the event loop's timers fire up to ~1 ms late: epoll's
    timeout is in milliseconds; dispatch delay measures what that costs). Spinning for the last
    millisecond was tried: on a shared 2-core machine it took CPU from everything else and made the
    tail worse."""
    delay = (due_ns - perf_counter_ns()) * 1e-9
    await asyncio.sleep(delay if delay > 0 else 0)
