"""Output tokens: the server's usage is checked against the stream's token events, the disagreement
is counted, and the report says which count it used and why (--output-tokens-from)."""

from __future__ import annotations

import pytest

from loadgen.report import render
from tests.loadgen.test_faults import scraped

REQUESTS = 4
TOKENS = 8


def run(scripted, run_loadgen, factor: float, mode: str | None = None):
    options = {"output_tokens_from": mode} if mode else {}
    return run_loadgen(
        url=scripted.url, model="scripted", concurrency=2, requests=REQUESTS, output_len=TOKENS,
        extra_body={"mock": {"usage_factor": factor, "itl_ms": 10}}, **options,
    )  # fmt: skip


def disagreements(result) -> float:
    labels = (("run_id", result.run.run_id), ("scenario", "default"))
    return scraped(result.collector)[("loadgen_output_token_disagreements_total", labels)]


def test_usage_100x_the_events_is_counted_and_the_events_are_used(scripted, run_loadgen):
    result = run(scripted, run_loadgen, factor=100)
    tokens = result.phase["tokens"]
    assert tokens["output"] == REQUESTS * TOKENS and tokens["output_source"] == {"counted": REQUESTS}
    assert tokens["usage_disagreements"] == REQUESTS == disagreements(result)
    assert all(r["usage_disagrees"] and r["usage_output_tokens"] == 100 * TOKENS for r in result.records)
    # TPOT from the events: about the 10 ms between tokens, not a hundredth of it
    assert result.phase["latency_s"]["tpot"]["median"] > 0.005
    note = next(n for n in result.report["notes"] if "disagreed" in n)
    assert f"in {REQUESTS} of {REQUESTS} succeeded" in note and "--output-tokens-from auto" in note
    assert "usage disagreed with the stream in 4" in render(result.report)


def test_usage_trusted_when_asked_and_still_counted(scripted, run_loadgen):
    result = run(scripted, run_loadgen, factor=100, mode="usage")
    tokens = result.phase["tokens"]
    assert tokens["output"] == REQUESTS * TOKENS * 100 and tokens["output_source"] == {"usage": REQUESTS}
    assert tokens["usage_disagreements"] == REQUESTS
    assert any("used anyway" in note for note in result.report["notes"])


@pytest.mark.parametrize(("factor", "mode", "source", "output"), [
    (4, None, "usage", 4 * TOKENS),  # several tokens per event is plausible: usage is used
    (1, None, "usage", TOKENS),
    (1, "events", "counted", TOKENS),
    (0.5, None, "counted", TOKENS),  # fewer tokens than events cannot be
])  # fmt: skip
def test_which_count_is_used(scripted, run_loadgen, factor, mode, source, output):
    result = run(scripted, run_loadgen, factor=factor, mode=mode)
    tokens = result.phase["tokens"]
    assert tokens["output_source"] == {source: REQUESTS} and tokens["output"] == REQUESTS * output
    assert tokens["usage_disagreements"] == (REQUESTS if factor < 1 else 0) == disagreements(result)
    notes = result.report.get("notes", [])
    # more tokens than events, not said per event: ITL spreads each gap over the mean (its own note)
    spread = [note for note in notes if "did not say how many tokens each event carried" in note]
    assert bool(spread) == (factor > 1)
    assert (len(notes) > len(spread)) == (factor < 1 or mode == "events")
