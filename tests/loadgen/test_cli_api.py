"""The command line and the control API, as real processes over loopback."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.procs import free_port, running

DOCS = Path(__file__).parents[2] / "docs" / "metrics.md"


def documented_loadgen_names() -> set[str]:
    section = DOCS.read_text().split("## Load generator", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`(loadgen_[a-z_]+)`", section))


def exposed_names(text: str) -> set[str]:
    samples = {
        re.split(r"[{ ]", line, maxsplit=1)[0] for line in text.splitlines() if not line.startswith("#")
    }
    return samples | {re.sub(r"_(bucket|sum|count)$", "", name) for name in samples}


def wait_state(url: str, run_id: str, states: set[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = httpx.get(f"{url}/runs/{run_id}", timeout=10).json()
        if body["state"] in states:
            return body
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} not in {states} within {timeout}s: {body}")


def test_serve_starts_inspects_and_stops_runs(scripted, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "loadgen", "serve", "--listen-address", f"127.0.0.1:{port}"]
    with running(argv, f"{url}/healthz", tmp_path / "serve.log"):
        bad = httpx.post(f"{url}/runs", json={"url": scripted.url, "concurrency": "x"}, timeout=10)
        assert bad.status_code == 400 and "concurrency" in bad.text

        scenario = {"url": scripted.url, "concurrency": 2, "requests": 10, "output_len": 4, "name": "api"}
        started = httpx.post(f"{url}/runs", json=scenario, timeout=10)
        assert started.status_code == 201, started.text
        run_id = started.json()["run_id"]
        done = wait_state(url, run_id, {"finished", "failed"})
        assert done["state"] == "finished", done
        assert done["report"]["phases"][0]["requests"]["succeeded"] == 10
        assert done["report"]["model"] == "scripted"  # discovered from /v1/models

        soak = {"url": scripted.url, "rate": 20, "max_concurrency": 4, "soak": True, "output_len": 50,
                "grace": "200ms", "extra_body": {"mock": {"itl_ms": 50}}, "name": "soak"}  # fmt: skip
        run_id = httpx.post(f"{url}/runs", json=soak, timeout=10).json()["run_id"]
        wait_state(url, run_id, {"running"})
        time.sleep(1.5)
        busy = httpx.post(f"{url}/runs", json=scenario, timeout=10)
        assert busy.status_code == 409
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert f'loadgen_requests_in_flight{{run_id="{run_id}",scenario="soak"}} 4.0' in metrics
        assert 'loadgen_phase_info{phase="rate=20"' in metrics
        assert f'loadgen_target_request_rate{{run_id="{run_id}",scenario="soak"}} 20.0' in metrics
        missing = documented_loadgen_names() - exposed_names(metrics) - {"loadgen_target_concurrency"}
        assert not missing  # a closed-loop run exposes loadgen_target_concurrency instead (other test)
        assert httpx.post(f"{url}/runs/{run_id}/stop", timeout=10).status_code == 202
        stopped = wait_state(url, run_id, {"finished", "failed"})
        requests = stopped["report"]["phases"][0]["requests"]
        assert requests["sent"] == requests["finished"] > 0
        assert requests["by_outcome"]["cancelled"] == 4  # 50 tokens x 50 ms outlast the 200 ms grace
        assert httpx.get(f"{url}/runs/nope", timeout=10).status_code == 404


def test_run_stops_cleanly_on_sigint_and_writes_the_report(scripted, tmp_path):
    report_path = tmp_path / "report.json"
    jsonl_path = tmp_path / "requests.jsonl"
    metrics_port = free_port()
    secret = "sk-test-do-not-leak-1234"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "loadgen", "run", "--url", scripted.url, "--concurrency", "3", "--soak",
            "--output-len", "40", "--extra-body", '{"mock": {"itl_ms": 20}}', "--grace", "5s",
            "--api-key-env", "TEST_LOADGEN_KEY", "--output-json", str(report_path),
            "--output-jsonl", str(jsonl_path), "--metrics-address", f"127.0.0.1:{metrics_port}",
            "--progress", "plain",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"TEST_LOADGEN_KEY": secret, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    time.sleep(3)
    live = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    assert "loadgen_time_to_first_token_seconds_bucket" in live
    assert re.search(r'loadgen_target_concurrency\{run_id="[0-9a-f]{8}",scenario="default"\} 3.0', live)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    report = json.loads(report_path.read_text())
    requests = report["phases"][0]["requests"]
    assert requests["sent"] == requests["finished"] == len(jsonl_path.read_text().splitlines())
    assert requests["by_outcome"]["cancelled"] == 0  # 40 x 20 ms fits in the 5 s grace
    assert requests["succeeded"] > 3
    assert "Time to First Token" in stdout
    assert report["config"]["api_key"] == "<redacted>"
    for text in (stdout, stderr, report_path.read_text(), jsonl_path.read_text()):
        assert secret not in text


def test_bad_configuration_is_a_clear_error():
    result = subprocess.run(
        [sys.executable, "-m", "loadgen", "run", "--url", "http://127.0.0.1:1", "--slo", "ttft>2"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "bad SLO" in result.stderr and "Traceback" not in result.stderr
