"""Runs side by side: each figure of each run, its change against the first run (the baseline) with a
bootstrap confidence interval when per-request records are given, and regression gates.

    gates = [Gate.parse("ttft_p95 > +10%"), Gate.parse("requests_per_s < -5%")]
    table = compare(runs, resamples=400, seed=0)
    failures = [f for gate in gates for f in gate.check(table)]

Phases are compared by position (the first phase of each run with each other, and so on). A figure is
`requests_per_s`, `output_tokens_per_s`, `goodput_requests_per_s`, `error_ratio`, `errors`, or a latency
and a statistic: `ttft_p95`, `e2e_mean`, `itl_median` (`ttft`, `ttfo`, `tpot`, `itl`, `e2e`, `dispatch`;
`mean`, `median`, `p90`, `p95`, `p99`, `max`). Values are the JSON reports' own. The interval is the 2.5th
to 97.5th percentile of the relative change over `resamples` bootstrap resamples (seeded) of the two
runs' per-request values (a uniform sample of at most `BOOTSTRAP_CAP` of each); throughput and error
figures get none (they are not per-request values).

Gate grammar: `FIGURE OP THRESHOLD`, OP one of `>`, `>=`, `<`, `<=`, THRESHOLD
  `+10%` / `-5%`: the relative change against the baseline (a sign or a % makes it a change);
  `+50ms` / `-0.2s` / `+3`: the absolute change (s, ms, us for latencies);
  `0.01` / `2s`: the value itself (no sign).
A gate fails when its condition holds for some run against the baseline in some phase, and when it cannot
be judged there (a run without a value for the figure). A change from a baseline of 0 is +inf (any rise).
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from itertools import accumulate

from grafana.snapshot.units import format_value
from loadgen.errors import LoadgenError
from loadgen.html.data import RunData
from loadgen.html.figures import percentile

__all__ = [
    "BOOTSTRAP_CAP",
    "FIGURES",
    "Comparison",
    "Gate",
    "GateError",
    "Row",
    "compare",
    "unit_of",
    "value_of",
]

LATENCY_KEYS = ("ttft", "ttfo", "tpot", "itl", "e2e", "dispatch")
STATISTICS = ("mean", "median", "p90", "p95", "p99", "max")
RATES = ("requests_per_s", "output_tokens_per_s", "goodput_requests_per_s")
FIGURES = (*RATES, "error_ratio", "errors", *(f"{k}_{s}" for k in LATENCY_KEYS for s in STATISTICS))
# The side-by-side table's rows (the engine comparison people ask for); gates may name any FIGURE.
TABLE = (
    "requests_per_s",
    "output_tokens_per_s",
    "goodput_requests_per_s",
    *(f"{k}_{s}" for k in ("ttft", "tpot", "itl", "e2e") for s in ("mean", "median", "p99")),
    "error_ratio",
    "errors",
)
SAMPLED = ("ttft", "tpot", "itl", "e2e")  # latencies the JSONL samples hold (ttfo, dispatch: none)
BOOTSTRAP_CAP = 4_000
_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}


class GateError(LoadgenError):
    """A --fail-if expression that cannot be read."""


@dataclass(frozen=True)
class Row:
    phase: int  # position
    phases: tuple[str, ...]  # each run's phase name there
    figure: str
    values: tuple[float | None, ...]  # one per run
    changes: tuple[float | None, ...]  # relative change of each run against run 0 (None for run 0)
    intervals: tuple[tuple[float, float] | None, ...]  # 95 % CI of each change, when bootstrapped


@dataclass(frozen=True)
class Comparison:
    names: tuple[str, ...]
    rows: tuple[Row, ...]
    resamples: int
    seed: int

    def row(self, phase: int, figure: str) -> Row | None:
        return next((r for r in self.rows if r.phase == phase and r.figure == figure), None)


def value_of(phase: dict, figure: str) -> float | None:
    """A figure's value in one phase of a JSON report."""
    requests = phase.get("requests", {})
    if figure in RATES:
        value = phase.get("throughput", {}).get(figure)
    elif figure == "error_ratio":
        finished = requests.get("finished") or 0
        value = (requests.get("failed", 0) / finished) if finished else None
    elif figure == "errors":
        value = requests.get("failed")
    else:
        metric, _, statistic = figure.partition("_")
        value = (phase.get("latency_s", {}).get(metric) or {}).get(statistic)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def compare(runs: list[tuple[str, RunData]], resamples: int = 400, seed: int = 0) -> Comparison:
    rng = random.Random(seed)
    depth = min(len(data.report["phases"]) for _, data in runs)
    rows = []
    for index in range(depth):
        phases = [data.report["phases"][index] for _, data in runs]
        names = tuple(p["phase"] for p in phases)
        boot = _bootstrap(runs, names, resamples, rng)
        for figure in FIGURES:
            values = tuple(value_of(p, figure) for p in phases)
            base = values[0]
            changes = tuple(None if i == 0 else _change(base, v) for i, v in enumerate(values))
            intervals = tuple(None if i == 0 else boot.get((i, figure)) for i in range(len(runs)))
            rows.append(Row(index, names, figure, values, changes, intervals))
    return Comparison(tuple(name for name, _ in runs), tuple(rows), resamples, seed)


def _change(base: float | None, value: float | None) -> float | None:
    """value / base - 1; from 0, any rise is +inf (0 errors -> 5 errors is a regression) and 0 stays 0."""
    if base is None or value is None:
        return None
    if base == 0:
        return 0.0 if value == 0 else math.copysign(math.inf, value)
    return value / base - 1


def _statistic(sorted_values: list[float], statistic: str) -> float:
    if statistic == "mean":
        return math.fsum(sorted_values) / len(sorted_values)
    if statistic == "max":
        return sorted_values[-1]
    return percentile(sorted_values, 50 if statistic == "median" else float(statistic[1:]))  # type: ignore[return-value]


def _bootstrap(
    runs: list[tuple[str, RunData]], phases: tuple[str, ...], resamples: int, rng: random.Random
) -> dict[tuple[int, str], tuple[float, float]]:
    """(run index, figure) -> 95 % interval of the relative change against run 0."""
    out: dict[tuple[int, str], tuple[float, float]] = {}
    if resamples < 1:
        return out
    for metric in SAMPLED:
        samples = [
            _capped(*data.weighted(phase, metric), rng) for (_, data), phase in zip(runs, phases, strict=True)
        ]
        if not samples[0][0]:
            continue
        for i in range(1, len(runs)):
            if not samples[i][0]:
                continue
            changes: dict[str, list[float]] = {s: [] for s in STATISTICS}
            for _ in range(resamples):
                a, b = _resample(samples[0], rng), _resample(samples[i], rng)
                for statistic in STATISTICS:
                    base = _statistic(a, statistic)
                    if base:
                        changes[statistic].append(_statistic(b, statistic) / base - 1)
            for statistic, values in changes.items():
                if len(values) >= resamples // 2:
                    values.sort()
                    out[(i, f"{metric}_{statistic}")] = (percentile(values, 2.5), percentile(values, 97.5))  # type: ignore[assignment]
    return out


def _capped(
    values: list[float], weights: list[int] | None, rng: random.Random
) -> tuple[list[float], list[int] | None]:
    """At most BOOTSTRAP_CAP of the values (with their weights), and the weights as running sums."""
    if weights is None:
        return (values if len(values) <= BOOTSTRAP_CAP else rng.sample(values, BOOTSTRAP_CAP)), None
    if len(values) > BOOTSTRAP_CAP:
        picked = rng.sample(range(len(values)), BOOTSTRAP_CAP)
        values, weights = [values[k] for k in picked], [weights[k] for k in picked]
    return values, list(accumulate(weights))


def _resample(sample: tuple[list[float], list[int] | None], rng: random.Random) -> list[float]:
    """A bootstrap resample, sorted: values drawn with replacement, each as often as the tokens it stands
    for make likely (ITL weighs by tokens, as the report's figures do)."""
    values, running = sample
    return sorted(rng.choices(values, cum_weights=running, k=len(values)))


# ---------------------------------------------------------------------------------------------- gates

_GATE = re.compile(
    r"^\s*([a-z_0-9]+)\s*(>=|<=|>|<)\s*([+-]?)\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(%|ms|us|µs|s)?\s*$"
)


@dataclass(frozen=True)
class Gate:
    text: str
    figure: str
    op: str
    threshold: float
    mode: str  # "relative", "absolute" (a change) or "value"

    @classmethod
    def parse(cls, text: str) -> Gate:
        match = _GATE.match(text)
        if not match:
            raise GateError(
                f"--fail-if {text!r}: use FIGURE OP THRESHOLD, e.g. 'ttft_p95 > +10%', "
                "'requests_per_s < -5%', "
                "'e2e_p99 > +200ms', 'error_ratio > 0.01'"
            )
        figure, op, sign, number, unit = match.groups()
        if figure not in FIGURES:
            raise GateError(
                f"--fail-if {text!r}: no figure {figure!r}; use {', '.join(RATES)}, error_ratio, errors, or "
                f"LATENCY_STATISTIC with LATENCY one of {', '.join(LATENCY_KEYS)} and STATISTIC one of "
                f"{', '.join(STATISTICS)} (e.g. ttft_p95)"
            )
        is_latency = figure.split("_", 1)[0] in LATENCY_KEYS
        if unit in _UNITS and not is_latency:
            raise GateError(f"--fail-if {text!r}: {figure} is not a time; give a plain number or a %")
        threshold = float(number) * (_UNITS.get(unit or "", 1.0))
        if unit == "%":
            threshold = float(number) / 100
        threshold = -threshold if sign == "-" else threshold
        mode = "relative" if unit == "%" else ("absolute" if sign else "value")
        return cls(text.strip(), figure, op, threshold, mode)

    def measure(self, base: float | None, value: float | None) -> float | None:
        if value is None:
            return None
        if self.mode == "value":
            return value
        if base is None:
            return None
        if self.mode == "absolute":
            return value - base
        return _change(base, value)

    def holds(self, measured: float) -> bool:
        return {
            ">": measured > self.threshold,
            ">=": measured >= self.threshold,
            "<": measured < self.threshold,
            "<=": measured <= self.threshold,
        }[self.op]

    def check(self, comparison: Comparison) -> list[str]:
        """A sentence for every run and phase where the gate's condition holds (a regression), or where it
        cannot be judged because a run has no value for the figure (a gate that cannot look must not
        pass: a candidate whose every request failed has no TTFT to be slower in)."""
        failures = []
        for row in comparison.rows:
            if row.figure != self.figure:
                continue
            for i in range(1, len(row.values)):
                measured = self.measure(row.values[0], row.values[i])
                if measured is None:
                    missing = [comparison.names[j] for j in (0, i) if row.values[j] is None]
                    failures.append(
                        f"FAIL {self.text}: cannot be judged for {comparison.names[i]} against "
                        f"{comparison.names[0]}, phase {row.phases[i]}: no {self.figure} in "
                        f"{' and '.join(missing) or comparison.names[0]}"
                    )
                elif self.holds(measured):
                    unit = unit_of(self.figure)
                    failures.append(
                        f"FAIL {self.text}: {comparison.names[i]} against {comparison.names[0]}, phase "
                        f"{row.phases[i]}: {format_value(row.values[0], unit)} -> "
                        f"{format_value(row.values[i], unit)}"
                        + (f" ({row.changes[i]:+.1%})" if row.changes[i] is not None else "")
                    )
        return failures


def unit_of(figure: str) -> str:
    """The unit a figure is shown in (grafana.snapshot.units ids)."""
    if figure in ("requests_per_s", "goodput_requests_per_s"):
        return "reqps"
    if figure == "output_tokens_per_s":
        return "tokps"
    return {"error_ratio": "percentunit", "errors": "short"}.get(figure, "s")
