"""A run's data as the HTML pages read it: the JSON report, and the per-request JSONL when there is one.

The JSONL is read as a stream with budgets, so a soak of millions of requests fits in bounded memory:
every line at most `MAX_LINE_BYTES`; figures keep seeded uniform samples (reservoirs) of at most
`CDF_SAMPLE` values per phase and metric for the distributions, and per time window the counts plus at
most `WINDOW_SAMPLE` values for its percentiles; windows widen (10 s, 20 s, 30 s, 1 min, ...) so a run has at
most `MAX_WINDOWS`, and a record more than `MAX_WINDOWS` windows from the first one is outside the run
(counted, not drawn: one hostile time would otherwise make millions of windows). Lines that are not
records (bad JSON, missing fields) are counted and reported, never guessed at; records of phases the
report does not have (the warm-up's) are counted and left out, as the report leaves them out. Nothing
here reaches into the runner: data flows file -> figures -> page.

ITL is per token, as in the JSON report: a record's `itl_s[i]` stands for `event_tokens[i + 1]` tokens
(speculative decoding, stream intervals), so the ITL sample keeps each value's weight and the CDFs and
compare's intervals weigh by it.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from loadgen.errors import LoadgenError

__all__ = ["LATENCIES", "RunData", "Window", "load_report", "read_run"]

MAX_REPORT_BYTES = 64 * 1024 * 1024
MAX_LINE_BYTES = 16 * 1024 * 1024  # one record (its ITL gaps included)
CDF_SAMPLE = 20_000
WINDOW_SAMPLE = 512
MAX_WINDOWS = 2_000
WINDOW_STEPS_S = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
WINDOW_S = 10  # the window of a run of a few minutes or more; a shorter run gets at least 20 windows
LATENCIES = ("ttft", "tpot", "itl", "e2e")  # the CDFs the report draws, in this order
MAX_OUTCOMES = 16  # error classes drawn (the load generator has 9); more are counted as "other"


class ReportDataError(LoadgenError):
    """A report or JSONL file that cannot be read as one."""


class Reservoir:
    """A uniform sample of at most `size` values from a stream (Vitter's algorithm R), seeded. A value may
    stand for several (its weight: the tokens an ITL value is the gap of); the sample is uniform over
    values added and keeps each one's weight, so weighted figures of the sample estimate the stream's."""

    __slots__ = ("_rng", "count", "size", "values", "weights")

    def __init__(self, size: int, rng: random.Random) -> None:
        self.size, self._rng, self.count, self.values = size, rng, 0, []
        self.weights: list[int] | None = None  # made at the first weight other than 1

    def add(self, value: float, weight: int = 1) -> None:
        self.count += 1
        if weight != 1 and self.weights is None:
            self.weights = [1] * len(self.values)
        if len(self.values) < self.size:
            self.values.append(value)
            if self.weights is not None:
                self.weights.append(weight)
        else:
            slot = self._rng.randrange(self.count)
            if slot < self.size:
                self.values[slot] = value
                if self.weights is not None:
                    self.weights[slot] = weight

    def weighted(self) -> tuple[list[float], list[int] | None]:
        """The sample sorted by value, with the weights in the same order (None: every weight is 1)."""
        if self.weights is None:
            return sorted(self.values), None
        pairs = sorted(zip(self.values, self.weights, strict=True))
        return [value for value, _ in pairs], [weight for _, weight in pairs]


@dataclass
class Window:
    """One time window of the run (by when each thing happened)."""

    sent: int = 0
    succeeded: int = 0
    output_tokens: int = 0
    busy_s: float = 0.0  # request-seconds in flight within the window (/ width = mean in flight)
    errors: dict[str, int] = field(default_factory=dict)
    ttft: Reservoir | None = None  # by first-token time
    tpot: Reservoir | None = None  # by end time


@dataclass
class RunData:
    report: dict
    source: str  # file name of the report, or "this run"
    jsonl: str | None = None
    records: int = 0
    skipped_lines: int = 0
    outside_run: int = 0  # records whose times lie beyond the span a run's windows can have
    other_phases: dict[str, int] = field(default_factory=dict)  # phase not in the report -> records
    outcomes: set[str] = field(default_factory=set)  # error classes seen (at most MAX_OUTCOMES + other)
    window_s: float = 10.0
    # Times are seconds after `anchor_ns` (the first record's send: records come in completion order, so
    # an earlier send may come later); the time axis starts at `origin_ns`, the earliest send of all.
    anchor_ns: int | None = None
    origin_ns: int | None = None
    windows: dict[int, Window] = field(default_factory=dict)  # window index (from the anchor) -> figures
    samples: dict[tuple[str, str], Reservoir] = field(default_factory=dict)  # (phase, metric) -> values
    # window index -> requests that start or stop being in flight for whole windows from there (+1/-1)
    whole_windows: dict[int, int] = field(default_factory=dict)
    phase_span: dict[str, tuple[float, float]] = field(default_factory=dict)  # phase -> first send, last end

    @property
    def offset_s(self) -> float:
        """Seconds from the anchor to the time axis's 0 (the earliest send; <= 0)."""
        if self.anchor_ns is None or self.origin_ns is None:
            return 0.0
        return (self.origin_ns - self.anchor_ns) * 1e-9

    def covered_s(self, index: int) -> float:
        """How much of window `index` the run covers (the first and last windows are partial)."""
        if not self.phase_span:
            return self.window_s
        first = min(a for a, _ in self.phase_span.values())
        last = max(b for _, b in self.phase_span.values())
        start, end = index * self.window_s, (index + 1) * self.window_s
        return max(0.0, min(end, last) - max(start, first))

    @property
    def phases(self) -> list[str]:
        return [phase["phase"] for phase in self.report.get("phases", [])]

    def sample(self, phase: str, metric: str) -> list[float]:
        """The sample's values, sorted; for ITL weigh them with `weighted`."""
        reservoir = self.samples.get((phase, metric))
        return sorted(reservoir.values) if reservoir else []

    def weighted(self, phase: str, metric: str) -> tuple[list[float], list[int] | None]:
        """The sample's values, sorted, and the tokens each stands for (None: one each)."""
        reservoir = self.samples.get((phase, metric))
        return reservoir.weighted() if reservoir else ([], None)

    def sample_count(self, phase: str, metric: str) -> int:
        reservoir = self.samples.get((phase, metric))
        return reservoir.count if reservoir else 0


def load_report(path: Path | str) -> dict:
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_REPORT_BYTES:
            raise ReportDataError(f"{path}: {size:,} bytes, more than a report can be ({MAX_REPORT_BYTES:,})")
        report = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReportDataError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested past the limit
        raise ReportDataError(f"{path} is not a JSON report: {exc}") from None
    if not isinstance(report, dict) or not isinstance(report.get("phases"), list):
        raise ReportDataError(f"{path} is not a load-generator report (no 'phases' list)")
    return report


def read_run(report: dict, source: str, jsonl: Path | str | None = None, seed: int = 0) -> RunData:
    """The report, and the JSONL's records folded into windows and samples (when a JSONL is given)."""
    data = RunData(report, source, str(jsonl) if jsonl else None)
    if jsonl is None:
        return data
    data.window_s = _window_width(report)
    rng = random.Random(seed)
    phases = {str(phase.get("phase")) for phase in report.get("phases", [])}
    for record in _records(Path(jsonl), data):
        phase = str(record["phase"])
        if phase in phases:
            _fold(data, record, rng)
        elif len(data.other_phases) < 100 or phase in data.other_phases:
            data.other_phases[phase[:80]] = data.other_phases.get(phase[:80], 0) + 1
        else:
            data.skipped_lines += 1
    _settle_busy(data, rng)
    return data


def _window_width(report: dict) -> float:
    total = sum(float(phase.get("duration_s") or 0) for phase in report.get("phases", []))
    smallest = min(WINDOW_S, total / 20)
    fits = [w for w in WINDOW_STEPS_S if w >= smallest and total / w <= MAX_WINDOWS]
    return fits[0] if fits else WINDOW_STEPS_S[-1]


_NEEDED = ("phase", "outcome", "sent_ns", "end_ns")


def _records(path: Path, data: RunData) -> Iterator[dict]:
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ReportDataError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        while True:
            line = handle.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            if len(line) > MAX_LINE_BYTES:
                data.skipped_lines += 1
                while line and not line.endswith(b"\n"):  # the rest of the oversized line
                    line = handle.readline(MAX_LINE_BYTES)
                continue
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                data.skipped_lines += 1
                continue
            if not isinstance(record, dict) or not all(
                isinstance(record.get(k), (str, int)) for k in _NEEDED
            ):
                data.skipped_lines += 1
                continue
            yield record


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _instant(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _fold(data: RunData, record: dict, rng: random.Random) -> None:
    sent_ns, end_ns = _instant(record["sent_ns"]), _instant(record["end_ns"])
    if sent_ns is None or end_ns is None or sent_ns <= 0:
        data.skipped_lines += 1
        return
    anchor = sent_ns if data.anchor_ns is None else data.anchor_ns
    sent = (sent_ns - anchor) * 1e-9
    end = max(sent, (end_ns - anchor) * 1e-9) if end_ns else sent
    reach = data.window_s * MAX_WINDOWS
    if abs(sent) > reach or abs(end) > reach:
        data.outside_run += 1
        return
    data.records += 1
    data.anchor_ns = anchor
    data.origin_ns = sent_ns if data.origin_ns is None else min(data.origin_ns, sent_ns)
    phase, ok = str(record["phase"]), record["outcome"] == "success"
    first, last = data.phase_span.get(phase, (sent, end))
    data.phase_span[phase] = (min(first, sent), max(last, end))
    _window(data, sent, rng).sent += 1
    _spread_busy(data, sent, end, rng)
    closing = _window(data, end, rng)
    if not ok:
        outcome = str(record["outcome"])[:40]
        if outcome not in data.outcomes:
            outcome = "other" if len(data.outcomes) >= MAX_OUTCOMES else outcome
            data.outcomes.add(outcome)
        closing.errors[outcome] = closing.errors.get(outcome, 0) + 1
        return
    closing.succeeded += 1
    closing.output_tokens += int(_number(record.get("output_tokens")) or 0)
    ttft, tpot, e2e = (_number(record.get(k)) for k in ("ttft_s", "tpot_s", "e2e_s"))
    if ttft is not None and 0 <= ttft <= end - sent + 1:  # its first token came within the request
        _window(data, sent + ttft, rng).ttft.add(ttft)  # type: ignore[union-attr]
    if tpot is not None:
        closing.tpot.add(tpot)  # type: ignore[union-attr]
    for metric, value in (("ttft", ttft), ("tpot", tpot), ("e2e", e2e)):
        if value is not None:
            _reservoir(data, phase, metric, rng).add(value)
    gaps = record.get("itl_s")
    if isinstance(gaps, list):
        itl = _reservoir(data, phase, "itl", rng)
        for gap, weight in zip(gaps, _itl_weights(record, len(gaps)), strict=True):
            value = _number(gap)
            if value is not None:
                itl.add(value, weight)


def _itl_weights(record: dict, gaps: int) -> list[int]:
    """The tokens each ITL value stands for: `event_tokens[i + 1]` (the later event's), when the record
    has one whole number >= 1 per token event; else one each."""
    tokens = record.get("event_tokens")
    if (
        isinstance(tokens, list)
        and len(tokens) == gaps + 1
        and all(type(count) is int and count >= 1 for count in tokens)
    ):
        return tokens[1:]
    return [1] * gaps


def _window(data: RunData, at_s: float, rng: random.Random) -> Window:
    index = int(at_s // data.window_s)
    window = data.windows.get(index)
    if window is None:
        window = data.windows[index] = Window(
            ttft=Reservoir(WINDOW_SAMPLE, rng), tpot=Reservoir(WINDOW_SAMPLE, rng)
        )
    return window


def _spread_busy(data: RunData, start: float, end: float, rng: random.Random) -> None:
    """A request's time in flight, per window: its first and last windows now, the whole windows between
    them as +1/-1 marks that `_settle_busy` adds up once (so a long request costs no more than a short
    one)."""
    if end <= start:
        return
    width = data.window_s
    first, last = int(start // width), int(end // width)
    if last > first and last * width == end:
        last -= 1  # ends on a boundary: its last window is the one before
    if first == last:
        _window(data, start, rng).busy_s += end - start
        return
    _window(data, start, rng).busy_s += (first + 1) * width - start
    _window(data, end, rng).busy_s += end - last * width
    if last - first > 1:
        marks = data.whole_windows
        marks[first + 1] = marks.get(first + 1, 0) + 1
        marks[last] = marks.get(last, 0) - 1


def _settle_busy(data: RunData, rng: random.Random) -> None:
    marks, running = data.whole_windows, 0
    if not marks:
        return
    for index in range(min(marks), max(marks) + 1):
        running += marks.get(index, 0)
        if running:
            _window(data, index * data.window_s, rng).busy_s += running * data.window_s
    marks.clear()


def _reservoir(data: RunData, phase: str, metric: str, rng: random.Random) -> Reservoir:
    key = (phase, metric)
    if key not in data.samples:
        data.samples[key] = Reservoir(CDF_SAMPLE, rng)
    return data.samples[key]
