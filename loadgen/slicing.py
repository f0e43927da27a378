"""Slices of one run: shard s of S (hosts, `--shard`) and worker w of W (processes, `--workers`).

Every slice runs the whole scenario's phases with its part of the load, chosen so that the slices
together send what one process would:

- closed loop: user k (0, 1, 2, ... up to the phase's concurrency, ramps included) belongs to slice
  k mod count; a slice runs only its own users.
- open loop: every slice draws the same arrival schedule (the same seed) and sends arrival a only
  when a mod count is its index: the schedule is dealt round-robin, so the merged arrivals are
  exactly the requested process (constant, Poisson, gamma, ramps alike), not an approximation.
  Independent Poisson streams of rate/N would add up to a Poisson of rate R, but gamma or constant
  streams would not add up to their kind; dealing one schedule works for all, and costs each slice
  one random draw per arrival of the whole run (tenths of a microsecond).
- requests: a request budget (`--requests N`) is split N // count (+1 for the first N % count
  slices); an open loop's `--max-concurrency` the same way.
- data: item i of the workload's sequence belongs to slice i mod count, so no item is sent twice
  until the data set is used up (and then each slice cycles through its own items, as one process
  cycles through all). Synthetic prompts are random: each slice draws its own from a seed derived
  from the run's, with the run's shared prefixes.

A shard of several workers is the slice `shard.within(worker)`: user k belongs to it when
k mod (S x W) = s + S x w, which is shard s's users dealt among its workers.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from loadgen.errors import ScenarioError
from loadgen.workloads import WorkItem, Workload

__all__ = ["WHOLE", "Slice", "Sliceable", "deal", "parse_shard", "parse_workers", "usable_cores"]

MAX_WORKERS_PER_CORE = 4  # more processes than that only slow each other; a cap keeps a typo harmless
MAX_SHARDS = 10_000
_SHARD = re.compile(r"^\s*(\d+|auto)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Slice:
    """Part `index` of `count` (0-based)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"slice {self.index}/{self.count}: the index must be from 0 to count - 1")

    @property
    def whole(self) -> bool:
        return self.count == 1

    def within(self, part: Slice) -> Slice:
        """Part `part` of this slice (worker w of shard s): s + S x w of S x W."""
        return Slice(self.index + self.count * part.index, self.count * part.count)

    def owns(self, number: int) -> bool:
        """Whether user, arrival or item `number` (0-based, over the whole run) is this slice's."""
        return number % self.count == self.index

    def share(self, total: int) -> int:
        """This slice's part of a whole number (a request budget, a concurrency cap)."""
        return total // self.count + (1 if self.index < total % self.count else 0)

    def users(self, target: float) -> int:
        """Closed-loop users of this slice when the whole run has max(1, floor(target))."""
        total = max(1, math.floor(target))
        return max(0, -(-(total - self.index) // self.count))

    def label(self, name: str) -> str:
        """`s1`, `w0` ... for request ids; empty for the whole."""
        return "" if self.whole else f"{name}{self.index}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


WHOLE = Slice()


def parse_shard(value: object, environ: os._Environ[str] | dict[str, str] | None = None) -> Slice:
    """`I/N` (I from 0), or `auto/N`: I from JOB_COMPLETION_INDEX, which a Kubernetes Indexed Job sets."""
    match = _SHARD.match(str(value))
    if not match:
        raise ScenarioError(f"bad shard {value!r}: use I/N with I from 0 to N-1 (e.g. 0/4), or auto/N")
    index_text, count = match.group(1), int(match.group(2))
    if index_text == "auto":
        index_text = (environ if environ is not None else os.environ).get("JOB_COMPLETION_INDEX", "")
        if not index_text.strip().isdigit():
            raise ScenarioError(
                f"shard {value}: JOB_COMPLETION_INDEX is {index_text!r}, not a number (it is set in a "
                "Kubernetes Indexed Job); give I/N instead"
            )
    index = int(index_text)
    if not 1 <= count <= MAX_SHARDS or not 0 <= index < count:
        raise ScenarioError(f"bad shard {value!r}: I/N needs 1 <= N <= {MAX_SHARDS} and 0 <= I < N")
    return Slice(index, count)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity: a container's cpuset, taskset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parse_workers(value: object) -> int:
    """`N` or `auto` (the usable cores)."""
    cores = usable_cores()
    if str(value).strip().lower() == "auto":
        return cores
    try:
        if isinstance(value, bool):
            raise ValueError
        workers = int(str(value).strip())
    except ValueError:
        raise ScenarioError(f"bad workers {value!r}: use a whole number or auto") from None
    limit = MAX_WORKERS_PER_CORE * cores
    if not 1 <= workers <= limit:
        raise ScenarioError(
            f"workers must be from 1 to {limit} ({MAX_WORKERS_PER_CORE} per usable core), got {value!r}"
        )
    return workers


# -- the data set, dealt -------------------------------------------------------------------------------


@runtime_checkable
class Sliceable(Protocol):
    """A workload that can hand out one slice of its items cheaply (without drawing the others)."""

    def sliced(self, index: int, count: int) -> Workload:
        """Items index, index + count, index + 2 x count, ... of the sequence `next()` would give."""
        ...


def deal(workload: Workload, part: Slice) -> Workload:
    """The workload's items that belong to `part`: its own `sliced` when it has one, else every
    count-th item of its sequence (the others drawn and dropped)."""
    if part.whole:
        return workload
    if isinstance(workload, Sliceable):
        return workload.sliced(part.index, part.count)
    return Dealt(workload, part)


class Dealt:
    """Items index, index + count, ... of any deterministic workload (the others drawn and dropped:
    a workload without `sliced` pays count - 1 draws per item it sends)."""

    def __init__(self, inner: Workload, part: Slice) -> None:
        self.inner, self.part = inner, part
        self._skip = part.index

    def next(self) -> WorkItem:
        for _ in range(self._skip):
            self.inner.next()
        self._skip = self.part.count - 1
        return self.inner.next()

    def describe(self) -> dict[str, object]:
        return self.inner.describe()
