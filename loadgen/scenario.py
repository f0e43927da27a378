"""A scenario: everything a run needs, from a YAML file and/or CLI flags (flags win).

YAML keys are the long CLI flags with underscores (`--step-duration` -> `step_duration`), plus
`steps:` (a list of {concurrency|rate, duration, requests}) for steps with their own durations.
The control API takes the same keys as a JSON body.

`Scenario.build` is the edge: it checks every value and turns it into typed settings, once. After
it nothing parses a string: durations are float seconds (names end in `_s`), levels are `Phase`s,
objectives are `Slo`s, lengths are `LengthDist`s, the HTTP limits a `Timeouts`. What was given is
kept, redacted, for the report's `config`.
"""

from __future__ import annotations

import copy
import math
import os
import re
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from loadgen import redact
from loadgen.client import Timeouts, check_header_value
from loadgen.errors import ScenarioError
from loadgen.network import Network
from loadgen.redact import redact_url
from loadgen.schedules import ARRIVALS, Phase, step_phases
from loadgen.slicing import WHOLE, Slice, parse_shard, parse_workers
from loadgen.starts import parse_start_at
from loadgen.stats import Slo
from loadgen.think import ThinkTime
from loadgen.tokens import OUTPUT_TOKENS_FROM
from loadgen.traces import TRACE_KINDS
from loadgen.urls import check_url
from loadgen.warmup import Warmup
from loadgen.workloads import LengthDist

__all__ = ["INPUTS", "Dataset", "Scenario", "parse_duration", "parse_slo", "read_secret"]

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
    "metrics_address": "0.0.0.0:9841",
    "metrics_linger": "0s",  # after the run, /metrics stays up this long for Prometheus's last scrapes
    "progress": "auto",
    "think_time": None,  # a user's pause after an answer: before its next turn or (closed loop) request
    "engine_metrics": "auto",  # the engine's /metrics, read each second for its queue: auto, none or a URL
    "workers": 1,  # processes on this host sharing the run (slicing.py); "auto": the usable cores
    "shard": None,  # "I/N": this host's slice of a run over N hosts; "auto/N": I from JOB_COMPLETION_INDEX
    "start_at": None,  # wall clock at which the first phase starts (RFC 3339 or Unix seconds)
}

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SLO = re.compile(
    r"^\s*(ttft|ttfo|tpot|itl|e2e|dispatch|user_tps|stream_tps|error_ratio)\s*(<=|>=)\s*(\S+?)\s*$"
)


def parse_duration(value: object, what: str = "duration") -> float:
    """`20s`, `500ms`, `5m`, `2h`, `1d`, a number of seconds, or `inf`."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value.strip().lower() in ("inf", "infinite", "forever"):
        return math.inf
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ScenarioError(f"bad {what} {value!r}: use e.g. 500ms, 20s, 5m, 2h or inf")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not seconds > 0:
        raise ScenarioError(f"{what} must be above 0, got {value!r}")
    return seconds


def parse_slo(text: object) -> Slo:
    """`ttft<=2s`, `tpot<=100ms`, `e2e<=30s`, `user_tps>=10` (tokens/s a user receives, from sending to
    the last token), `stream_tps>=10` (tokens/s after the first token, 1/TPOT), `error_ratio<=0.01`."""
    match = _SLO.match(str(text))
    if not match:
        raise ScenarioError(
            f"bad SLO {text!r}: use METRIC<=VALUE or METRIC>=VALUE with METRIC one of "
            "ttft, ttfo, tpot, itl, e2e, dispatch (durations), user_tps, stream_tps (tokens/s), "
            "error_ratio (0-1)"
        )
    metric, op, raw = match.groups()
    if metric in ("user_tps", "stream_tps", "error_ratio"):
        try:
            threshold = float(raw)
        except ValueError as exc:
            raise ScenarioError(f"bad SLO {text!r}: {raw!r} is not a number") from exc
        wanted = "<=" if metric == "error_ratio" else ">="
    else:
        threshold = parse_duration(raw, f"SLO threshold in {text!r}")
        wanted = "<="
    if op != wanted:
        raise ScenarioError(f"bad SLO {text!r}: {metric} takes {wanted}")
    return Slo(metric, op, threshold)


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
        values: dict[str, object] = {}
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


def _parse(v: dict[str, object]) -> Scenario:
    """Every value checked and typed; the first problem raises ScenarioError (or WorkloadError)."""
    url = check_url(v["url"])
    redact.register_url(url)
    endpoint = _choice(v, "endpoint", ENDPOINTS)
    progress = _choice(v, "progress", PROGRESS)
    if not isinstance(v["extra_body"], dict):
        raise ScenarioError("extra_body must be a JSON/YAML object")
    counts = {
        name: _count(v, name)
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
    percentile = _number(v, "slo_percentile")
    if not 0 < percentile < 100:
        raise ScenarioError("slo_percentile must be between 0 and 100")
    max_error_ratio = None if v["max_error_ratio"] is None else _number(v, "max_error_ratio")
    if max_error_ratio is not None and not 0 <= max_error_ratio < 1:
        raise ScenarioError(f"max_error_ratio must be from 0 to below 1, got {v['max_error_ratio']!r}")
    slo_items = v["slo"] if isinstance(v["slo"], list) else [v["slo"]]
    slos = tuple(parse_slo(item) for item in slo_items)
    sweep, soak = _flag(v, "sweep"), _flag(v, "soak")
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
        ca_file=_text(v, "ca_file"), insecure=_flag(v, "insecure"), proxy_from_env=_flag(v, "proxy_from_env")
    )
    if network.ca_file and network.insecure:
        raise ScenarioError("give --ca-file (verify against that CA) or --insecure (no checks), not both")
    if dataset is not None and dataset.kind in TRACE_KINDS:
        phases = _replay_phase(v, counts["requests"])
    else:
        phases = _phases(v, counts["max_concurrency"], counts["requests"], soak)
    shard = parse_shard(v["shard"]) if v["shard"] not in (None, "") else WHOLE
    if not shard.whole and not _text(v, "run_id"):
        raise ScenarioError("--shard needs --run-id: every shard of a run exports and reports under one id")
    workers = parse_workers(v["workers"])
    _check_slices(phases, shard.count * workers)
    output_len = v["output_len"]
    think_time = ThinkTime.parse(v["think_time"]) if v["think_time"] not in (None, "") else None
    if think_time is not None and not all(phase.closed for phase in phases) and (counts["turns"] or 1) < 2:
        raise ScenarioError(
            "think_time applies to closed-loop users (--concurrency) and between the turns of a "
            "conversation (--turns 2 or more), not to single requests at a --rate"
        )
    return Scenario(
        url=url,
        model=_text(v, "model"),
        endpoint=endpoint,
        stream=_flag(v, "stream"),
        continuous_usage=_flag(v, "continuous_usage"),
        api_key_env=_text(v, "api_key_env"),
        api_key_file=_text(v, "api_key_file"),
        name=_text(v, "name") or "default",
        run_id=_text(v, "run_id") or uuid.uuid4().hex[:8],
        phases=phases,
        shape=_shape(phases, sweep, soak),
        sweep=sweep,
        soak=soak,
        slos=slos,
        slo_percentile=percentile,
        max_error_ratio=max_error_ratio,
        max_connections=counts["max_connections"],
        input_len=LengthDist.parse(_length_spec(v, "input_len")),
        output_len=LengthDist.parse(_length_spec(v, "output_len")) if output_len not in (None, "") else None,
        dataset=dataset,
        prefix_groups=counts["prefix_groups"] or 0,
        prefix_len=counts["prefix_len"] or 0,
        turns=counts["turns"] or 1,
        prefix_hit_rate=_prefix_hit_rate(v, dataset, counts["prefix_len"] or counts["prefix_groups"]),
        warmup=Warmup.parse(v["warmup"], parse_duration) if v["warmup"] is not None else None,
        time_scale=_time_scale(v, dataset),
        tokenizer=_text(v, "tokenizer"),
        output_tokens_from=_choice(v, "output_tokens_from", OUTPUT_TOKENS_FROM),
        seed=counts["seed"] or 0,
        extra_body=v["extra_body"],  # type: ignore[arg-type]
        network=network,
        timeouts=timeouts,
        grace_s=grace_s,
        honor_retry_after=_flag(v, "honor_retry_after"),
        output_json=_text(v, "output_json"),
        output_jsonl=_text(v, "output_jsonl"),
        metrics_address=_text(v, "metrics_address"),
        metrics_linger_s=_linger(v["metrics_linger"]),
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


def _replay_phase(v: dict[str, object], requests: int | None) -> tuple[Phase, ...]:
    """A trace replay: one open-loop phase timed by the trace (to its end, --requests or --step-duration)."""
    given = [key for key in ("concurrency", "rate", "steps", "ramp_to") if v[key] is not None]
    if given or v["sweep"]:
        raise ScenarioError(
            "a trace replay (--dataset mooncake:/trace:) has the trace's timing; drop "
            + (", ".join(given) or "sweep")
        )
    duration = parse_duration(v["step_duration"]) if v["step_duration"] is not None else math.inf
    phase = Phase(name="replay", replay=True, duration_s=duration, max_requests=requests)
    try:
        phase.validate()
    except ValueError as exc:
        raise ScenarioError(str(exc)) from exc
    return (phase,)


def _prefix_hit_rate(v: dict[str, object], dataset: Dataset | None, prefix: int) -> float | None:
    """The target prefix-cache hit share of agentic sessions (sessions.py)."""
    rate = None if v["prefix_hit_rate"] is None else _number(v, "prefix_hit_rate")
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


def _time_scale(v: dict[str, object], dataset: Dataset | None) -> float:
    scale = _number(v, "time_scale")
    if not 0 < scale < math.inf:
        raise ScenarioError(f"time_scale must be above 0, got {v['time_scale']!r}")
    if scale != 1.0 and (dataset is None or dataset.kind not in TRACE_KINDS):
        raise ScenarioError("time_scale scales a trace's clock: give --dataset mooncake:FILE or trace:FILE")
    return scale


def _phases(
    v: dict[str, object], max_concurrency: int | None, requests: int | None, soak: bool
) -> tuple[Phase, ...]:
    common: dict[str, object] = {
        "arrival": _choice(v, "arrival", ARRIVALS),
        "burstiness": _number(v, "burstiness"),
        "max_concurrency": max_concurrency,
        "max_requests": requests,
    }
    if v["step_duration"] is not None:
        duration = parse_duration(v["step_duration"])
    else:
        duration = math.inf if soak or requests else 60.0
    steps = v["steps"]
    if steps:
        if not isinstance(steps, list):
            raise ScenarioError("steps must be a list of mappings with concurrency or rate")
        phases = tuple(_step(index, step, common, duration) for index, step in enumerate(steps, 1))
    else:
        concurrency = _levels(v["concurrency"], "concurrency", integer=True)
        rate = _levels(v["rate"], "rate", integer=False)
        if concurrency and rate:
            raise ScenarioError("give --concurrency (closed loop) or --rate (open loop), not both")
        levels, closed = (concurrency, True) if concurrency else (rate, False) if rate else ([1.0], True)
        if v["ramp_to"] is not None:
            if len(levels) != 1:
                raise ScenarioError("--ramp-to ramps from one starting --concurrency or --rate")
            common["ramp_to"] = _number(v, "ramp_to")
        phases = step_phases(levels, closed, duration_s=duration, **common)
    for phase in phases:
        try:
            phase.validate()
        except ValueError as exc:
            raise ScenarioError(str(exc)) from exc
    if not soak and any(math.isinf(p.duration_s) and p.max_requests is None for p in phases):
        raise ScenarioError("a phase without an end: give --step-duration or --requests, or --soak")
    return phases


def _linger(value: object) -> float:
    if value in (0, "0", "0s", None):
        return 0.0
    seconds = parse_duration(value, "metrics_linger")
    if seconds > 3600:
        raise ScenarioError(f"metrics_linger {value!r}: at most 1h")
    return seconds


def _check_slices(phases: tuple[Phase, ...], slices: int) -> None:
    """Each shard and worker gets its part of an open loop's --max-concurrency: at least one each."""
    for phase in phases:
        if phase.max_concurrency is not None and phase.max_concurrency < slices:
            raise ScenarioError(
                f"max_concurrency {phase.max_concurrency} is split among {slices} shards x workers: "
                "give at least one each"
            )


def _step(index: int, step: object, common: dict, duration: float) -> Phase:
    if not isinstance(step, dict) or not ({"concurrency", "rate"} & set(step)):
        raise ScenarioError(f"steps[{index}] must be a mapping with concurrency or rate")
    unknown = set(step) - {"concurrency", "rate", "duration", "requests", "ramp_to", "name"}
    if unknown:
        raise ScenarioError(f"steps[{index}]: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    kind = "concurrency" if "concurrency" in step else "rate"
    try:
        level = int(step[kind]) if kind == "concurrency" else float(step[kind])
        ramp_to = float(step["ramp_to"]) if step.get("ramp_to") is not None else None
    except (TypeError, ValueError) as exc:
        raise ScenarioError(f"steps[{index}]: {kind} and ramp_to must be numbers") from exc
    requests = step.get("requests", common["max_requests"])
    if requests is not None and (not isinstance(requests, int) or isinstance(requests, bool)):
        raise ScenarioError(f"steps[{index}]: requests must be a whole number")
    return Phase(
        name=str(step.get("name") or f"step-{index} {kind}={level:g}"),
        **{kind: level},
        ramp_to=ramp_to,
        duration_s=parse_duration(step["duration"]) if "duration" in step else duration,
        **{**common, "max_requests": requests},
    )


def _shape(phases: tuple[Phase, ...], sweep: bool, soak: bool) -> str:
    if sweep:
        return "sweep"
    if soak:
        return "soak"
    if phases[0].replay:
        return "replay"
    kind = "closed" if phases[0].closed else "open"
    if phases[0].ramp_to is not None:
        return f"{kind}-ramp"
    return f"{kind}-steps" if len(phases) > 1 else kind


def _levels(value: object, what: str, integer: bool) -> list[float] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else str(value).split(",")
    try:
        levels = [float(str(item).strip()) for item in items if str(item).strip()]
    except ValueError as exc:
        raise ScenarioError(f"bad {what} {value!r}: use a number or a comma-separated list") from exc
    if (
        not levels
        or not all(0 < level < math.inf for level in levels)
        or (integer and any(level != int(level) for level in levels))
    ):
        raise ScenarioError(f"bad {what} {value!r}: {'whole ' if integer else ''}numbers above 0 needed")
    return levels


def _choice(v: dict[str, object], name: str, choices: tuple[str, ...]) -> Any:  # one of `choices`
    if v[name] not in choices:
        raise ScenarioError(f"{name} must be {', '.join(choices[:-1])} or {choices[-1]}, not {v[name]!r}")
    return v[name]


def _count(v: dict[str, object], name: str) -> int | None:
    value = v[name]
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise ScenarioError(f"{name} must be a whole number >= 0, got {value!r}")
    return value


def _number(v: dict[str, object], name: str) -> float:
    value = v[name]
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ScenarioError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ScenarioError(f"{name} must be a finite number, got {value!r}")
    return number


def _flag(v: dict[str, object], name: str) -> bool:
    if not isinstance(v[name], bool):
        raise ScenarioError(f"{name} must be true or false, got {v[name]!r}")
    return v[name]  # type: ignore[return-value]


def _text(v: dict[str, object], name: str) -> str | None:
    value = v[name]
    if value is None:
        return None
    if isinstance(value, dict | list | bool):
        raise ScenarioError(f"{name} must be text, got {value!r}")
    return str(value)


def _length_spec(v: dict[str, object], name: str) -> str:
    value = v[name]
    if isinstance(value, dict | list | bool):
        raise ScenarioError(f"{name} must be N, uniform:MIN:MAX, normal:MEAN:STD or hist:LEN=WEIGHT,...")
    return str(value)


def read_secret(env: str | None, file: str | None, what: str) -> str | None:
    """A secret (API key, control token) from a file or an environment variable, stripped; it must
    be printable ASCII, as it is sent in a header. Messages name where it comes from, never it."""
    if file:
        try:
            secret = Path(file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise ScenarioError(f"cannot read the {what} file {file}: {reason}") from exc
        if not secret:
            raise ScenarioError(f"the {what} file {file} is empty")
    elif env:
        secret = os.environ.get(env, "").strip()
        if not secret:
            raise ScenarioError(f"environment variable {env} ({what}) is not set")
    else:
        return None
    try:
        check_header_value(secret, f"the {what} from {file or env}")
    except ValueError as exc:
        raise ScenarioError(str(exc)) from None
    redact.register(secret)
    return secret
