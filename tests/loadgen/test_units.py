"""Pure pieces: scenario parsing, length distributions, datasets, arrival schedules, statistics."""

from __future__ import annotations

import asyncio
import json
import math
import random
import statistics
from time import perf_counter_ns

import pytest

from loadgen.scenario import Scenario, ScenarioError
from loadgen.scenario_values import parse_duration, parse_slo
from loadgen.schedules import Phase, arrival_offsets
from loadgen.sharegpt import load_sharegpt
from loadgen.stats import Distribution, PhaseStats, Slo
from loadgen.timing import RequestRecord
from loadgen.workloads import LengthDist, Synthetic, TextMaker, WorkloadError, load_jsonl


def test_durations_and_slos():
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2h") == 7200
    assert parse_duration(30) == 30
    assert math.isinf(parse_duration("inf"))
    assert parse_slo("ttft<=2s") == Slo("ttft", "<=", 2.0)
    assert parse_slo("tpot <= 100ms") == Slo("tpot", "<=", 0.1)
    assert parse_slo("user_tps>=10") == Slo("user_tps", ">=", 10.0)
    for bad in ("ttft>=2s", "user_tps<=3", "latency<=1s", "ttft<=soon"):
        with pytest.raises(ScenarioError):
            parse_slo(bad)
    with pytest.raises(ScenarioError):
        parse_duration("-1s")


def test_a_scenario_nested_past_the_recursion_limit_is_a_clear_error(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("[" * 100_000 + "]" * 100_000)  # was a RecursionError traceback
    with pytest.raises(ScenarioError, match="is not valid YAML: nested too deeply"):
        Scenario.load_yaml(str(path))


def test_flags_override_yaml_and_steps_become_phases(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "url: http://127.0.0.1:8000\nconcurrency: [1, 10]\nstep-duration: 20s\n"
        "steps:\n  - {concurrency: 5, duration: 3s}\n  - {rate: 2.5}\n"
    )
    scenario = Scenario.build(Scenario.load_yaml(str(path)), {"step_duration": "7s", "seed": None})
    phases = scenario.phases
    assert [(p.name, p.concurrency, p.rate, p.duration_s) for p in phases] == [
        ("step-1 concurrency=5", 5, None, 3.0),
        ("step-2 rate=2.5", None, 2.5, 7.0),
    ]
    plain = Scenario.build(None, {"url": "http://h:1", "concurrency": "1,10,50", "step_duration": "20s"})
    assert [p.name for p in plain.phases] == [
        "step-1 concurrency=1", "step-2 concurrency=10", "step-3 concurrency=50",
    ]  # fmt: skip
    assert plain.shape == "closed-steps"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "--url is required"),
        ({"url": "http://h:1", "concurrency": 2, "rate": 3}, "not both"),
        ({"url": "http://h:1", "concurrency": "0"}, "numbers above 0"),
        ({"url": "http://h:1", "concurrency": "1.5"}, "whole"),
        ({"url": "http://h:1", "sweep": True}, "needs at least one --slo"),
        ({"url": "http://h:1", "step_duration": "inf"}, "without an end"),
        ({"url": "http://h:1", "bogus": 1}, "unknown scenario key"),
        ({"url": "http://h:1", "dataset": "csv:x"}, "jsonl:PATH, mooncake:PATH or trace:PATH"),
        ({"url": "http://h:1", "concurrency": "1,2", "ramp_to": 5}, "ramps from one"),
    ],
)
def test_bad_scenarios_have_clear_messages(values, message):
    with pytest.raises(ScenarioError, match=message):
        Scenario.build(None, values)


def test_a_flood_of_url_pieces_never_pushes_a_configured_secret_out_of_the_scrubber():
    from loadgen import redact

    redact.register("sk-configured-flood-1")
    for i in range(redact.MAX_SECRETS + 10):  # what any caller of POST /runs can register, refused or not
        redact.register_url(f"http://evil.example/?q=junk-{i:05d}")
    assert redact.scrub("echoed: Bearer sk-configured-flood-1") == "echoed: Bearer <redacted>"
    assert redact.scrub("junk-00000") == "junk-00000"  # the oldest URL piece made room
    assert redact.scrub(f"junk-{redact.MAX_SECRETS + 9:05d}") == "<redacted>"


def test_api_key_comes_from_env_or_file_and_is_redacted(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-secret")
    scenario = Scenario.build(None, {"url": "http://h:1", "api_key_env": "MY_KEY"})
    assert scenario.api_key() == "sk-secret"
    assert "sk-secret" not in json.dumps(scenario.redacted())
    key_file = tmp_path / "key"
    key_file.write_text("sk-file\n")
    assert Scenario.build(None, {"url": "http://h:1", "api_key_file": str(key_file)}).api_key() == "sk-file"
    with pytest.raises(ScenarioError, match="not set"):
        Scenario.build(None, {"url": "http://h:1", "api_key_env": "NOT_SET_ANYWHERE"}).api_key()


def test_length_distributions():
    rng = random.Random(1)
    assert LengthDist.parse("128").sample(rng) == 128
    uniform = [LengthDist.parse("uniform:10:20").sample(rng) for _ in range(2000)]
    assert min(uniform) == 10 and max(uniform) == 20
    normal = [LengthDist.parse("normal:100:10").sample(rng) for _ in range(4000)]
    assert abs(statistics.mean(normal) - 100) < 1.5
    hist = [LengthDist.parse("hist:10=3,1000=1").sample(rng) for _ in range(4000)]
    assert set(hist) == {10, 1000} and 0.7 < hist.count(10) / 4000 < 0.8
    for bad in ("0", "uniform:5:1", "normal:x:1", "hist:5", "gauss:1:2"):
        with pytest.raises(WorkloadError):
            LengthDist.parse(bad)


def test_synthetic_workload_is_deterministic_and_shares_prefixes():
    def items(seed):
        workload = Synthetic(
            LengthDist.parse("uniform:5:50"), LengthDist.parse("20"), TextMaker(None), random.Random(seed),
            prefix_groups=2, prefix_len=30, turns=2,
        )  # fmt: skip
        return [workload.next() for _ in range(6)]

    first, again, other = items(7), items(7), items(8)
    assert first == again and first != other
    prompts = [item.messages[0]["content"] for item in first]
    assert prompts[0].split("\n\n")[0] == prompts[2].split("\n\n")[0] != prompts[1].split("\n\n")[0]
    assert all(len(item.followups) == 1 and item.max_tokens == 20 for item in first)


def test_random_words_are_uniform_over_256_distinct_words():
    from collections import Counter

    from loadgen.workloads import WORDS, random_words

    assert len(WORDS) == len(set(WORDS)) == 256  # one random byte per word
    counts = Counter(random_words(random.Random(3), 256 * 400).split())
    assert set(counts) == set(WORDS)
    assert min(counts.values()) > 250 and max(counts.values()) < 560  # 400 expected each
    assert random_words(random.Random(5), 32) == random_words(random.Random(5), 32)


def test_sharegpt_and_jsonl_loading(tmp_path):
    sharegpt = tmp_path / "sg.json"
    sharegpt.write_text(json.dumps([
        {"conversations": [{"from": "human", "value": "hello there"}, {"from": "gpt", "value": "a b c d"}]},
        {"conversations": [{"from": "gpt", "value": "no human turn"}]},
        {"id": "broken"},
    ]))  # fmt: skip
    workload = load_sharegpt(str(sharegpt), random.Random(0), None, TextMaker(None), turns=1)
    assert workload.items == [workload.next()] and workload.next().max_tokens == 4
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(
        '{"prompt": "hi", "max_tokens": 5}\n\n{"messages": [{"role": "user", "content": "x"}]}\n'
    )
    assert len(load_jsonl(str(jsonl), random.Random(0), None).items) == 2
    jsonl.write_text('{"prompt": "hi"}\n{"text": 1}\n')
    with pytest.raises(WorkloadError, match=r"p.jsonl:2"):
        load_jsonl(str(jsonl), random.Random(0), None)


def test_arrivals_follow_the_rate_and_burstiness():
    def gaps(arrival, burstiness=1.0):
        phase = Phase("p", rate=50.0, arrival=arrival, burstiness=burstiness)
        offsets = arrival_offsets(phase, random.Random(3))
        times = [next(offsets) for _ in range(20000)]
        return [b - a for a, b in zip([0.0, *times], times, strict=False)]

    constant = gaps("constant")
    assert max(constant) - min(constant) < 1e-9 and abs(constant[0] - 0.02) < 1e-12
    for arrival, burstiness, cv in (("poisson", 1.0, 1.0), ("gamma", 0.25, 2.0), ("gamma", 4.0, 0.5)):
        values = gaps(arrival, burstiness)
        assert abs(statistics.mean(values) - 0.02) < 0.001
        assert abs(statistics.stdev(values) / statistics.mean(values) - cv) < 0.06 * cv


def test_ramp_targets():
    phase = Phase("ramp", concurrency=10, ramp_to=110, duration_s=100)
    assert phase.target_at(0) == 10 and phase.target_at(50) == 60 and phase.target_at(500) == 110


def test_distribution_percentiles_within_0_1_percent_and_bounded():
    rng = random.Random(5)
    values = [rng.lognormvariate(-3, 1.5) for _ in range(100_000)]
    dist = Distribution()
    for value in values:
        dist.add(value)
    ordered = sorted(values)
    for p in (50, 90, 95, 99):
        exact = ordered[math.ceil(p / 100 * len(ordered)) - 1]
        assert abs(dist.percentile(p) - exact) <= 0.001 * exact
    assert dist.mean == pytest.approx(statistics.fmean(values))
    assert len(dist._buckets) < 8000  # bounded by the value range, not the count


def record(ttft_ms: float, gaps_ms: list[float], tokens: int) -> RequestRecord:
    r = RequestRecord("r", "p", 0, True)
    r.sent_ns = 1_000_000
    t = r.sent_ns + int(ttft_ms * 1e6)
    r.token_times = [t]
    for gap in gaps_ms:
        t += int(gap * 1e6)
        r.token_times.append(t)
    r.end_ns = t
    r.output_tokens = tokens
    r.first_output_ns = r.token_times[0]
    return r


def test_vllm_docs_example_tpot_versus_itl_and_goodput():
    # vLLM docs: two 40 ms gaps carrying 5 tokens, E2E 180 ms, TTFT 100 ms -> TPOT 20 ms; vLLM's bench
    # reports ITL 40 ms (per event); per token, the 4 tokens after the first arrived 20 ms apart
    r = record(100, [40, 40], tokens=5)
    r.token_source = "usage"  # the server said 5; it did not say how many each event carried
    assert r.e2e_s == pytest.approx(0.18) and r.tpot_s == pytest.approx(0.02)
    assert r.event_gaps_s() == pytest.approx([0.04, 0.04])
    assert r.event_basis == "mean" and r.multi_token_event_count is None
    values, weights = r.itl_s()
    assert values == pytest.approx([0.02, 0.02]) and weights is None
    # 5 tokens in 180 ms from sending: 27.8 tok/s received; 4 more in the 80 ms after the first: 50 tok/s
    assert r.user_tps == pytest.approx(5 / 0.18) and r.stream_tps == pytest.approx(50)
    stats = PhaseStats("p", (Slo("ttft", "<=", 0.15), Slo("stream_tps", ">=", 40)))
    stats.add(r)  # TTFT 100 ms, 50 tok/s after the first token: good
    stats.add(record(200, [10], tokens=2))  # TTFT too slow
    assert stats.good == 1
    assert stats.slo_value(Slo("ttft", "<=", 0.15), 95) == pytest.approx(0.2, rel=1e-3)
    assert not stats.slos_met(95)


def test_itl_per_token_from_the_tokens_each_event_carried() -> None:
    # events at 0, 30, 40, 100 ms carrying 1, 3, 1, 2 tokens (the server said so on every event)
    r = record(0, [30, 10, 60], tokens=7)
    r.token_source, r.counted_events, r.multi_token_events = "usage", 4, {1: 3, 3: 2}
    assert r.event_basis == "server" and r.multi_token_event_count == 2
    assert r.event_tokens() == [1, 3, 1, 2]
    values, weights = r.itl_s()
    assert values == pytest.approx([0.01, 0.01, 0.03]) and weights == [3, 1, 2]
    stats = PhaseStats("p", ())
    stats.add(r)
    itl = stats.dist["itl"]
    assert itl.count == 6 and itl.mean == pytest.approx(0.1 / 6)  # (t_last - t_first) / (tokens - 1)
    assert itl.percentile(50) == pytest.approx(0.01, rel=2e-3) and itl.max == pytest.approx(0.03)
    summary = stats.summary(95)["tokens"]
    assert (summary["events"], summary["multi_token_events"]) == (4, 2)
    assert summary["event_token_basis"] == {"server": 1}
    # one token per event: ITL is the gaps, and a usage total equal to the events says nothing new
    plain = record(0, [30, 10], tokens=3)
    plain.token_source = "usage"
    assert plain.event_basis == "one per event" and plain.itl_s() == (pytest.approx([0.03, 0.01]), None)


def test_event_loop_choice() -> None:
    from loadgen import eventloop

    assert eventloop.loop_factory("asyncio") is None
    with pytest.raises(eventloop.EventLoopError, match="must be one of"):
        eventloop.loop_factory("trio")

    async def which() -> str:
        return eventloop.running_kind()

    assert eventloop.run(which(), "asyncio") == "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        with pytest.raises(eventloop.EventLoopError, match="not installed"):
            eventloop.loop_factory("uvloop")
        assert eventloop.run(which(), "auto") == "asyncio"
    else:
        assert eventloop.run(which(), "uvloop") == "uvloop"
        assert eventloop.run(which(), "auto") == "uvloop"


VLLM_TOKEN = (
    b'{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"%s"},"logprobs":null,"finish_reason":null}]}'
)


@pytest.mark.parametrize(
    ("text", "same"),
    [
        (b" the", True),
        (b"x", True),
        (b"\\n\\t", True),  # escapes other than a quote: still one plain string
        (b"", False),  # nothing to count: parsed, as the role chunk is
        (b'a\\"b', False),  # an escaped quote: parsed in full
        (b"a\\", False),  # a trailing backslash would escape the closing quote
        ("é".encode(), False),  # non-ASCII: parsed, so that invalid UTF-8 is found and counted
        (b'a","reasoning_content":"b', False),  # not how a server escapes it, and not plain either way
    ],
)
def test_a_token_shape_matches_only_the_same_bytes_around_plain_text(text: bytes, same: bool) -> None:
    from loadgen.client import TokenShape

    shape = TokenShape.learn(VLLM_TOKEN % b"hello")
    assert shape is not None and shape.matches(VLLM_TOKEN % text) is same


def test_a_token_shape_rejects_every_other_byte_change() -> None:
    from loadgen.client import TokenShape

    shape = TokenShape.learn(VLLM_TOKEN % b"hello")
    assert shape is not None
    for old, new in [
        (b'"finish_reason":null', b'"finish_reason":"stop"'),
        (b'"index":0', b'"index":1'),
        (b'"chatcmpl-1"', b'"chatcmpl-2"'),
        (b"]}", b'],"usage":{"completion_tokens":3}}'),
        (b'{"content"', b'{"reasoning_content":"r","content"'),
    ]:
        assert not shape.matches((VLLM_TOKEN % b"hi").replace(old, new))


@pytest.mark.parametrize(
    "event",
    [
        VLLM_TOKEN % b"a\\nb",  # nothing with a backslash is learned
        VLLM_TOKEN.replace(b"}]}", b',"message":{"content":"x"}}]}') % b"a",  # two "content" keys
        VLLM_TOKEN.replace(b'"m"', '"é"'.encode()) % b"a",  # non-ASCII around the text
    ],
)
def test_token_shapes_are_learned_only_from_unambiguous_events(event: bytes) -> None:
    from loadgen.client import TokenShape

    assert TokenShape.learn(event) is None


def test_only_what_the_shape_cannot_vouch_for_is_parsed(monkeypatch) -> None:
    """A stream parses its first token event, and again when the template changes (llama.cpp stamps
    `created` per event, in seconds); the other token events are counted from their shape."""
    from loadgen import client

    parsed: list[bytes] = []
    monkeypatch.setattr(client, "_loads", lambda data: parsed.append(data) or client.orjson.loads(data))
    later = VLLM_TOKEN.replace(b'"created":1', b'"created":2')
    finish = later.replace(b'"finish_reason":null', b'"finish_reason":"length"') % b"z"
    usage = b'{"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":11}}'
    events = [VLLM_TOKEN % b"", *(VLLM_TOKEN % b"a" for _ in range(5)), *(later % b"b" for _ in range(5))]
    record = _stream_record([*events, finish, usage])
    assert record.ok and record.content_events == 11 and record.output_tokens == 11
    assert parsed == [VLLM_TOKEN % b"", VLLM_TOKEN % b"a", later % b"b", finish, usage]


def test_events_orjson_refuses_are_read_as_the_json_module_reads_them() -> None:
    """NaN/-Infinity (a logprob of -inf) and invalid UTF-8 are not fatal; only non-JSON is malformed."""
    events = [
        b'{"choices":[{"index":0,"delta":{"content":"a"},"logprobs":{"content":[{"logprob":-Infinity}]}}]}',
        b'{"choices":[{"index":0,"delta":{"content":"\xff"}}]}',
        b'{"choices":[{"index":0,"delta":{"content":"b"},"finish_reason":"stop"}]}',
    ]
    record = _stream_record(events)
    assert record.ok and record.content_events == 3 and record.invalid_utf8 == 1
    broken = _stream_record([events[0], b'{"choices":[{"index":0,"delta":{"content":"c"}}'])
    assert broken.outcome == "malformed" and "not JSON" in broken.error


def _stream_record(events: list[bytes]) -> RequestRecord:
    """One streamed request over the HTTPS code path (httpx MockTransport), `events` as its data lines."""
    import httpx

    from loadgen.client import LoadClient, Timeouts

    body = [b"data: %s\n\n" % event for event in events] + [b"data: [DONE]\n\n"]

    class Body(httpx.AsyncByteStream):
        async def __aiter__(self):
            yield b"".join(body)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Body())

    async def main() -> RequestRecord:
        client = LoadClient("https://h", None, Timeouts(), 1, https_transport=httpx.MockTransport(handler))
        record = RequestRecord("r", "p", perf_counter_ns(), True)
        await client.execute("/v1/chat/completions", b"{}", record)
        await client.aclose()
        return record

    return asyncio.run(main())


def test_streams_count_the_same_with_and_without_learned_shapes() -> None:
    sglang = (
        b'{"id":"s","choices":[{"index":0,"delta":{"role":null,"content":"%s","reasoning_content":null,'
        b'"tool_calls":null},"logprobs":null,"finish_reason":null,"matched_stop":null}],"usage":null}'
    )
    reasoning = b'{"choices":[{"index":0,"delta":{"reasoning_content":"hmm"},"finish_reason":null}]}'
    usage = b'{"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":9}}'
    for token in (VLLM_TOKEN, sglang):
        finish = token.replace(b'"finish_reason":null', b'"finish_reason":"length"')
        texts = (b"a", b"b", "é".encode(), b'\\"', b"c", b"\xff", b"d")  # invalid UTF-8 in one
        events = [token % b"", reasoning, *(token % text for text in texts), finish % b"e", usage]
        record = _stream_record(events)
        assert record.ok, record.error
        assert (record.content_events, record.reasoning_events, len(record.token_times)) == (8, 1, 9)
        assert (record.output_tokens, record.token_source, record.finish_reason) == (9, "usage", "length")
        assert record.invalid_utf8 == 1


def test_answers_that_arrive_whole_are_counted_and_said() -> None:
    """A server that sends a whole answer in one burst (seen: vLLM on CPU at one user, 41 of 64 answers,
    its API server behind its engine) gives TPOT 0 and no streaming rate: counted, said in the notes and
    in the demo's answer, never a stream_tps median of the few that streamed passed off as everyone's."""
    from types import SimpleNamespace

    from loadgen.report import measurability_notes
    from tools.demo import three_answers

    stats = PhaseStats("p", ())
    whole = record(100, [0, 0, 0], tokens=4)  # four tokens and the end, all in the first token's read
    streamed = record(100, [20, 20, 20], tokens=4)
    for r in (whole, whole, streamed):
        r.outcome = "success"
        stats.add(r)
    summary = stats.summary(95)
    assert summary["tokens"]["arrived_whole"] == 2 and summary["latency_s"]["stream_tps"]["count"] == 1
    run = SimpleNamespace(scenario=SimpleNamespace(stream=True), stats=[stats])
    note, coalesced = measurability_notes(run)  # a whole answer's gaps were read in one read, too
    assert coalesced.startswith("6 of 9 gaps between token events")
    assert note.startswith("2 of 3 streamed answers arrived whole") and "stream_tps) leaves them out" in note
    fast = three_answers({"phases": [{**summary, "level": 1}]})[0]
    assert "2 of 3 answers arrived whole, in one burst, so no rate after the first token" in fast


def test_gaps_read_in_one_read_are_counted_not_timed() -> None:
    """Events that arrived in one read share its time: their gaps are counted as read-coalesced (ITL 0,
    the true gap unknown) in the phase, on /metrics and in a note; a stream of separate reads has none."""
    from types import SimpleNamespace

    from loadgen.metrics import RunMetrics
    from loadgen.report import measurability_notes

    stats, metrics = PhaseStats("p", ()), RunMetrics("s", "r", "m", "chat", "closed")
    burst = record(100, [0, 0, 30, 0], tokens=5)  # 5 events in 2 reads: 3 gaps of 0
    streamed = record(100, [20, 20, 20, 20], tokens=5)
    assert (burst.coalesced_gaps, streamed.coalesced_gaps) == (3, 0)
    for r in (burst, streamed):
        metrics.on_sent()
        metrics.on_done(r)
        stats.add(r)
    assert stats.summary(95)["tokens"]["coalesced_gaps"] == metrics.coalesced_gaps == 3
    run = SimpleNamespace(scenario=SimpleNamespace(stream=True), stats=[stats])
    assert any(n.startswith("3 of 8 gaps between token events (37.5%) were read-coalesced") for n in
               measurability_notes(run))  # fmt: skip
    unstreamed = record(100, [0, 0], tokens=3)
    unstreamed.stream = False
    assert unstreamed.coalesced_gaps == 0
