"""What Grafana would substitute into a query: the time window, the step, `$__rate_interval` and friends,
and the template variables.

Query variables stand for all their values, as Grafana's "All" does: the variable's `allValue` (`.*`),
so every selector `x=~"$host"` matches every host. `--var name=value` chooses instead (a regex, as a
`=~` matcher reads it). Custom variables (the SLO thresholds) take their default unless chosen.
`$__interval` is the step; `$__rate_interval` is max(step + scrape interval, 4 x scrape interval), as
Grafana computes it from the data source's scrape interval (15 s in our provisioning).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import datetime

from grafana.errors import GrafanaError
from grafana.model import CustomVariable, Dashboard, QueryVariable

__all__ = [
    "ResolveError",
    "Window",
    "duration",
    "parse_duration",
    "parse_time",
    "substitute",
    "variable_values",
]

NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)
MAX_POINTS = 11_000  # Prometheus refuses a range query with more points per series
_UNITS = {"ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


class ResolveError(GrafanaError, ValueError):
    """A time, duration, step, variable or budget that cannot be used."""


def parse_duration(text: str) -> float:
    """`90s`, `5m`, `1h30m`, `500ms`, or plain seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ResolveError(f"not a duration: {text!r} (use 30s, 5m, 1h30m, 500ms)")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def parse_time(text: str, now: float | None = None) -> float:
    """Unix seconds from `now`, `now-1h`, an RFC 3339 time (`2026-12-05T18:00:00Z`) or Unix seconds."""
    now = time.time() if now is None else now
    text = text.strip()
    if text == "now":
        return now
    if text.startswith("now-"):
        return now - parse_duration(text[4:])
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ResolveError(
            f"not a time: {text!r} (use now, now-1h, 2026-12-05T18:00:00Z or Unix seconds)"
        ) from None
    if moment.tzinfo is None:
        raise ResolveError(f"time {text!r} has no time zone: add Z or +hh:mm")
    return moment.timestamp()


def duration(seconds: float) -> str:
    """A PromQL duration: whole seconds when it is one, else milliseconds."""
    if seconds >= 1 and float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{max(1, round(seconds * 1000))}ms"


@dataclass(frozen=True)
class Window:
    start: float
    end: float
    step: float
    scrape_interval: float = 15.0

    @classmethod
    def choose(
        cls,
        start: float,
        end: float,
        scrape_interval: float = 15.0,
        step: float | None = None,
        points: int = 400,
    ) -> Window:
        """A step giving about `points` points, rounded up to a nice interval, never below the scrape
        interval."""
        if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
            raise ResolveError("the window is empty: --from must be before --to")
        if scrape_interval <= 0:
            raise ResolveError("the scrape interval must be above 0")
        span = end - start
        if step is None:
            raw = max(span / points, scrape_interval)
            step = next((nice for nice in NICE_STEPS if nice >= raw), math.ceil(raw))
        if step <= 0 or span / step > MAX_POINTS:
            raise ResolveError(f"step {step:g}s gives more than {MAX_POINTS:,} points over {span:g}s")
        return cls(start, end, float(step), scrape_interval)

    @property
    def rate_interval(self) -> float:
        return max(self.step + self.scrape_interval, 4 * self.scrape_interval)

    def builtins(self) -> dict[str, str]:
        span = self.end - self.start
        return {
            "__interval": duration(self.step),
            "__interval_ms": str(round(self.step * 1000)),
            "__rate_interval": duration(self.rate_interval),
            "__range": duration(round(span)),
            "__range_s": str(round(span)),
            "__range_ms": str(round(span * 1000)),
        }


def variable_values(board: Dashboard, chosen: dict[str, str]) -> dict[str, str]:
    """Each of the dashboard's variables -> the text that replaces it in queries."""
    values: dict[str, str] = {}
    for variable in board.variables:
        if variable.name in chosen:
            values[variable.name] = chosen[variable.name]
        elif isinstance(variable, QueryVariable):
            values[variable.name] = variable.all_value
        elif isinstance(variable, CustomVariable):
            values[variable.name] = variable.default
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace `$name`, `${name}` and `[[name]]`; an unknown variable is an error, not an empty string."""

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in values:
            raise ResolveError(f"variable ${name} has no value")
        return values[name]

    return _VARIABLE.sub(value, expr)
