"""Shards (`--shard I/N`, `--start-at`) and `llmobs-loadgen merge`: the shards of a run start together
and their merged report is the report of all their requests together, exactly."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from loadgen import eventloop
from loadgen.cli import main
from loadgen.runner import Run
from loadgen.scenario import Scenario
from loadgen.stats import Distribution
from tests.loadgen.conftest import Scripted

FIGURES = {"ttft": "ttft_s", "tpot": "tpot_s", "e2e": "e2e_s"}


def run_shards(tmp_path: Path, count: int, run_id: str, **values: object) -> list[tuple[Path, Path]]:
    """`count` shards of one run, started together in this process (as N hosts would be)."""
    start_at = time.time() + 1.5
    paths = [(tmp_path / f"{run_id}-{i}.json", tmp_path / f"{run_id}-{i}.jsonl") for i in range(count)]
    runs = [
        Run(Scenario.build(None, {
            "metrics_address": "none", "progress": "none", "run_id": run_id, "shard": f"{i}/{count}",
            "start_at": str(start_at), "output_json": str(report), "output_jsonl": str(jsonl), **values,
        }))
        for i, (report, jsonl) in enumerate(paths)
    ]  # fmt: skip

    async def together() -> None:
        await asyncio.gather(*(run.execute() for run in runs))

    eventloop.run(together())
    for report, _ in paths:
        phases = json.loads(report.read_text())["phases"]
        assert all(start_at <= p["started_unix_s"] < start_at + 0.5 for p in phases[:1]), phases[0]
    return paths


def merge(tmp_path: Path, paths: list[tuple[Path, Path]], *extra: str) -> tuple[int, dict, list[dict]]:
    out, out_jsonl = tmp_path / "merged.json", tmp_path / "merged.jsonl"
    args = ["merge", *(str(r) for r, _ in paths), "-o", str(out), "--output-jsonl", str(out_jsonl)]
    for _, jsonl in paths:
        args += ["--jsonl", str(jsonl)]
    status = main([*args, *extra])
    if status != 0:
        return status, {}, []
    return status, json.loads(out.read_text()), [json.loads(x) for x in out_jsonl.read_text().splitlines()]


def test_merged_shards_are_all_their_requests_exactly(scripted: Scripted, tmp_path: Path) -> None:
    paths = run_shards(
        tmp_path, 3, "merge-1", url=scripted.url, concurrency="3,5", requests=90, output_len=8,
        model="scripted", extra_body={"mock": {"itl_ms": 1, "fault_every": 9, "status": 503}},
    )  # fmt: skip
    shards = [json.loads(r.read_text()) for r, _ in paths]
    status, merged, records = merge(tmp_path, paths)
    assert status == 0
    assert merged["shards"] == {"count": 3, "merged": [0, 1, 2], "missing": [],
                                "reports": [str(r) for r, _ in paths]}  # fmt: skip
    assert "shard" not in merged["config"] and merged["run_id"] == "merge-1"
    for number, phase in enumerate(merged["phases"]):
        parts = [s["phases"][number] for s in shards]
        requests = phase["requests"]
        assert requests["sent"] == sum(p["requests"]["sent"] for p in parts) == 90
        for outcome, count in requests["by_outcome"].items():
            assert count == sum(p["requests"]["by_outcome"][outcome] for p in parts)
        assert phase["tokens"]["output"] == sum(p["tokens"]["output"] for p in parts)
        assert phase["started_unix_s"] == min(p["started_unix_s"] for p in parts)
        assert phase["ended_unix_s"] == max(p["ended_unix_s"] for p in parts)
        mine = [r for r in records if r["phase"] == phase["phase"]]
        assert len(mine) == 90
        for metric, key in FIGURES.items():  # the sketch of all requests, not an average of three
            dist = Distribution()
            for record in mine:
                if record["outcome"] == "success" and record[key] is not None:
                    dist.add(record[key])
            for name, p in (("median", 50), ("p95", 95), ("p99", 99)):
                assert phase["latency_s"][metric][name] == dist.percentile(p), (metric, name)
        # the merged records' instants are Unix nanoseconds inside the merged phase
        start, end = phase["started_unix_s"] * 1e9, phase["ended_unix_s"] * 1e9
        assert all(start - 1e6 <= r["sent_ns"] <= r["end_ns"] <= end + 1e6 for r in mine)
    assert merged["clock"] == {"perf_counter_ns": 0, "unix_s": 0.0, "unix_ns": 0}
    assert merged["setup_requests"]["sent"] == sum(s["setup_requests"]["sent"] for s in shards)
    assert len({r["request_id"] for r in records}) == 180


def test_merge_refuses_what_is_not_one_runs_shards(scripted: Scripted, tmp_path: Path) -> None:
    values = {"url": scripted.url, "concurrency": 2, "requests": 6, "output_len": 2, "model": "scripted"}
    paths = run_shards(tmp_path, 2, "merge-2", **values)
    (tmp_path / "other").mkdir()
    other = run_shards(tmp_path / "other", 2, "merge-3", **values)
    status, _, _ = merge(tmp_path, [paths[0], paths[0]])
    assert status == 2  # one shard twice would count twice
    assert merge(tmp_path, [paths[0], other[1]])[0] == 2  # two runs
    assert merge(tmp_path, [paths[0]])[0] == 2  # shard 1 missing
    status, merged, _ = merge(tmp_path, [paths[0]], "--allow-missing")
    assert status == 0 and merged["shards"]["missing"] == [1]
    assert any("shards 1 of 2 missing" in note for note in merged["notes"])
    changed = json.loads(paths[1][0].read_text())
    changed["config"]["concurrency"] = 3
    paths[1][0].write_text(json.dumps(changed))
    assert merge(tmp_path, paths)[0] == 2  # another scenario


def test_a_sweep_over_shards_runs_every_level_and_merge_judges(scripted: Scripted, tmp_path: Path) -> None:
    # TTFT = 40 ms per request in flight at the server: 2 users meet TTFT <= 200 ms, 8 do not
    paths = run_shards(
        tmp_path, 2, "merge-4", url=scripted.url, sweep=True, concurrency="2,8,16", requests=16, output_len=2,
        slo=["ttft<=200ms"], model="scripted", extra_body={"mock": {"ttft_per_in_flight_ms": 40}},
    )  # fmt: skip
    for report, _ in paths:
        assert len(json.loads(report.read_text())["phases"]) == 3  # a shard cannot stop the others
    status, merged, _ = merge(tmp_path, paths)
    assert status == 0
    assert merged["sweep"]["capacity"] == 2 and merged["sweep"]["first_failing"] == 8


@pytest.mark.parametrize("value", ["2/2", "x"])
def test_shard_errors_at_the_command_line(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["run", "--url", "http://127.0.0.1:1", "--shard", value, "--run-id", "r"])
    assert status == 2 and "shard" in capsys.readouterr().err
