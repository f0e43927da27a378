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

from tests.support.procs import free_port, killed_at_exit, running, wait_http

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
    with killed_at_exit(subprocess.Popen(
        [
            sys.executable, "-m", "loadgen", "run", "--url", scripted.url, "--concurrency", "3", "--soak",
            "--output-len", "40", "--extra-body", '{"mock": {"itl_ms": 20}}', "--grace", "5s",
            "--api-key-env", "TEST_LOADGEN_KEY", "--output-json", str(report_path),
            "--output-jsonl", str(jsonl_path), "--metrics-address", f"127.0.0.1:{metrics_port}",
            "--progress", "plain", "--control-token-env", "TEST_CONTROL_TOKEN",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"TEST_LOADGEN_KEY": secret, "TEST_CONTROL_TOKEN": "ctl-run-token", "PATH": "/usr/bin:/bin"},
    )) as process:  # fmt: skip
        wait_http(f"http://127.0.0.1:{metrics_port}/metrics", timeout=60, process=process)
        control = f"http://127.0.0.1:{metrics_port}/runs"
        auth = {"authorization": "Bearer ctl-run-token"}
        assert httpx.get(control, timeout=10).status_code == 401
        deadline = time.monotonic() + 60  # past setup, with a few answers in
        while (runs := httpx.get(control, headers=auth, timeout=10).json())[0]["outcomes"]["success"] < 4:
            assert time.monotonic() < deadline, runs
            time.sleep(0.2)
        assert len(runs) == 1 and runs[0]["state"] == "running"
        # a `run` process runs its own scenario only: starting another over HTTP is refused
        other = httpx.post(control, json={"url": scripted.url}, headers=auth, timeout=10)
        assert other.status_code == 403 and "llmobs-loadgen serve" in other.text
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


def test_control_api_refuses_secrets_output_paths_and_files_outside_its_directory(scripted, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    data.mkdir()
    (data / "prompts.jsonl").write_text('{"prompt": "hello", "max_tokens": 3}\n')
    outside = tmp_path / "outside.jsonl"
    outside.write_text('{"prompt": "secret file", "max_tokens": 3}\n')
    (data / "link.jsonl").symlink_to(outside)
    token, key = "ctl-token-0123456789", "sk-serve-key-9876"
    argv = [
        sys.executable, "-m", "loadgen", "serve", "--listen-address", f"127.0.0.1:{port}",
        "--control-token-env", "TEST_CONTROL_TOKEN", "--api-key-env", "TEST_TARGET_KEY",
        "--allow-url", scripted.url, "--dataset-dir", str(data),
    ]  # fmt: skip
    env = {"TEST_CONTROL_TOKEN": token, "TEST_TARGET_KEY": key}
    log_path = tmp_path / "serve.log"
    auth = {"authorization": f"Bearer {token}"}
    with running(argv, f"{url}/healthz", log_path, env=env):
        assert httpx.get(f"{url}/metrics", timeout=10).status_code == 200  # open for Prometheus
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": token}):
            denied = httpx.get(f"{url}/runs", headers=headers, timeout=10)
            assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
        assert httpx.post(f"{url}/runs", json={"url": scripted.url}, timeout=10).status_code == 401
        assert httpx.get(f"{url}/runs", headers=auth, timeout=10).json() == []

        def post(**values):
            scenario = {"url": scripted.url, "concurrency": 1, "requests": 2, "output_len": 2, **values}
            return httpx.post(f"{url}/runs", json=scenario, headers=auth, timeout=10)

        refused = {
            "api_key_env": ("HOME", 400), "api_key_file": ("/etc/hostname", 400),
            "output_json": (str(tmp_path / "r.json"), 400), "output_jsonl": (str(tmp_path / "r.jsonl"), 400),
            "url": ("http://127.0.0.1:1", 403), "dataset": (f"jsonl:{outside}", 403),
            "tokenizer": ("/etc/passwd", 403), "ca_file": ("/etc/hostname", 400), "insecure": (True, 400),
            "proxy_from_env": (True, 400),
        }  # fmt: skip
        for name, (value, status) in refused.items():
            answer = post(**{name: value})
            assert answer.status_code == status, (name, answer.text)
            assert name.split("_")[0] in answer.json()["detail"].lower()
        for dataset in ("jsonl:../outside.jsonl", "jsonl:link.jsonl"):
            assert post(dataset=dataset).status_code == 403, dataset
        assert not (tmp_path / "r.json").exists() and not (tmp_path / "r.jsonl").exists()

        started = post(dataset="jsonl:prompts.jsonl", url=scripted.url + "/v1")
        assert started.status_code == 201, started.text
        run_id = started.json()["run_id"]
        deadline = time.monotonic() + 30
        while (done := httpx.get(f"{url}/runs/{run_id}", headers=auth, timeout=10).json())["state"] in (
            "pending", "running", "stopping",
        ) and time.monotonic() < deadline:  # fmt: skip
            time.sleep(0.2)
        assert done["state"] == "finished" and done["report"]["phases"][0]["requests"]["succeeded"] == 2
        truth = scripted.records(run_id)
        assert {r["authorization"] for r in truth.values()} == {f"Bearer {key}"}  # the key set at start
        assert done["report"]["config"]["api_key"] == "<redacted>"
        assert key not in json.dumps(done) and token not in json.dumps(done)
    log = log_path.read_text()
    assert token not in log and key not in log


def test_serve_defaults_to_loopback_and_will_not_send_its_key_anywhere(tmp_path):
    from loadgen.cli import _parser

    assert _parser().parse_args(["serve"]).listen_address == "127.0.0.1:9841"
    result = subprocess.run(
        [sys.executable, "-m", "loadgen", "serve", "--api-key-env", "K", "--listen-address", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=30, env={"K": "sk-x", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 2 and "--allow-url" in result.stderr
