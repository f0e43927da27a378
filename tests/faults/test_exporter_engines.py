"""The exporter against hostile engines (tests/faults/hostile_engine.py), both as real processes on loopback.

One exporter scrapes a good engine beside one that sends 300k series, 30 MB, 40 MB announced, 40 MB in
one endless line, a trickle, hostile values and a password: it stays alive, counts each under its kind,
serves GPU, host and the good engine's families within its documented cap on every scrape, stays
bounded, logs each failure once, not once per scrape, and never shows the password.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.faults import checks, stack
from tests.faults.hostile_engine import SECRET
from tests.support.procs import free_port

pytestmark = pytest.mark.slow
# Every target but the trickle has a 5 s deadline, so that each reaches its own outcome on every scrape
# even on a machine busy with other work; the trickle keeps the default 2 s. The scrape's documented cap is
# the longest deadline + 0.5 s. The 300k-series and 30 MB targets have a series budget of 5,000 (default
# 50,000) and the endless line a byte budget of 4 MB (default 32 MiB), for the same reason
# (bench/exporter_engine_budgets.py runs the defaults).
CAP_SECONDS = 5.0 + 0.5
SLACK_SECONDS = 1.0  # scheduling on a loaded 2-core machine, not the exporter's waiting
SCRAPES = 12
EXPECTED = {  # target -> the kind it is counted under (None: up)
    "fine": None,
    "series": "too_many_series",
    "big": "too_many_series",
    "huge": "too_large",
    "endless": "too_large",
    "trickle": "timeout",
    "values": None,
    "secret": "parse",
    "refused": "connect",
}


@pytest.fixture(scope="module")
def engine(fault_tmp: Path):
    port = free_port()
    argv = [stack.PYTHON, "-m", "tests.faults.hostile_engine", "--port", str(port)]
    with stack._started(fault_tmp, "hostile-engine", argv, port, "/health/metrics", None) as proc:
        yield proc


def targets(engine: stack.Proc) -> list[str]:
    args = []
    for name in EXPECTED:
        url = f"{engine.url}/{name}/metrics"
        if name == "secret":
            url = url.replace("http://", f"http://admin:{SECRET}@")
        if name == "refused":
            url = f"http://admin:{SECRET}@127.0.0.1:1/metrics"
        options = {"series": ",max_series=5000", "big": ",max_series=5000", "endless": ",max_bytes=4000000"}
        deadline = "" if name == "trickle" else ",timeout_seconds=5"
        args += ["--target", f"{name}={url},kind=vllm{deadline}{options.get(name, '')}"]
    return args


def test_hostile_engines_cost_only_their_own_series(fault_tmp: Path, engine: stack.Proc, start) -> None:
    exp = start(stack.exporter(fault_tmp, "--collector.gpu", *targets(engine)))
    durations, rss = [], []
    for number in range(SCRAPES):
        started = time.monotonic()
        response = httpx.get(exp.metrics_url, timeout=30)
        durations.append(time.monotonic() - started)
        samples = checks.Samples(response.text)
        assert samples.value("gpu_nvml_available", default=-1) == 0  # the GPU collector (no NVML here)
        assert samples.value("host_memory_total_bytes") > 0
        assert samples.value("llm_target_up", {"target": "fine"}) == 1
        assert samples.total("llm_requests_running", target="fine") > 0
        if number == 2:
            warm, log_lines = exp.resources(), len(exp.output().splitlines())
        rss.append(exp.resources().rss_bytes)
    checks.assert_alive(exp, engine)
    for target, kind in EXPECTED.items():
        counted = {
            k: samples.value("llm_target_errors_total", {"target": target, "kind": k})
            for k in ("connect", "timeout", "too_large", "too_many_series", "parse")
        }
        assert samples.value("llm_target_up", {"target": target}) == (kind is None), target
        assert counted == {k: (SCRAPES if k == kind else 0) for k in counted}, target
    assert (
        samples.value("llm_target_series_dropped_total", {"target": "values", "reason": "label_too_long"})
        == SCRAPES
    )
    assert (
        samples.value("llm_target_series_dropped_total", {"target": "values", "reason": "not_finite"})
        == 2 * SCRAPES
    )
    assert (
        samples.value("llm_target_series_dropped_total", {"target": "values", "reason": "negative"})
        == SCRAPES
    )
    assert max(durations) < CAP_SECONDS + SLACK_SECONDS, f"scrape took {max(durations):.2f}s: {durations}"
    checks.assert_bounded(warm, exp.resources(), rss_mb=40, fds=10, threads=4)
    output = exp.output()
    assert len(output.splitlines()) == log_lines, "a failure was logged again on a later scrape:\n" + output
    assert "HTTP Request" not in output  # httpx's INFO line per request is not news
    for target, kind in EXPECTED.items():
        if kind is not None:
            assert output.count(f"engine target {target} is down: {kind}") == 1, target
    checks.assert_no_secret(SECRET, procs=[exp], paths=[fault_tmp], urls=[exp.metrics_url])
