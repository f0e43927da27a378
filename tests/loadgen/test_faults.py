"""Every request is accounted for, whatever the server does: sent = succeeded + failed by class,
in the report, the per-request records and /metrics alike."""

from __future__ import annotations

import asyncio
import json
import threading
from time import perf_counter_ns

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from loadgen.client import LoadClient, Timeouts
from loadgen.report import render
from loadgen.timing import RequestRecord
from tests.support.procs import free_port

REQUESTS = 6


def scraped(collector) -> dict[tuple[str, tuple], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def assert_accounted(result, expected: dict[str, int]) -> None:
    requests = result.phase["requests"]
    outcomes = {k: v for k, v in requests["by_outcome"].items() if v}
    assert outcomes == expected, result.phase["errors"]
    assert requests["sent"] == requests["finished"] == sum(expected.values()) == len(result.records)
    assert sorted(r["outcome"] for r in result.records) == sorted(
        k for k, v in expected.items() for _ in range(v)
    )
    samples = scraped(result.collector)
    labels = (("run_id", result.run.run_id), ("scenario", "default"))
    assert samples[("loadgen_requests_sent_total", labels)] == requests["sent"]
    for outcome, count in requests["by_outcome"].items():
        assert samples[("loadgen_requests_total", tuple(sorted((*labels, ("outcome", outcome)))))] == count
    assert samples[("loadgen_requests_in_flight", labels)] == 0


CASES = {
    "die_mid_stream": ({"die_after": 3}, {}, {"stream_broken": REQUESTS}),
    "http_429": ({"status": 429}, {}, {"http_429": REQUESTS}),
    "http_500": ({"status": 500}, {}, {"http_5xx": REQUESTS}),
    "http_503": ({"status": 503}, {}, {"http_5xx": REQUESTS}),
    "http_404": ({"status": 404}, {}, {"http_4xx": REQUESTS}),
    "slow_headers_past_read_timeout": (
        {"slow_headers_ms": 1500},
        {"read_timeout": "300ms"},
        {"timeout": REQUESTS},
    ),
    "slow_stream_past_request_timeout": (
        {"itl_ms": 100, "tokens": 20},
        {"request_timeout": "500ms", "output_len": 20},
        {"timeout": REQUESTS},
    ),
    "malformed_event": ({"malformed_after": 2}, {}, {"malformed": REQUESTS}),
    "not_http_at_all": ({"garbage": True}, {}, {"malformed": REQUESTS}),
    "error_event": ({"error_after": 2}, {}, {"stream_broken": REQUESTS}),
    "no_done_no_finish_reason": ({"no_done": True}, {}, {"stream_broken": REQUESTS}),
    "invalid_utf8": ({"invalid_utf8": True}, {}, {"success": REQUESTS}),
    "huge_event": ({"huge_bytes": 5_000_000}, {}, {"success": REQUESTS}),
    "event_of_many_lines_past_the_cap": ({"many_lines": 40_000}, {}, {"too_large": REQUESTS}),  # 40 MB
    "event_of_many_lines_within_the_cap": ({"many_lines": 100}, {}, {"malformed": REQUESTS}),  # not JSON
    "events_split_inside_utf8": ({"split": True}, {}, {"success": REQUESTS}),
    "server_closes_keepalive": ({"close_after": True}, {}, {"success": REQUESTS}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fault_is_counted_by_class(scripted, run_loadgen, case):
    mock, options, expected = CASES[case]
    result = run_loadgen(
        url=scripted.url,
        model="scripted",
        concurrency=2,
        requests=REQUESTS,
        output_len=options.pop("output_len", 8),
        extra_body={"mock": mock},
        **options,
    )
    assert_accounted(result, expected)
    tokens = result.phase["tokens"]
    if case == "invalid_utf8":
        assert tokens["invalid_utf8_events"] == REQUESTS * 8
    if expected == {"success": REQUESTS}:
        truth = scripted.records(result.run.run_id)
        assert tokens["output"] == sum(t["tokens"] for t in truth.values()) == REQUESTS * 8


def test_slow_first_byte_within_limits_is_measured(scripted, run_loadgen):
    result = run_loadgen(
        url=scripted.url, model="scripted", concurrency=2, requests=4, output_len=4,
        extra_body={"mock": {"slow_headers_ms": 300}},
    )  # fmt: skip
    assert_accounted(result, {"success": 4})
    assert result.phase["latency_s"]["ttft"]["min"] >= 0.3


def test_server_down_at_start_counts_connect_failures(run_loadgen):
    result = run_loadgen(
        url=f"http://127.0.0.1:{free_port()}",
        model="m",
        concurrency=2,
        requests=REQUESTS,
        connect_timeout="1s",
    )
    assert_accounted(result, {"connect": REQUESTS})
    assert result.run.state == "finished"


def test_keepalive_connections_are_reused(scripted, run_loadgen):
    before = scripted.stats()["connections"]
    result = run_loadgen(  # without the engine-metrics reader, whose GET would be one more connection
        url=scripted.url, model="scripted", concurrency=3, requests=30, output_len=2, engine_metrics="none"
    )
    assert_accounted(result, {"success": 30})
    assert scripted.stats()["connections"] - before <= 4  # 3 users, plus the calibration probes' connection


@pytest.mark.parametrize(
    ("mock", "options", "message"),
    [
        ({"slow_headers_ms": 1500}, {"read_timeout": "300ms"},
         "read timeout: no data for 0.3s (--read-timeout)"),
        # the whole-request limit fires while the read timer is long: it names itself, not the read limit
        ({"slow_headers_ms": 2000}, {"request_timeout": "500ms"},
         "request timeout: no complete response within 0.5s (--request-timeout)"),
        ({"itl_ms": 100, "tokens": 20}, {"request_timeout": "500ms"},
         "request timeout: no complete response within 0.5s (--request-timeout)"),
    ],
)  # fmt: skip
def test_each_timeout_names_the_limit_that_fired(scripted, run_loadgen, mock, options, message):
    result = run_loadgen(
        url=scripted.url, model="scripted", concurrency=2, requests=4, output_len=20,
        extra_body={"mock": mock}, **options,
    )  # fmt: skip
    assert_accounted(result, {"timeout": 4})
    assert {r["error"] for r in result.records} == {message}


def test_a_response_past_its_budget_is_too_large_and_its_connection_is_closed(scripted):
    def body(stream: bool, tokens: int, **mock) -> bytes:
        return json.dumps({"model": "m", "stream": stream, "max_tokens": tokens, "mock": mock}).encode()

    async def main() -> tuple[list[RequestRecord], int]:
        client = LoadClient(scripted.url, None, Timeouts(), 1, max_response_bytes=1_000_000,
                            max_body_bytes=200_000)  # fmt: skip
        records = [RequestRecord(f"cap-{i}", "p", perf_counter_ns(), stream) for i, stream in
                   enumerate((True, False, True))]  # fmt: skip
        await client.execute("/v1/chat/completions", body(True, 50, event_bytes=100_000), records[0])  # 5 MB
        await client.execute("/v1/chat/completions", body(False, 50_000), records[1])  # a 440 KB body
        await client.execute("/v1/chat/completions", body(True, 3), records[2])
        opened = client._raw.opened  # type: ignore[union-attr]
        await client.aclose()
        return records, opened

    records, opened = asyncio.run(main())
    assert [r.outcome for r in records] == ["too_large", "too_large", "success"], [r.error for r in records]
    assert "larger than 1000000 bytes" in records[0].error and "larger than 200000" in records[1].error
    assert opened == 3  # a refused response's connection is closed, never reused


async def _second_request_dies(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Each connection answers its first request (keep-alive) and drops its second 50 ms after it came,
    without a byte: the client's reused connection is dead, and it re-sends on a fresh one."""
    try:
        for number in (1, 2):
            head = await reader.readuntil(b"\r\n\r\n")
            lengths = [
                int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length")
            ]
            await reader.readexactly(lengths[0] if lengths else 0)
            if number == 2:
                await asyncio.sleep(0.05)
                return
            usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
            data = json.dumps(
                {"choices": [{"index": 0, "text": "a", "finish_reason": "length"}], "usage": usage}
            )
            writer.write(f"HTTP/1.1 200 OK\r\ncontent-length: {len(data)}\r\n\r\n{data}".encode())
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _close(server: asyncio.Server) -> None:
    """The server, and its handlers still waiting on kept connections, closed while their loop runs (a
    handler left suspended is closed later by the garbage collector, on a loop already closed)."""
    server.close()
    handlers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in handlers:
        task.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)


def test_a_resent_request_keeps_both_sends_and_the_report_counts_the_wait(run_loadgen):
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(_second_request_dies, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        result = run_loadgen(
            url=url, model="m", endpoint="completions", stream=False, concurrency=1, requests=6, output_len=1
        )
    finally:
        asyncio.run_coroutine_threadsafe(_close(server), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
    requests = result.phase["requests"]
    resent = [r for r in result.records if len(r["sends_ns"]) == 2]
    assert requests["succeeded"] == 6 and requests["retried_connections"] == len(resent) >= 2
    for record in resent:
        first, second = record["sends_ns"]
        assert first == record["sent_ns"] and (second - first) / 1e9 >= 0.05
        assert record["e2e_s"] >= 0.05  # latency counts from the first send: what the user waited
    assert requests["resend_wait_s"] == pytest.approx(
        sum((r["sends_ns"][1] - r["sends_ns"][0]) / 1e9 for r in resent)
    )
    assert "Re-sent on a fresh connection" in render(result.report)
