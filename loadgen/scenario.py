"""A scenario: everything a run needs, from a YAML file and/or CLI flags (flags win).

YAML keys are the long CLI flags with underscores (`--step-duration` -> `step_duration`), plus
`steps:` (a list of {concurrency|rate, duration, requests}) for steps with their own durations.
The control API takes the same keys as a JSON body.

`Scenario.build` is the edge: it checks every value and turns it into typed settings, once. After
it nothing parses a string: durations are float seconds (names end in `_s`), levels are `Phase`s,
objectives are `Slo`s, lengths are `LengthDist`s, the HTTP limits a `Timeouts`. What was given is
kept, redacted, for the report's `config`.

Here: the settings (INPUTS), the typed Scenario and how its values are checked together. One value
at a time (durations, SLOs, a key's type): scenario_values.py; the phases: scenario_phases.py;
secrets: credentials.py.
"""

from __future__ import annotations

import copy
import math
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from loadgen import redact
from loadgen import scenario_phases as phases_of
from loadgen import scenario_values as read
from loadgen.client import Timeouts
from loadgen.credentials import read_secret
from loadgen.errors import ScenarioError
from loadgen.network import Network
from loadgen.redact import redact_url
from loadgen.scenario_values import Values, parse_duration, parse_slo
from loadgen.schedules import Phase
from loadgen.slicing import WHOLE, Slice, parse_shard, parse_workers
from loadgen.starts import parse_start_at
from loadgen.stats import Slo
from loadgen.think import ThinkTime
from loadgen.tokens import OUTPUT_TOKENS_FROM
from loadgen.traces import TRACE_KINDS
from loadgen.urls import check_url
from loadgen.warmup import Warmup
from loadgen.workloads import LengthDist

__all__ = ["INPUTS", "Dataset", "Scenario"]


Endpoint = Literal["chat", "completions"]
Progress = Literal["auto", "tty", "plain", "none"]
ENDPOINTS: tuple[Endpoint, ...] = ("chat", "completions")
PROGRESS: tuple[Progress, ...] = ("auto", "tty", "plain", "none")

# Every setting a person can give (YAML key, flag, control-API body key) with its default as written.
INPUTS: Mapping[str, object] = {
    "url": "",
    "model": None,
    "endpoint": "chat",
    "stream": True,
    "continuous_usage": False,
    "api_key_env": None,
    "api_key_file": None,
    "name": "default",
    "run_id": None,
    "concurrency": None,
    "rate": None,
    "arrival": "poisson",
    "burstiness": 1.0,
    "max_concurrency": None,
    "max_connections": None,
    "ramp_to": None,
    "step_duration": None,
    "requests": None,
    "soak": False,
    "steps": None,
    "sweep": False,
    "slo": [],
    "slo_percentile": 95.0,
    "max_error_ratio": None,  # None: the run fails only when every request failed
    "input_len": "256",
    "output_len": None,  # synthetic: 128; datasets: their own lengths unless given
    "dataset": None,
    "prefix_groups": 0,
    "prefix_len": 0,
    "turns": 1,
    "prefix_hit_rate": None,  # size a shared system prompt for this prefix-cache hit share
    "warmup": None,  # N requests or a duration, left out of every figure
    "time_scale": 1.0,  # trace replay: multiply the trace's gaps
    "tokenizer": None,
    "output_tokens_from": "auto",
    "seed": 0,
    "extra_body": {},
    "ca_file": None,
    "insecure": False,
    "proxy_from_env": False,
    "connect_timeout": "10s",
    "read_timeout": "120s",
    "request_timeout": "900s",
    "grace": "10s",
    "honor_retry_after": False,
    "output_json": None,
    "output_jsonl": None,
    "metrics_address": "127.0.0.1:9841",  # this host only: a Prometheus elsewhere needs 0.0.0.0:9841
    "metrics_linger": "0s",  # after the run, /metrics stays up this long for Prometheus's last scrapes
    "progress": "auto",
    "think_time": None,  # a user's pause after an answer: before its next turn or (closed loop) request
    "engine_metrics": "auto",  # the engine's /metrics, read each second for its queue: auto, none or a URL
    "workers": 1,  # processes on this host sharing the run (slicing.py); "auto": the usable cores
    "shard": None,  # "I/N": this host's slice of a run over N hosts; "auto/N": I from JOB_COMPLETION_INDEX
    "start_at": None,  # wall clock at which the first phase starts (RFC 3339 or Unix seconds)
}


@dataclass(frozen=True)
class Dataset:
    """`sharegpt:PATH`, `jsonl:PATH`, or a trace to replay: `mooncake:PATH`, `trace:PATH`."""

    kind: Literal["sharegpt", "jsonl", "mooncake", "trace"]
    path: str

    @classmethod
    def parse(cls, spec: object) -> Dataset:
        kind, _, path = str(spec).partition(":")
        if kind not in ("sharegpt", "jsonl", *TRACE_KINDS) or not path:
            raise ScenarioError("dataset must be sharegpt:PATH, jsonl:PATH, mooncake:PATH or trace:PATH")
        return cls(kind, path)  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """A run's settings, checked and typed. Built by `Scenario.build` only: the defaults are in INPUTS."""

    url: str
    model: str | None
    endpoint: Endpoint
    stream: bool
    continuous_usage: bool  # stream_options.continuous_usage_stats: usage on every event
    api_key_env: str | None
    api_key_file: str | None
    name: str
    run_id: str
    phases: tuple[Phase, ...]
    shape: str  # closed, open, closed-steps, open-ramp, sweep, soak, ... (a metric label)
    sweep: bool
    soak: bool
    slos: tuple[Slo, ...]
    slo_percentile: float
    max_error_ratio: float | None  # the run fails (exit 1) above it; None: only when nothing succeeded
    max_connections: int | None  # None: from the phases (runner)
    input_len: LengthDist
    output_len: LengthDist | None  # None: synthetic 128, datasets their own lengths
    dataset: Dataset | None
    prefix_groups: int
    prefix_len: int
    turns: int
    prefix_hit_rate: float | None
    warmup: Warmup | None
    time_scale: float
    tokenizer: str | None
    output_tokens_from: Literal["auto", "usage", "events"]
    seed: int
    extra_body: Mapping[str, object]
    network: Network  # TLS verification, proxies from the environment
    timeouts: Timeouts
    grace_s: float
    honor_retry_after: bool  # closed loop: a throttled user waits as Retry-After asks
    output_json: str | None
    output_jsonl: str | None
    metrics_address: str | None
    metrics_linger_s: float  # /metrics stays up this long after the run (0: it closes with the run)
    progress: Progress
    think_time: ThinkTime | None
    engine_metrics: str | None  # URL of the engine's /metrics; None: not read
    workers: int  # processes sharing this host's part of the run (1: this process alone)
    shard: Slice  # this host's slice of the run (WHOLE unless --shard)
    start_at: float | None  # Unix time of the first phase's start (None: when setup is done)
    given: Mapping[str, object] = field(repr=False, compare=False)  # as given, defaults filled in

    @classmethod
    def build(cls, file_values: Mapping | None, flag_values: Mapping) -> Scenario:
        """The scenario from YAML values and flags (flags win; None means not given)."""
        values: Values = {}
        for source in (file_values or {}, flag_values):
            unknown = set(source) - set(INPUTS)
            if unknown:
                raise ScenarioError(f"unknown scenario key(s): {', '.join(sorted(map(str, unknown)))}")
            values.update({k: v for k, v in source.items() if v is not None})
        return _parse(copy.deepcopy({**INPUTS, **values}))  # nothing shared with INPUTS or callers

    @classmethod
    def load_yaml(cls, path: str) -> dict:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise ScenarioError(f"cannot read scenario {path}: {reason}") from exc
        except RecursionError:
            raise ScenarioError(f"scenario {path} is not valid YAML: nested too deeply") from None
        except yaml.YAMLError as exc:  # the problem and where, never the line itself (it may hold a secret)
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or "not YAML"
            raise ScenarioError(f"scenario {path} is not valid YAML: {problem}{where}") from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ScenarioError(f"scenario {path}: the top level must be a mapping of settings")
        return {str(k).replace("-", "_"): v for k, v in data.items()}

    def redacted(self) -> dict:
        """The configuration as given, safe to write out: names where secrets come from, never values."""
        values = {**copy.deepcopy(self.given), "run_id": self.run_id}
        values["url"] = redact_url(self.url)
        values["api_key"] = "<redacted>" if (self.api_key_env or self.api_key_file) else None
        return values

    def api_key(self) -> str | None:
        return read_secret(self.api_key_env, self.api_key_file, "API key")


def _parse(v: Values) -> Scenario:
    """Every value checked and typed; the first problem raises ScenarioError (or WorkloadError)."""
    url = check_url(v["url"])
    redact.register_url(url)
    endpoint = read.choice(v, "endpoint", ENDPOINTS)
    progress = read.choice(v, "progress", PROGRESS)
    if not isinstance(v["extra_body"], dict):
        raise ScenarioError("extra_body must be a JSON/YAML object")
    counts = {
        name: read.count(v, name)
        for name in (
            "prefix_groups",
            "prefix_len",
            "turns",
            "seed",
            "max_concurrency",
            "max_connections",
            "requests",
        )
    }
    if counts["turns"] is not None and counts["turns"] < 1:
        raise ScenarioError("turns must be at least 1")
    percentile = read.number(v, "slo_percentile")
    if not 0 < percentile < 100:
        raise ScenarioError("slo_percentile must be between 0 and 100")
    max_error_ratio = None if v["max_error_ratio"] is None else read.number(v, "max_error_ratio")
    if max_error_ratio is not None and not 0 <= max_error_ratio < 1:
        raise ScenarioError(f"max_error_ratio must be from 0 to below 1, got {v['max_error_ratio']!r}")
    slo_items = v["slo"] if isinstance(v["slo"], list) else [v["slo"]]
    slos = tuple(parse_slo(item) for item in slo_items)
    sweep, soak = read.flag(v, "sweep"), read.flag(v, "soak")
    if sweep and not slos:
        raise ScenarioError("a sweep needs at least one --slo, e.g. --slo 'ttft<=2s' --slo 'user_tps>=10'")
    dataset = Dataset.parse(v["dataset"]) if v["dataset"] else None
    timeouts = Timeouts(
        connect_s=parse_duration(v["connect_timeout"], "connect timeout"),
        read_s=parse_duration(v["read_timeout"], "read timeout"),
        request_s=parse_duration(v["request_timeout"], "request timeout"),
    )
    grace_s = parse_duration(v["grace"], "grace")
    network = Network(
        ca_file=read.text(v, "ca_file"),
        insecure=read.flag(v, "insecure"),
        proxy_from_env=read.flag(v, "proxy_from_env"),
    )
    if network.ca_file and network.insecure:
        raise ScenarioError("give --ca-file (verify against that CA) or --insecure (no checks), not both")
    if dataset is not None and dataset.kind in TRACE_KINDS:
        phases = phases_of.replay_phase(v, counts["requests"])
    else:
        phases = phases_of.phases(v, counts["max_concurrency"], counts["requests"], soak)
    shard = parse_shard(v["shard"]) if v["shard"] not in (None, "") else WHOLE
    if not shard.whole and not read.text(v, "run_id"):
        raise ScenarioError("--shard needs --run-id: every shard of a run exports and reports under one id")
    workers = parse_workers(v["workers"])
    phases_of.check_slices(phases, shard.count * workers)
    given_output = v["output_len"] not in (None, "")
    output_len = LengthDist.parse(read.length_spec(v, "output_len")) if given_output else None
    think_time = ThinkTime.parse(v["think_time"]) if v["think_time"] not in (None, "") else None
    if think_time is not None and not all(phase.closed for phase in phases) and (counts["turns"] or 1) < 2:
        raise ScenarioError(
            "think_time applies to closed-loop users (--concurrency) and between the turns of a "
            "conversation (--turns 2 or more), not to single requests at a --rate"
        )
    return Scenario(
        url=url,
        model=read.text(v, "model"),
        endpoint=endpoint,
        stream=read.flag(v, "stream"),
        continuous_usage=read.flag(v, "continuous_usage"),
        api_key_env=read.text(v, "api_key_env"),
        api_key_file=read.text(v, "api_key_file"),
        name=read.text(v, "name") or "default",
        run_id=read.text(v, "run_id") or uuid.uuid4().hex[:8],
        phases=phases,
        shape=phases_of.shape(phases, sweep, soak),
        sweep=sweep,
        soak=soak,
        slos=slos,
        slo_percentile=percentile,
        max_error_ratio=max_error_ratio,
        max_connections=counts["max_connections"],
        input_len=LengthDist.parse(read.length_spec(v, "input_len")),
        output_len=output_len,
        dataset=dataset,
        prefix_groups=counts["prefix_groups"] or 0,
        prefix_len=counts["prefix_len"] or 0,
        turns=counts["turns"] or 1,
        prefix_hit_rate=_prefix_hit_rate(v, dataset, counts["prefix_len"] or counts["prefix_groups"]),
        warmup=Warmup.parse(v["warmup"], parse_duration) if v["warmup"] is not None else None,
        time_scale=_time_scale(v, dataset),
        tokenizer=read.text(v, "tokenizer"),
        output_tokens_from=read.choice(v, "output_tokens_from", OUTPUT_TOKENS_FROM),
        seed=counts["seed"] or 0,
        extra_body=v["extra_body"],  # type: ignore[arg-type]
        network=network,
        timeouts=timeouts,
        grace_s=grace_s,
        honor_retry_after=read.flag(v, "honor_retry_after"),
        output_json=read.text(v, "output_json"),
        output_jsonl=read.text(v, "output_jsonl"),
        metrics_address=read.text(v, "metrics_address"),
        metrics_linger_s=read.linger(v["metrics_linger"]),
        progress=progress,
        think_time=think_time,
        engine_metrics=_engine_metrics(url, v["engine_metrics"]),
        workers=workers,
        shard=shard,
        start_at=parse_start_at(v["start_at"]) if v["start_at"] not in (None, "") else None,
        given=v,
    )


def _engine_metrics(url: str, value: object) -> str | None:
    """`auto`: the engine's own /metrics beside its API (the base URL without /v1 or a query)."""
    text = str(value).strip() if value is not None else "none"
    if text.lower() in ("none", "off", ""):
        return None
    if text.lower() != "auto":
        return check_url(text, "engine_metrics")
    parts = urllib.parse.urlsplit(url)
    path = parts.path.rstrip("/").removesuffix("/v1")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, f"{path}/metrics", "", ""))


def _prefix_hit_rate(v: Values, dataset: Dataset | None, prefix: int) -> float | None:
    """The target prefix-cache hit share of agentic sessions (sessions.py)."""
    rate = None if v["prefix_hit_rate"] is None else read.number(v, "prefix_hit_rate")
    if rate is not None:
        if not 0 < rate < 1:
            raise ScenarioError(
                f"prefix_hit_rate must be between 0 and 1 (exclusive), got {v['prefix_hit_rate']!r}"
            )
        if dataset is not None or prefix:
            raise ScenarioError(
                "prefix_hit_rate sizes the shared system prompt of synthetic sessions: "
                "no --dataset, --prefix-groups or --prefix-len with it"
            )
    return rate


def _time_scale(v: Values, dataset: Dataset | None) -> float:
    scale = read.number(v, "time_scale")
    if not 0 < scale < math.inf:
        raise ScenarioError(f"time_scale must be above 0, got {v['time_scale']!r}")
    if scale != 1.0 and (dataset is None or dataset.kind not in TRACE_KINDS):
        raise ScenarioError("time_scale scales a trace's clock: give --dataset mooncake:FILE or trace:FILE")
    return scale
