"""The run report and the comparison, opened in headless Chromium: real runs of the load generator against
the simulator, a real Prometheus scraping them and the exporter. Every page: no console error, no request
beyond the file, every figure drawn with data, tables equal to the JSON; screenshots kept as artifacts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pages.drawn import drawn, panels
from tests.support.chromium import artifacts, chromium
from tests.support.procs import free_port, running
from tests.support.prometheus import prometheus_server

pytestmark = [pytest.mark.real, pytest.mark.slow]

PYTHON = sys.executable
READY = "window.llmobsReady === true"


def loadgen(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "loadgen", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    """Three runs against one simulator scraped by Prometheus: a sweep whose second level misses its SLO,
    a single-phase run written with --output-html, and a faster single-phase run to compare it with."""
    tmp = tmp_path_factory.mktemp("runs")
    sim_port, exporter_port, loadgen_port = free_port(), free_port(), free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "llmobs-exporter", "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]},
            {"job_name": "llmobs-loadgen", "static_configs": [{"targets": [f"127.0.0.1:{loadgen_port}"]}]},
        ],
    }
    sim = [PYTHON, "-m", "simulator", "--profile", "tiny", "--host", "127.0.0.1", "--port", str(sim_port)]
    exporter = [
        PYTHON,
        "-m",
        "exporter",
        "--listen-address",
        f"127.0.0.1:{exporter_port}",
        "--target",
        f"sim=http://127.0.0.1:{sim_port},kind=vllm",
    ]
    url = f"http://127.0.0.1:{sim_port}"
    common = ["--url", url, "--output-len", "16", "--progress", "none"]
    with (
        running(sim, f"{url}/health", tmp / "simulator.log"),
        running(exporter, f"http://127.0.0.1:{exporter_port}/metrics", tmp / "exporter.log"),
        prometheus_server(tmp, config) as prometheus,
    ):
        sweep = loadgen(
            "run",
            *common,
            "--sweep",
            "--concurrency",
            "2,24",
            "--step-duration",
            "8s",
            "--slo",
            "ttft<=300ms",
            "--run-id",
            "sweep1",
            "--metrics-address",
            f"127.0.0.1:{loadgen_port}",
            "--output-json",
            str(tmp / "sweep.json"),
            "--output-jsonl",
            str(tmp / "sweep.jsonl"),
        )
        assert sweep.returncode == 0, sweep.stderr[-2000:]
        time.sleep(2)  # the last scrape of the run's /metrics
        single = loadgen(
            "run",
            *common,
            "--concurrency",
            "12",
            "--duration",
            "6s",
            "--metrics-address",
            "none",
            "--output-json",
            str(tmp / "slow.json"),
            "--output-jsonl",
            str(tmp / "slow.jsonl"),
            "--output-html",
            str(tmp / "slow.html"),
            "--prometheus",
            prometheus.url,
            "--scrape-interval",
            "1s",
        )
        assert single.returncode == 0, single.stderr[-2000:]
        fast = loadgen(
            "run",
            *common,
            "--concurrency",
            "2",
            "--duration",
            "6s",
            "--metrics-address",
            "none",
            "--output-json",
            str(tmp / "fast.json"),
            "--output-jsonl",
            str(tmp / "fast.jsonl"),
        )
        assert fast.returncode == 0, fast.stderr[-2000:]
        yield tmp, prometheus


def open_page(path: Path, name: str) -> tuple[list[dict], dict]:
    """The page's panels as drawn, and what else a test checks, with a screenshot kept."""
    with chromium() as browser:
        page = browser.open(path, ready=READY, timeout=180)
        page.screenshot(artifacts("pages") / f"{name}.png")
        found = {
            "panels": panels(page),
            "errors": page.errors,
            "network": page.network,
            "tables": page.evaluate(
                "Object.fromEntries([...document.querySelectorAll('table[id]')].map(t => [t.id,"
                " [...t.querySelectorAll('tbody tr')].map(r => [...r.cells].map(c =>"
                " c.dataset.value === undefined"
                " ? null : JSON.parse(c.dataset.value)))]))"
            ),
            "verdicts": page.evaluate("[...document.querySelectorAll('.verdict')].map(v => v.textContent)"),
            "sections": page.evaluate("[...document.querySelectorAll('section')].map(s => s.id)"),
        }
    return found["panels"], found


def assert_clean(shown: list[dict], found: dict) -> None:
    assert found["errors"] == [] and found["network"] == []
    plotted = [p for p in shown if p["plots"]]
    assert plotted, "no figure on the page"
    assert [p["title"] for p in plotted if not drawn(p)] == []
    assert all(p["svgs"] for p in plotted)


def assert_summary_equals_json(found: dict, report: dict) -> None:
    rows = found["tables"]["summary-throughput"]
    assert [row[0] for row in rows] == [phase["phase"] for phase in report["phases"]]
    for row, phase in zip(rows, report["phases"], strict=True):
        assert row[1] == phase["duration_s"]
        assert row[2:5] == [phase["requests"][k] for k in ("sent", "succeeded", "failed")]
        assert row[5:9] == [
            phase["throughput"][k]
            for k in ("requests_per_s", "output_tokens_per_s", "total_tokens_per_s", "goodput_requests_per_s")
        ]
    latency = {(row[0], row[1]): row[2:] for row in found["tables"]["summary-latency"]}
    for phase in report["phases"]:
        for key in ("ttft", "tpot", "itl", "e2e", "user_tps", "stream_tps"):
            summary = phase["latency_s"][key]
            expected = [summary[s] for s in ("count", "mean", "p5", "median", "p90", "p95", "p99", "max")]
            assert latency[(phase["phase"], key)] == expected


def test_report_of_one_phase_written_by_run(runs) -> None:
    tmp, _ = runs
    report = json.loads((tmp / "slow.json").read_text())
    shown, found = open_page(tmp / "slow.html", "report-single")
    assert_clean(shown, found)
    assert_summary_equals_json(found, report)
    titles = {p["title"] for p in shown if p["plots"] and drawn(p)}
    assert {
        "CDF of TTFT",
        "CDF of TPOT",
        "CDF of ITL",
        "CDF of E2E",
        "Requests per second",
        "Output tokens per second",
        "Requests in flight",
        "TTFT percentiles",
        "TPOT percentiles",
    } <= titles
    config = dict(found["tables"]["config"])
    assert config["concurrency"] == report["config"]["concurrency"]
    assert "sweep" not in found["sections"]
    # run --prometheus: the engine beside the client, from the run's own window
    server = {p["title"]: p for p in shown if p["dashboard"] == "server"}
    for title in ("Concurrency and queues", "KV cache usage"):
        assert server[title]["state"] == "data" and drawn(server[title]), title


def test_report_of_a_sweep_with_prometheus(runs) -> None:
    tmp, prometheus = runs
    out = tmp / "sweep.html"
    result = loadgen(
        "report",
        str(tmp / "sweep.json"),
        "--jsonl",
        str(tmp / "sweep.jsonl"),
        "--prometheus",
        prometheus.url,
        "-o",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp / "sweep.json").read_text())
    shown, found = open_page(out, "report-sweep-prometheus")
    assert_clean(shown, found)
    assert_summary_equals_json(found, report)
    assert report["sweep"]["sentence"] in found["verdicts"]
    sweep = [p for p in shown if p["dashboard"] == "sweep"]
    assert [p["title"] for p in sweep] == ["Throughput against load", "SLO ttft <= 300 ms"]
    assert all(drawn(p) for p in sweep)
    server = {p["title"]: p for p in shown if p["dashboard"] == "server"}
    assert len(server) == len([p for p in shown if p["dashboard"] == "server"])
    assert set(server) == {
        "Concurrency and queues",
        "KV cache usage",
        "Preemptions",
        "GPU utilization",
        "GPU memory used",
        "GPU power",
    }
    for title in ("Concurrency and queues", "KV cache usage", "Preemptions"):  # engine and client: data here
        assert server[title]["state"] == "data" and drawn(server[title]), title
    for title in ("GPU utilization", "GPU memory used", "GPU power"):  # no GPU on this machine
        assert server[title]["state"] == "empty", title


def test_report_refuses_what_it_cannot_read(runs, tmp_path) -> None:
    tmp, _ = runs
    (tmp_path / "bad.json").write_text('{"run_id": "x"}')
    result = loadgen("report", str(tmp_path / "bad.json"), "-o", str(tmp_path / "x.html"))
    assert result.returncode == 2 and "not a load-generator report" in result.stderr
    result = loadgen(
        "report",
        str(tmp / "sweep.json"),
        "--prometheus",
        f"http://127.0.0.1:{free_port()}",
        "-o",
        str(tmp_path / "x.html"),
    )
    assert result.returncode == 2 and "cannot reach Prometheus" in result.stderr
    assert not (tmp_path / "x.html").exists()


def test_compare_page_and_regression_gates(runs) -> None:
    tmp, _ = runs
    files = [str(tmp / "fast.json"), str(tmp / "slow.json")]
    jsonl = ["--jsonl", str(tmp / "fast.jsonl"), "--jsonl", str(tmp / "slow.jsonl")]
    out = tmp / "compare.html"
    result = loadgen(
        "compare",
        *files,
        *jsonl,
        "--name",
        "c2",
        "--name",
        "c12",
        "--fail-if",
        "ttft_p95 > +10%",
        "-o",
        str(out),
    )
    assert result.returncode == 1, result.stdout + result.stderr  # 12 users queue on the tiny engine
    assert "FAIL ttft_p95 > +10%: c12 against c2" in result.stderr
    assert "ttft_p99" in result.stdout and "[" in result.stdout  # the interval, from the JSONL
    passed = loadgen("compare", *files, "--fail-if", "error_ratio > 0.5", "--fail-if", "ttft_p95 > +100000%")
    assert passed.returncode == 0, passed.stderr
    bad = loadgen("compare", *files, "--fail-if", "ttft_p95 >> 1")
    assert bad.returncode == 2 and "use FIGURE OP THRESHOLD" in bad.stderr
    shown, found = open_page(out, "compare")
    assert_clean(shown, found)
    reports = [json.loads(Path(f).read_text()) for f in files]
    rows = {row[0]: row[1:3] for row in found["tables"]["compare-1"]}
    assert rows["requests_per_s"] == [r["phases"][0]["throughput"]["requests_per_s"] for r in reports]
    assert rows["ttft_p99"] == [r["phases"][0]["latency_s"]["ttft"]["p99"] for r in reports]
    cdfs = [p for p in shown if p["title"].startswith("CDF")]
    assert len(cdfs) == 4 and all(p["lines"] >= 2 for p in cdfs)  # both runs overlaid
