"""A run that fails says so: exit status 1 and one line on what failed; a server that is down gets
attempts at a bounded pace (connect back-off), not tens of thousands a second."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.procs import free_port


def loadgen(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    report = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.json"
    result = subprocess.run(
        [sys.executable, "-m", "loadgen", "run", "--model", "m", "--progress", "none",
         "--metrics-address", "none", "--output-json", str(report), *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return result, json.loads(report.read_text())


def test_server_down_backs_off_and_exits_1_saying_what_failed(tmp_path):
    result, report = loadgen(
        tmp_path, "--url", f"http://127.0.0.1:{free_port()}", "--concurrency", "4", "--step-duration", "3s"
    )
    assert result.returncode == 1, result.stderr
    sent = report["totals"]["sent"]
    assert report["totals"]["by_outcome"]["connect"] == sent
    assert 4 <= sent < 200  # 50 ms doubling to 2 s between rounds of 4 (without back-off: tens of thousands)
    line = next(line for line in result.stderr.splitlines() if "run failed" in line)
    assert f"every request failed: {sent} of {sent} (connect {sent}); most often connect:" in line
    assert report["failure"] in line and "Traceback" not in result.stderr
    assert any("connect back-off" in note for note in report["notes"])


def test_every_request_rejected_exits_1(scripted, tmp_path):
    result, report = loadgen(
        tmp_path, "--url", scripted.url, "--concurrency", "2", "--requests", "6",
        "--extra-body", '{"mock": {"status": 404}}',
    )  # fmt: skip
    assert result.returncode == 1
    assert "every request failed: 6 of 6 (http_4xx 6); most often http_4xx: HTTP 404" in result.stderr
    assert "Run failed: every request failed" in result.stdout and report["failure"] in result.stderr


def test_max_error_ratio_sets_the_threshold(scripted, tmp_path):
    half = ["--url", scripted.url, "--concurrency", "1", "--requests", "8", "--output-len", "2",
            "--extra-body", '{"mock": {"status": 500, "fault_every": 2}}']  # fmt: skip
    result, report = loadgen(tmp_path, *half)
    assert result.returncode == 0 and report["failure"] is None  # half succeeded: not every request failed
    result, report = loadgen(tmp_path, *half, "--max-error-ratio", "0.6")
    assert result.returncode == 0 and report["failure"] is None
    result, report = loadgen(tmp_path, *half, "--max-error-ratio", "0.2")
    assert result.returncode == 1
    assert "50.0% of requests failed, above --max-error-ratio 0.2: 4 of 8 (http_5xx 4)" in result.stderr
