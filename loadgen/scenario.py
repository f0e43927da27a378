"""A scenario: everything a run needs, from a YAML file and/or CLI flags (flags win).

YAML keys are the long CLI flags with underscores (`--step-duration` -> `step_duration`), plus
`steps:` (a list of {concurrency|rate, duration, requests}) for steps with their own durations.
"""

from __future__ import annotations

import math
import os
import re
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import httpx
import yaml

from loadgen.client import check_header_value, redact_url
from loadgen.errors import ScenarioError
from loadgen.schedules import ARRIVALS, Phase, step_phases
from loadgen.stats import Slo

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SLO = re.compile(r"^\s*(ttft|ttfo|tpot|itl|e2e|dispatch|user_tps|error_ratio)\s*(<=|>=)\s*(\S+?)\s*$")


def parse_duration(value: Any, what: str = "duration") -> float:
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


def parse_slo(text: str) -> Slo:
    """`ttft<=2s`, `tpot<=100ms`, `e2e<=30s`, `user_tps>=10` (tokens/s per user), `error_ratio<=0.01`."""
    match = _SLO.match(str(text))
    if not match:
        raise ScenarioError(
            f"bad SLO {text!r}: use METRIC<=VALUE or METRIC>=VALUE with METRIC one of "
            "ttft, ttfo, tpot, itl, e2e, dispatch (durations), user_tps (tokens/s), error_ratio (0-1)"
        )
    metric, op, raw = match.groups()
    if metric in ("user_tps", "error_ratio"):
        try:
            threshold = float(raw)
        except ValueError as exc:
            raise ScenarioError(f"bad SLO {text!r}: {raw!r} is not a number") from exc
        wanted = ">=" if metric == "user_tps" else "<="
    else:
        threshold = parse_duration(raw, f"SLO threshold in {text!r}")
        wanted = "<="
    if op != wanted:
        raise ScenarioError(f"bad SLO {text!r}: {metric} takes {wanted}")
    return Slo(metric, op, threshold)


def _levels(value: Any, what: str, integer: bool) -> list[float] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else str(value).split(",")
    try:
        levels = [float(str(item).strip()) for item in items if str(item).strip()]
    except ValueError as exc:
        raise ScenarioError(f"bad {what} {value!r}: use a number or a comma-separated list") from exc
    if not levels or min(levels) <= 0 or (integer and any(level != int(level) for level in levels)):
        raise ScenarioError(f"bad {what} {value!r}: {'whole ' if integer else ''}numbers above 0 needed")
    return levels


@dataclass
class Scenario:
    url: str = ""
    model: str | None = None
    endpoint: str = "chat"
    stream: bool = True
    api_key_env: str | None = None
    api_key_file: str | None = None
    name: str = "default"
    run_id: str | None = None
    concurrency: Any = None
    rate: Any = None
    arrival: str = "poisson"
    burstiness: float = 1.0
    max_concurrency: int | None = None
    max_connections: int | None = None
    ramp_to: float | None = None
    step_duration: Any = None
    requests: int | None = None
    soak: bool = False
    steps: list | None = None
    sweep: bool = False
    slo: list = field(default_factory=list)
    slo_percentile: float = 95.0
    input_len: Any = "256"
    output_len: Any = None  # synthetic: 128; datasets: their own lengths unless given
    dataset: str | None = None
    prefix_groups: int = 0
    prefix_len: int = 0
    turns: int = 1
    tokenizer: str | None = None
    seed: int = 0
    extra_body: dict = field(default_factory=dict)
    connect_timeout: Any = "10s"
    read_timeout: Any = "120s"
    request_timeout: Any = "900s"
    grace: Any = "10s"
    output_json: str | None = None
    output_jsonl: str | None = None
    metrics_address: str | None = "0.0.0.0:9841"
    progress: str = "auto"

    @classmethod
    def keys(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    @classmethod
    def build(cls, file_values: dict | None, flag_values: dict) -> Scenario:
        values: dict[str, Any] = {}
        for source in (file_values or {}, flag_values):
            unknown = set(source) - cls.keys()
            if unknown:
                raise ScenarioError(f"unknown scenario key(s): {', '.join(sorted(unknown))}")
            values.update({k: v for k, v in source.items() if v is not None})
        scenario = cls(**values)
        scenario.validate()
        return scenario

    @classmethod
    def load_yaml(cls, path: str) -> dict:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ScenarioError(f"cannot read scenario {path}: {exc}") from exc
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ScenarioError(f"scenario {path}: the top level must be a mapping of settings")
        return {str(k).replace("-", "_"): v for k, v in data.items()}

    def validate(self) -> None:
        self.validate_url()
        if self.endpoint not in ("chat", "completions"):
            raise ScenarioError("endpoint must be chat or completions")
        if self.arrival not in ARRIVALS:
            raise ScenarioError(f"arrival must be one of {', '.join(ARRIVALS)}")
        if self.progress not in ("auto", "tty", "plain", "none"):
            raise ScenarioError("progress must be auto, tty, plain or none")
        if not isinstance(self.extra_body, dict):
            raise ScenarioError("extra_body must be a JSON/YAML object")
        names = (
            "prefix_groups",
            "prefix_len",
            "turns",
            "seed",
            "max_concurrency",
            "max_connections",
            "requests",
        )
        for name in names:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ScenarioError(f"{name} must be a whole number >= 0, got {value!r}")
        if self.turns < 1:
            raise ScenarioError("turns must be at least 1")
        if not 0 < float(self.slo_percentile) < 100:
            raise ScenarioError("slo_percentile must be between 0 and 100")
        if self.sweep and not self.slos():
            raise ScenarioError(
                "a sweep needs at least one --slo, e.g. --slo 'ttft<=2s' --slo 'user_tps>=10'"
            )
        if self.dataset and not re.match(r"^(sharegpt|jsonl):.+", self.dataset):
            raise ScenarioError("dataset must be sharegpt:PATH or jsonl:PATH")
        self.timeouts()
        self.phases()

    def validate_url(self) -> None:
        if not self.url or not re.match(r"^https?://", str(self.url)):
            raise ScenarioError("--url is required: the server's base URL, e.g. http://127.0.0.1:8000")
        try:
            host = httpx.URL(str(self.url)).host
        except (httpx.InvalidURL, ValueError):
            host = ""
        if not host:
            raise ScenarioError(f"{redact_url(str(self.url))} is not a usable http(s) URL")

    def slos(self) -> tuple[Slo, ...]:
        items = self.slo if isinstance(self.slo, list) else [self.slo]
        return tuple(parse_slo(item) for item in items)

    def timeouts(self) -> tuple[float, float, float, float]:
        return (
            parse_duration(self.connect_timeout, "connect timeout"),
            parse_duration(self.read_timeout, "read timeout"),
            parse_duration(self.request_timeout, "request timeout"),
            parse_duration(self.grace, "grace"),
        )

    def phases(self) -> tuple[Phase, ...]:
        common: dict[str, Any] = {
            "arrival": self.arrival,
            "burstiness": float(self.burstiness),
            "max_concurrency": self.max_concurrency,
            "max_requests": self.requests,
        }
        if self.soak:
            duration = math.inf if self.step_duration is None else parse_duration(self.step_duration)
        elif self.step_duration is not None:
            duration = parse_duration(self.step_duration)
        else:
            duration = math.inf if self.requests else 60.0
        if self.steps:
            phases = tuple(
                self._step(index, step, common, duration) for index, step in enumerate(self.steps, 1)
            )
        else:
            concurrency = _levels(self.concurrency, "concurrency", integer=True)
            rate = _levels(self.rate, "rate", integer=False)
            if concurrency and rate:
                raise ScenarioError("give --concurrency (closed loop) or --rate (open loop), not both")
            levels, closed = (concurrency, True) if concurrency else (rate, False) if rate else ([1.0], True)
            if self.ramp_to is not None:
                if len(levels) != 1:
                    raise ScenarioError("--ramp-to ramps from one starting --concurrency or --rate")
                common["ramp_to"] = float(self.ramp_to)
            phases = step_phases(levels, closed, duration_s=duration, **common)
        for phase in phases:
            try:
                phase.validate()
            except ValueError as exc:
                raise ScenarioError(str(exc)) from exc
        if not self.soak and any(math.isinf(p.duration_s) and p.max_requests is None for p in phases):
            raise ScenarioError("a phase without an end: give --step-duration or --requests, or --soak")
        return phases

    def _step(self, index: int, step: Any, common: dict, duration: float) -> Phase:
        if not isinstance(step, dict) or not ({"concurrency", "rate"} & set(step)):
            raise ScenarioError(f"steps[{index}] must be a mapping with concurrency or rate")
        unknown = set(step) - {"concurrency", "rate", "duration", "requests", "ramp_to", "name"}
        if unknown:
            raise ScenarioError(f"steps[{index}]: unknown key(s) {', '.join(sorted(unknown))}")
        kind = "concurrency" if "concurrency" in step else "rate"
        try:
            level = int(step[kind]) if kind == "concurrency" else float(step[kind])
        except (TypeError, ValueError) as exc:
            raise ScenarioError(f"steps[{index}]: {kind} must be a number") from exc
        return Phase(
            name=str(step.get("name") or f"step-{index} {kind}={level:g}"),
            **{kind: level},
            ramp_to=float(step["ramp_to"]) if step.get("ramp_to") is not None else None,
            duration_s=parse_duration(step["duration"]) if "duration" in step else duration,
            **{**common, "max_requests": step.get("requests", common["max_requests"])},
        )

    def shape(self) -> str:
        if self.sweep:
            return "sweep"
        if self.soak:
            return "soak"
        phases = self.phases()
        kind = "closed" if phases[0].closed else "open"
        if phases[0].ramp_to is not None:
            return f"{kind}-ramp"
        return f"{kind}-steps" if len(phases) > 1 else kind

    def resolved_run_id(self) -> str:
        if not self.run_id:
            self.run_id = uuid.uuid4().hex[:8]
        return self.run_id

    def redacted(self) -> dict:
        """The exact configuration, safe to write out: names where secrets come from, never values."""
        values = asdict(self)
        values["url"] = redact_url(self.url)
        values["api_key"] = "<redacted>" if (self.api_key_env or self.api_key_file) else None
        return values

    def api_key(self) -> str | None:
        return read_secret(self.api_key_env, self.api_key_file, "API key")


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
    return secret
