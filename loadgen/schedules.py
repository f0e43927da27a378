"""Load shapes: what a phase asks for, and when open-loop requests are due.

A run is a sequence of phases. A phase is closed loop (a number of users, each sending its next
request when the previous one finished) or open loop (arrivals at a rate, independent of how fast
the server answers, optionally capped in concurrency). Either can ramp linearly to `ramp_to` over
the phase's duration. Steps are several phases; a sweep is steps that stop at the first level
whose SLOs fail; a soak is one phase without an end.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

ARRIVALS = ("constant", "poisson", "gamma")


@dataclass(frozen=True)
class Phase:
    name: str
    concurrency: int | None = None  # closed loop: users
    rate: float | None = None  # open loop: requests per second
    ramp_to: float | None = None  # linear ramp of the concurrency or rate over the duration
    arrival: str = "poisson"
    burstiness: float = 1.0  # gamma shape; 1 = Poisson, < 1 burstier, > 1 more even
    max_concurrency: int | None = None  # open loop cap (waiting for a slot counts as dispatch delay)
    duration_s: float = math.inf
    max_requests: int | None = None
    replay: bool = False  # open loop whose requests come when a trace says (traces.py); no rate

    @property
    def closed(self) -> bool:
        return self.concurrency is not None

    @property
    def level(self) -> float:
        if self.replay:
            return 0.0
        return float(self.concurrency if self.closed else self.rate)  # type: ignore[arg-type]

    def target_at(self, elapsed_s: float) -> float:
        """Concurrency or rate wanted `elapsed_s` into the phase."""
        if self.ramp_to is None or not math.isfinite(self.duration_s) or self.duration_s <= 0:
            return self.level
        fraction = min(1.0, max(0.0, elapsed_s / self.duration_s))
        return self.level + (self.ramp_to - self.level) * fraction

    def peak(self) -> float:
        return max(self.level, self.ramp_to or 0.0)

    def validate(self) -> None:
        if self.replay:
            if self.concurrency is not None or self.rate is not None or self.ramp_to is not None:
                raise ValueError(
                    f"phase {self.name}: a trace replay has its own timing (no concurrency or rate)"
                )
        elif (self.concurrency is None) == (self.rate is None):
            raise ValueError(f"phase {self.name}: give exactly one of concurrency or rate")
        if self.closed and self.concurrency < 1:  # type: ignore[operator]
            raise ValueError(f"phase {self.name}: concurrency must be at least 1")
        if not self.closed and not self.replay and not self.rate > 0:  # type: ignore[operator]
            raise ValueError(f"phase {self.name}: rate must be above 0")
        if self.arrival not in ARRIVALS:
            raise ValueError(f"phase {self.name}: arrival must be one of {', '.join(ARRIVALS)}")
        if not self.burstiness > 0:
            raise ValueError(f"phase {self.name}: burstiness must be above 0")
        if not self.duration_s > 0:
            raise ValueError(f"phase {self.name}: duration must be above 0")
        if self.max_requests is not None and self.max_requests < 1:
            raise ValueError(f"phase {self.name}: requests must be at least 1")
        if not math.isfinite(self.duration_s) and self.max_requests is None and self.ramp_to is not None:
            raise ValueError(f"phase {self.name}: a ramp needs a finite duration")
        if self.ramp_to is not None and not self.ramp_to > 0:
            raise ValueError(f"phase {self.name}: ramp target must be above 0")


def arrival_offsets(phase: Phase, rng: random.Random) -> Iterator[float]:
    """Seconds from the phase start at which open-loop requests are due (infinite iterator).

    Gaps follow the phase's current rate: constant = 1/rate; poisson = exponential; gamma =
    Gamma(shape=burstiness, scale=1/(rate*burstiness)) as in vLLM's --burstiness (CV = 1/sqrt(b)).
    """
    elapsed = 0.0
    while True:
        rate = phase.target_at(elapsed)
        if phase.arrival == "constant":
            gap = 1.0 / rate
        elif phase.arrival == "poisson":
            gap = rng.expovariate(rate)
        else:
            gap = rng.gammavariate(phase.burstiness, 1.0 / (rate * phase.burstiness))
        elapsed += gap
        yield elapsed


def step_phases(levels: list[float], closed: bool, **common) -> tuple[Phase, ...]:
    """One phase per level: `step-1 concurrency=1`, `step-2 concurrency=10`, ..."""
    kind = "concurrency" if closed else "rate"
    phases = []
    for index, level in enumerate(levels, start=1):
        value = int(level) if closed else float(level)
        name = f"step-{index} {kind}={value:g}" if len(levels) > 1 else f"{kind}={value:g}"
        phases.append(Phase(name=name, **{kind: value}, **common))
    return tuple(phases)


class RequestBudget:
    """A phase's request budget shared by its users (None = unlimited)."""

    def __init__(self, limit: int | None) -> None:
        self.left = limit

    def take(self) -> bool:
        if self.left is None:
            return True
        if self.left <= 0:
            return False
        self.left -= 1
        return True

    def give_back(self) -> None:
        if self.left is not None:
            self.left += 1

    @property
    def exhausted(self) -> bool:
        return self.left is not None and self.left <= 0
