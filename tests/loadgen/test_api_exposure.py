"""Who can reach the control API: /runs (start, inspect, stop runs) answers other hosts only with a token.

`run` listens on 127.0.0.1:9841 unless told otherwise; on an address other hosts can reach and without a
token it serves /metrics and /healthz but not /runs. `serve` (whose point is /runs) refuses to start on
such an address without a token. It used to be `run` on 0.0.0.0 by default with /runs open (anyone who
reached the port could stop the run) and `serve` on 0.0.0.0 with a warning only.
"""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from loadgen.api import CONTROL_OFF, exposure, loopback
from loadgen.scenario import Scenario
from tests.support.procs import free_port, killed_at_exit, running, wait_http

TOKEN = "ctl-exposure-7d2e9a"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:9841", True),
        ("127.3.2.1:9841", True),
        ("[::1]:9841", True),
        ("localhost:9841", True),
        ("0.0.0.0:9841", False),
        (":9841", False),
        ("9841", False),
        ("[::]:9841", False),
        ("10.1.2.3:9841", False),
        ("loadgen.example:9841", False),  # a name may resolve to anything
    ],
)
def test_only_loopback_addresses_count_as_this_host_only(address: str, expected: bool) -> None:
    assert loopback(address) is expected
    assert (exposure(address, None, can_start=True) is None) is expected
    assert exposure(address, TOKEN, can_start=True) is None


def test_run_serves_metrics_on_this_host_only_by_default() -> None:
    scenario = Scenario.build(None, {"url": "http://127.0.0.1:8000", "concurrency": "1", "requests": 1})
    assert scenario.metrics_address == "127.0.0.1:9841"


def test_run_on_a_reachable_address_without_a_token_serves_metrics_but_not_runs(scripted, tmp_path) -> None:
    port = free_port()
    argv = [
        sys.executable, "-m", "loadgen", "run", "--url", scripted.url, "--concurrency", "2", "--soak",
        "--output-len", "4", "--metrics-address", f"0.0.0.0:{port}", "--progress", "none",
    ]  # fmt: skip
    log = tmp_path / "run.log"
    with open(log, "w") as out, killed_at_exit(subprocess.Popen(argv, stdout=out, stderr=out)) as process:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/metrics", timeout=60, process=process)
        for answer in (
            httpx.get(f"{url}/runs", timeout=10),
            httpx.post(f"{url}/runs/anything/stop", timeout=10),
            httpx.post(f"{url}/runs", json={"url": scripted.url}, timeout=10),
        ):
            assert answer.status_code == 403 and answer.json()["detail"] == CONTROL_OFF
        time.sleep(1.0)
        assert process.poll() is None  # not stopped
        assert "loadgen_requests_sent_total" in httpx.get(f"{url}/metrics", timeout=10).text
    assert "/runs on 0.0.0.0" in log.read_text() and "is off without a control token" in log.read_text()


def test_serve_refuses_a_reachable_address_without_a_token(tmp_path) -> None:
    address = f"0.0.0.0:{free_port()}"
    refused = subprocess.run(
        [sys.executable, "-m", "loadgen", "serve", "--listen-address", address],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert "without a control token" in refused.stderr and "--control-token-env" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_serve_on_a_reachable_address_with_a_token_answers_only_with_it(tmp_path) -> None:
    port = free_port()
    argv = [
        sys.executable, "-m", "loadgen", "--log-level", "debug", "serve", "--listen-address",
        f"0.0.0.0:{port}", "--control-token-env", "LG_CONTROL",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with running(argv, f"{url}/healthz", log, env={"LG_CONTROL": TOKEN}):
        assert httpx.get(f"{url}/runs", timeout=10).status_code == 401
        wrong = {"authorization": f"Bearer {TOKEN[:-1]}x"}
        assert httpx.get(f"{url}/runs", headers=wrong, timeout=10).status_code == 401
        assert httpx.get(f"{url}/runs", headers={"authorization": f"Bearer {TOKEN}"}, timeout=10).json() == []
        assert httpx.get(f"{url}/metrics", timeout=10).status_code == 200  # Prometheus needs no token
    assert TOKEN not in log.read_text()
