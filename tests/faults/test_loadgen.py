"""The load generator against hostile and unlucky servers, as real processes over loopback.

One `llmobs-loadgen serve` (with an API key and a control token, both planted secrets) drives every
case over its control API against the scripted server (tests/loadgen/scripted_server.py), which
records what it received. Each case ends with the matrix's checks: the process is alive, every
request is counted under its documented outcome, requests sent = succeeded + failed by class = what
the server saw, /metrics equals the report (outcomes and histogram counts), and at the end no form of
either secret appears in the process's output, /metrics or any answer of the API.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults import checks, stack
from tests.loadgen.conftest import Scripted, start_scripted
from tests.support.procs import free_port

KEY = "sk-fault-matrix-key-5b9e"
TOKEN = "ctl-fault-matrix-token-71c2"
AUTH = {"authorization": f"Bearer {TOKEN}"}
REQUESTS = 6
ANSWERS: list[str] = []  # every API answer, for the secret check at the end

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scripted(fault_tmp: Path) -> Iterator[Scripted]:
    yield from start_scripted(fault_tmp)


@pytest.fixture(scope="module")
def down() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


@pytest.fixture(scope="module")
def serve(fault_tmp: Path, scripted: Scripted, down: str) -> Iterator[stack.Proc]:
    argv = ["--api-key-env", "FAULT_KEY", "--control-token-env", "FAULT_TOKEN", "--allow-url", scripted.url,
            "--allow-url", down]  # fmt: skip
    env = {"FAULT_KEY": KEY, "FAULT_TOKEN": TOKEN}
    with stack.loadgen_serve(fault_tmp, *argv, env=env) as proc:
        yield proc


def run(serve: stack.Proc, scenario: dict) -> dict:
    """Start a run over the API and wait for its end; its description, report included."""
    started = httpx.post(f"{serve.url}/runs", json=scenario, headers=AUTH, timeout=30)
    ANSWERS.append(started.text)
    assert started.status_code == 201, started.text
    run_id = started.json()["run_id"]
    deadline = time.monotonic() + 120
    while True:
        answer = httpx.get(f"{serve.url}/runs/{run_id}", headers=AUTH, timeout=30)
        ANSWERS.append(answer.text)
        if answer.json()["state"] in ("finished", "failed"):
            return answer.json()
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.2)


def assert_accounted(serve: stack.Proc, done: dict, expected: dict[str, int], seen: int) -> None:
    """Alive; outcomes as expected; sent = succeeded + failed by class = what the server saw;
    /metrics = the report."""
    checks.assert_alive(serve)
    assert done["state"] == "finished", done
    report = done["report"]
    requests = report["totals"]
    outcomes = {k: v for k, v in requests["by_outcome"].items() if v}
    assert outcomes == expected, report["phases"][0]["errors"]
    assert requests["sent"] == requests["finished"] == sum(expected.values()) == seen
    samples = checks.scrape(serve.metrics_url)
    labels = {"run_id": done["run_id"], "scenario": done["scenario"]}
    assert samples.value("loadgen_requests_sent_total", labels) == requests["sent"]
    for outcome, count in requests["by_outcome"].items():
        assert samples.value("loadgen_requests_total", {**labels, "outcome": outcome}) == count
    histograms = {"ttft": "loadgen_time_to_first_token_seconds", "e2e": "loadgen_e2e_request_latency_seconds"}
    for figure, name in histograms.items():
        count = sum(phase["latency_s"][figure]["count"] for phase in report["phases"])
        assert samples.value(f"{name}_count", labels) == count, name


def scenario(url: str, name: str, **mock: object) -> dict:
    values = {"url": url, "model": "scripted", "concurrency": 2, "requests": REQUESTS, "output_len": 8}
    return {**values, "name": name, "extra_body": {"mock": mock}}


def server_saw(scripted: Scripted, run_id: str) -> int:
    return len(scripted.records(run_id))


CASES = {
    # name: (the server's behaviour, more scenario keys, expected outcomes)
    "event_past_its_byte_budget": ({"many_lines": 40_000}, {}, {"too_large": REQUESTS}),
    "malformed_event": ({"malformed_after": 2}, {}, {"malformed": REQUESTS}),
    "event_nested_100k_deep": ({"nested_after": 2}, {}, {"malformed": REQUESTS}),  # was a traceback each
    "usage_100x_the_stream": ({"usage_factor": 100}, {}, {"success": REQUESTS}),
    "throttled_with_retry_after": ({"status": 429, "retry_after": "1"}, {}, {"http_429": REQUESTS}),
    # '²' is a digit to str.isdigit, not to float(): each request was once a traceback and `malformed`
    "throttled_with_retry_after_²": ({"status": 429, "retry_after": "\u00b2"}, {}, {"http_429": REQUESTS}),
    "wrong_model_every_request_404": ({"status": 404}, {}, {"http_4xx": REQUESTS}),
    "past_the_request_timeout": (
        {"itl_ms": 100, "tokens": 20}, {"request_timeout": "500ms", "output_len": 20}, {"timeout": REQUESTS}
    ),
    "credentials_echoed_back": ({"echo_auth": True}, {}, {"http_4xx": REQUESTS}),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_fault_is_counted_and_nothing_lost_or_invented(serve, scripted, case):
    mock, options, expected = CASES[case]
    done = run(serve, {**scenario(scripted.url, case, **mock), **options})
    assert_accounted(serve, done, expected, seen=server_saw(scripted, done["run_id"]))
    report = done["report"]
    phase = report["phases"][0]
    if case == "usage_100x_the_stream":
        assert phase["tokens"]["usage_disagreements"] == REQUESTS
        assert phase["tokens"]["output"] == REQUESTS * 8  # the events, not 100x
    if case.startswith("throttled_with"):
        assert phase["requests"]["throttled"] == REQUESTS
    if case == "event_nested_100k_deep":
        assert list(phase["errors"]) == ["malformed: event is not JSON: " + repr(b"[" * 120)]
        assert "Traceback" not in serve.output()
    if case == "past_the_request_timeout":
        assert list(phase["errors"]) == [
            "timeout: request timeout: no complete response within 0.5s (--request-timeout)"
        ]
    if expected.get("success") is None:  # nothing succeeded: the run says so in one line
        assert report["failure"].startswith("every request failed")


def test_server_down_is_counted_backed_off_and_sent_nowhere(serve, down):
    done = run(serve, {**scenario(down, "server_down"), "requests": None, "step_duration": "2s",
                       "connect_timeout": "1s"})  # fmt: skip
    sent = done["report"]["totals"]["sent"]
    assert_accounted(serve, done, {"connect": sent}, seen=sent)  # no server: it saw what failed to connect
    assert 2 <= sent < 100 and any("connect back-off" in n for n in done["report"]["notes"])


def test_no_secret_anywhere(serve, fault_tmp):
    """Last in this module: after every case above (one echoed the key back in its error bodies)."""
    answers = [httpx.get(f"{serve.url}/runs", headers=AUTH, timeout=30).text, *ANSWERS]
    for secret in (KEY, TOKEN):
        checks.assert_no_secret(secret, procs=[serve], urls=[serve.metrics_url], texts=answers)
