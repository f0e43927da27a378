"""The report: one JSON document with every figure and the exact configuration, and a console
rendering in the style of `vllm bench serve` (mean, median, p90, p95, p99, max per metric).

Built from a run's data (result.RunResult), never from the runner itself."""

from __future__ import annotations

import json
import time
from typing import Any

from loadgen import redact
from loadgen.result import RunResult
from loadgen.stats import STREAM_ONLY, PhaseStats, Slo
from loadgen.timing import OUTCOMES
from loadgen.tokens import MAX_TOKENS_PER_EVENT

DEFINITIONS = {
    "ttft": "first token event of any kind (content or reasoning) - request sent",
    "ttfo": "first content (non-reasoning) token event - request sent",
    "tpot": "(e2e - ttft) / (output_tokens - 1), per request, output_tokens > 1",
    "itl": "gaps between consecutive token events, pooled over requests",
    "e2e": "end of the response ([DONE] or end of body) - request sent",
    "dispatch": "request sent - request scheduled (open loop: planned arrival; closed loop: user free)",
    "e2e_from_schedule": "e2e + dispatch (latency free of coordinated omission)",
    "user_tps": "1 / tpot: output tokens per second seen by one user after the first token",
    "percentiles": "nearest rank from a log-bucket sketch, within 0.1% of the exact value",
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
    ("user_tps", "Output tok/s per User", "tok/s"),
)


def build(run: RunResult) -> dict:
    percentile = run.scenario.slo_percentile
    phases = [stats.summary(percentile) for stats in run.stats]
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
    notes = measurability_notes(run) + token_notes(run) + backoff_notes(run) + throttle_notes(run)
    if notes:
        report["notes"] = notes
    report["failure"] = failure(run, totals["by_outcome"])
    if run.scenario.sweep:
        report["sweep"] = sweep_result(run)
    return redact.scrub_json(report)  # type: ignore[return-value]


def measurability_notes(run: RunResult) -> list[str]:
    """What the report cannot show for this configuration, said once instead of left blank."""
    if run.scenario.stream:
        return []
    notes = ["TTFT, TTFO, TPOT, ITL and per-user tok/s are not measurable without streaming (--no-stream)"]
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


def sweep_result(run: RunResult) -> dict:
    """The highest level meeting every SLO, and one sentence that says so with the figures."""
    scenario = run.scenario
    percentile = scenario.slo_percentile
    phases = {phase.name: phase for phase in scenario.phases}
    passed = [s for s in run.stats if s.slos_met(percentile)]
    failed = [s for s in run.stats if not s.slos_met(percentile)]
    best = passed[-1] if passed else None
    first_fail = failed[0] if failed else None
    unit = "concurrent users" if scenario.phases[0].closed else "requests/s"

    def figures(stats: PhaseStats) -> str:
        return ", ".join(
            _slo_figure(slo, stats.slo_value(slo, percentile), percentile, scenario.stream)
            for slo in scenario.slos
        )

    if not run.stats:
        sentence = "No level was tested (the run stopped before its first phase)."
    elif best is None:
        sentence = (
            f"No level tested meets the SLOs; at the lowest, {phases[run.stats[0].name].level:g} {unit}: "
            + figures(run.stats[0])
            + "."
        )
    else:
        sentence = f"Capacity: {phases[best.name].level:g} {unit} meets every SLO ({figures(best)})"
        if first_fail is not None:
            sentence += f"; {phases[first_fail.name].level:g} does not ({figures(first_fail)})."
        else:
            sentence += "; no higher level was tested, so the real capacity may be higher."
    return {
        "capacity": phases[best.name].level if best else None,
        "unit": unit,
        "first_failing": phases[first_fail.name].level if first_fail else None,
        "sentence": sentence,
    }


def _slo_figure(slo: Slo, value: float | None, percentile: float, stream: bool = True) -> str:
    if value is None and not stream and slo.metric in STREAM_ONLY:
        return f"{slo.metric.upper()} not measurable without streaming"
    if value is None:
        return f"{slo.metric}: no data"
    if slo.metric == "error_ratio":
        return f"error ratio {value:.2%} (limit {slo.threshold:.2%})"
    if slo.metric == "user_tps":
        return f"p{100 - percentile:g} per-user {value:.1f} tok/s (>= {slo.threshold:g})"
    return f"p{percentile:g} {slo.metric.upper()} {_seconds(value)} (<= {_seconds(slo.threshold)})"


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.1f} ms"


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
            ("Request throughput (req/s)", _fmt(throughput["requests_per_s"])),
            ("Output token throughput (tok/s)", _fmt(throughput["output_tokens_per_s"])),
            ("Total token throughput (tok/s)", _fmt(throughput["total_tokens_per_s"])),
        ]  # fmt: skip
        if phase["slo"]["objectives"]:
            lines.append(("Request goodput (req/s)", _fmt(throughput["goodput_requests_per_s"])))
            lines.append(("SLOs (" + ", ".join(phase["slo"]["objectives"]) + ")",
                          "met" if phase["slo"]["met"] else "NOT met"))  # fmt: skip
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
        out += [f"{label + ':':<44}{value}" for label, value in lines]
        out.append(f"{'':<40}{'mean':>8}{'median':>8}{'p90':>8}{'p95':>8}{'p99':>8}{'max':>8}")
        for key, title, unit in _ROWS:
            summary = phase["latency_s"][key]
            if not summary["count"]:
                continue
            scale = 1000.0 if unit == "ms" else 1.0
            cells = "".join(
                f"{_fmt(summary[k], scale):>8}" for k in ("mean", "median", "p90", "p95", "p99", "max")
            )
            out.append(f"{title + ' (' + unit + ')':<40}{cells}")
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
    out += [f"Note: {note}." for note in report.get("notes", ())]
    if report.get("failure"):
        out.append(f"Run failed: {report['failure']}")
    if "sweep" in report:
        out.append(report["sweep"]["sentence"])
    return "\n".join(out)


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
    }
    return ", ".join(
        f"{names.get(k, k)} {v / total:.0%}" for k, v in sorted(sources.items(), key=lambda i: -i[1])
    )
