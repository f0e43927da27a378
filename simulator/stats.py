"""What the engine counts, in vLLM 0.33's units and bucket boundaries (vllm/v1/metrics/buckets.py).

The engine mutates one EngineStats from its step loop (a single asyncio task, so a scrape that
runs between two steps always sees one consistent state); metrics.py renders it.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field

TIME_TO_FIRST_TOKEN_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
INTER_TOKEN_LATENCY_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
REQUEST_LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
    60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
ITERATION_TOKENS_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
REQUEST_PARAMS_N_BUCKETS = (1, 2, 5, 10, 20)
REQUEST_NUM_PREEMPTIONS_BUCKETS = (1, 2, 3, 4, 5, 10, 20)

FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")
ADMISSION_REASONS = ("max_num_queued_reqs", "max_num_queued_tokens")


def one_two_five_buckets(max_value: int) -> tuple[int, ...]:
    """vLLM's build_1_2_5_buckets: 1, 2, 5, 10, 20, 50, ... up to max_value."""
    buckets: list[int] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_value:
                return tuple(buckets)
            buckets.append(value)
        exponent += 1


class Histogram:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last: above every bound (+Inf only)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)


# Histogram name (without the vllm: prefix) -> bucket family; request_tokens ones depend on max_model_len.
LATENCY_HISTOGRAMS = {
    "time_to_first_token_seconds": TIME_TO_FIRST_TOKEN_BUCKETS,
    "inter_token_latency_seconds": INTER_TOKEN_LATENCY_BUCKETS,
    "request_time_per_output_token_seconds": INTER_TOKEN_LATENCY_BUCKETS,
    "e2e_request_latency_seconds": REQUEST_LATENCY_BUCKETS,
    "request_queue_time_seconds": REQUEST_LATENCY_BUCKETS,
    "request_inference_time_seconds": REQUEST_LATENCY_BUCKETS,
    "request_prefill_time_seconds": REQUEST_LATENCY_BUCKETS,
    "request_decode_time_seconds": REQUEST_LATENCY_BUCKETS,
}
TOKEN_HISTOGRAMS = (
    "request_prompt_tokens",
    "request_generation_tokens",
    "request_max_num_generation_tokens",
    "request_params_max_tokens",
    "request_prefill_kv_computed_tokens",
)


@dataclass
class EngineStats:
    """Counters and histograms since the engine (re)started; `created` is that moment (Unix time)."""

    max_model_len: int
    num_spec_tokens: int = 0
    created: float = field(default_factory=time.time)
    prompt_tokens: int = 0
    prompt_tokens_computed: int = 0
    prompt_tokens_cache_hit: int = 0
    generation_tokens: int = 0
    preemptions: int = 0
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    request_success: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FINISH_REASONS, 0))
    admission_rejections: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ADMISSION_REASONS, 0))
    # speculative decoding (vLLM's SpecDecodingStats), with num_spec_tokens > 0
    spec_drafts: int = 0
    spec_draft_tokens: int = 0
    spec_accepted_tokens: int = 0
    spec_accepted_per_position: list[int] = field(default_factory=list)
    histograms: dict[str, Histogram] = field(default_factory=dict)

    def __post_init__(self) -> None:
        token_buckets = one_two_five_buckets(self.max_model_len)
        self.histograms = {name: Histogram(bounds) for name, bounds in LATENCY_HISTOGRAMS.items()}
        self.histograms.update({name: Histogram(token_buckets) for name in TOKEN_HISTOGRAMS})
        self.histograms["iteration_tokens_total"] = Histogram(ITERATION_TOKENS_BUCKETS)
        self.histograms["request_params_n"] = Histogram(REQUEST_PARAMS_N_BUCKETS)
        self.histograms["request_num_preemptions"] = Histogram(REQUEST_NUM_PREEMPTIONS_BUCKETS)
        self.spec_accepted_per_position = [0] * self.num_spec_tokens
        self.ttft = self.histograms["time_to_first_token_seconds"]
        self.itl = self.histograms["inter_token_latency_seconds"]
        self.iteration_tokens = self.histograms["iteration_tokens_total"]

    def observe_draft(self, drafts: int, accepted: int) -> None:
        """One request's verify step (vLLM's SpecDecodingStats.observe_draft)."""
        self.spec_drafts += 1
        self.spec_draft_tokens += drafts
        self.spec_accepted_tokens += accepted
        for position in range(accepted):
            self.spec_accepted_per_position[position] += 1


@dataclass(slots=True)
class StepTiming:
    """Ground truth about the step loop keeping time, for tests and benchmarks."""

    steps: int = 0
    lag_total: float = 0.0
    lag_max: float = 0.0
    recent_lags: deque = field(default_factory=lambda: deque(maxlen=2000))

    def record(self, lag: float) -> None:
        self.steps += 1
        self.lag_total += lag
        self.lag_max = max(self.lag_max, lag)
        self.recent_lags.append(lag)

    def as_dict(self) -> dict[str, float]:
        recent = sorted(self.recent_lags)
        return {
            "steps": self.steps,
            "lag_mean_seconds": self.lag_total / self.steps if self.steps else 0.0,
            "lag_max_seconds": self.lag_max,
            "lag_p99_recent_seconds": recent[int(len(recent) * 0.99)] if recent else 0.0,
        }


class VirtualClock:
    """A clock that moves only when told to: `clock()` reads it, `advance(seconds)` moves it."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
