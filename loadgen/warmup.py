"""Warm-up: requests sent before the measured phases and left out of every figure.

`--warmup N` sends N requests, `--warmup DUR` sends for that long, in the shape of the first phase (its
starting concurrency or rate; a trace replay's first requests, the measured replay then starting from
the next one). Warm-up requests are not in any phase of the report, its totals, sweep or SLO verdict;
the report says how many there were (`warmup`). On /metrics they are counted in series of their own,
labelled `phase="warmup"`, so every recording rule and dashboard query leaves them out with
`phase!="warmup"` (measured series have no `phase` label). The per-request JSONL keeps them, with
`"phase": "warmup"`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from loadgen.errors import ScenarioError
from loadgen.schedules import Phase

__all__ = ["WARMUP", "Warmup"]

WARMUP = "warmup"  # the warm-up phase's name, and the value of its series' `phase` label


@dataclass(frozen=True)
class Warmup:
    requests: int | None = None
    duration_s: float | None = None

    @classmethod
    def parse(cls, value: object, parse_duration) -> Warmup:
        """`50` (requests) or a duration (`30s`, `2m`)."""
        if type(value) is int or (isinstance(value, str) and value.strip().isdigit()):
            requests = int(value)  # type: ignore[arg-type]
            if requests < 1:
                raise ScenarioError(f"warmup must be at least 1 request or a duration, got {value!r}")
            return cls(requests=requests)
        seconds = parse_duration(value, "warmup")
        if math.isinf(seconds):
            raise ScenarioError("warmup must end: give a number of requests or a finite duration")
        return cls(duration_s=seconds)

    def phase(self, first: Phase) -> Phase:
        """The warm-up phase: the first phase's shape at its starting level, this long."""
        return dataclasses.replace(
            first,
            name=WARMUP,
            ramp_to=None,
            duration_s=self.duration_s if self.duration_s is not None else math.inf,
            max_requests=self.requests,
        )

    def __str__(self) -> str:
        return f"{self.requests} requests" if self.requests is not None else f"{self.duration_s:g} s"
