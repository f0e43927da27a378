"""Live client-side metrics on /metrics (names: docs/metrics.md, "Load generator").

Counters and histograms are plain integers and lists updated from the event loop; the collector
reads them from the same loop (the /metrics route is async), so every scrape is one consistent
snapshot without locks. Histogram buckets are vLLM's, so client and server histograms line up.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from loadgen.outcomes import OUTCOMES, Outcome
from loadgen.redact import scrub
from loadgen.timing import RequestRecord
from loadgen.warmup import WARMUP

# vLLM's bucket boundaries (vllm/v1/metrics/loggers.py; reference/stacks.md 3.2)
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
E2E_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
    120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip

LABELS = ("scenario", "run_id")

# Joint goodput objectives: vLLM's TTFT bounds from 0.1 s to 10 s and its ITL bounds from 25 ms to
# 0.3 s, the choices the dashboards offer for $ttft_slo and $tpot_slo.
GOODPUT_TTFT = (0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
GOODPUT_TPOT = (0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3)


class Histogram:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def observe_many(self, values: list[float], weights: list[int] | None = None) -> None:
        counts, bounds = self.counts, self.bounds
        if weights is None:
            for value in values:
                counts[bisect_left(bounds, value)] += 1
            self.total += sum(values)
            return
        for value, weight in zip(values, weights, strict=True):
            counts[bisect_left(bounds, value)] += weight
            self.total += value * weight

    def buckets(self) -> list[tuple[str, int]]:
        cumulative, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return cumulative


class GoodputGrid:
    """Successful requests meeting both a TTFT and a TPOT objective, for every pair of the grid.

    One increment per request, in the cell of the smallest objectives it meets; a pair's count is the
    sum of the cells at or below it, taken at scrape time. A request without a TTFT (not streamed)
    meets no pair; one without a TPOT (a one-token answer) meets every TPOT objective, as in the report.
    """

    __slots__ = ("cells",)

    def __init__(self) -> None:
        self.cells = [[0] * (len(GOODPUT_TPOT) + 1) for _ in range(len(GOODPUT_TTFT) + 1)]

    def observe(self, ttft: float, tpot: float | None) -> None:
        row = bisect_left(GOODPUT_TTFT, ttft)
        self.cells[row][bisect_left(GOODPUT_TPOT, tpot) if tpot is not None else 0] += 1

    def met(self) -> Iterator[tuple[float, float, int]]:
        """(TTFT objective, TPOT objective, requests meeting both)."""
        columns = [0] * len(GOODPUT_TPOT)  # running sums over the rows so far, per column
        for row, ttft in enumerate(GOODPUT_TTFT):
            running = 0
            for column, tpot in enumerate(GOODPUT_TPOT):
                running += self.cells[row][column]
                columns[column] += running
                yield ttft, tpot, columns[column]


class RunMetrics:
    """The live series of one run (of one shard of it: `shard` is its index, "" unless sharded)."""

    def __init__(
        self, scenario: str, run_id: str, model: str, endpoint_kind: str, shape: str, shard: str = ""
    ) -> None:
        # label values never carry a registered secret (redact.py), whatever a user named things
        self.labels = (scrub(scenario), scrub(run_id))
        self.shard = shard
        self.info = {"model": scrub(model), "endpoint_kind": endpoint_kind, "shape": shape}
        self.ttft = Histogram(TTFT_BUCKETS)
        self.ttfo = Histogram(TTFT_BUCKETS)
        self.dispatch = Histogram(TTFT_BUCKETS)
        self.tpot = Histogram(ITL_BUCKETS)
        self.itl = Histogram(ITL_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)
        self.goodput = GoodputGrid()
        self.sent = 0
        self.outcomes: dict[Outcome, int] = dict.fromkeys(OUTCOMES, 0)
        self.prompt_tokens = 0
        self.output_tokens = 0
        self.reasoning_tokens = 0
        self.usage_disagreements = 0
        self.throttled = 0
        self.token_events = 0
        self.multi_token_events = 0
        self.coalesced_gaps = 0
        self.in_flight = 0
        self.target_concurrency: float | None = None
        self.target_rate: float | None = None
        self.phase = "starting"
        self.warmup: RunMetrics | None = None  # the warm-up's own series, labelled phase="warmup"

    def start_warmup(self) -> None:
        scenario, run_id = self.labels
        self.warmup = RunMetrics(scenario, run_id, self.info["model"], self.info["endpoint_kind"], "")

    def series(self, phase: str) -> RunMetrics:
        """Where a request of this phase is counted: the warm-up's series, or the run's."""
        return self.warmup if phase == WARMUP and self.warmup is not None else self

    def add(self, other: RunMetrics) -> None:
        """Another process's series of the same run added to these (a pool's workers: workers.py):
        histograms, counters, requests in flight and targets add."""
        for name in _HISTOGRAM_ATTRIBUTES:
            mine, theirs = getattr(self, name), getattr(other, name)
            mine.counts = [a + b for a, b in zip(mine.counts, theirs.counts, strict=True)]
            mine.total += theirs.total
        for row, cells in zip(self.goodput.cells, other.goodput.cells, strict=True):
            row[:] = [a + b for a, b in zip(row, cells, strict=True)]
        for name in ("sent", "in_flight", *(attribute for _, attribute, _ in _COUNTERS)):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for outcome, count in other.outcomes.items():
            self.outcomes[outcome] += count
        for name in ("target_concurrency", "target_rate"):
            if getattr(other, name) is not None:
                setattr(self, name, (getattr(self, name) or 0) + getattr(other, name))
        if other.warmup is not None:  # the warm-up's own series add the same way
            if self.warmup is None:
                self.start_warmup()
            self.warmup.add(other.warmup)  # type: ignore[union-attr]

    def set_sum(self, parts: list[RunMetrics]) -> None:
        """These series := the sum of `parts` (identity, labels and phase kept)."""
        fresh = RunMetrics("", "", "", "", "")
        for part in parts:
            fresh.add(part)
        kept = ("sent", "in_flight", "outcomes", "goodput", "target_concurrency", "target_rate", "warmup")
        for name in (*kept, *_HISTOGRAM_ATTRIBUTES, *(attribute for _, attribute, _ in _COUNTERS)):
            setattr(self, name, getattr(fresh, name))

    def on_sent(self) -> None:
        self.sent += 1
        self.in_flight += 1

    def on_done(self, record: RequestRecord) -> None:
        self.in_flight -= 1
        self.outcomes[record.outcome] += 1
        self.dispatch.observe(record.dispatch_s)
        if not record.ok:
            self.throttled += record.throttled
            return
        # tokens of succeeded requests only, as in the report (a failed request's partial tokens
        # and latencies would mix unfinished work into the figures)
        if record.prompt_tokens:
            self.prompt_tokens += record.prompt_tokens
        self.output_tokens += record.output_tokens
        self.reasoning_tokens += record.reasoning_tokens
        self.usage_disagreements += record.usage_disagrees
        if record.stream:
            self.token_events += len(record.token_times)
            self.multi_token_events += record.multi_token_event_count or 0
            self.coalesced_gaps += record.coalesced_gaps
        self.e2e.observe(record.e2e_s)
        ttft = record.ttft_s
        if ttft is None:
            return
        self.ttft.observe(ttft)
        ttfo = record.ttfo_s
        if ttfo is not None:
            self.ttfo.observe(ttfo)
        tpot = record.tpot_s
        if tpot is not None:
            self.tpot.observe(tpot)
        self.goodput.observe(ttft, tpot)
        self.itl.observe_many(*record.itl_s())


# counters of a run: (name without _total, RunMetrics attribute, help)
_COUNTERS = (
    ("loadgen_prompt_tokens", "prompt_tokens",
     "Prompt tokens of succeeded requests (usage, else estimated)."),
    ("loadgen_output_tokens", "output_tokens", "Output tokens of succeeded requests (usage, else counted)."),
    ("loadgen_reasoning_tokens", "reasoning_tokens", "Reasoning tokens of succeeded requests."),
    ("loadgen_output_token_disagreements", "usage_disagreements",
     "Succeeded streamed requests whose usage.completion_tokens disagreed with their token events."),
    ("loadgen_requests_throttled", "throttled",
     "Requests the server throttled: 429, or 503 with Retry-After (also counted by outcome)."),
    ("loadgen_token_events", "token_events", "Streamed events that carried tokens (succeeded requests)."),
    ("loadgen_multi_token_events", "multi_token_events",
     "Token events the server said carried more than one token (succeeded requests)."),
    ("loadgen_coalesced_token_gaps", "coalesced_gaps",
     "Gaps between token events that arrived in one socket read: ITL samples of 0 whose true gap is "
     "unknown (succeeded requests)."),
)  # fmt: skip

_HISTOGRAMS = (
    ("loadgen_time_to_first_token_seconds", "ttft", "Client-side time to the first token of any kind."),
    ("loadgen_time_to_first_output_token_seconds", "ttfo", "Client-side time to the first content token."),
    ("loadgen_time_per_output_token_seconds", "tpot", "Per request: (E2E - TTFT) / (output tokens - 1)."),
    (
        "loadgen_inter_token_latency_seconds",
        "itl",
        "Per token: each gap between token events divided among the tokens the later event carried.",
    ),
    ("loadgen_e2e_request_latency_seconds", "e2e", "Client-side end-to-end request latency."),
    ("loadgen_dispatch_delay_seconds", "dispatch", "Time from a request's scheduled start to its send."),
)


_HISTOGRAM_ATTRIBUTES = tuple(attribute for _, attribute, _ in _HISTOGRAMS)


def _warmup_histogram(
    family: HistogramMetricFamily, run: RunMetrics, histogram: Histogram, sharded: bool
) -> None:
    labels = {**_label_dict(run, sharded), "phase": WARMUP}
    for bound, count in histogram.buckets():
        family.add_sample(family.name + "_bucket", {**labels, "le": bound}, count)
    family.add_sample(family.name + "_count", labels, histogram.buckets()[-1][1])
    family.add_sample(family.name + "_sum", labels, histogram.total)


class LoadgenCollector(Collector):
    """prometheus_client collector over the last `keep` runs (bounded label cardinality)."""

    def __init__(self, keep: int = 5) -> None:
        self.keep = keep
        self._runs: OrderedDict[tuple[str, str], RunMetrics] = OrderedDict()

    def add(self, run: RunMetrics) -> None:
        self._runs[run.labels] = run
        while len(self._runs) > self.keep:
            self._runs.popitem(last=False)

    def collect(self) -> Iterator:
        runs = list(self._runs.values())
        # a shard label (its index) once a run is sharded, so PromQL sums the shards of a run_id
        sharded = any(run.shard for run in runs)
        names = (*LABELS, "shard") if sharded else LABELS
        for name, attribute, documentation in _HISTOGRAMS:
            family = HistogramMetricFamily(name, documentation, labels=names)
            for run in runs:
                histogram: Histogram = getattr(run, attribute)
                family.add_metric(_labels(run, sharded), histogram.buckets(), histogram.total)
            for run in runs:
                if run.warmup is not None:
                    _warmup_histogram(family, run, getattr(run.warmup, attribute), sharded)
            yield family
        sent = CounterMetricFamily("loadgen_requests_sent", "Requests sent.", labels=names)
        finished = CounterMetricFamily(
            "loadgen_requests", "Requests finished, by outcome.", labels=(*names, "outcome")
        )
        counters = [
            (CounterMetricFamily(name, documentation, labels=names), attribute)
            for name, attribute, documentation in _COUNTERS
        ]
        in_flight = GaugeMetricFamily(
            "loadgen_requests_in_flight", "Requests sent, not finished.", labels=names
        )
        concurrency = GaugeMetricFamily(
            "loadgen_target_concurrency", "Target concurrency of the current phase.", labels=names
        )
        rate = GaugeMetricFamily(
            "loadgen_target_request_rate", "Target request rate (req/s) of the current phase.", labels=names
        )
        phase = GaugeMetricFamily("loadgen_phase_info", "The current phase.", labels=(*names, "phase"))
        info = GaugeMetricFamily(
            "loadgen_run_info", "The run's identity.", labels=(*names, "model", "endpoint_kind", "shape")
        )
        goodput = CounterMetricFamily(
            "loadgen_requests_slo_met",
            "Succeeded requests with TTFT <= ttft_le and TPOT <= tpot_le (one-token answers meet any TPOT).",
            labels=(*names, "ttft_le", "tpot_le"),
        )
        for run in runs:
            labels = _labels(run, sharded)
            sent.add_metric(labels, run.sent)
            for outcome, count in run.outcomes.items():
                finished.add_metric([*labels, outcome], count)
            for family, attribute in counters:
                family.add_metric(labels, getattr(run, attribute))
            in_flight.add_metric(labels, run.in_flight)
            if run.target_concurrency is not None:
                concurrency.add_metric(labels, run.target_concurrency)
            if run.target_rate is not None:
                rate.add_metric(labels, run.target_rate)
            phase.add_metric([*labels, scrub(run.phase)], 1)
            info.add_metric([*labels, run.info["model"], run.info["endpoint_kind"], run.info["shape"]], 1)
            for ttft, tpot, count in run.goodput.met():
                goodput.add_metric([*labels, repr(ttft), repr(tpot)], count)
        for run in runs:  # the warm-up's counters, apart (phase="warmup")
            warm = run.warmup
            if warm is None:
                continue
            labels = {**_label_dict(run, sharded), "phase": WARMUP}
            sent.add_sample("loadgen_requests_sent_total", labels, warm.sent)
            for outcome, count in warm.outcomes.items():
                finished.add_sample("loadgen_requests_total", {**labels, "outcome": outcome}, count)
            for family, attribute in counters:
                family.add_sample(family.name + "_total", labels, getattr(warm, attribute))
        yield from (sent, finished, *(family for family, _ in counters))
        yield from (goodput, in_flight, concurrency, rate, phase, info)


def _labels(run: RunMetrics, sharded: bool) -> list[str]:
    return [*run.labels, run.shard] if sharded else list(run.labels)


def _label_dict(run: RunMetrics, sharded: bool) -> dict[str, str]:
    return dict(zip((*LABELS, "shard") if sharded else LABELS, _labels(run, sharded), strict=True))
