"""`--workers N`: one run over several processes, against the scripted server (real processes, real
HTTP). The parent's report and /metrics are one process's figures given the same requests; stops,
exit status and failures behave as with one process."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadgen import eventloop
from loadgen.metrics import LoadgenCollector
from loadgen.scenario import Scenario
from loadgen.stats import Distribution
from loadgen.workers import WorkerPool
from tests.loadgen.conftest import Scripted
from tests.support.procs import free_port, killed_at_exit, running, wait_http

JSONL_FIGURES = {"ttft": "ttft_s", "tpot": "tpot_s", "e2e": "e2e_s", "dispatch": "dispatch_delay_s"}


def pool_run(tmp_path: Path, **values: object) -> tuple[WorkerPool, dict, list[dict], LoadgenCollector]:
    jsonl = tmp_path / f"requests-{time.monotonic_ns()}.jsonl"
    values = {
        "metrics_address": "none",
        "progress": "none",
        "output_jsonl": str(jsonl),
        "workers": 2,
        **values,
    }
    collector = LoadgenCollector()
    pool = WorkerPool(Scenario.build(None, values), collector)
    lines: list[str] = []

    async def execute() -> dict:
        async def watch() -> None:  # the progress line while it runs
            while True:
                await asyncio.sleep(0.2)
                lines.append(pool.progress_line())

        watcher = asyncio.create_task(watch())
        try:
            return await pool.execute()
        finally:
            watcher.cancel()

    report = eventloop.run(execute())
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    pool.lines = lines  # type: ignore[attr-defined]
    return pool, report, records, collector


def test_the_report_and_metrics_of_two_workers_are_one_processes(scripted: Scripted, tmp_path: Path) -> None:
    pool, report, records, collector = pool_run(
        tmp_path, url=scripted.url, concurrency=6, requests=600, output_len=12, model="scripted",
        extra_body={"mock": {"itl_ms": 1, "fault_every": 7, "status": 500}},
    )  # fmt: skip
    phase = report["phases"][0]
    requests = phase["requests"]
    assert requests["sent"] == requests["finished"] == 600 == len(records)
    failed = sum(r["outcome"] == "http_5xx" for r in records)
    assert requests["by_outcome"]["http_5xx"] == failed >= 80 and report["workers"] == 2
    ids = [r["request_id"] for r in records]
    assert len(set(ids)) == 600 and set(scripted.records(pool.run_id)) == set(ids)  # each sent once
    assert {re.sub(r"-\d+$", "", i) for i in ids} == {f"{pool.run_id}-w0", f"{pool.run_id}-w1"}
    # percentiles of the merged sketches are those of all requests' values together
    for metric, key in JSONL_FIGURES.items():
        dist = Distribution()
        for record in records:  # latencies of succeeded requests, dispatch delay of all
            if (record["outcome"] == "success" or metric == "dispatch") and record[key] is not None:
                dist.add(record[key])
        summary = phase["latency_s"][metric]
        assert summary["count"] == dist.count
        for name, p in (("median", 50), ("p90", 90), ("p99", 99)):
            assert summary[name] == dist.percentile(p), (metric, name)
        assert (summary["min"], summary["max"]) == (dist.min, dist.max)
    itl = Distribution()
    for record in records:
        if record["outcome"] == "success":
            itl.add_many(record["itl_s"])
    assert phase["latency_s"]["itl"]["p99"] == itl.percentile(99) and itl.count > 5000
    # /metrics of the parent = the report
    text = "".join(line.decode() for line in _exposition(collector))
    samples = {(s.name, s.labels.get("outcome"), s.labels.get("le")): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}  # fmt: skip
    assert samples[("loadgen_requests_sent_total", None, None)] == 600
    assert samples[("loadgen_requests_total", "http_5xx", None)] == requests["by_outcome"]["http_5xx"]
    assert (
        samples[("loadgen_time_to_first_token_seconds_count", None, None)]
        == phase["latency_s"]["ttft"]["count"]
    )
    assert samples[("loadgen_output_tokens_total", None, None)] == phase["tokens"]["output"]
    assert samples[("loadgen_requests_in_flight", None, None)] == 0
    assert any(" | sent " in line for line in pool.lines)  # type: ignore[attr-defined]


def _exposition(collector: LoadgenCollector):
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(collector)
    yield generate_latest(registry)


def test_an_open_loop_schedule_is_dealt_so_the_merged_arrivals_are_the_requested_ones(
    scripted: Scripted, tmp_path: Path
) -> None:
    _, report, records, _ = pool_run(
        tmp_path, url=scripted.url, rate=200, arrival="constant", requests=200, output_len=2, model="scripted"
    )
    assert report["phases"][0]["requests"]["sent"] == 200
    by_worker = {
        w: sorted(r["scheduled_ns"] for r in records if f"-w{w}-" in r["request_id"]) for w in (0, 1)
    }
    assert len(by_worker[0]) == len(by_worker[1]) == 100
    for scheduled in by_worker.values():  # every second arrival of the 5 ms schedule
        gaps = [b - a for a, b in itertools.pairwise(scheduled)]
        assert all(abs(gap - 10_000_000) <= 1 for gap in gaps)


def test_data_set_items_are_dealt_not_sent_twice(scripted: Scripted, tmp_path: Path) -> None:
    data = tmp_path / "items.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": f"item {n}", "max_tokens": n}) + "\n" for n in range(1, 41))
    )
    pool, report, _, _ = pool_run(
        tmp_path, url=scripted.url, concurrency=4, requests=40, dataset=f"jsonl:{data}", model="scripted"
    )
    assert report["phases"][0]["requests"]["succeeded"] == 40
    served = sorted(r["max_tokens"] for r in scripted.records(pool.run_id).values())
    assert served == list(range(1, 41))


def test_a_sweep_over_workers_stops_at_the_level_one_process_would(
    scripted: Scripted, tmp_path: Path
) -> None:
    # TTFT = 40 ms per request in flight: 1 and 2 users meet TTFT <= 200 ms, 8 do not, 16 is never run
    _, report, _, _ = pool_run(
        tmp_path, url=scripted.url, sweep=True, concurrency="1,2,8,16", requests=24, slo=["ttft<=200ms"],
        output_len=2, model="scripted", extra_body={"mock": {"ttft_per_in_flight_ms": 40}},
    )  # fmt: skip
    assert [p["phase"] for p in report["phases"]] == ["step-1 concurrency=1", "step-2 concurrency=2",
                                                      "step-3 concurrency=8"]  # fmt: skip
    assert report["sweep"]["capacity"] == 2 and report["sweep"]["first_failing"] == 8


# -- the command line -------------------------------------------------------------------------------


def _run_argv(scripted: Scripted, tmp_path: Path, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "loadgen", "run", "--url", scripted.url, "--workers", "2",
        "--model", "scripted",
        "--output-json", str(tmp_path / "report.json"), "--output-jsonl", str(tmp_path / "requests.jsonl"),
        "--progress", "none", *args,
    ]  # fmt: skip


def _worker_pids(stderr_path: Path) -> list[int]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"workers started \(pids ([\d, ]+)\)", stderr_path.read_text())
        if found:
            return [int(pid) for pid in found.group(1).split(", ")]
        time.sleep(0.1)
    raise AssertionError(f"no worker pids in {stderr_path.read_text()}")


def _wait_for(log: Path, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def _gone(pids: list[int], timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [
            p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        ]
        if not alive:
            return True
        time.sleep(0.1)
    return False


def _started(argv: list[str], tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    stderr = tmp_path / "stderr.log"
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr.open("w"), text=True)
    return process, stderr


def test_sigint_stops_every_worker_and_writes_one_report(scripted: Scripted, tmp_path: Path) -> None:
    port = free_port()
    argv = _run_argv(scripted, tmp_path, "--concurrency", "4", "--soak", "--output-len", "20", "--extra-body",
                     '{"mock": {"itl_ms": 10}}', "--metrics-address", f"127.0.0.1:{port}")  # fmt: skip
    process, stderr = _started(argv, tmp_path)
    with killed_at_exit(process):
        pids = _worker_pids(stderr)
        wait_http(f"http://127.0.0.1:{port}/metrics", timeout=60, process=process)
        deadline = time.monotonic() + 60
        while (runs := httpx.get(f"http://127.0.0.1:{port}/runs", timeout=10).json())[0]["outcomes"][
            "success"
        ] < 8:
            assert time.monotonic() < deadline, runs
            time.sleep(0.2)
        live = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert re.search(r'loadgen_target_concurrency\{run_id="\w+",scenario="default"\} 4.0', live)
        os.kill(process.pid, signal.SIGINT)  # only the parent: it relays the stop
        stdout, _ = process.communicate(timeout=60)
    assert process.returncode == 130, stderr.read_text()
    report = json.loads((tmp_path / "report.json").read_text())
    requests = report["phases"][0]["requests"]
    lines = (tmp_path / "requests.jsonl").read_text().splitlines()
    assert requests["sent"] == requests["finished"] == len(lines) and requests["by_outcome"]["cancelled"] == 0
    assert "Time to First Token" in stdout and report["stopped_early"]
    assert _gone(pids)


def test_control_api_stop_and_a_killed_worker(scripted: Scripted, tmp_path: Path) -> None:
    port = free_port()
    argv = _run_argv(scripted, tmp_path, "--concurrency", "4", "--soak", "--output-len", "20", "--extra-body",
                     '{"mock": {"itl_ms": 10}}', "--metrics-address", f"127.0.0.1:{port}")  # fmt: skip
    process, stderr = _started(argv, tmp_path)
    with killed_at_exit(process):
        pids = _worker_pids(stderr)
        wait_http(f"http://127.0.0.1:{port}/metrics", timeout=60, process=process)
        run_id = httpx.get(f"http://127.0.0.1:{port}/runs", timeout=10).json()[0]["run_id"]
        stopped = httpx.post(f"http://127.0.0.1:{port}/runs/{run_id}/stop", timeout=10)
        assert stopped.status_code == 202
        process.communicate(timeout=60)
    assert process.returncode == 130 and _gone(pids)

    process, stderr = _started(_run_argv(scripted, tmp_path, "--concurrency", "4", "--soak",
                                         "--metrics-address", "none"), tmp_path)  # fmt: skip
    with killed_at_exit(process):
        pids = _worker_pids(stderr)
        _wait_for(stderr, "phase concurrency=4: starting")
        time.sleep(0.5)
        os.kill(pids[1], signal.SIGKILL)
        process.communicate(timeout=60)
    assert process.returncode == 1, stderr.read_text()
    report = json.loads((tmp_path / "report.json").read_text())
    assert "1 of 2 workers ended early" in report["failure"] and "killed by signal 9" in report["failure"]
    assert _gone(pids)


@pytest.mark.parametrize("when", ["starting", "setup", "running"])
def test_a_killed_parent_leaves_no_worker_behind(scripted: Scripted, tmp_path: Path, when: str) -> None:
    process, stderr = _started(_run_argv(scripted, tmp_path, "--concurrency", "2", "--soak",
                                         "--metrics-address", "none"), tmp_path)  # fmt: skip
    with killed_at_exit(process):
        pids = _worker_pids(stderr)
        if when == "setup":
            time.sleep(0.5)
        elif when == "running":
            _wait_for(stderr, "phase concurrency=2: starting")
        process.kill()
        process.wait(timeout=10)
    assert _gone(pids), "workers outlived their parent"


@pytest.mark.parametrize("workers", ["2"])
def test_every_request_failing_exits_1_as_with_one_process(tmp_path: Path, workers: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens
    done = subprocess.run(
        [sys.executable, "-m", "loadgen", "run", "--url", url, "--model", "m", "--workers", workers,
         "--concurrency", "2", "--duration", "1s", "--metrics-address", "none", "--progress", "none"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "run failed: every request failed" in done.stderr


def test_a_trace_replay_and_its_warm_up_are_dealt(scripted: Scripted, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    lines = [{"timestamp": 20 * n, "prompt": f"request {n}", "max_tokens": n + 1} for n in range(40)]
    trace.write_text("".join(json.dumps(line) + "\n" for line in lines))
    pool, report, records, _ = pool_run(
        tmp_path, url=scripted.url, dataset=f"trace:{trace}", warmup=4, model="scripted"
    )
    assert report["warmup"]["sent"] == 4  # the first four of the trace, two per worker
    measured = [r for r in records if r["phase"] != "warmup"]
    assert report["phases"][0]["requests"]["sent"] == len(measured) == 36
    served = sorted(r["max_tokens"] for r in scripted.records(pool.run_id).values())
    assert served == list(range(1, 41))  # every request of the trace once


def test_metrics_linger_keeps_the_final_counts_up_until_a_signal(scripted: Scripted, tmp_path: Path) -> None:
    port = free_port()
    argv = _run_argv(scripted, tmp_path, "--concurrency", "2", "--requests", "20", "--output-len", "2",
                     "--metrics-address", f"127.0.0.1:{port}", "--metrics-linger", "60s")  # fmt: skip
    process, stderr = _started(argv, tmp_path)
    with killed_at_exit(process):
        _wait_for(stderr, "/metrics stays up 60s")
        assert (tmp_path / "report.json").exists()  # the report comes first
        final = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert re.search(r'loadgen_requests_sent_total\{run_id="\w+",scenario="default"\} 20.0', final)
        os.kill(process.pid, signal.SIGINT)  # ends the linger: the run itself was done
        process.communicate(timeout=15)
    assert process.returncode == 0


def test_measured_phases_start_when_every_workers_warm_up_has_drained(
    scripted: Scripted, tmp_path: Path
) -> None:
    """Worker 1's warm-up request streams 40 tokens 20 ms apart, worker 0's one token: worker 0 must not
    start measuring while worker 1's warm-up request is still in flight (one process drains its warm-up
    before the first measured phase; a pool does the same over all its workers)."""
    trace = tmp_path / "trace.jsonl"
    lengths = [1, 40] + [2] * 10  # requests 0 and 1 are the warm-up, dealt to workers 0 and 1
    lines = [{"timestamp": 10 * n, "prompt": f"request {n}", "max_tokens": m} for n, m in enumerate(lengths)]
    trace.write_text("".join(json.dumps(line) + "\n" for line in lines))
    _, report, records, _ = pool_run(
        tmp_path, url=scripted.url, dataset=f"trace:{trace}", warmup=2, model="scripted",
        extra_body={"mock": {"itl_ms": 20}},
    )  # fmt: skip
    assert report["warmup"]["sent"] == 2 and report["phases"][0]["requests"]["sent"] == 10
    warm_end = max(r["end_ns"] for r in records if r["phase"] == "warmup")
    first_measured = min(r["sent_ns"] for r in records if r["phase"] != "warmup")
    assert first_measured >= warm_end, (first_measured - warm_end) / 1e6


def test_a_second_sigint_cancels_every_workers_requests_at_once(scripted: Scripted, tmp_path: Path) -> None:
    slow = ("--output-len", "400", "--extra-body", '{"mock": {"itl_ms": 20}}', "--grace", "60s")
    argv = _run_argv(scripted, tmp_path, "--concurrency", "4", "--soak", *slow, "--metrics-address", "none")
    process, stderr = _started(argv, tmp_path)
    with killed_at_exit(process):
        pids = _worker_pids(stderr)
        _wait_for(stderr, "phase concurrency=4: starting")
        time.sleep(1.0)  # every user has a request streaming (400 tokens x 20 ms = 8 s each)
        os.kill(process.pid, signal.SIGINT)
        time.sleep(1.0)
        os.kill(process.pid, signal.SIGINT)  # no 60 s grace: cancelled now
        began = time.monotonic()
        process.communicate(timeout=30)
    assert process.returncode == 130 and time.monotonic() - began < 15
    requests = json.loads((tmp_path / "report.json").read_text())["phases"][0]["requests"]
    assert requests["by_outcome"]["cancelled"] == 4 and requests["sent"] == requests["finished"]
    assert _gone(pids)


def test_the_control_api_starts_a_run_over_workers(scripted: Scripted, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "loadgen", "serve", "--listen-address", f"127.0.0.1:{port}"]
    with running(argv, f"{url}/healthz", tmp_path / "serve.log"):
        body = {"url": scripted.url, "model": "scripted", "concurrency": 4, "requests": 40, "output_len": 2,
                "workers": 2}  # fmt: skip
        started = httpx.post(f"{url}/runs", json=body, timeout=10)
        assert started.status_code == 201, started.text
        run_id = started.json()["run_id"]
        deadline = time.monotonic() + 60
        while (state := httpx.get(f"{url}/runs/{run_id}", timeout=10).json())["state"] not in (
            "finished",
            "failed",
        ):
            assert time.monotonic() < deadline, state
            time.sleep(0.2)
    assert state["state"] == "finished" and state["report"]["workers"] == 2
    assert state["report"]["phases"][0]["requests"]["succeeded"] == 40 == state["outcomes"]["success"]
