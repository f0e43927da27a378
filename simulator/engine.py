"""A continuous-batching engine modelled on vLLM's V1 scheduler, advancing in real time.

One asyncio task runs the step loop: schedule a batch (running requests first, then waiting ones
while there is room in the token budget, the sequence cap and the KV cache), "execute" it by
sleeping for the step's modelled cost, then emit one token per request whose computed tokens caught
up. KV memory is counted in blocks; full prompt blocks are content-hashed so a repeated prefix is a
cache hit, and freed cached blocks stay reusable until evicted (LRU). When a running request needs a
block and none is free, the most recently admitted running request is preempted: its blocks are
freed and it goes back to the front of the queue to be recomputed, as in vLLM. Per-step work is
O(batch size).

Time comes from the engine's clock (`time.monotonic` by default). Tests and benchmarks can give it a
`VirtualClock` and drive it with `begin_step` / `end_step` instead of the real-time loop, so the
modelled timing is checked exactly and without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import math
import random
import time
import zlib
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from simulator import text
from simulator.blocks import BlockPool
from simulator.errors import SimulatorError
from simulator.faults import Faults
from simulator.profile import Profile
from simulator.speculative import accepted_drafts
from simulator.stats import EngineStats, StepTiming, VirtualClock

__all__ = ["AdmissionError", "Batch", "Engine", "Sequence", "Status", "VirtualClock"]


class AdmissionError(SimulatorError):
    """A request the engine will not take; `status` is the HTTP status vLLM answers with."""

    def __init__(self, message: str, status: int, error_type: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False, slots=True)
class Sequence:
    """One request inside the engine. The HTTP side reads output_len and finish_reason."""

    request_id: str
    prompt_len: int
    block_hashes: list[int]  # chained hashes of the full blocks (prompt, then output as it fills them)
    tail_ids: list[int]  # token ids after the last full block (prefix caching only)
    max_tokens: int
    max_tokens_param: int | None
    stop_at: int | None  # natural answer length; None with ignore_eos
    min_tokens: int
    seed: int
    arrival: float
    reasoning_len: int = 0  # the answer's first tokens that are reasoning (a reasoning profile)
    status: Status = Status.WAITING
    num_computed: int = 0
    output_len: int = 0
    cached_refs: list[int] = field(default_factory=list)  # hashes of the leading blocks it holds
    plain_blocks: int = 0
    num_cached_tokens: int = -1
    num_preemptions: int = 0
    scheduled_ts: float = 0.0
    first_token_ts: float = 0.0
    last_token_ts: float = 0.0
    finish_reason: str | None = None
    abort_requested: bool = False
    waiter: asyncio.Future | None = None
    drafts: int = 0  # speculative draft tokens scheduled for verification in the current step
    # output_len after each step, while the HTTP side has not streamed them (speculative decoding
    # only: one step can produce several tokens, and each step is one SSE event, as in vLLM)
    step_ends: deque[int] | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_len + self.output_len

    @property
    def num_blocks(self) -> int:
        return len(self.cached_refs) + self.plain_blocks

    async def wait(self) -> None:
        """Until the engine has produced another token or finished this request."""
        self.waiter = asyncio.get_running_loop().create_future()
        await self.waiter

    def wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


Batch = list[tuple[Sequence, int]]  # (request, tokens computed for it in this step)


class Engine:
    def __init__(
        self,
        profile: Profile,
        faults: Faults | None = None,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.profile = profile
        self.clock = clock
        self.faults = faults or Faults()
        self.seed = seed
        self.rng = random.Random(seed)
        self.block_size = profile.cache.block_size
        self.prefix_caching = profile.cache.enable_prefix_caching
        self.num_spec = profile.speculative.num_speculative_tokens
        self.timing = StepTiming()
        self.restarts = 0
        self._task: asyncio.Task | None = None
        self._work = asyncio.Event()
        self._pending_aborts: list[Sequence] = []
        self.down_until = 0.0
        self._reset()

    def _reset(self) -> None:
        self.pool = BlockPool(self.profile.cache.num_gpu_blocks)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.stats = EngineStats(max_model_len=self.profile.max_model_len, num_spec_tokens=self.num_spec)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="engine-steps")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def is_down(self) -> bool:
        return self.clock() < self.down_until

    def restart(self, down_seconds: float) -> None:
        """Crash and come back: in-flight requests fail, counters start again from zero."""
        for seq in [*self.running, *self.waiting]:
            seq.status = Status.FINISHED
            seq.finish_reason = "error"
            seq.wake()
        self._pending_aborts.clear()
        self._reset()
        self.restarts += 1
        self.down_until = self.clock() + down_seconds

    # -- requests ---------------------------------------------------------------------------

    def add(
        self,
        request_id: str,
        prompt_ids: list[int],
        max_tokens: int | None,
        ignore_eos: bool = False,
        min_tokens: int = 0,
    ) -> Sequence:
        if self.is_down:
            raise AdmissionError("The engine is restarting.", 503, "ServiceUnavailableError")
        prompt_len = len(prompt_ids)
        limit = self.profile.max_model_len
        if prompt_len == 0:
            raise AdmissionError("The prompt is empty.", 400, "BadRequestError")
        if max_tokens is not None and max_tokens < 1:
            raise AdmissionError("max_tokens must be at least 1.", 400, "BadRequestError")
        if prompt_len + (max_tokens or 1) > limit:
            raise AdmissionError(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt_len + (max_tokens or 0)} tokens ({prompt_len} in the messages, "
                f"{max_tokens or 0} in the completion). "
                "Please reduce the length of the messages or completion.",
                400,
                "BadRequestError",
            )
        cap = self.profile.scheduler.max_num_queued_reqs
        if cap and len(self.waiting) >= cap:
            self.stats.admission_rejections["max_num_queued_reqs"] += 1
            raise AdmissionError(
                "The server is overloaded: too many queued requests.", 503, "ServiceUnavailable"
            )
        seed = zlib.crc32(array("I", prompt_ids).tobytes(), self.seed)
        output, reasoning = self.profile.output, self.profile.reasoning
        lengths = random.Random(seed)
        natural = lengths.randint(output.min_tokens, output.max_tokens)
        thinking = lengths.randint(reasoning.min_tokens, reasoning.max_tokens) if reasoning.max_tokens else 0
        hashes, tail = self._block_hashes(prompt_ids) if self.prefix_caching else ([], [])
        seq = Sequence(
            request_id=request_id,
            prompt_len=prompt_len,
            block_hashes=hashes,
            tail_ids=tail,
            max_tokens=max_tokens or limit - prompt_len,
            max_tokens_param=max_tokens,
            stop_at=None if ignore_eos else thinking + natural,
            min_tokens=min_tokens,
            seed=seed,
            arrival=self.clock(),
            reasoning_len=thinking,
            step_ends=deque() if self.num_spec else None,
        )
        self.waiting.append(seq)
        self._work.set()
        return seq

    def abort(self, seq: Sequence) -> None:
        """The client went away; the request leaves the engine at the next step boundary."""
        if seq.status is not Status.FINISHED and not seq.abort_requested:
            seq.abort_requested = True
            self._pending_aborts.append(seq)
            self._work.set()

    def _block_hashes(self, prompt_ids: list[int]) -> tuple[list[int], list[int]]:
        """Chained hashes of the prompt's full blocks, and the ids after the last full block."""
        hashes, parent, size = [], 0, self.block_size
        full = len(prompt_ids) - len(prompt_ids) % size
        for start in range(0, full, size):
            parent = hash((parent, *prompt_ids[start : start + size]))
            hashes.append(parent)
        return hashes, prompt_ids[full:]

    def _hash_output(self, seq: Sequence, first: int, count: int) -> None:
        """Output tokens first..first+count-1 join the hashed blocks, as vLLM V1 hashes a request's blocks
        as they fill (prompt and output alike), so a later turn that repeats this answer hits them."""
        tail, size = seq.tail_ids, self.block_size
        for position in range(first, first + count):
            tail.append(text.output_token_id(seq.seed, position))
            if len(tail) == size:
                seq.block_hashes.append(hash((seq.block_hashes[-1] if seq.block_hashes else 0, *tail)))
                tail.clear()

    # -- the step loop ----------------------------------------------------------------------

    def begin_step(self, now: float) -> tuple[Batch, float]:
        """Schedule one step at `now`: its batch and its modelled cost in seconds (0 for an empty
        batch, which happens only when every running request was preempted in this step)."""
        self._process_aborts()
        batch, tokens = self._schedule(now)
        return batch, self._step_seconds(batch, tokens) if batch else 0.0

    def end_step(self, batch: Batch, now: float) -> None:
        """The batch has executed: every request whose computed tokens caught up gets a token at `now`."""
        self._complete(batch, now)

    async def _loop(self) -> None:
        clock = self.clock
        late = 0.0  # how far the previous step overshot; the next one catches up by as much
        while True:
            if not self.running and not self.waiting and not self._pending_aborts:
                self._work.clear()
                await self._work.wait()
            started = clock()
            batch, seconds = self.begin_step(started)
            if not batch:
                # Only when every running request was preempted in this step; admit them next step.
                await asyncio.sleep(0.001)
                continue
            target = started + max(0.0, seconds - late)
            await asyncio.sleep(max(0.0, target - clock()))
            finished_at = clock()
            # When the event loop wakes us late (a busy or shared CPU), the next step is shorter by the
            # overshoot, at most a whole step, so the modelled token rate holds on average.
            late = min(max(0.0, finished_at - target), seconds)
            self.timing.record(finished_at - target)
            self.end_step(batch, finished_at)

    def _step_seconds(self, batch: Batch, tokens: int) -> float:
        timing = self.profile.timing
        decode_seqs = prefill_tokens = context_tokens = 0
        for seq, count in batch:
            if seq.output_len and seq.total_tokens - seq.num_computed == 1:
                decode_seqs += 1
                context_tokens += seq.num_computed
                prefill_tokens += seq.drafts  # draft tokens are verified like prompt tokens
            else:
                prefill_tokens += count
        seconds = (
            timing.step_base_seconds
            + timing.decode_per_seq_seconds * decode_seqs
            + timing.prefill_per_token_seconds * prefill_tokens
            + timing.context_per_token_seconds * context_tokens
        ) * timing.time_scale
        faults = self.faults
        spike_chance = 1 - math.exp(-faults.spike_per_minute / 60 * seconds)
        if faults.spike_seconds and self.rng.random() < spike_chance:
            seconds += faults.spike_seconds
        return seconds

    def _process_aborts(self) -> None:
        if not self._pending_aborts:
            return
        aborted = {id(seq) for seq in self._pending_aborts}
        self.running = [seq for seq in self.running if id(seq) not in aborted]
        if any(seq.status is Status.WAITING for seq in self._pending_aborts):
            self.waiting = deque(seq for seq in self.waiting if id(seq) not in aborted)
        now = self.clock()
        for seq in self._pending_aborts:
            if seq.status is not Status.FINISHED:
                self.pool.release(seq)
                self._finish(seq, "abort", now)
        self._pending_aborts.clear()

    def _schedule(self, now: float) -> tuple[Batch, int]:
        """Pick this step's batch, as vLLM's V1 scheduler does with FCFS policy."""
        budget = self.profile.scheduler.max_num_batched_tokens
        batch: Batch = []
        preempted = False
        index = 0
        while index < len(self.running) and budget > 0:
            seq = self.running[index]
            count = min(seq.total_tokens - seq.num_computed, budget)
            seq.drafts = 0
            if self.num_spec and seq.output_len and seq.total_tokens - seq.num_computed == 1:
                # vLLM trims drafts to the token budget and to max_model_len
                room = self.profile.max_model_len - seq.total_tokens - 1
                seq.drafts = max(0, min(self.num_spec, budget - 1, room))
                count += seq.drafts
            needed = self._blocks_for(seq.num_computed + count) - seq.num_blocks
            while needed > 0 and not self.pool.allocate(needed):
                victim = self.running.pop()
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
            else:
                if needed > 0:
                    seq.plain_blocks += needed
                batch.append((seq, count))
                budget -= count
                index += 1
                continue
            break  # seq itself was preempted: it was the last one
        if not preempted:
            budget = self._admit(now, budget, batch)
        return batch, self.profile.scheduler.max_num_batched_tokens - budget

    def _admit(self, now: float, budget: int, batch: Batch) -> int:
        max_seqs = self.profile.scheduler.max_num_seqs
        while self.waiting and budget > 0 and len(self.running) < max_seqs:
            seq = self.waiting[0]
            total = seq.total_tokens
            hits = self.pool.cached_prefix(seq.block_hashes, (total - 1) // self.block_size)
            hit_tokens = len(hits) * self.block_size
            count = min(total - hit_tokens, budget)
            needed = self._blocks_for(hit_tokens + count) - len(hits)
            reclaimable = sum(1 for block_hash in hits if self.pool.refs[block_hash] == 0)
            if needed > self.pool.num_free - reclaimable:
                break
            for block_hash in hits:
                self.pool.acquire(block_hash)
            self.pool.allocate(needed)
            seq.cached_refs = hits
            seq.plain_blocks = needed
            seq.num_computed = hit_tokens
            seq.drafts = 0
            if seq.num_cached_tokens < 0:
                seq.num_cached_tokens = hit_tokens
                seq.scheduled_ts = now
            if self.prefix_caching and seq.num_preemptions == 0:  # vLLM files re-admissions separately
                self.stats.prefix_cache_queries += total
                self.stats.prefix_cache_hits += hit_tokens
            self.waiting.popleft()
            seq.status = Status.RUNNING
            self.running.append(seq)
            batch.append((seq, count))
            budget -= count
        return budget

    def _blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def _preempt(self, seq: Sequence) -> None:
        self.pool.release(seq)
        seq.num_computed = 0
        seq.num_preemptions += 1
        seq.status = Status.WAITING
        self.stats.preemptions += 1
        self.waiting.appendleft(seq)

    def _complete(self, batch: Batch, now: float) -> None:
        stats = self.stats
        computed_before, generated_before = stats.prompt_tokens_computed, stats.generation_tokens
        finished = False
        for seq, count in batch:
            if seq.status is not Status.RUNNING or seq.abort_requested:
                continue  # preempted later in this step's scheduling, or aborted meanwhile
            if seq.drafts:
                new = min(1 + self._verify(seq), self._room(seq))
                seq.num_computed += new  # rejected drafts' KV is dropped
                self._cache_full_blocks(seq)
            else:
                new = 1
                seq.num_computed += count
                self._cache_full_blocks(seq)
                if seq.num_computed < seq.total_tokens:
                    continue  # a prefill chunk; no token yet
            if seq.output_len == 0:
                self._first_token(seq, now)
            else:
                stats.itl.observe(now - seq.last_token_ts)  # one gap per step, however many tokens
            if self.prefix_caching:
                self._hash_output(seq, seq.output_len, new)
            seq.output_len += new
            seq.last_token_ts = now
            stats.generation_tokens += new
            if seq.step_ends is not None:
                seq.step_ends.append(seq.output_len)
            reason = self._finish_reason(seq)
            if reason is not None:
                self.pool.release(seq)
                self._finish(seq, reason, now)
                finished = True
            else:
                seq.wake()
        if finished:
            self.running = [seq for seq in self.running if seq.status is Status.RUNNING]
        # vLLM's tokens per engine step: prompt tokens computed for requests whose prefill completed in
        # this step, plus the tokens generated in it (IterationStats; chunk sizes are not counted).
        stats.iteration_tokens.observe(
            stats.prompt_tokens_computed - computed_before + stats.generation_tokens - generated_before
        )

    def _verify(self, seq: Sequence) -> int:
        """How many of this step's draft tokens the target model accepts (speculative.py), counted as
        vLLM's scheduler counts them (SpecDecodingStats.observe_draft)."""
        rate = self.profile.speculative.acceptance_rate
        accepted = accepted_drafts(seq.seed, seq.output_len, seq.drafts, rate)
        self.stats.observe_draft(seq.drafts, accepted)
        return accepted

    def _room(self, seq: Sequence) -> int:
        """Tokens this request may still produce before it finishes (length, max_model_len or stop)."""
        room = min(seq.max_tokens - seq.output_len, self.profile.max_model_len - seq.total_tokens)
        if seq.stop_at is not None:
            room = min(room, max(seq.stop_at, seq.min_tokens) - seq.output_len)
        return max(1, room)

    def _cache_full_blocks(self, seq: Sequence) -> None:
        if len(seq.cached_refs) == len(seq.block_hashes):
            return  # every full prompt block is cached already (the common decode case)
        full = min(seq.num_computed // self.block_size, len(seq.block_hashes))
        while len(seq.cached_refs) < full:
            self.pool.promote(seq.block_hashes[len(seq.cached_refs)])
            seq.cached_refs.append(seq.block_hashes[len(seq.cached_refs)])
            seq.plain_blocks -= 1

    def _first_token(self, seq: Sequence, now: float) -> None:
        stats = self.stats
        cached = max(seq.num_cached_tokens, 0)
        stats.prompt_tokens += seq.prompt_len
        stats.prompt_tokens_cache_hit += cached
        stats.prompt_tokens_computed += seq.prompt_len - cached
        stats.ttft.observe(now - seq.arrival)
        stats.histograms["request_params_n"].observe(1)
        seq.first_token_ts = now

    def _finish_reason(self, seq: Sequence) -> str | None:
        if seq.output_len >= seq.max_tokens or seq.total_tokens >= self.profile.max_model_len:
            return "length"
        if seq.stop_at is not None and seq.output_len >= max(seq.stop_at, seq.min_tokens):
            return "stop"
        return None

    def _finish(self, seq: Sequence, reason: str, now: float) -> None:
        """Record a finished request the way vLLM's IterationStats.update_from_finished_request does."""
        seq.status = Status.FINISHED
        seq.finish_reason = reason
        scheduled = seq.scheduled_ts or now
        first = seq.first_token_ts or now
        last = seq.last_token_ts or now
        histograms = self.stats.histograms
        self.stats.request_success[reason] += 1
        histograms["e2e_request_latency_seconds"].observe(now - seq.arrival)
        histograms["request_queue_time_seconds"].observe(scheduled - seq.arrival)
        histograms["request_prefill_time_seconds"].observe(first - scheduled)
        histograms["request_inference_time_seconds"].observe(last - scheduled)
        histograms["request_decode_time_seconds"].observe(last - first)
        histograms["request_num_preemptions"].observe(seq.num_preemptions)
        histograms["request_prefill_kv_computed_tokens"].observe(
            seq.prompt_len - max(seq.num_cached_tokens, 0)
        )
        histograms["request_prompt_tokens"].observe(seq.prompt_len)
        histograms["request_generation_tokens"].observe(seq.output_len)
        histograms["request_max_num_generation_tokens"].observe(seq.output_len)
        decode_tokens = seq.output_len - 1
        histograms["request_time_per_output_token_seconds"].observe(
            (last - first) / decode_tokens if decode_tokens > 0 else 0.0
        )
        if seq.max_tokens_param:
            histograms["request_params_max_tokens"].observe(seq.max_tokens_param)
        seq.wake()

    # -- views ------------------------------------------------------------------------------

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)
