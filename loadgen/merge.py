"""`llmobs-loadgen merge`: one run's report from the reports of its shards (`--shard I/N` on N hosts).

    llmobs-loadgen merge report-0.json report-1.json ... -o merged.json
        [--jsonl requests-0.jsonl --jsonl requests-1.jsonl ... --output-jsonl merged.jsonl]

Exact: every shard's report carries the full state of each phase (mergeable.py: counters, outcomes,
and each distribution's sketch buckets), so the merged figures are those of one process that had
sent every shard's requests: counts and tokens add, percentiles come from the merged sketches (never
from averaged percentiles). Phases are merged by position and must have the same names; a merged
phase runs from its earliest start to its latest end on the hosts' wall clocks (so its throughput is
as exact as the hosts' clocks agree: NTP keeps them within milliseconds). A sweep's verdict is taken
on the merged levels (shards run every level, runner.py).

Refused, with the reason: reports of different runs (run_id), of different scenarios (any setting
but the shard and those local to a host: PER_SHARD), a shard given twice (it would count twice),
shards missing (unless --allow-missing, and then the report says which), reports without the state
(older versions).

The per-request JSONL of the shards (`--jsonl`, each record's shard read from its request id) are
written into one file with their monotonic instants (`*_ns`) turned into Unix nanoseconds through
their shard's clock anchor, which is what the merged report's `clock` says they are.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass

import orjson

from loadgen import mergeable
from loadgen import report as reports
from loadgen.errors import LoadgenError, ScenarioError
from loadgen.html.data import load_report
from loadgen.jsonl import JsonlWriter
from loadgen.result import Clock, RunResult, SetupRequests
from loadgen.scenario import INPUTS, Scenario
from loadgen.stats import PhaseStats

__all__ = ["add_parser", "merge_reports", "run"]

log = logging.getLogger("loadgen")
MAX_LINE_BYTES = 16 * 1024 * 1024
UNIX_CLOCK = Clock(0, 0)  # merged instants are Unix nanoseconds: this anchor converts them as they are
# settings that may differ between the shards of one run: the shard, and what is local to its host
PER_SHARD = (
    "shard", "workers", "output_json", "output_jsonl", "metrics_address", "progress", "api_key",
    "api_key_env", "api_key_file", "ca_file", "insecure", "proxy_from_env", "dataset", "tokenizer",
)  # fmt: skip


class MergeError(LoadgenError):
    """Reports that cannot be merged into one run's, and why."""


@dataclass(frozen=True)
class Shard:
    path: str
    report: dict
    index: int
    count: int
    clock: Clock


def add_parser(commands: argparse._SubParsersAction) -> None:
    merge = commands.add_parser(
        "merge",
        help="one run's report from its shards' reports (--shard I/N on several hosts)",
        description="Exit status: 0 merged, 2 the reports cannot be merged (the reason on stderr).",
    )
    merge.add_argument("reports", nargs="+", metavar="REPORT.json", help="every shard's --output-json")
    merge.add_argument("-o", "--output", required=True, metavar="MERGED.json", help="the merged report")
    merge.add_argument(
        "--jsonl", action="append", default=[], metavar="SHARD.jsonl", help="shards' --output-jsonl (repeat)"
    )
    merge.add_argument("--output-jsonl", metavar="MERGED.jsonl", help="write the shards' records as one file")
    merge.add_argument(
        "--allow-missing",
        action="store_true",
        help="merge even when shards are missing (the report says which)",
    )


def run(args: argparse.Namespace) -> int:
    if args.jsonl and not args.output_jsonl:
        raise ScenarioError("--jsonl needs --output-jsonl (where the merged records go)")
    shards = [_read(path) for path in args.reports]
    merged = merge_reports(shards, allow_missing=args.allow_missing)
    reports.write(merged, args.output)
    if args.output_jsonl:
        written, skipped = merge_jsonl(shards, args.jsonl, args.output_jsonl)
        log.info("%d records written to %s (%d lines skipped)", written, args.output_jsonl, skipped)
    print(reports.render(merged))
    return 0


def _read(path: str) -> Shard:
    try:
        report = load_report(path)
    except LoadgenError as exc:
        raise MergeError(str(exc)) from None
    state, shard, clock = report.get("mergeable"), report.get("shard"), report.get("clock")
    if not isinstance(state, dict) or state.get("version") != mergeable.STATE_VERSION:
        raise MergeError(
            f"{path} has no mergeable state of version {mergeable.STATE_VERSION} (an older report?)"
        )
    if not isinstance(shard, dict) or not isinstance(clock, dict):
        raise MergeError(f"{path} is not a shard's report (no 'shard': run with --shard I/N)")
    try:
        return Shard(path, report, int(shard["index"]), int(shard["count"]),
                     Clock(int(clock["perf_counter_ns"]), int(clock["unix_ns"])))  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise MergeError(f"{path}: bad shard or clock fields ({exc})") from None


def merge_reports(shards: list[Shard], allow_missing: bool = False) -> dict:
    """The run's report from its shards' (MergeError when they are not one run's shards)."""
    first = shards[0]
    _check_one_run(shards)
    present = sorted(s.index for s in shards)
    missing = sorted(set(range(first.count)) - set(present))
    if missing and not allow_missing:
        raise MergeError(
            f"shards {', '.join(map(str, missing))} of {first.count} are missing (--allow-missing)"
        )
    scenario = _scenario(first.report)
    result = _result(shards, scenario)
    merged = reports.build(result)
    merged["config"] = {k: v for k, v in first.report["config"].items() if k not in PER_SHARD}
    merged["shards"] = {"count": first.count, "merged": present, "missing": missing,
                        "reports": [s.path for s in sorted(shards, key=lambda s: s.index)]}  # fmt: skip
    if missing:
        merged.setdefault("notes", []).append(
            f"shards {', '.join(map(str, missing))} of {first.count} missing: their requests are not in it"
        )
    return merged


def _check_one_run(shards: list[Shard]) -> None:
    first = shards[0]
    seen: dict[int, str] = {}
    for shard in shards:
        report = shard.report
        if report.get("run_id") != first.report.get("run_id"):
            raise MergeError(
                f"{shard.path} is run {report.get('run_id')}, {first.path} run {first.report.get('run_id')}"
            )
        if shard.count != first.count:
            raise MergeError(f"{shard.path} is a shard of {shard.count}, {first.path} of {first.count}")
        if shard.index in seen:
            raise MergeError(
                f"shard {shard.index} is given twice ({seen[shard.index]}, {shard.path}): would count twice"
            )
        seen[shard.index] = shard.path
        mine = {k: v for k, v in report.get("config", {}).items() if k not in PER_SHARD}
        theirs = {k: v for k, v in first.report.get("config", {}).items() if k not in PER_SHARD}
        if mine != theirs:
            differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise MergeError(
                f"{shard.path} and {first.path} differ in {', '.join(differ)}: not shards of one run"
            )


def _scenario(report: dict) -> Scenario:
    """The shards' scenario (their config as written, one shard, this host's worker count)."""
    config = {k: v for k, v in report["config"].items() if k in INPUTS}
    config.update(shard=None, workers=1, start_at=None)
    try:
        return Scenario.build(None, config)
    except LoadgenError as exc:
        raise MergeError(f"the shards' configuration cannot be read back: {exc}") from None


def _result(shards: list[Shard], scenario: Scenario) -> RunResult:
    ordered = sorted(shards, key=lambda s: s.index)
    reports_ = [s.report for s in ordered]
    slos = scenario.slos
    stats: list[PhaseStats] = []
    for number in range(max(len(r["mergeable"]["phases"]) for r in reports_)):
        parts = [mergeable.phase_from_state(r["mergeable"]["phases"][number], slos)
                 for r in reports_ if len(r["mergeable"]["phases"]) > number]  # fmt: skip
        if len({p.name for p in parts}) > 1:
            raise MergeError(
                f"phase {number + 1} has different names in the shards: {sorted({p.name for p in parts})}"
            )
        stats.append(PhaseStats.merged(parts))
    first = reports_[0]
    failures = tuple(
        f"shard {s.index}: {note}"
        for s in ordered
        for note in s.report.get("notes", ())
        if note.startswith("worker ")
    )
    return RunResult(
        run_id=first["run_id"], scenario=scenario, model=first.get("model"),
        model_note=first.get("model_note"),
        started_at=min(s.clock.unix_s for s in ordered),
        state="finished" if all(r.get("state") == "finished" for r in reports_) else "failed",
        stopped_early=any(r.get("stopped_early") for r in reports_),
        workload=first.get("workload"), stats=tuple(stats),
        timing_path=first.get("timing_path"),
        backoff_waits=0, backoff_waited_s=0.0,
        setup=_setup(reports_),
        dropped_body_fields={k: v for r in reports_ for k, v in (r.get("dropped_body_fields") or {}).items()},
        clock=UNIX_CLOCK, workers=sum(int(r.get("workers") or 1) for r in reports_),
        warmup=_warmup(reports_, slos),
        worker_failures=failures,
    )  # fmt: skip


def _warmup(reports_: list[dict], slos: tuple) -> PhaseStats | None:
    states = [r["mergeable"].get("warmup") for r in reports_]
    parts = [mergeable.phase_from_state(state, slos) for state in states if state]
    return PhaseStats.merged(parts) if parts else None


def _setup(reports_: list[dict]) -> SetupRequests | None:
    setups = [r["setup_requests"] for r in reports_ if r.get("setup_requests")]
    if not setups:
        return None
    return SetupRequests(
        purpose=setups[0]["purpose"],
        **{
            key: sum(int(s[key]) for s in setups)
            for key in ("sent", "succeeded", "prompt_tokens", "output_tokens")
        },
    )


def merge_jsonl(shards: list[Shard], paths: list[str], output: str) -> tuple[int, int]:
    """The shards' records in one file, instants in Unix nanoseconds; (written, skipped lines)."""
    clocks = {f"s{s.index}": s.clock for s in shards}
    prefix = f"{shards[0].report['run_id']}-"
    writer = JsonlWriter(output)
    written = skipped = 0
    try:
        for path in paths:
            try:
                handle = open(path, "rb")  # noqa: SIM115 (closed below)
            except OSError as exc:
                raise MergeError(f"cannot read {path}: {exc.strerror}") from None
            with handle:
                for line in handle:
                    record = _record(line)
                    clock = clocks.get(_shard_tag(record["request_id"], prefix)) if record else None
                    if record is None or clock is None:
                        skipped += 1
                        continue
                    for key, value in record.items():
                        if key.endswith("_ns"):
                            record[key] = _unix_ns(value, clock)
                    writer.write(orjson.dumps(record) + b"\n")
                    written += 1
    finally:
        writer.close()
    return written, skipped


def _unix_ns(value: object, clock: Clock) -> object:
    """A monotonic instant (or a list of them: `sends_ns`) as Unix nanoseconds; 0 and None stay."""
    if isinstance(value, list):
        return [_unix_ns(item, clock) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and value:
        return clock.unix_ns_of(value)
    return value


def _record(line: bytes) -> dict | None:
    if len(line) > MAX_LINE_BYTES:
        return None
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        try:
            record = json.loads(line)
        except ValueError:
            return None
    return record if isinstance(record, dict) and isinstance(record.get("request_id"), str) else None


def _shard_tag(request_id: str, prefix: str) -> str:
    """`s3` from the request id `RUN-s3-17` or `RUN-s3w1-17` (runner: ids unique over shards and workers)."""
    if not request_id.startswith(prefix):
        return ""
    return request_id[len(prefix) :].split("-")[0].split("w")[0]
