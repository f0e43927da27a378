"""Think time: how long a closed-loop user pauses between getting an answer and sending the next request.

A Locust user is not a request in flight: it waits (`wait_time = between(1, 5)`) between tasks. To reproduce
such a run, give the same pause: `2s` or `constant:2s`, `uniform:1s:5s` (Locust's `between(1, 5)`), or
`exponential:2s` (mean 2 s, users arriving as a Poisson process). The pause is not dispatch delay: a
request is scheduled when its user is done thinking.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from loadgen.errors import ScenarioError

_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, None: 1.0}
_SECONDS = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m)?\s*$")
FORMS = "2s, constant:2s, uniform:1s:5s or exponential:2s"


def _seconds(text: str, spec: str) -> float:
    match = _SECONDS.match(text)
    if not match:
        raise ScenarioError(f"think time {spec!r}: {text!r} is not a duration (use {FORMS})")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class ThinkTime:
    kind: str  # constant, uniform, exponential
    params: tuple[float, ...]  # seconds

    @classmethod
    def parse(cls, spec: object) -> ThinkTime:
        text = str(spec).strip()
        kind, _, rest = text.partition(":") if ":" in text else ("constant", "", text)
        parts = rest.split(":") if rest else []
        if kind == "constant" and len(parts) == 1:
            return cls("constant", (_seconds(parts[0], text),))
        if kind == "uniform" and len(parts) == 2:
            low, high = (_seconds(part, text) for part in parts)
            if high < low:
                raise ScenarioError(f"think time {text!r}: the upper bound is below the lower")
            return cls("uniform", (low, high))
        if kind == "exponential" and len(parts) == 1:
            mean = _seconds(parts[0], text)
            if mean <= 0:
                raise ScenarioError(f"think time {text!r}: the mean must be above 0")
            return cls("exponential", (mean,))
        raise ScenarioError(f"think time {text!r}: use {FORMS}")

    def draw(self, rng: random.Random) -> float:
        if self.kind == "uniform":
            return rng.uniform(*self.params)
        if self.kind == "exponential":
            return rng.expovariate(1.0 / self.params[0])
        return self.params[0]

    @property
    def mean_s(self) -> float:
        return sum(self.params) / len(self.params) if self.kind == "uniform" else self.params[0]
