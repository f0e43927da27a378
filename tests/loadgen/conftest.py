"""Fixtures: the scripted SSE server in its own process, and an in-process load generator run."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from loadgen import eventloop
from loadgen.metrics import LoadgenCollector
from loadgen.runner import Run
from loadgen.scenario import Scenario
from tests.support.procs import free_port, running

SERVER = Path(__file__).with_name("scripted_server.py")


class Scripted:
    def __init__(self, url: str) -> None:
        self.url = url

    def records(self, run_id: str) -> dict[str, dict]:
        """Server-side truth for one run's requests, by request id (setup requests left out)."""
        records = httpx.get(f"{self.url}/records", timeout=30).json()
        return {
            r["id"]: r
            for r in records
            if r["id"] and r["id"].startswith(f"{run_id}-") and "-setup-" not in r["id"]
        }

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/stats", timeout=10).json()


def start_scripted(tmp_path: Path, *args: str) -> Iterator[Scripted]:
    port = free_port()
    argv = [sys.executable, str(SERVER), "--port", str(port), *args]
    url = f"http://127.0.0.1:{port}"
    with running(argv, f"{url}/stats", tmp_path / f"scripted-{port}.log"):
        yield Scripted(url)


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scripted]:
    yield from start_scripted(tmp_path_factory.mktemp("scripted"))


class Result:
    def __init__(self, run: Run, report: dict, records: list[dict], collector: LoadgenCollector) -> None:
        self.run = run
        self.report = report
        self.records = records
        self.collector = collector

    @property
    def phase(self) -> dict:
        return self.report["phases"][0]


@pytest.fixture
def run_loadgen(tmp_path: Path) -> Callable[..., Result]:
    counter = iter(range(1000))

    def run(event_loop: str = "auto", **values) -> Result:
        """One run in this process, on the loop the CLI would use (uvloop where installed)."""
        jsonl = tmp_path / f"requests-{next(counter)}.jsonl"
        values = {"metrics_address": "none", "progress": "none", "output_jsonl": str(jsonl), **values}
        scenario = Scenario.build(None, values)
        collector = LoadgenCollector()
        loadgen_run = Run(scenario, collector)
        report = eventloop.run(loadgen_run.execute(), event_loop)
        records = [json.loads(line) for line in jsonl.read_text().splitlines()]
        return Result(loadgen_run, report, records, collector)

    return run
