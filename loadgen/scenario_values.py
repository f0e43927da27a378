"""One scenario value at a time: durations (`20s`, `500ms`, `inf`), SLOs (`ttft<=2s`), and the readers
that take one key of the merged values (`v`: YAML, flags and defaults) and check its type, naming
the key and what it accepts in a ScenarioError. Scenario.build (scenario.py) calls these once, at
the edge; nothing after it parses a string."""

from __future__ import annotations

import math
import re
from typing import Any

from loadgen.errors import ScenarioError
from loadgen.stats import Slo

__all__ = [
    "choice",
    "count",
    "flag",
    "length_spec",
    "linger",
    "number",
    "parse_duration",
    "parse_slo",
    "text",
]

Values = dict[str, object]  # every key of scenario.INPUTS, as given or defaulted

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SLO = re.compile(
    r"^\s*(ttft|ttfo|tpot|itl|e2e|dispatch|user_tps|stream_tps|error_ratio)\s*(<=|>=)\s*(\S+?)\s*$"
)
MAX_LINGER_S = 3600.0


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


def linger(value: object) -> float:
    """metrics_linger: 0 (the default) or a duration of at most an hour."""
    if value in (0, "0", "0s", None):
        return 0.0
    seconds = parse_duration(value, "metrics_linger")
    if seconds > MAX_LINGER_S:
        raise ScenarioError(f"metrics_linger {value!r}: at most 1h")
    return seconds


def choice(v: Values, name: str, choices: tuple[str, ...]) -> Any:  # one of `choices`
    if v[name] not in choices:
        raise ScenarioError(f"{name} must be {', '.join(choices[:-1])} or {choices[-1]}, not {v[name]!r}")
    return v[name]


def count(v: Values, name: str) -> int | None:
    value = v[name]
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise ScenarioError(f"{name} must be a whole number >= 0, got {value!r}")
    return value


def number(v: Values, name: str) -> float:
    value = v[name]
    try:
        if isinstance(value, bool):
            raise ValueError
        result = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ScenarioError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(result):
        raise ScenarioError(f"{name} must be a finite number, got {value!r}")
    return result


def flag(v: Values, name: str) -> bool:
    if not isinstance(v[name], bool):
        raise ScenarioError(f"{name} must be true or false, got {v[name]!r}")
    return v[name]  # type: ignore[return-value]


def text(v: Values, name: str) -> str | None:
    value = v[name]
    if value is None:
        return None
    if isinstance(value, dict | list | bool):
        raise ScenarioError(f"{name} must be text, got {value!r}")
    return str(value)


def length_spec(v: Values, name: str) -> str:
    value = v[name]
    if isinstance(value, dict | list | bool):
        raise ScenarioError(f"{name} must be N, uniform:MIN:MAX, normal:MEAN:STD or hist:LEN=WEIGHT,...")
    return str(value)
