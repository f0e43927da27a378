"""Throttling (429, 503 with Retry-After) is counted apart from other errors; --honor-retry-after makes
closed-loop users wait as asked, and never shifts an open loop's schedule."""

from __future__ import annotations

import email.utils
import itertools
import time

import pytest

from loadgen.backoff import MAX_RETRY_AFTER_S, retry_after_s
from loadgen.report import render
from tests.loadgen.test_faults import assert_accounted, scraped


def test_retry_after_values():
    assert retry_after_s("120") == 120.0 and retry_after_s(" 0 ") == 0.0
    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < retry_after_s(soon) <= 31  # type: ignore[operator]
    assert retry_after_s(email.utils.formatdate(time.time() - 30, usegmt=True)) == 0.0
    assert retry_after_s("99999999999") == MAX_RETRY_AFTER_S
    for bad in (None, "", "soon", "-5", "1.5", "Mon, 99 Foo 2026 99:99:99 GMT", "\u00b2", "\u0661"):
        assert retry_after_s(bad) is None, bad


def closed_loop(scripted, run_loadgen, honor: bool):
    return run_loadgen(
        url=scripted.url, model="scripted", concurrency=1, requests=4, output_len=2, honor_retry_after=honor,
        extra_body={"mock": {"status": 429, "retry_after": "1", "fault_every": 2}},
    )  # fmt: skip


@pytest.mark.parametrize("honor", [True, False])
def test_closed_loop_user_waits_as_asked_only_when_told(scripted, run_loadgen, honor):
    result = closed_loop(scripted, run_loadgen, honor)
    records = sorted(result.records, key=lambda r: r["sent_ns"])
    throttled = [r for r in records if r["throttled"]]
    assert len(throttled) == 2 and all(r["retry_after_s"] == 1.0 for r in throttled)
    assert_accounted(result, {"success": 2, "http_429": 2})
    after = [(b["sent_ns"] - a["end_ns"]) / 1e9 for a, b in itertools.pairwise(records) if a["throttled"]]
    requests = result.phase["requests"]
    assert requests["throttled"] == 2
    labels = (("run_id", result.run.run_id), ("scenario", "default"))
    assert scraped(result.collector)[("loadgen_requests_throttled_total", labels)] == 2
    if honor:
        assert all(gap >= 0.95 for gap in after), after
        assert 0.95 <= requests["retry_after_waited_s"] <= 1.5  # none after the last request
        assert any("users waited" in note for note in result.report["notes"])
    else:
        assert all(gap < 0.5 for gap in after), after
        assert any("not honoured" in note for note in result.report["notes"])
    assert "of which throttled (429, 503 + Retry-After)" in render(result.report)


def test_open_loop_keeps_its_schedule_and_counts_throttling(scripted, run_loadgen):
    result = run_loadgen(
        url=scripted.url, model="scripted", rate=20, arrival="constant", requests=10, output_len=2,
        honor_retry_after=True, extra_body={"mock": {"status": 503, "retry_after": "5"}},
    )  # fmt: skip
    assert_accounted(result, {"http_5xx": 10})
    scheduled = sorted(r["scheduled_ns"] for r in result.records)
    assert all(abs((b - a) / 1e9 - 0.05) < 1e-6 for a, b in itertools.pairwise(scheduled))
    assert result.phase["requests"]["throttled"] == 10 and result.phase["duration_s"] < 2
    assert any("open-loop phases kept their schedule" in note for note in result.report["notes"])


def test_a_503_without_retry_after_is_an_error_not_throttling(scripted, run_loadgen):
    result = run_loadgen(
        url=scripted.url, model="scripted", concurrency=2, requests=4, output_len=2,
        extra_body={"mock": {"status": 503}},
    )  # fmt: skip
    assert_accounted(result, {"http_5xx": 4})
    assert result.phase["requests"]["throttled"] == 0 and "notes" not in result.report
