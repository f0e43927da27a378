"""Slices of a run (slicing.py) and the merging of their figures (stats, metrics, mergeable): slices
together send what one process would, and their merged figures are exactly one process's."""

from __future__ import annotations

import json
import math
import random

import pytest

from loadgen import mergeable
from loadgen.errors import ScenarioError
from loadgen.metrics import LoadgenCollector, RunMetrics
from loadgen.result import Clock
from loadgen.scenario import Scenario
from loadgen.slicing import Dealt, Slice, deal, parse_shard, parse_workers, usable_cores
from loadgen.starts import MAX_WAIT_S, parse_start_at
from loadgen.stats import Distribution, PhaseStats, Slo
from loadgen.timing import RequestRecord
from loadgen.workloads import FileWorkload, LengthDist, Synthetic, TextMaker, WorkItem

MS = 1_000_000


def test_users_shares_and_ownership_add_up_to_the_whole() -> None:
    for count in (1, 2, 3, 7):
        parts = [Slice(i, count) for i in range(count)]
        for target in (1, 2, 5, 10.7, 64):
            owned = [[k for k in range(max(1, math.floor(target))) if p.owns(k)] for p in parts]
            assert sorted(k for ks in owned for k in ks) == list(range(max(1, math.floor(target))))
            assert [p.users(target) for p in parts] == [len(ks) for ks in owned]
        for total in (0, 1, 5, 100, 1001):
            assert sum(p.share(total) for p in parts) == total
    # worker w of shard s: shard s's users dealt among its workers
    shards, workers = 3, 2
    for s in range(shards):
        shard_users = {k for k in range(60) if Slice(s, shards).owns(k)}
        dealt = [
            {k for k in range(60) if Slice(s, shards).within(Slice(w, workers)).owns(k)}
            for w in range(workers)
        ]
        assert set().union(*dealt) == shard_users and not dealt[0] & dealt[1]


def test_shard_flag_and_the_completion_index() -> None:
    assert parse_shard("2/4") == Slice(2, 4)
    assert parse_shard("auto/3", {"JOB_COMPLETION_INDEX": "1"}) == Slice(1, 3)
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ScenarioError):
            parse_shard(bad)
    with pytest.raises(ScenarioError, match="JOB_COMPLETION_INDEX"):
        parse_shard("auto/3", {})
    with pytest.raises(ScenarioError, match="--run-id"):
        Scenario.build(None, {"url": "http://127.0.0.1:1", "shard": "0/2"})
    scenario = Scenario.build(None, {"url": "http://127.0.0.1:1", "shard": "1/2", "run_id": "r"})
    assert scenario.shard == Slice(1, 2)
    with pytest.raises(ScenarioError, match="split among 4"):
        Scenario.build(None, {"url": "http://127.0.0.1:1", "rate": 5, "max_concurrency": 3, "workers": 2,
                              "shard": "0/2", "run_id": "r"})  # fmt: skip


def test_workers_flag() -> None:
    assert parse_workers("auto") == usable_cores()
    assert parse_workers(2) == 2
    for bad in ("0", "-1", "x", str(4 * usable_cores() + 1), True):
        with pytest.raises(ScenarioError):
            parse_workers(bad)


def test_start_at_forms_and_budget() -> None:
    now = 1_800_000_000.0
    assert parse_start_at("1800000060", now) == 1_800_000_060.0
    assert parse_start_at("2027-01-15T08:00:00Z", now) == 1_800_000_000.0
    assert parse_start_at("2027-01-15T09:00:00.5+01:00", now) == 1_800_000_000.5
    assert parse_start_at("2027-01-15T07:00:00Z", now) < now  # in the past: starts at once, with a warning
    with pytest.raises(ScenarioError, match="time zone"):
        parse_start_at("2027-01-15T08:00:00", now)
    with pytest.raises(ScenarioError, match="ahead"):
        parse_start_at(str(now + MAX_WAIT_S + 60), now)
    with pytest.raises(ScenarioError, match="RFC 3339"):
        parse_start_at("tomorrow", now)


# -- the data set, dealt ----------------------------------------------------------------------------


def _items(count: int) -> list[WorkItem]:
    return [WorkItem(({"role": "user", "content": f"prompt {i}"},), i + 1) for i in range(count)]


@pytest.mark.parametrize("count", [2, 3])
def test_file_items_are_dealt_in_the_order_one_process_sends_them(count: int) -> None:
    whole = FileWorkload("jsonl", "f", _items(10), random.Random(0))
    expected = [whole.next().max_tokens for _ in range(25)]  # 2.5 times round the file
    slices = [
        deal(FileWorkload("jsonl", "f", _items(10), random.Random(0)), Slice(i, count)) for i in range(count)
    ]
    sent = {i: [s.next().max_tokens for _ in range(25)] for i, s in enumerate(slices)}
    assert [sent[n % count][n // count] for n in range(25)] == expected
    first_round = [sent[n % count][n // count] for n in range(10)]
    assert sorted(first_round) == list(range(1, 11))  # no item twice before the file is used up


def test_synthetic_slices_share_the_prefixes_and_draw_their_own_prompts() -> None:
    def synthetic() -> Synthetic:
        return Synthetic(LengthDist.parse("20"), LengthDist.parse("8"), TextMaker(None), random.Random(4),
                         prefix_groups=3, prefix_len=10)  # fmt: skip

    parts = [deal(synthetic(), Slice(i, 2)) for i in range(2)]
    items = [[p.next() for _ in range(6)] for p in parts]
    prefix = {
        text.split("\n\n")[0] for part in items for item in part for text in [item.messages[0]["content"]]
    }
    assert len(prefix) == 3  # the run's three shared prefixes, not three per slice
    whole = synthetic()
    groups = [whole.next().messages[0]["content"].split("\n\n")[0] for _ in range(12)]
    # item n of the run (slice n % 2, its n // 2-th) has the prefix group n % 3, as in one process
    by_number = [items[n % 2][n // 2].messages[0]["content"].split("\n\n")[0] for n in range(12)]
    assert [by_number.index(p) % 3 for p in by_number] == [groups.index(g) % 3 for g in groups]
    assert items[0][0].messages != items[1][0].messages  # prompts of their own


def test_a_workload_without_slicing_is_dealt_by_skipping() -> None:
    class Counting:
        def __init__(self) -> None:
            self.n = 0

        def next(self) -> WorkItem:
            self.n += 1
            return WorkItem(({"role": "user", "content": str(self.n)},), self.n)

        def describe(self) -> dict[str, object]:
            return {"kind": "counting"}

    dealt = deal(Counting(), Slice(1, 3))
    assert isinstance(dealt, Dealt)
    assert [dealt.next().max_tokens for _ in range(3)] == [2, 5, 8]


# -- merged figures ------------------------------------------------------------------------------------


def _records(count: int, seed: int = 1) -> list[RequestRecord]:
    rng = random.Random(seed)
    records = []
    for i in range(count):
        record = RequestRecord(f"r-{i}", "p", i * MS, True)
        record.sent_ns = i * MS + rng.randrange(0, 3 * MS)
        outcome = rng.random()
        if outcome < 0.1:
            record.fail("timeout", f"read timeout {i % 3}")
            record.end_ns = record.sent_ns + 5 * MS
        else:
            gaps = [rng.lognormvariate(-4, 1) for _ in range(rng.randrange(1, 30))]
            t = record.sent_ns + int(rng.lognormvariate(-2, 1.5) * 1e9)
            record.token_times = []
            for gap in gaps:
                record.token_times.append(t)
                t += int(gap * 1e9)
            record.first_output_ns = record.token_times[0]
            record.end_ns = t
            record.output_tokens = len(gaps)
            record.prompt_tokens = rng.randrange(10, 300)
            record.token_source = "usage"
            record.prompt_source = "usage"
        records.append(record)
    return records


def _phase(records: list[RequestRecord]) -> PhaseStats:
    stats = PhaseStats("p", (Slo("ttft", "<=", 0.2), Slo("user_tps", ">=", 20.0)))
    stats.start_ns = stats.end_ns = records[0].scheduled_ns if records else 0
    for record in records:
        stats.add(record)
    return stats


def _same(a: object, b: object) -> None:
    """Equal, floats to the last few bits (a sum in another order), everything else exactly."""
    if isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-15)
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys()
        for key in a:
            _same(a[key], b[key])
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    else:
        assert a == b


@pytest.mark.parametrize("parts", [2, 3, 5])
def test_merged_phase_stats_are_one_processes_figures(parts: int) -> None:
    records = _records(3000)
    whole = _phase(records)
    slices = [_phase(records[i::parts]) for i in range(parts)]
    merged = PhaseStats.merged(slices)
    _same(merged.summary(95), whole.summary(95))
    for metric, dist in whole.dist.items():  # percentiles from merged sketches, not averaged ones
        assert merged.dist[metric].buckets == dist.buckets
        for p in (1, 50, 90, 99, 99.9):
            assert merged.dist[metric].percentile(p) == dist.percentile(p)
    averaged = sum(s.dist["ttft"].percentile(99) for s in slices) / parts
    assert averaged != whole.dist["ttft"].percentile(99)  # what the merge must not do


def test_merged_live_metrics_are_one_processes_series() -> None:
    records = _records(2000)
    whole = RunMetrics("s", "run", "m", "chat", "closed")
    parts = [RunMetrics("s", "run", "m", "chat", "closed") for _ in range(3)]
    for number, record in enumerate(records):
        for metrics in (whole, parts[number % 3]):
            metrics.on_sent()
            metrics.on_done(record)
    merged = RunMetrics("s", "run", "m", "chat", "closed")
    merged.set_sum(parts)

    def exposed(metrics: RunMetrics) -> dict:
        collector = LoadgenCollector()
        collector.add(metrics)
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value for f in collector.collect() for s in f.samples
        }

    _same(exposed(merged), exposed(whole))


def test_a_shard_label_only_on_sharded_runs() -> None:
    collector = LoadgenCollector()
    collector.add(RunMetrics("s", "one", "m", "chat", "closed"))
    assert all("shard" not in s.labels for f in collector.collect() for s in f.samples)
    collector.add(RunMetrics("s", "two", "m", "chat", "closed", shard="1"))
    shards = {s.labels["run_id"]: s.labels["shard"] for f in collector.collect() for s in f.samples}
    assert shards == {"one": "", "two": "1"}  # "" is no label to Prometheus


def test_phase_state_survives_json_and_merges_like_the_stats() -> None:
    records = _records(1500, seed=7)
    # two hosts: monotonic clocks that differ, read with wall clocks that agree
    unix = 1_800_000_000 * 10**9
    clocks = [Clock(10**12, unix + 10**12), Clock(5 * 10**12, unix + 5 * 10**12)]
    halves = [_phase(records[i::2]) for i in range(2)]
    restored = [
        mergeable.phase_from_state(json.loads(json.dumps(mergeable.phase_state(h, c))), h.slos)
        for h, c in zip(halves, clocks, strict=True)
    ]
    for half, back in zip(halves, restored, strict=True):
        assert back.summary(95) == half.summary(95)
    _same(PhaseStats.merged(restored).summary(95), _phase(records).summary(95))
    with pytest.raises(Exception, match="not one this version writes"):
        state = mergeable.phase_state(halves[0], clocks[0])
        state["distributions"]["ttft"]["bucket_counts"][0] += 1  # buckets no longer add up to the count
        mergeable.phase_from_state(state, ())


def test_distribution_merge_of_empty_parts() -> None:
    empty, full = Distribution(), Distribution()
    full.add(0.5)
    empty.merge(full)
    assert (empty.count, empty.min, empty.max, empty.percentile(50)) == (1, 0.5, 0.5, full.percentile(50))
