"""The HTML report of one run: configuration and definitions, a summary table per phase, latency
distributions, the run over time, the sweep against its levels with the verdict, and (with a Prometheus)
the engine and GPU during the run, drawn with the dashboards' own panels.

    page = report_page(read_run(load_report("run.json"), "run.json", "run.jsonl"))
    Path("run.html").write_text(page.render())
"""

from __future__ import annotations

import calendar
import json
import time

from grafana import catalog
from grafana.model import layout
from grafana.snapshot import Outcome, render_panels
from grafana.snapshot.page import Cell, Page, esc
from grafana.snapshot.prometheus import Prometheus
from grafana.snapshot.resolve import Window, variable_values
from grafana.snapshot.units import format_value
from loadgen.html.data import LATENCIES, MAX_WINDOWS, ReportDataError, RunData
from loadgen.html.figures import cdf_figure, sweep_figures, time_figures

__all__ = ["FIGURE_DEFINITIONS", "LATENCY_ROWS", "SERVER_PANELS", "report_page", "run_window"]

# The summary's latency rows (the console report's), each with the unit its cells are written in.
LATENCY_ROWS = (
    ("ttft", "Time to first token", "s"),
    ("ttfo", "Time to first output token", "s"),
    ("tpot", "Time per output token (excl. 1st)", "s"),
    ("itl", "Inter-token latency", "s"),
    ("e2e", "End-to-end latency", "s"),
    ("dispatch", "Dispatch delay", "s"),
    ("e2e_from_schedule", "E2E incl. dispatch delay", "s"),
    ("user_tps", "Output tokens/s per user", "tokps"),
    ("stream_tps", "Output tokens/s per stream (after the 1st)", "tokps"),
)
# p5 beside the high percentiles: for tokens/s per user the slow side is the low one (its SLO is judged there)
STATS = ("count", "mean", "p5", "median", "p90", "p95", "p99", "max")
FIGURE_DEFINITIONS = {
    "CDF": "share of requests (of gaps, for ITL) at or below each value, per phase; from the per-request "
    "JSONL (a uniform sample when a phase has more than 20,000 values), else the report's percentiles",
    "per window": "the run cut into windows of 10 s (narrower for runs under 200 s, wider for long ones: "
    "each figure names its width); a request counts where it happened: sent when sent, succeeded and its "
    "tokens and TPOT when it ended, TTFT when its first token came",
    "in flight": "request-seconds in flight within a window / the window's length (a time-weighted mean)",
    "sweep": "each level's figure that its SLO is judged on (the SLO percentile, p5 for a >= objective)",
    "server side": "the dashboards' own panels (same queries, units and legends), from Prometheus over the "
    "run's window, with run = this run's id and every other variable at All",
}
# Overview panels shown beside the client's view when a Prometheus is given.
SERVER_PANELS = (
    "Concurrency and queues",
    "KV cache usage",
    "Preemptions",
    "GPU utilization",
    "GPU memory used",
    "GPU power",
)


def report_page(
    data: RunData, prom: Prometheus | None = None, scrape_interval_s: float = 15.0
) -> tuple[Page, Outcome | None]:
    report = data.report
    title = f"Load-test report: {report.get('scenario', '?')}, run {report.get('run_id', '?')}"
    subtitle = [
        f"Model {report.get('model') or '?'}; started {report.get('started_at', '?')}; state "
        f"{report.get('state', '?')}{' (stopped early)' if report.get('stopped_early') else ''}",
        f"From {data.source}"
        + (f" and {data.jsonl} ({data.records:,} requests)" if data.jsonl else " (no JSONL)"),
    ]
    page = Page(title, subtitle)
    _verdict(page, report)
    _summary(page, report)
    _distributions(page, data)
    _over_time(page, data)
    _sweep(page, report)
    outcome = _server_side(page, data, prom, scrape_interval_s) if prom is not None else None
    _configuration(page, data)
    return page, outcome


def _verdict(page: Page, report: dict) -> None:
    lines = []
    if "sweep" in report:
        good = report["sweep"].get("capacity") is not None
        lines.append((report["sweep"].get("sentence", ""), "good" if good else "bad"))
    if isinstance(report.get("diagnosis"), str):
        lines.append((report["diagnosis"], ""))
    for phase in report["phases"]:
        overload = phase.get("overload")
        if isinstance(overload, dict):
            lines.append((f"{phase['phase']}: overloaded {_overload_words(overload)}", "bad"))
    if report.get("failure"):
        lines.append((f"The run failed: {report['failure']}", "bad"))
    warmup = report.get("warmup")
    if isinstance(warmup, dict):
        lines.append(
            (
                f"Warm-up: {warmup.get('sent', '?')} requests ({warmup.get('succeeded', '?')} succeeded) in "
                f"{format_value(warmup.get('duration_s'), 's')} before the first phase, in no figure here.",
                "",
            )
        )
    lines += [(f"Note: {note}", "") for note in report.get("notes", [])]
    if lines:
        page.section("Verdict", anchor="verdict")
        for text, css in lines:
            page.raw(f'<p class="verdict {css}" style="grid-column: 1 / -1">{esc(text)}</p>')


def _summary(page: Page, report: dict) -> None:
    page.section("Summary per phase", anchor="summary")
    headers = [
        "phase",
        "duration",
        "sent",
        "succeeded",
        "failed",
        "requests/s",
        "output tokens/s",
        "total tokens/s",
        "goodput requests/s",
        "errors by class",
    ]
    rows = []
    for phase in report["phases"]:
        requests, throughput = phase.get("requests", {}), phase.get("throughput", {})
        errors = {k: v for k, v in requests.get("by_outcome", {}).items() if k != "success" and v}
        rows.append(
            [
                Cell(phase["phase"], phase["phase"]),
                Cell(format_value(phase.get("duration_s"), "s"), phase.get("duration_s")),
                *(Cell(str(requests.get(k, "-")), requests.get(k)) for k in ("sent", "succeeded", "failed")),
                *(
                    Cell(format_value(throughput.get(k), "short"), throughput.get(k))
                    for k in (
                        "requests_per_s",
                        "output_tokens_per_s",
                        "total_tokens_per_s",
                        "goodput_requests_per_s",
                    )
                ),
                Cell(", ".join(f"{k} {v}" for k, v in errors.items()) or "none", errors, "text"),
            ]
        )
    page.table(
        headers, rows, "Requests and throughput (the JSON report's figures).", ident="summary-throughput"
    )
    rows = []
    for phase in report["phases"]:
        for key, name, unit in LATENCY_ROWS:
            summary = phase.get("latency_s", {}).get(key) or {}
            if not summary.get("count"):
                continue
            rows.append(
                [Cell(phase["phase"], phase["phase"]), Cell(name, key, "text")]
                + [Cell(str(summary["count"]), summary["count"])]
                + [Cell(format_value(summary.get(s), unit), summary.get(s)) for s in STATS[1:]]
            )
    page.table(
        ["phase", "figure", *STATS], rows, "Latency per phase (definitions below).", ident="summary-latency"
    )


def _distributions(page: Page, data: RunData) -> None:
    page.section("Latency distributions", anchor="distributions")
    for metric in LATENCIES:
        figure, note = cdf_figure([("", data)], metric)
        title = f"CDF of {metric.upper()}"
        what = f"{data.report.get('definitions', {}).get(metric, '')}. {note}".strip(". ")
        if figure is None:
            page.panel(
                title, what, body='<p class="empty">No values (not measured in this run).</p>', width=12
            )
        else:
            page.panel(title, what, figure=figure, width=12, attrs={"data-figure-kind": "cdf"})


def _over_time(page: Page, data: RunData) -> None:
    page.section("Over the run", anchor="time")
    if not data.jsonl:
        page.text("Give the per-request JSONL (--jsonl, or --output-jsonl on run) for the run over time.")
        return
    if data.skipped_lines:
        page.text(f"{data.skipped_lines:,} lines of the JSONL were not requests and were skipped.")
    if data.outside_run:
        page.text(
            f"{data.outside_run:,} requests of the JSONL lie more than {data.window_s * MAX_WINDOWS:,.0f} s "
            "from its first one, outside any run this report can be of, and are not drawn."
        )
    if data.other_phases:
        phases = ", ".join(f"{name} {count:,}" for name, count in sorted(data.other_phases.items()))
        page.text(f"Requests of phases the report leaves out (warm-up) are not drawn either: {phases}.")
    for title, what, figure in time_figures(data):
        body = "" if figure else f'<p class="empty">{esc(what)}</p>'
        page.panel(title, what if figure else "", figure=figure, body=body, width=12)


def _sweep(page: Page, report: dict) -> None:
    figures = sweep_figures(report) if "sweep" in report else []
    if not figures:
        return
    page.section("Sweep: capacity against the SLOs", anchor="sweep")
    for title, what, figure in figures:
        page.panel(title, what, figure=figure, width=12, attrs={"data-figure-kind": "sweep"})


def run_window(data: RunData, now: float | None = None) -> tuple[float, float]:
    """The run's Unix-time window: the report's clock anchor or phase times when it has them, else its start
    time (whole seconds) plus what the JSONL or the phases last, widened by a minute each side; never past
    `now` (Prometheus answers for a future time with the last sample it has, drawn as if it were data)."""
    report = data.report
    phases = report.get("phases", [])
    if all(isinstance(p.get("started_unix_s"), (int, float)) for p in phases) and phases:
        start = min(p["started_unix_s"] for p in phases) - 30
        end = max(p.get("ended_unix_s") or p["started_unix_s"] + p.get("duration_s", 0) for p in phases) + 30
    else:
        try:
            started = calendar.timegm(time.strptime(str(report.get("started_at")), "%Y-%m-%dT%H:%M:%SZ"))
        except ValueError:
            raise ReportDataError(
                "the report has no start time (started_at): Prometheus's window cannot be chosen"
            ) from None
        spans = [end for _, end in data.phase_span.values()]
        length = (max(spans) - data.offset_s) if spans else sum(p.get("duration_s") or 0 for p in phases)
        start, end = started - 60, started + length + 60
    now = time.time() if now is None else now
    return start, max(start + 1, min(end, now))


def _server_side(page: Page, data: RunData, prom: Prometheus, scrape_interval_s: float) -> Outcome:
    page.section("Engine and GPU during the run (Prometheus)", anchor="server")
    start, end = run_window(data)
    window = Window.choose(start, end, scrape_interval=scrape_interval_s)
    board = catalog.find("overview")
    placed = [
        p for p in layout(board.panels) if p.panel.kind == "timeseries" and p.panel.title in SERVER_PANELS
    ]
    values = variable_values(board, {"run": str(data.report.get("run_id", ".*"))})
    page.text(f"Prometheus {prom.url}, {_utc(start)} to {_utc(end)} UTC, step {window.step:g} s.")
    outcome = Outcome()
    render_panels(page, prom, board, placed, values, window, outcome, grid=False)
    if outcome.stopped:
        page.text(f"Querying stopped early: {outcome.stopped}", css="error")
    return outcome


def _configuration(page: Page, data: RunData) -> None:
    report = data.report
    page.section("Configuration and definitions", anchor="config")
    config = report.get("config") or {}
    rows = [[Cell(str(k), k), Cell(_text(v), v, "text")] for k, v in config.items()]
    page.table(["setting", "value"], rows, "As given (secrets by name only).", ident="config", width=12)
    workload = report.get("workload") or {}
    rows = [[Cell(str(k), k), Cell(_text(v), v, "text")] for k, v in workload.items()]
    page.table(["workload", "value"], rows, "The requests' shape.", ident="workload", width=12)
    definitions = {**report.get("definitions", {}), **FIGURE_DEFINITIONS}
    items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in definitions.items())
    page.raw(f'<dl class="defs" style="grid-column: 1 / -1">{items}</dl>')


def _overload_words(overload: dict) -> str:
    """The console report's words for an open loop past capacity (loadgen/report.py), from the JSON."""
    since, achieved, offered = (overload.get(k) for k in ("since_s", "achieved_rate", "offered_rate"))
    if not all(isinstance(v, (int, float)) for v in (since, achieved, offered)):
        return "(the report's figures are incomplete)"
    share = f" ({achieved / offered:.0%})" if offered else ""
    return (
        f"from {since:.0f} s on, completing {achieved:.2f} of {offered:.2f} requests/s offered{share}: "
        "latency after that point measures the queue, not the server"
    )


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))
