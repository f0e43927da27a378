"""The normalized `llm_*` families (names fixed in docs/metrics.md) and the values adapters fill in.

An adapter never builds prometheus_client objects; it appends Points and Histograms to a Normalized
result, with the labels it knows (`model`, `engine_index`, `reason`, ...). The collector adds `target`
and `engine_kind` and turns one consistent set of results into families. The `llm_target_*` health series
carry `target` only (their counts must not move to new series when the kind is discovered or changes);
`llm_target_info` names the kind.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

Kind = Literal["gauge", "counter", "histogram"]


@dataclass(frozen=True)
class Spec:
    type: Kind
    help: str


FAMILIES: dict[str, Spec] = {
    "llm_engine_info": Spec("gauge", "Engine identity, one series per target and model (value 1)."),
    "llm_requests_running": Spec("gauge", "Requests the engine is executing now."),
    "llm_requests_waiting": Spec("gauge", "Requests queued in the engine, not yet running."),
    "llm_kv_cache_usage_ratio": Spec("gauge", "Fraction of the KV cache in use (0-1)."),
    "llm_kv_cache_capacity_tokens": Spec("gauge", "KV-cache capacity in tokens."),
    "llm_prompt_tokens_total": Spec("counter", "Prompt tokens processed, cached ones included."),
    "llm_prompt_tokens_cached_total": Spec("counter", "Prompt tokens served from the prefix cache."),
    "llm_generation_tokens_total": Spec("counter", "Generated tokens."),
    "llm_time_to_first_token_seconds": Spec("histogram", "Time to first token (engine's own buckets)."),
    "llm_inter_token_latency_seconds": Spec("histogram", "Gap between successive output tokens."),
    "llm_time_per_output_token_seconds": Spec("histogram", "Mean time per output token, per request."),
    "llm_e2e_request_latency_seconds": Spec("histogram", "End-to-end request latency in the engine."),
    "llm_request_queue_time_seconds": Spec("histogram", "Time requests spent waiting in the engine's queue."),
    "llm_preemptions_total": Spec("counter", "Preemptions (SGLang: retractions)."),
    "llm_prefix_cache_queries_total": Spec("counter", "Prefix-cache lookups, in tokens."),
    "llm_prefix_cache_hits_total": Spec("counter", "Prefix-cache hits, in tokens."),
    "llm_requests_finished_total": Spec("counter", "Finished requests by common reason; raw_reason as sent."),
    "llm_model_memory_bytes": Spec("gauge", "Memory a loaded model occupies (Ollama size)."),
    "llm_model_vram_bytes": Spec("gauge", "Part of the loaded model held in GPU memory (Ollama size_vram)."),
    "llm_model_expiry_timestamp_seconds": Spec(
        "gauge", "Unix time the loaded model is unloaded (keep-alive)."
    ),
    "llm_model_context_length_tokens": Spec("gauge", "Context length the loaded model runs with."),
    "llm_engine_gpu_info": Spec("gauge", "GPUs the engine's process tree occupies (value 1)."),
    "llm_engine_gpu_memory_used_bytes": Spec("gauge", "GPU memory the engine's processes hold on that GPU."),
    "llm_engine_gpu_join_ambiguous": Spec(
        "gauge", "1 while more than one process tree could be the target's engine (no GPU join), else 0."
    ),
}

TARGET_FAMILIES: dict[str, Spec] = {
    "llm_target_info": Spec("gauge", "The engine kind of the target (value 1); unknown until discovered."),
    "llm_target_up": Spec("gauge", "1 when the last scrape of the engine target succeeded, else 0."),
    "llm_target_scrape_duration_seconds": Spec("gauge", "Duration of the last scrape of the engine target."),
    "llm_target_last_success_timestamp_seconds": Spec("gauge", "Unix time of the last successful scrape."),
    "llm_target_errors_total": Spec("counter", "Failed scrapes of the engine target by kind."),
    "llm_target_series_dropped_total": Spec(
        "counter", "Engine series left out of otherwise good scrapes, by reason (hostile values)."
    ),
}

# The `kind` of llm_target_errors_total: every way a target's scrape can fail, each counted from the start.
# docs/metrics.md and exporter/README.md ("Failure behaviour") list them (tests/engines/test_contract.py).
ErrorKind = Literal[
    "connect",
    "tls",
    "timeout",
    "http_status",
    "truncated",
    "too_large",
    "too_many_series",
    "parse",
    "unknown_engine",
    "no_known_metrics",
    "auth",
]
ERROR_KINDS: tuple[ErrorKind, ...] = get_args(ErrorKind)
# The `reason` of llm_target_series_dropped_total: series left out of a scrape that otherwise succeeded.
DropReason = Literal["label_too_long", "not_finite", "negative"]
DROP_REASONS: tuple[DropReason, ...] = get_args(DropReason)
FINISH_REASONS = ("stop", "length", "completed", "abort", "error", "other")
MAX_RAW_REASON_CHARS = 48


@dataclass(frozen=True)
class Point:
    family: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Histogram:
    family: str
    labels: Mapping[str, str]
    buckets: tuple[tuple[float, float], ...]  # (upper bound in seconds, cumulative count), +Inf last
    sum: float
    count: float


@dataclass
class Normalized:
    """What one scrape of one target says, in the common schema.

    A counter is published only when it is finite and non-negative, a histogram (all of them durations in
    seconds) only when its counts and sum are; anything else is left out and counted in `dropped`.
    """

    points: list[Point] = field(default_factory=list)
    histograms: list[Histogram] = field(default_factory=list)
    dropped: Counter[DropReason] = field(default_factory=Counter)

    def add(self, family: str, value: float, labels: Mapping[str, str]) -> None:
        if FAMILIES[family].type == "histogram":
            raise ValueError(f"{family} is a histogram")
        value = float(value)
        if FAMILIES[family].type == "counter" and not self._counts(value):
            return
        self.points.append(Point(family, dict(labels), value))

    def add_histogram(self, histogram: Histogram) -> None:
        if FAMILIES[histogram.family].type != "histogram":
            raise ValueError(f"{histogram.family} is not a histogram")
        counts = (*(count for _, count in histogram.buckets), histogram.count, histogram.sum)
        if all(self._counts(value) for value in counts):
            self.histograms.append(histogram)

    def _counts(self, value: float) -> bool:
        """True for a value a counter may hold; else the series is dropped and counted."""
        if not math.isfinite(value):
            self.dropped["not_finite"] += 1
            return False
        if value < 0:
            self.dropped["negative"] += 1
            return False
        return True

    def families(self) -> set[str]:
        return {p.family for p in self.points} | {h.family for h in self.histograms}

    def value(self, family: str, **labels: str) -> float | None:
        """The sum over points of `family` whose labels include `labels`; None when there are none."""
        matches = [p.value for p in self.points if p.family == family and _includes(p.labels, labels)]
        return sum(matches) if matches else None


_STOP = {"stop", "eos", "stop_sequence", "end_id"}
_LENGTH = {"length", "max_tokens"}
_COMPLETED = {"success", "finish", "finished", "completed"}  # ended normally; stop or length not said
_ABORT = {"abort", "aborted", "cancel", "cancelled", "canceled", "dropped"}
_ERROR = {"out_of_memory", "failure", "failed", "overloaded", "rejected", "validation"}


def finish_reason(raw: str) -> str:
    """Map an engine's finish reason onto the common set (stop, length, completed, abort, error, other).

    `completed`: the engine says the request ended normally but not whether by a stop condition or the
    length limit (TGI, Triton and LMDeploy successes). `other`: a reason outside the set (vLLM
    `repetition`), or a count that mixes reasons (SGLang and Xinference request totals).
    """
    text = raw.lower().rsplit(".", 1)[-1]  # LMDeploy sends enum reprs such as ResponseType.CANCEL
    if text in _STOP:
        return "stop"
    if text in _LENGTH:
        return "length"
    if text in _COMPLETED:
        return "completed"
    if text in _ABORT:
        return "abort"
    if "error" in text or text in _ERROR:
        return "error"
    return "other"


def raw_reason_label(raw: str) -> str:
    return raw[:MAX_RAW_REASON_CHARS]


def _includes(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())
