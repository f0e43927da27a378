"""`llmobs-loadgen report` and `llmobs-loadgen compare`: HTML pages from runs' JSON reports (and their
per-request JSONL), and the `--output-html` of `run`. Exit status: report 0 written, 1 written but some
Prometheus queries failed, 2 not written; compare 0 no gate failed, 1 a gate failed, 2 bad input."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from grafana.errors import GrafanaError
from grafana.snapshot.page import Page, require_plotly
from grafana.snapshot.prometheus import Budget, Prometheus, PrometheusError, token_from_env
from grafana.snapshot.resolve import ResolveError, parse_duration
from loadgen.errors import LoadgenError
from loadgen.html.compare import Gate, compare
from loadgen.html.compare_page import compare_page, compare_text
from loadgen.html.data import RunData, load_report, read_run
from loadgen.html.report import report_page
from loadgen.scenario import Scenario

__all__ = [
    "COMMANDS",
    "PROMETHEUS_FLAGS",
    "HtmlOutput",
    "add_commands",
    "add_prometheus_flags",
    "html_output",
    "records_for",
    "run_command",
    "write_run_report",
]

log = logging.getLogger("loadgen")

COMMANDS = ("report", "compare")


def add_commands(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser("report", help="an HTML report of a run from its JSON (and JSONL)")
    report.add_argument("report_json", metavar="RUN.json", help="the run's --output-json")
    report.add_argument(
        "--jsonl", metavar="RUN.jsonl", help="its --output-jsonl: distributions and the run over time"
    )
    add_prometheus_flags(report)
    report.add_argument("-o", "--output", required=True, type=Path, metavar="FILE.html")
    comp = commands.add_parser(
        "compare",
        help="runs side by side, changes with confidence intervals, regression gates",
        description="Exit status: 0 no --fail-if holds, 1 one holds (a regression), 2 bad input.",
    )
    comp.add_argument(
        "reports", nargs="+", metavar="RUN.json", help="two or more reports; the first is the baseline"
    )
    comp.add_argument(
        "--jsonl",
        action="append",
        default=[],
        metavar="RUN.jsonl",
        help="per-request records, one per report in the same order (for the intervals)",
    )
    comp.add_argument(
        "--name", action="append", default=[], metavar="NAME", help="a label per report, in order"
    )
    comp.add_argument(
        "--fail-if",
        action="append",
        default=[],
        metavar="EXPR",
        help="'ttft_p95 > +10%%', 'requests_per_s < -5%%', 'e2e_p99 > +200ms', 'error_ratio > 0.01'",
    )
    comp.add_argument(
        "--resamples", type=int, default=400, help="bootstrap resamples (400; 0 = no intervals)"
    )
    comp.add_argument("--seed", type=int, default=0, help="bootstrap seed (0)")
    comp.add_argument("-o", "--output", type=Path, metavar="FILE.html", help="also write an HTML page")


PROMETHEUS_FLAGS = ("prometheus", "prometheus_token_env", "scrape_interval")  # not scenario keys


def add_prometheus_flags(group: argparse._ActionsContainer) -> None:
    """The flags that add the engine and GPU from Prometheus to a report (`report`, and `run` with
    --output-html)."""
    group.add_argument("--prometheus", metavar="URL", help="add the engine and GPU during the run from it")
    group.add_argument("--prometheus-token-env", metavar="VAR", help="its bearer token, from VAR")
    group.add_argument(
        "--scrape-interval", default="15s", metavar="DUR",
        help="--prometheus's scrape interval, for the panels' $__rate_interval (default 15s)",
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class PrometheusSource:
    url: str
    token: str | None
    scrape_interval_s: float

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> PrometheusSource | None:
        """The --prometheus of `args`, its URL and token checked (PrometheusError), or None."""
        if not args.prometheus:
            return None
        try:
            interval = parse_duration(args.scrape_interval)
        except ResolveError as exc:
            raise LoadgenError(f"--scrape-interval: {exc}") from None
        if interval <= 0:
            raise LoadgenError("--scrape-interval must be above 0")
        source = cls(args.prometheus, token_from_env(args.prometheus_token_env), interval)
        Prometheus(source.url, Budget(), source.token).close()  # the URL and credentials, checked now
        return source

    def open(self) -> Prometheus:
        return Prometheus(self.url, Budget(), self.token)


@dataclasses.dataclass(frozen=True)
class HtmlOutput:
    """`run --output-html FILE [--prometheus URL]`."""

    path: str
    prometheus: PrometheusSource | None = None


def html_output(args: argparse.Namespace) -> HtmlOutput | None:
    """Fail before a run starts, not after it: plotly present, the folder there, --prometheus answering."""
    if not args.output_html:
        if args.prometheus:
            raise LoadgenError("--prometheus adds to the HTML report: give --output-html FILE too")
        return None
    folder = Path(args.output_html).resolve().parent
    if not folder.is_dir():
        raise LoadgenError(f"--output-html {args.output_html}: no folder {folder}")
    try:
        require_plotly()
        source = PrometheusSource.from_args(args)
        if source is not None:
            with source.open() as prom:
                prom.check()
    except GrafanaError as exc:  # plotly missing, Prometheus unreachable: said before the run, as ours
        raise LoadgenError(str(exc)) from None
    return HtmlOutput(args.output_html, source)


@contextlib.contextmanager
def records_for(scenario: Scenario, output: HtmlOutput | None) -> Iterator[Scenario]:
    """The scenario `run` executes: with --output-html but no --output-jsonl, its per-request records go
    to a temporary file for the report, removed afterwards."""
    if output is None or scenario.output_jsonl:
        yield scenario
        return
    handle, path = tempfile.mkstemp(prefix="llmobs-run-", suffix=".jsonl")
    os.close(handle)
    try:
        yield dataclasses.replace(scenario, output_jsonl=path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def write_run_report(report: dict, jsonl: str | None, output: HtmlOutput) -> bool:
    """`run --output-html`: the report page of the run just finished; False (and said why) if it failed.
    Prometheus's queries failing costs only their panels (said on the page and here), not the page."""
    try:
        data = read_run(report, "this run", jsonl)
        if output.prometheus is None:
            page, _ = report_page(data)
        else:
            page = _with_prometheus(data, output.prometheus)
        Path(output.path).write_text(page.render(), encoding="utf-8")
    except (OSError, LoadgenError, GrafanaError) as exc:  # GrafanaError: PlotlyMissing and the like
        print(f"llmobs-loadgen: HTML report not written: {exc}", file=sys.stderr)
        return False
    log.info("wrote the HTML report to %s", output.path)
    return True


def _with_prometheus(data: RunData, source: PrometheusSource) -> Page:
    try:
        with source.open() as prom:
            page, outcome = report_page(data, prom, source.scrape_interval_s)
    except PrometheusError as exc:
        print(f"llmobs-loadgen: the HTML report has no Prometheus panels: {exc}", file=sys.stderr)
        page, _ = report_page(data)
        page.subtitle.append(f"No engine and GPU panels: Prometheus failed: {exc}")
        return page
    for key, errors in outcome.errors.items():
        print(f"llmobs-loadgen: HTML report, {key}: {'; '.join(errors)}", file=sys.stderr)
    return page


def run_command(args: argparse.Namespace) -> int:
    try:
        require_plotly() if args.command == "report" or args.output else None
        return _report(args) if args.command == "report" else _compare(args)
    except (LoadgenError, GrafanaError) as exc:
        print(f"llmobs-loadgen {args.command}: {exc}", file=sys.stderr)
        return 2


def _report(args: argparse.Namespace) -> int:
    data = read_run(load_report(args.report_json), Path(args.report_json).name, args.jsonl)
    outcome = None
    source = PrometheusSource.from_args(args)
    if source is not None:
        with source.open() as prom:
            prom.check()
            page, outcome = report_page(data, prom, source.scrape_interval_s)
    else:
        page, _ = report_page(data)
    args.output.write_text(page.render(), encoding="utf-8")
    print(f"wrote {args.output}", file=sys.stderr)
    if outcome is not None and (outcome.errors or outcome.stopped):
        for key, errors in outcome.errors.items():
            print(f"  {key}: {'; '.join(errors)}", file=sys.stderr)
        return 1
    return 0


def _compare(args: argparse.Namespace) -> int:
    if len(args.reports) < 2:
        raise LoadgenError("compare needs two or more reports")
    if args.jsonl and len(args.jsonl) != len(args.reports):
        raise LoadgenError(
            f"{len(args.jsonl)} --jsonl for {len(args.reports)} reports: give one per report, in order"
        )
    if args.name and len(args.name) != len(args.reports):
        raise LoadgenError(f"{len(args.name)} --name for {len(args.reports)} reports: give one per report")
    if args.resamples < 0 or args.resamples > 100_000:
        raise LoadgenError("--resamples must be between 0 and 100000")
    gates = [Gate.parse(text) for text in args.fail_if]
    runs = []
    for i, path in enumerate(args.reports):
        report = load_report(path)
        name = args.name[i] if args.name else _default_name(report, path, i)
        runs.append(
            (name, read_run(report, Path(path).name, args.jsonl[i] if args.jsonl else None, seed=args.seed))
        )
    comparison = compare(runs, args.resamples, args.seed)
    print(compare_text(comparison))
    failures = [failure for gate in gates for failure in gate.check(comparison)]
    for failure in failures:
        print(failure, file=sys.stderr)
    if args.output:
        args.output.write_text(compare_page(comparison, runs, failures).render(), encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    return 1 if failures else 0


def _default_name(report: dict, path: str, index: int) -> str:
    run_id = report.get("run_id")
    return str(run_id) if run_id else f"{index + 1}: {Path(path).stem}"
