"""A phase's statistics as JSON that merges exactly: the report's `state` section, so that the
reports of a run's shards (`--shard`, one per host) merge into the report one process would have
written (`llmobs-loadgen merge`, merge.py).

Everything a PhaseStats holds goes in: counters, outcomes, token and prompt sources, error messages,
and for every distribution its count, sum, min, max and sketch buckets (stats.Distribution: the same
value always lands in the same bucket, so added buckets give the percentiles of all the values
together; never an average of percentiles). Buckets are written as two lists, the key steps
(delta-encoded, small numbers) and the counts. Instants are written as Unix seconds (through the
run's clock anchor, result.Clock), since monotonic clocks of two hosts cannot be compared: a merged
phase runs from its earliest start to its latest end, as far as the hosts' clocks agree.
"""

from __future__ import annotations

import dataclasses
import math
from itertools import pairwise

from loadgen.engine_counters import PrefixCache
from loadgen.errors import LoadgenError
from loadgen.outcomes import OUTCOMES
from loadgen.overload import Overload
from loadgen.result import Clock, RunResult
from loadgen.stats import COUNTERS, LATENCY_METRICS, Distribution, PhaseStats, Slo

__all__ = ["STATE_VERSION", "failure", "notes", "phase_from_state", "phase_state", "report_fields"]

STATE_VERSION = 1


def report_fields(run: RunResult) -> dict:
    """The report's scale-out fields: the shard, the workers and the `mergeable` state of every phase."""
    if run.clock is None:
        return {}
    fields: dict[str, object] = {}
    shard = run.scenario.shard
    if not shard.whole:
        fields["shard"] = {"index": shard.index, "count": shard.count}
    fields["workers"] = run.workers
    if run.pool is not None:
        fields["pool"] = run.pool
    fields["mergeable"] = {
        "version": STATE_VERSION,
        "phases": [phase_state(stats, run.clock) for stats in run.stats],
        "warmup": phase_state(run.warmup, run.clock) if run.warmup is not None else None,
    }
    return fields


def notes(run: RunResult) -> list[str]:
    out = [f"worker {failure}" for failure in run.worker_failures]
    if not run.scenario.shard.whole:
        shard = run.scenario.shard
        out.append(
            f"this is shard {shard.index} of {shard.count} (its slice of the load only): "
            "`llmobs-loadgen merge` makes the run's report from every shard's"
        )
    return out


def failure(run: RunResult) -> str | None:
    """A worker that ended before the run did fails the run: what it did since its last report to
    the parent is not counted."""
    if not run.worker_failures:
        return None
    return f"{len(run.worker_failures)} of {run.workers} workers ended early: " + "; ".join(
        run.worker_failures
    )


def phase_state(stats: PhaseStats, clock: Clock) -> dict:
    return {
        "name": stats.name,
        "started_unix_ns": clock.unix_ns_of(stats.start_ns),
        "ended_unix_ns": clock.unix_ns_of(stats.end_ns),
        "outcomes": dict(stats.outcomes),
        "counters": {name: getattr(stats, name) for name in COUNTERS},
        "token_sources": dict(stats.token_sources),
        "prompt_sources": dict(stats.prompt_sources),
        "errors": dict(stats.errors),
        "interrupted": stats.interrupted,
        "overload": dataclasses.asdict(stats.overload) if stats.overload else None,
        "engine": stats.engine,
        "event_bases": dict(stats.event_bases),
        "prefix_cache": dataclasses.asdict(stats.prefix_cache) if stats.prefix_cache else None,
        "prefix_hit_target": stats.prefix_hit_target,
        "distributions": {metric: _distribution_state(dist) for metric, dist in stats.dist.items()},
    }


def phase_from_state(state: dict, slos: tuple[Slo, ...]) -> PhaseStats:
    """The PhaseStats a `phase_state` was written from; its instants are Unix time in nanoseconds."""
    try:
        stats = PhaseStats(str(state["name"]), slos)
        stats.start_ns = _integer(state["started_unix_ns"])
        stats.end_ns = _integer(state["ended_unix_ns"])
        for outcome, count in state["outcomes"].items():
            if outcome not in OUTCOMES:
                raise ValueError(f"unknown outcome {outcome!r}")
            stats.outcomes[outcome] = _count(count)
        for name in COUNTERS:
            value = state["counters"].get(name, 0)  # a counter newer than the shard's report: none
            setattr(stats, name, float(value) if name.endswith("_s") else _count(value))
        stats.token_sources = {str(k): _count(v) for k, v in state["token_sources"].items()}
        stats.prompt_sources = {str(k): _count(v) for k, v in state["prompt_sources"].items()}
        stats.errors = {str(k): _count(v) for k, v in state["errors"].items()}
        stats.interrupted = bool(state["interrupted"])
        stats.overload = Overload(**state["overload"]) if state["overload"] else None
        stats.engine = state["engine"] if isinstance(state["engine"], dict) else None
        stats.event_bases = {str(k): _count(v) for k, v in state["event_bases"].items()}
        stats.prefix_cache = PrefixCache(**state["prefix_cache"]) if state["prefix_cache"] else None
        target = state["prefix_hit_target"]
        stats.prefix_hit_target = None if target is None else float(target)
        for metric in LATENCY_METRICS:
            stats.dist[metric] = _distribution(state["distributions"][metric])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise LoadgenError(f"phase state is not one this version writes: {exc}") from exc
    return stats


def _distribution_state(dist: Distribution) -> dict:
    buckets = dist.buckets
    keys = sorted(buckets)
    steps = [keys[0], *(b - a for a, b in pairwise(keys))] if keys else []
    return {
        "count": dist.count,
        "sum": dist.total,
        "min": dist.min if dist.count else None,
        "max": dist.max if dist.count else None,
        "bucket_key_steps": steps,
        "bucket_counts": [buckets[key] for key in keys],
    }


def _distribution(state: dict) -> Distribution:
    count, total = _count(state["count"]), float(state["sum"])
    low, high = (float(state["min"]), float(state["max"])) if count else (math.inf, -math.inf)
    steps, counts = state["bucket_key_steps"], state["bucket_counts"]
    if len(steps) != len(counts):
        raise ValueError("bucket keys and counts differ in length")
    buckets: dict[int, int] = {}
    key = 0
    for step, value in zip(steps, counts, strict=True):
        key += _integer(step)
        buckets[key] = _count(value)
    if sum(buckets.values()) != count or not math.isfinite(total):
        raise ValueError("a distribution's buckets do not add up to its count")
    return Distribution.restored(count, total, low, high, buckets)


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not a whole number")
    return value


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a count")
    return value
