"""The report: one JSON document with every figure and the exact configuration, and a console
rendering in the style of `vllm bench serve` (mean, median, p90, p95, p99, max per metric).

Built from a run's data (result.RunResult), never from the runner itself."""

from __future__ import annotations

import json
import time
from typing import Any

from loadgen import mergeable, redact, steps, verdict
from loadgen.outcomes import OUTCOMES
from loadgen.result import RunResult
from loadgen.stats import STREAM_ONLY
from loadgen.tokens import MAX_TOKENS_PER_EVENT

DEFINITIONS = {
    "ttft": "first token event of any kind (content or reasoning) - request sent",
    "ttfo": "first content (non-reasoning) token event - request sent",
    "tpot": "(e2e - ttft) / (output_tokens - 1), per request, output_tokens > 1",
    "itl": (
        "per token: each gap between token events divided among the tokens the later event carried "
        "(server's per-event usage or logprobs; else the request's mean tokens per event when its usage "
        "exceeds its events), pooled over requests"
    ),
    "e2e": "end of the response ([DONE] or end of body) - request sent",
    "dispatch": (
        "request sent - request scheduled (open loop: planned arrival; closed loop: user free; trace "
        "replay: the arrival error, sent - due by the trace's clock)"
    ),
    "e2e_from_schedule": "e2e + dispatch (latency free of coordinated omission)",
    "user_tps": "output_tokens / (last token - request sent): tokens per second a user receives, the wait "
    "for the first token included (unstreamed: the last token comes with the end of the body)",
    "stream_tps": "1 / tpot: tokens per second after the first token (user_tps before 2026-12-05)",
    "percentiles": "nearest rank from a log-bucket sketch, within 0.1% of the exact value; tokens/s "
    "figures are judged and shown at their slow tail (p5)",
    "throughput": "succeeded requests (tokens) / phase duration (first send to last response)",
    "goodput": "succeeded requests meeting every per-request SLO / phase duration",
    "setup_requests": "requests sent before the first phase (calibration probes); in no phase, but "
    "counted by the engine: engine token deltas = the phases' tokens + these",
}

_ROWS = (
    ("ttft", "Time to First Token", "ms"),
    ("ttfo", "Time to First Output Token", "ms"),
    ("tpot", "Time per Output Token (excl. 1st)", "ms"),
    ("itl", "Inter-token Latency", "ms"),
    ("e2e", "End-to-end Latency", "ms"),
    ("dispatch", "Dispatch Delay", "ms"),
    ("e2e_from_schedule", "E2E incl. Dispatch Delay", "ms"),
)
_RATE_ROWS = (
    ("user_tps", "Per-user tok/s (send to last token)"),
    ("stream_tps", "Streaming tok/s (after 1st token)"),
)


def build(run: RunResult) -> dict:
    percentile = run.scenario.slo_percentile
    phases = [_phase_summary(run, stats) for stats in run.stats]
    totals: dict[str, Any] = {"sent": 0, "by_outcome": dict.fromkeys(OUTCOMES, 0)}
    for stats in run.stats:
        totals["sent"] += stats.sent
        for outcome, count in stats.outcomes.items():
            totals["by_outcome"][outcome] += count
    totals["finished"] = sum(totals["by_outcome"].values())
    report = {
        "run_id": run.run_id,
        "scenario": run.scenario.name,
        "model": run.model,
        **({"model_note": run.model_note} if run.model_note else {}),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(run.started_at)),
        "state": run.state,
        "stopped_early": run.stopped_early,
        "workload": run.workload,
        "timing_path": run.timing_path,
        "config": run.scenario.redacted(),
        "definitions": DEFINITIONS,
        "phases": phases,
        "totals": totals,
    }
    if run.setup is not None:
        report["setup_requests"] = run.setup.summary()
    if run.dropped_body_fields:
        report["dropped_body_fields"] = run.dropped_body_fields
    if run.clock is not None:
        clock = run.clock
        report["clock"] = {
            "perf_counter_ns": clock.perf_counter_ns,
            "unix_s": clock.unix_s,
            "unix_ns": clock.unix_ns,
        }
    report.update(mergeable.report_fields(run))
    report["steps"] = steps.rows(phases)
    if run.warmup is not None:
        report["warmup"] = warmup_summary(run.warmup)
    notes = measurability_notes(run) + token_notes(run) + backoff_notes(run) + throttle_notes(run)
    notes += mergeable.notes(run)
    if notes:
        report["notes"] = notes
    report["failure"] = mergeable.failure(run) or failure(run, totals["by_outcome"])
    unit = _unit(run)
    if run.scenario.sweep:
        report["sweep"] = verdict.sweep_result(
            phases, run.scenario.slos, percentile, unit, run.scenario.stream
        )
    slow = _slowest(phases)
    if slow is not None:
        report["diagnosis"] = verdict.diagnosis(slow, unit)
    return redact.scrub_json(report)  # type: ignore[return-value]


def _phase_summary(run: RunResult, stats) -> dict:
    """A phase's figures with its planned level and its wall-clock span (Unix seconds)."""
    summary = stats.summary(run.scenario.slo_percentile)
    planned = {phase.name: phase for phase in run.scenario.phases}.get(stats.name)
    summary["level"] = planned.level if planned else None
    summary["level_label"] = _level_label(planned) if planned else stats.name
    if run.clock is not None:
        summary["started_unix_s"] = run.clock.unix(stats.start_ns)
        summary["ended_unix_s"] = run.clock.unix(stats.end_ns)
        if summary["overload"] is not None:
            summary["overload"]["since_unix_s"] = summary["started_unix_s"] + summary["overload"]["since_s"]
    return summary


def _level_label(phase) -> str:
    users = "user" if phase.level == 1 else "users"
    level = f"{phase.level:g} {users}" if phase.closed else f"{phase.level:g} req/s"
    return f"{level} -> {phase.ramp_to:g}" if phase.ramp_to is not None else level


def _unit(run: RunResult) -> str:
    phases = run.scenario.phases
    return "concurrent users" if not phases or phases[0].closed else "requests/s"


def _slowest(phases: list[dict]) -> dict | None:
    """The phase a "why it got slow" sentence is about: the first that misses its SLOs, else the last
    (the heaviest) of several; none for a single phase that meets them."""
    judged = [p for p in phases if not p.get("interrupted")]
    missing = [p for p in judged if p["slo"]["met"] is False]
    if missing:
        return missing[0]
    return judged[-1] if len(judged) > 1 else None


def warmup_summary(stats) -> dict:
    """How many warm-up requests there were; none of them is in any figure of the report."""
    return {
        "sent": stats.sent,
        "succeeded": stats.outcomes["success"],
        "failed": stats.failed,
        "duration_s": stats.duration_s,
        "excluded": "from every phase, total, SLO and sweep figure; on /metrics in series labelled "
        'phase="warmup"',
    }


def measurability_notes(run: RunResult) -> list[str]:
    """What the report cannot show for this configuration, said once instead of left blank."""
    if run.scenario.stream:
        notes = []
        spread = sum(stats.event_bases.get("mean", 0) for stats in run.stats)
        if spread:
            notes.append(
                f"{spread} streamed answers had more output tokens than token events, and the server did "
                "not say how many tokens each event carried: their ITL divides each gap by the answer's mean "
                "tokens per event, and multi-token events are not counted; --continuous-usage asks vLLM and "
                "SGLang for per-event counts"
            )
        whole = sum(stats.arrived_whole for stats in run.stats)
        if whole:
            succeeded = sum(stats.outcomes["success"] for stats in run.stats)
            notes.append(
                f"{whole} of {succeeded} streamed answers arrived whole, their first token and their end in "
                "one read (the server sent them in one burst, as vLLM's API server does when it falls behind "
                "its engine): their TTFT is the whole answer's time, their TPOT 0, and the streaming rate "
                "(stream_tps) leaves them out"
            )
        coalesced = sum(stats.coalesced_gaps for stats in run.stats)
        if coalesced:
            answers = sum(sum(stats.event_bases.values()) for stats in run.stats)
            gaps = sum(stats.token_events for stats in run.stats) - answers
            notes.append(
                f"{coalesced} of {gaps} gaps between token events ({coalesced / gaps:.1%}) were "
                "read-coalesced: both events came in one socket read (sent together by the server or "
                "a proxy, or read late by a busy client), so their ITL samples are 0 and the time "
                "between them is unknown (tokens.coalesced_gaps per phase)"
            )
        return notes
    notes = [
        "TTFT, TTFO, TPOT, ITL and the streaming rate are not measurable without streaming (--no-stream); "
        "the per-user rate counts to the end of the body"
    ]
    blind = [str(slo) for slo in run.scenario.slos if slo.metric in STREAM_ONLY]
    if blind:
        notes.append(
            f"SLO {', '.join(blind)} cannot be met without streaming: no request counts as good "
            "and the SLOs are not met"
        )
    return notes


def failure(run: RunResult, by_outcome: dict[str, int]) -> str | None:
    """One line saying what failed, when the run failed its error check (--max-error-ratio; by
    default, every request failed); None otherwise. Requests cancelled by a stop do not count."""
    counted = {outcome: n for outcome, n in by_outcome.items() if outcome != "cancelled" and n}
    finished = sum(counted.values())
    failed = finished - counted.get("success", 0)
    limit = run.scenario.max_error_ratio
    if not finished or (failed < finished if limit is None else failed / finished <= limit):
        return None
    rule = "every request failed" if limit is None else (
        f"{failed / finished:.1%} of requests failed, above --max-error-ratio {limit:g}"
    )  # fmt: skip
    classes = ", ".join(f"{k} {n}" for k, n in sorted(counted.items(), key=lambda i: -i[1]) if k != "success")
    errors: dict[str, int] = {}
    for stats in run.stats:
        for message, count in stats.errors.items():
            errors[message] = errors.get(message, 0) + count
    common = max(errors, key=errors.__getitem__, default="")
    return f"{rule}: {failed} of {finished} ({classes})" + (f"; most often {common}" if common else "")


def throttle_notes(run: RunResult) -> list[str]:
    """Throttling, apart from errors: how much, and what was done about Retry-After."""
    throttled = sum(stats.throttled for stats in run.stats)
    if not throttled:
        return []
    waited = sum(stats.retry_after_waited_s for stats in run.stats)
    closed = [phase.closed for phase in run.scenario.phases[: len(run.stats)]]
    if not run.scenario.honor_retry_after:
        done = "Retry-After was not honoured (--honor-retry-after makes closed-loop users wait)"
    elif all(closed):
        done = f"closed-loop users waited {waited:.1f} s in all as Retry-After asked"
    else:
        done = (
            f"open-loop phases kept their schedule (throttled requests only counted); closed-loop "
            f"users waited {waited:.1f} s in all as Retry-After asked"
        )
    return [f"the server throttled {throttled} requests (429, or 503 with Retry-After): {done}"]


def backoff_notes(run: RunResult) -> list[str]:
    if not run.backoff_waits:
        return []
    return [
        f"connections to the server failed one after another: {run.backoff_waits} requests waited "
        f"{run.backoff_waited_s:.1f} s in all before trying (connect back-off, counted as dispatch delay)"
    ]


def token_notes(run: RunResult) -> list[str]:
    """Where output-token counts came from when that is not simply the server's usage, and why."""
    mode = run.scenario.output_tokens_from
    notes = []
    if mode == "events":
        notes.append(
            "output tokens of streamed requests were counted from their token events "
            "(--output-tokens-from events), not taken from the server's usage"
        )
    disagreed = sum(stats.usage_disagreements for stats in run.stats)
    if disagreed:
        succeeded = sum(stats.outcomes["success"] for stats in run.stats)
        used = {
            "auto": "their token events were counted instead",
            "usage": "the server's usage was used anyway, as asked",
            "events": "their token events were counted",
        }[mode]
        notes.append(
            f"usage.completion_tokens disagreed with the stream in {disagreed} of {succeeded} succeeded "
            f"requests (fewer tokens than token events, or more than {MAX_TOKENS_PER_EVENT} per event): "
            f"{used} (--output-tokens-from {mode}); TPOT and token throughput use the count used"
        )
    return notes


def write(report: dict, path: str | None) -> None:
    """The report as JSON at `path` (nothing without one)."""
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2, default=str)
            handle.write("\n")


def _fmt(value: float | None, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.2f}"


def render(report: dict) -> str:
    """Console text: one block per phase, then the sweep verdict."""
    out = []
    width = 78
    if report.get("timing_path"):
        out.append(f"Timing: {report['timing_path']}")
    if "warmup" in report:
        warm = report["warmup"]
        out.append(
            f"Warm-up: {warm['sent']} requests ({warm['succeeded']} succeeded, {warm['failed']} failed) "
            f"in {warm['duration_s']:.1f} s, left out of every figure below"
        )
    replay = report.get("workload") or {}
    for phase in report["phases"]:
        requests, throughput, tokens = phase["requests"], phase["throughput"], phase["tokens"]
        out.append(f" {phase['phase']} ".center(width, "="))
        lines = [
            ("Model", report["model"] or f"none: {report.get('model_note', 'not discovered')}"),
            ("Requests sent / succeeded / failed", f"{requests['sent']} / {requests['succeeded']} / "
                                                   f"{requests['failed']}"),
            ("Benchmark duration (s)", _fmt(phase["duration_s"])),
            ("Total input tokens", tokens["prompt"]),
            ("Total generated tokens", tokens["output"]),
            ("  of which reasoning", tokens["reasoning"]),
            ("Output token count source", _sources(tokens["output_source"]) + (
                f"; usage disagreed with the stream in {tokens['usage_disagreements']}"
                if tokens["usage_disagreements"] else "")),
            ("Input token count source", _sources(tokens["prompt_source"])),
            ("Token events / more than one token", _events(tokens)),
            ("Request throughput (req/s)", _fmt(throughput["requests_per_s"])),
            ("Output token throughput (tok/s)", _fmt(throughput["output_tokens_per_s"])),
            ("Total token throughput (tok/s)", _fmt(throughput["total_tokens_per_s"])),
        ]  # fmt: skip
        if phase["slo"]["objectives"]:
            lines.append(("Request goodput (req/s)", _fmt(throughput["goodput_requests_per_s"])))
            met = phase["slo"]["met"]
            judged = "not judged (cut short)" if met is None else "met" if met else "NOT met"
            lines.append(("SLOs (" + ", ".join(phase["slo"]["objectives"]) + ")", judged))
        if phase.get("interrupted"):
            lines.append(("Cut short", "a stop ended this step early: its figures are partial"))
        if phase.get("overload"):
            lines.append(("OVERLOADED", _overload_words(phase["overload"])))
        errors = {k: v for k, v in requests["by_outcome"].items() if k != "success" and v}
        lines.append(("Errors by class", ", ".join(f"{k}={v}" for k, v in errors.items()) or "none"))
        if requests.get("retried_connections"):
            waited = f"{requests['resend_wait_s'] * 1e3:.1f} ms waited before the re-sends in all"
            lines.append(
                ("Re-sent on a fresh connection", f"{requests['retried_connections']} requests, {waited}")
            )
        if requests["throttled"]:
            lines.append(("  of which throttled (429, 503 + Retry-After)", requests["throttled"]))
        if tokens["invalid_utf8_events"]:
            lines.append(("Events with invalid UTF-8 (replaced)", tokens["invalid_utf8_events"]))
        cache = phase.get("prefix_cache")
        if cache:
            achieved = cache["engine_hit_rate"]
            engine = f"{achieved:.1%} ({cache['source']})" if achieved is not None else "unknown"
            lines.append(("Prefix-cache hits: target / engine", f"{cache['target_hit_rate']:.1%} / {engine}"))
        out += [f"{label + ':':<44}{value}" for label, value in lines]
        out += _figures_table(phase["latency_s"], arrival=replay.get("kind") in ("mooncake", "trace"))
        for message, count in list(phase["errors"].items())[:5]:
            out.append(f"  {count} x {message}")
    out.append("=" * width)
    if setup := report.get("setup_requests"):
        out.append(
            f"Setup: {setup['sent']} requests before the first phase ({setup['purpose']}; "
            f"{setup['prompt_tokens']} prompt and {setup['output_tokens']} output tokens): counted by the "
            "engine, in no phase."
        )
    for field, refusal in report.get("dropped_body_fields", {}).items():
        out.append(f"Dropped body field {field!r}: the server refused it ({refusal}); sent without it.")
    if len(report.get("steps") or ()) > 1:
        out.append(steps.render(report["steps"]))
    out += [f"Note: {note}." for note in report.get("notes", ())]
    if report.get("failure"):
        out.append(f"Run failed: {report['failure']}")
    if "sweep" in report:
        out.append(report["sweep"]["sentence"])
    if "diagnosis" in report:
        out.append(report["diagnosis"])
    return "\n".join(out)


_LATENCY_COLUMNS = ("mean", "median", "p90", "p95", "p99", "max")
_RATE_COLUMNS = ("mean", "median", "p5", "min")  # higher is better: the slow tail matters


def _figures_table(latency: dict, arrival: bool = False) -> list[str]:
    """Latencies (ms) and per-user rates (tok/s), columns as wide as their widest value; in a trace
    replay the dispatch delay is the arrival error and says so."""
    rows: list[list[str]] = [["", *_LATENCY_COLUMNS]]
    for key, title, unit in _ROWS:
        if key == "dispatch" and arrival:
            title = "Arrival Error (sent - due)"
        summary = latency[key]
        if summary["count"]:
            rows.append([f"{title} ({unit})", *(_fmt(summary[k], 1000.0) for k in _LATENCY_COLUMNS)])
    rate_rows: list[list[str]] = [["", *_RATE_COLUMNS]]
    for key, title in _RATE_ROWS:
        summary = latency.get(key)
        if summary and summary["count"]:
            rate_rows.append([f"{title}", *(_fmt(summary[k]) for k in _RATE_COLUMNS)])
    out = _aligned(rows) if len(rows) > 1 else []
    return out + (_aligned(rate_rows) if len(rate_rows) > 1 else [])


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    widths[0] = max(widths[0], 40)
    return [
        row[0].ljust(widths[0])
        + "".join(cell.rjust(w + 2) for cell, w in zip(row[1:], widths[1:], strict=True))
        for row in rows
    ]


def _overload_words(overload: dict) -> str:
    share = overload["achieved_rate"] / overload["offered_rate"] if overload["offered_rate"] else 0.0
    return (
        f"from {overload['since_s']:.0f} s on, completing {overload['achieved_rate']:.2f} of "
        f"{overload['offered_rate']:.2f} requests/s offered ({share:.0%}), in flight "
        f"{overload['in_flight_at_onset']} -> {overload['in_flight_now']}: latency after that point "
        "measures the queue, not the server"
    )


def _events(tokens: dict) -> str:
    """`1200 / 340 (tokens per event: server said 100%)`; `-` without streamed events."""
    if not tokens["events"]:
        return "-"
    bases = tokens["event_token_basis"]
    multi = tokens["multi_token_events"]
    if bases.get("mean"):  # some requests had more tokens than events without saying which events
        multi = f"at least {multi}" if multi else "unknown"
    return f"{tokens['events']} / {multi} (tokens per event: {_sources(bases)})"


def _sources(sources: dict[str, int]) -> str:
    total = sum(sources.values())
    if not total:
        return "-"
    names = {
        "usage": "server usage",
        "counted": "counted token events",
        "tokenizer": "client tokenizer",
        "synthetic": "synthetic length drawn",
        "none": "unknown",
        "server": "server said",
        "one per event": "one per event",
        "mean": "mean of usage over events",
    }
    return ", ".join(
        f"{names.get(k, k)} {v / total:.0%}" for k, v in sorted(sources.items(), key=lambda i: -i[1])
    )
