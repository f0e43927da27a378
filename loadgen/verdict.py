"""What a multi-step run found, in sentences: the sweep's capacity with the conditions at it and at the
first level that fails, and why it got slow there.

Both read the report's phase summaries (JSON), so a report file can be judged again without the run.
A phase cut short by a stop is never judged (neither capacity nor failing); an overloaded open-loop
phase fails (its latency measures the queue); a sweep over rates stops there.
"""

from __future__ import annotations

from collections.abc import Sequence

from loadgen.stats import STREAM_ONLY, Slo


def sweep_result(
    phases: Sequence[dict], slos: Sequence[Slo], percentile: float, unit: str, stream: bool = True
) -> dict:
    """The highest level meeting every SLO, and one sentence that says so with the figures, the TTFT
    and the engine's queue at it and at the first level that does not."""
    judged = [p for p in phases if not p.get("interrupted")]
    cut = [p for p in phases if p.get("interrupted")]
    passed = [p for p in judged if p["slo"]["met"]]
    failed = [p for p in judged if not p["slo"]["met"]]
    best = passed[-1] if passed else None
    first_fail = failed[0] if failed else None

    def figures(phase: dict) -> str:
        values = phase["slo"]["values"]
        return ", ".join(_slo_figure(slo, values.get(str(slo)), percentile, stream) for slo in slos)

    said = any(slo.metric == "ttft" for slo in slos) and percentile == 95  # TTFT p95 is in the figures

    def conditions(phase: dict) -> str:
        return phase_conditions(phase, ttft_said=said)

    if not judged:
        sentence = "No level was tested to the end (the run stopped before a phase finished)."
    elif best is None:
        low = judged[0]
        sentence = (
            f"No level tested meets the SLOs; at the lowest, {_level(low, unit)}: {figures(low)}; "
            f"there {conditions(low)}."
        )
    else:
        sentence = (
            f"Capacity: {_level(best, unit)} meets every SLO ({figures(best)}; there {conditions(best)})"
        )
        if first_fail is not None:
            sentence += (
                f"; {first_fail['level']:g} does not ({figures(first_fail)}; there {conditions(first_fail)})."
            )
        else:
            sentence += "; no higher level was tested, so the real capacity may be higher."
    if cut:
        sentence += f" {_level(cut[0], unit)} was cut short by a stop and is not judged."
    return {
        "capacity": best["level"] if best else None,
        "unit": unit,
        "first_failing": first_fail["level"] if first_fail else None,
        "interrupted": cut[0]["level"] if cut else None,
        "sentence": sentence,
    }


def phase_conditions(phase: dict, ttft_said: bool = False) -> str:
    """TTFT (unless the SLO figures said it), the engine's queue and the overload, as they were during
    one phase."""
    ttft = (phase["latency_s"].get("ttft") or {}).get("p95")
    parts = [] if ttft_said else [f"TTFT p95 {_seconds(ttft)}" if ttft is not None else "TTFT not measured"]
    engine = phase.get("engine")
    if engine and (engine.get("waiting") or engine.get("running")):
        parts.append(_engine_words(engine))
    else:
        parts.append("the engine's queue not read" + (f" ({engine['problem']})" if engine else ""))
    overload = phase.get("overload")
    if overload:
        parts.append(
            f"overloaded from {overload['since_s']:.0f} s on (completing {overload['achieved_rate']:.2f} of "
            f"{overload['offered_rate']:.2f} requests/s)"
        )
    return ", ".join(parts)


def _engine_words(engine: dict) -> str:
    waiting, running, kv = engine.get("waiting"), engine.get("running"), engine.get("kv_usage")
    words = []
    if waiting and waiting["max"] > 0:
        words.append(f"up to {waiting['max']:.0f} waiting in the engine's queue (mean {waiting['mean']:.1f})")
    elif waiting:
        words.append("none waiting in the engine's queue")
    if running:
        words.append(f"at most {running['max']:.0f} running")
    if kv:
        words.append(f"KV cache up to {kv['max']:.0%}")
    return ", ".join(words)


def diagnosis(phase: dict, unit: str) -> str:
    """Why one phase was slow: the client's own queueing, the engine's running cap, its waiting queue
    and its KV cache, joined into one sentence that ends with where the wait was."""
    latency = phase["latency_s"]
    ttft = (latency.get("ttft") or {}).get("p95")
    dispatch = (latency.get("dispatch") or {}).get("p95") or 0.0
    engine = phase.get("engine") or {}
    waiting = (engine.get("waiting") or {}).get("max")
    running = (engine.get("running") or {}).get("max")
    kv = (engine.get("kv_usage") or {}).get("max")
    client_queue = ttft is not None and dispatch > 0.1 * ttft
    causes = [
        f"requests waited {_seconds(dispatch)} (p95) in the load generator before being sent (its "
        "connection or concurrency cap)" if client_queue else
        f"the load generator sent without delay (dispatch p95 {_seconds(dispatch)})"
    ]  # fmt: skip
    capped = (engine.get("running_while_waiting") or {}).get("max")
    if capped is not None and waiting:
        limit = (
            f"its KV cache was {kv:.0%} full: no blocks for more" if kv is not None and kv >= 0.9 else
            "its limit on running requests, vLLM's max_num_seqs, or on tokens per step"
        )  # fmt: skip
        causes.append(
            f"up to {waiting:.0f} requests waited in the engine's queue while it ran at most {capped:.0f} at "
            f"once ({limit})"
        )
    elif waiting:
        causes.append(f"up to {waiting:.0f} requests waited in the engine's queue")
    elif running is not None:
        causes.append(f"the engine ran up to {running:.0f} requests at once and queued none")
    else:
        causes.append(f"the engine's queue was not read ({engine.get('problem', 'no engine metrics')})")
    if kv is not None:
        full = (
            " (nearly full: new requests wait for blocks, running ones may be preempted)" if kv >= 0.9 else ""
        )
        causes.append(f"its KV cache peaked at {kv:.0%}{full}")
    if engine.get("preemptions"):
        causes.append(f"{engine['preemptions']:.0f} requests were preempted")
    if waiting:
        where = "the wait is the engine's queue"
    elif client_queue:
        where = "the wait is in the load generator"
    elif kv is not None and kv >= 0.9:
        where = "the KV cache is full"
    elif running is not None:
        where = "no queue: the engine shares each step among more requests, so each gets fewer tokens/s"
    else:
        where = "read the engine's /metrics (--engine-metrics) to see its queue"
    head = f"Why it got slow at {_level(phase, unit)}"
    head += f" (TTFT p95 {_seconds(ttft)})" if ttft is not None else ""
    return f"{head}: {'; '.join(causes)}: {where}."


def _level(phase: dict, unit: str) -> str:
    """`128 concurrent users`, `1 concurrent user`, `2.5 requests/s`."""
    level = phase["level"]
    if level == 1 and unit.endswith("users"):
        unit = unit[:-1]
    return f"{level:g} {unit}"


def _slo_figure(slo: Slo, value: float | None, percentile: float, stream: bool = True) -> str:
    if value is None and not stream and slo.metric in STREAM_ONLY:
        return f"{slo.metric.upper()} not measurable without streaming"
    if value is None:
        return f"{slo.metric}: no data"
    if slo.metric == "error_ratio":
        return f"error ratio {value:.2%} (limit {slo.threshold:.2%})"
    if slo.metric == "user_tps":
        return f"p{100 - percentile:g} per-user {value:.1f} tok/s from sending (>= {slo.threshold:g})"
    if slo.metric == "stream_tps":
        return (
            f"p{100 - percentile:g} streaming {value:.1f} tok/s after the first token (>= {slo.threshold:g})"
        )
    return f"p{percentile:g} {slo.metric.upper()} {_seconds(value)} (<= {_seconds(slo.threshold)})"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.1f} ms"
