"""Streaming aggregation for the report: bounded memory however long the run.

A Distribution keeps exact count, sum, min and max, and a log-bucketed sketch (bucket width 0.2 %)
for percentiles, so a percentile is within 0.1 % of the exact value and memory is bounded by the
range of values (a few thousand buckets), never by the number of requests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from loadgen.engine_counters import PrefixCache
from loadgen.outcomes import OUTCOMES, Outcome
from loadgen.overload import Overload
from loadgen.timing import RequestRecord

_GAMMA = 1.002
_LOG_GAMMA = math.log(_GAMMA)
_FLOOR = 1e-9  # values at or below this (0 included) share one bucket
PERCENTILES = (50, 90, 95, 99)
LOW_PERCENTILE = 5  # the slow tail of higher-is-better figures (tokens/s)
MAX_ERROR_MESSAGES = 20


class Distribution:
    __slots__ = ("_buckets", "count", "max", "min", "total")

    def __init__(self) -> None:
        self._buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        key = math.floor(math.log(value) / _LOG_GAMMA) if value > _FLOOR else -(10**9)
        self._buckets[key] = self._buckets.get(key, 0) + 1

    def add_many(self, values: list[float], weights: list[int] | None = None) -> None:
        """add() for each value, `weights[i]` times for value i when given (the gaps of one stream at
        once: one call instead of one per token)."""
        if not values:
            return
        low, high = min(values), max(values)
        if low < self.min:
            self.min = low
        if high > self.max:
            self.max = high
        buckets, log, floor = self._buckets, math.log, math.floor
        if weights is None:
            self.count += len(values)
            self.total += sum(values)
            for value in values:
                key = floor(log(value) / _LOG_GAMMA) if value > _FLOOR else -(10**9)
                buckets[key] = buckets.get(key, 0) + 1
            return
        for value, weight in zip(values, weights, strict=True):
            self.count += weight
            self.total += value * weight
            key = floor(log(value) / _LOG_GAMMA) if value > _FLOOR else -(10**9)
            buckets[key] = buckets.get(key, 0) + weight

    @property
    def buckets(self) -> dict[int, int]:
        """The sketch: bucket key -> values in it (read only; mergeable.py writes and restores it)."""
        return self._buckets

    @classmethod
    def restored(
        cls, count: int, total: float, low: float, high: float, buckets: dict[int, int]
    ) -> Distribution:
        """A distribution from its parts (as `summary` and `buckets` give them)."""
        dist = cls()
        dist.count, dist.total, dist.min, dist.max, dist._buckets = count, total, low, high, buckets
        return dist

    def merge(self, other: Distribution) -> None:
        """Add another distribution's values: the same buckets, count, min and max as if every value
        had been added here (the sum differs at most by float rounding, as a different order of
        additions would in one process)."""
        buckets = self._buckets
        for key, count in other._buckets.items():
            buckets[key] = buckets.get(key, 0) + count
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def percentile(self, p: float) -> float | None:
        """The value at rank ceil(p/100 * count) (nearest rank), from the sketch."""
        if not self.count:
            return None
        rank = max(1, math.ceil(p / 100 * self.count))
        seen = 0
        for key in sorted(self._buckets):
            seen += self._buckets[key]
            if seen >= rank:
                if key == -(10**9):
                    return max(self.min, 0.0)
                middle = 2 * _GAMMA ** (key + 1) / (1 + _GAMMA)  # relative error <= (gamma-1)/(gamma+1)
                return min(max(middle, self.min), self.max)
        return self.max

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def summary(self) -> dict:
        out = {"count": self.count, "mean": self.mean, "min": None, "max": None}
        if self.count:
            out["min"], out["max"] = self.min, self.max
        out["median"] = self.percentile(50)
        for p in PERCENTILES[1:]:
            out[f"p{p}"] = self.percentile(p)
        out[f"p{LOW_PERCENTILE}"] = self.percentile(LOW_PERCENTILE)
        return out


@dataclass(frozen=True)
class Slo:
    """One service-level objective, e.g. `ttft<=2s` or `user_tps>=10`."""

    metric: str  # ttft, ttfo, tpot, itl, e2e, dispatch, user_tps, stream_tps, error_ratio
    op: str  # "<=" or ">="
    threshold: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"

    def met_by(self, value: float | None) -> bool:
        """A figure that could not be measured (None) does not meet the objective."""
        if value is None:
            return False
        return value <= self.threshold if self.op == "<=" else value >= self.threshold


LATENCY_METRICS = (
    "ttft", "ttfo", "tpot", "itl", "e2e", "dispatch", "e2e_from_schedule", "user_tps", "stream_tps",
)  # fmt: skip
RATES = ("user_tps", "stream_tps")  # higher is better: judged and shown at the low percentiles
STREAM_ONLY = ("ttft", "ttfo", "tpot", "itl", "stream_tps")  # need token events: not measured unstreamed
_NEED_TWO_TOKENS = ("tpot", "itl", "stream_tps")


# PhaseStats counters that add when slices merge
COUNTERS = (
    "sent", "good", "prompt_tokens", "output_tokens", "reasoning_tokens", "invalid_utf8_events",
    "usage_disagreements", "throttled", "retry_after_waited_s", "retries", "resend_wait_s", "token_events",
    "multi_token_events", "arrived_whole", "coalesced_gaps",
)  # fmt: skip


class PhaseStats:
    """Every figure of one phase (one step, one sweep level, or the whole run)."""

    def __init__(self, name: str, slos: tuple[Slo, ...]) -> None:
        self.name = name
        self.slos = slos
        self.dist = {metric: Distribution() for metric in LATENCY_METRICS}
        self.outcomes: dict[Outcome, int] = dict.fromkeys(OUTCOMES, 0)
        self.sent = 0
        self.good = 0
        self.prompt_tokens = 0
        self.output_tokens = 0
        self.reasoning_tokens = 0
        self.token_sources: dict[str, int] = {}
        self.prompt_sources: dict[str, int] = {}
        self.prefix_cache: PrefixCache | None = None  # the engine's own counters over the phase
        self.prefix_hit_target: float | None = None  # --prefix-hit-rate
        self.token_events = 0
        self.multi_token_events = 0  # known to carry more than one token
        self.arrived_whole = 0  # streamed answers of 2+ tokens whose tokens and end came in one read
        self.coalesced_gaps = 0  # gaps between token events read in one socket read: ITL samples of 0
        self.event_bases: dict[str, int] = {}  # requests by how their events' tokens are known
        self.invalid_utf8_events = 0
        self.usage_disagreements = 0  # succeeded requests whose usage disagreed with their token events
        self.throttled = 0  # failed requests the server throttled (429, 503 with Retry-After)
        self.retry_after_waited_s = 0.0  # closed loop, --honor-retry-after: users' waits, summed
        self.retries = 0
        self.resend_wait_s = 0.0  # first send -> re-send, summed over re-sent requests
        self.errors: dict[str, int] = {}
        self.start_ns = 0
        self.end_ns = 0
        self.interrupted = False  # a stop cut the phase short: it is reported, never judged
        self.overload: Overload | None = None  # open loop past the server's capacity (overload.py)
        self.engine: dict | None = None  # the engine's running/waiting/KV figures (engine_watch.py)

    def add(self, record: RequestRecord) -> None:
        self.outcomes[record.outcome] += 1
        self.invalid_utf8_events += record.invalid_utf8
        self.retries += record.retries
        self.resend_wait_s += record.resend_wait_s
        if record.end_ns > self.end_ns:
            self.end_ns = record.end_ns
        self.dist["dispatch"].add(record.dispatch_s)
        if not record.ok:
            self.throttled += record.throttled
            key = f"{record.outcome}: {record.error}"[:200]
            if key in self.errors or len(self.errors) < MAX_ERROR_MESSAGES:
                self.errors[key] = self.errors.get(key, 0) + 1
            return
        self.prompt_tokens += record.prompt_tokens or 0
        self.output_tokens += record.output_tokens
        self.usage_disagreements += record.usage_disagrees
        self.reasoning_tokens += record.reasoning_tokens
        self.token_sources[record.token_source] = self.token_sources.get(record.token_source, 0) + 1
        prompt_source = record.prompt_source or "none"
        self.prompt_sources[prompt_source] = self.prompt_sources.get(prompt_source, 0) + 1
        if record.stream and record.token_times:
            self.token_events += len(record.token_times)
            self.multi_token_events += record.multi_token_event_count or 0
            self.coalesced_gaps += record.coalesced_gaps
            basis = record.event_basis
            self.event_bases[basis] = self.event_bases.get(basis, 0) + 1
        e2e = record.e2e_s
        values = {"e2e": e2e, "e2e_from_schedule": e2e + record.dispatch_s, "ttft": record.ttft_s}
        values["ttfo"] = record.ttfo_s
        tpot = record.tpot_s
        values["tpot"] = tpot
        self.arrived_whole += tpot == 0.0  # no time between the first token and the end: no stream rate
        values["user_tps"] = record.user_tps
        values["stream_tps"] = 1.0 / tpot if tpot else None
        for metric, value in values.items():
            if value is not None:
                self.dist[metric].add(value)
        gaps, weights = record.itl_s()
        self.dist["itl"].add_many(gaps, weights)
        values["itl"] = max(gaps) if gaps else None
        values["dispatch"] = record.dispatch_s
        if all(self._meets(slo, values, record) for slo in self.slos if slo.metric != "error_ratio"):
            self.good += 1

    def _prefix_cache_summary(self) -> dict | None:
        """The target prefix-cache hit share beside what the engine counted (None: no target)."""
        if self.prefix_hit_target is None:
            return None
        cache = self.prefix_cache
        return {
            "target_hit_rate": self.prefix_hit_target,
            "engine_hit_rate": cache.hit_rate if cache else None,
            "engine_queries": cache.queries if cache else None,
            "engine_hits": cache.hits if cache else None,
            "source": cache.source
            if cache
            else "no prefix-cache counters from the engine's /metrics "
            "(none there, or not read: --engine-metrics)",
        }

    @classmethod
    def merged(cls, parts: list[PhaseStats]) -> PhaseStats:
        """One phase's stats from several slices' (at least one)."""
        out = cls(parts[0].name, parts[0].slos)
        out.start_ns, out.end_ns = min(p.start_ns for p in parts), max(p.end_ns for p in parts)
        for part in parts:
            out.merge(part)
        return out

    def merge(self, other: PhaseStats) -> None:
        """Add another slice's stats of the same phase (workers, shards): counters and distributions
        add; the phase runs from the earliest start to the latest end (instants on one clock)."""
        for metric, dist in other.dist.items():
            self.dist[metric].merge(dist)
        for outcome, count in other.outcomes.items():
            self.outcomes[outcome] += count
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for mine, theirs in ((self.token_sources, other.token_sources),
                             (self.prompt_sources, other.prompt_sources),
                             (self.event_bases, other.event_bases)):  # fmt: skip
            for key, count in theirs.items():
                mine[key] = mine.get(key, 0) + count
        for key, count in other.errors.items():
            if key in self.errors or len(self.errors) < MAX_ERROR_MESSAGES:
                self.errors[key] = self.errors.get(key, 0) + count
        self.start_ns = min(self.start_ns, other.start_ns)
        self.end_ns = max(self.end_ns, other.end_ns)
        self.interrupted = self.interrupted or other.interrupted
        self.overload = merged_overload(self.overload, other.overload)
        # the engine's own figures: one process of a pool reads them (runner), every shard the same engine
        self.engine = self.engine or other.engine
        self.prefix_cache = self.prefix_cache or other.prefix_cache
        if self.prefix_hit_target is None:
            self.prefix_hit_target = other.prefix_hit_target

    @staticmethod
    def _meets(slo: Slo, values: dict[str, float | None], record: RequestRecord) -> bool:
        """Whether one request meets one per-request objective. A figure that cannot be measured
        (TTFT without streaming, TTFO of an answer without content) does not; the exception is a
        streamed answer too short to have a time per token or a gap, which has nothing to break."""
        value = values.get(slo.metric)
        if value is None and slo.metric in _NEED_TWO_TOKENS and record.stream and record.token_times:
            return True
        return slo.met_by(value)

    @property
    def finished(self) -> int:
        return sum(self.outcomes.values())

    @property
    def failed(self) -> int:
        return self.finished - self.outcomes["success"]

    @property
    def duration_s(self) -> float:
        return max(0, self.end_ns - self.start_ns) * 1e-9

    def slo_value(self, slo: Slo, percentile: float) -> float | None:
        """The phase's figure an SLO is judged on: the error ratio, or the metric's percentile
        (for `>=` objectives the mirrored low percentile, e.g. p5 of per-user tokens/s for p95)."""
        if slo.metric == "error_ratio":
            return self.failed / self.finished if self.finished else None
        p = percentile if slo.op == "<=" else 100 - percentile
        return self.dist[slo.metric].percentile(p)

    def slos_met(self, percentile: float) -> bool:
        """Every SLO met; never for a phase cut short by a stop or overloaded (its latency is a queue)."""
        if not self.outcomes["success"] or self.interrupted or self.overload is not None:
            return False
        return all(
            (value := self.slo_value(slo, percentile)) is not None and slo.met_by(value) for slo in self.slos
        )

    def summary(self, percentile: float) -> dict:
        duration = self.duration_s
        per_s = (lambda n: n / duration) if duration > 0 else (lambda n: None)
        succeeded = self.outcomes["success"]
        return {
            "phase": self.name,
            "duration_s": duration,
            "requests": {
                "sent": self.sent,
                "finished": self.finished,
                "succeeded": succeeded,
                "failed": self.failed,
                "by_outcome": dict(self.outcomes),
                "retried_connections": self.retries,  # requests re-sent on a fresh connection
                "resend_wait_s": self.resend_wait_s,  # their first send -> re-send, summed
                "throttled": self.throttled,
                "retry_after_waited_s": self.retry_after_waited_s,
            },
            "throughput": {
                "requests_per_s": per_s(succeeded),
                "output_tokens_per_s": per_s(self.output_tokens),
                "total_tokens_per_s": per_s(self.output_tokens + self.prompt_tokens),
                "goodput_requests_per_s": per_s(self.good) if self.slos else None,
            },
            "tokens": {
                "prompt": self.prompt_tokens,
                "output": self.output_tokens,
                "reasoning": self.reasoning_tokens,
                "output_source": dict(self.token_sources),
                "prompt_source": dict(self.prompt_sources),
                "invalid_utf8_events": self.invalid_utf8_events,
                "usage_disagreements": self.usage_disagreements,
                "events": self.token_events,
                "multi_token_events": self.multi_token_events,
                "arrived_whole": self.arrived_whole,
                "coalesced_gaps": self.coalesced_gaps,
                "event_token_basis": dict(self.event_bases),
            },
            "latency_s": {metric: dist.summary() for metric, dist in self.dist.items()},
            "prefix_cache": self._prefix_cache_summary(),
            "slo": {
                "percentile": percentile,
                "objectives": [str(slo) for slo in self.slos],
                "values": {str(slo): self.slo_value(slo, percentile) for slo in self.slos},
                "met": self.slos_met(percentile) if self.slos and not self.interrupted else None,
                "good_requests": self.good,
            },
            "errors": dict(sorted(self.errors.items(), key=lambda item: -item[1])),
            "interrupted": self.interrupted,
            "overload": self.overload.as_json() if self.overload else None,
            "engine": self.engine,
        }


def merged_overload(mine: Overload | None, theirs: Overload | None) -> Overload | None:
    """Slices that found their part of an open loop overloaded: from the earliest onset, their rates
    and backlogs added (arrivals are dealt evenly, so the slices see the same server)."""
    if mine is None or theirs is None:
        return mine or theirs
    return Overload(
        since_s=min(mine.since_s, theirs.since_s),
        offered_rate=mine.offered_rate + theirs.offered_rate,
        achieved_rate=mine.achieved_rate + theirs.achieved_rate,
        in_flight_at_onset=mine.in_flight_at_onset + theirs.in_flight_at_onset,
        in_flight_now=mine.in_flight_now + theirs.in_flight_now,
        detected_s=min(mine.detected_s, theirs.detected_s),
    )
