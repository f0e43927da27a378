"""Trace replay: Mooncake traces (timestamp, input_length, output_length, hash_ids) and plain timestamped
JSONL, sent at the trace's times scaled by --time-scale, with prompts whose shared blocks stay shared
in tokens (a real byte-level BPE tokenizer) and in an engine's prefix cache (the simulator's counters)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import httpx
import pytest
import tokenizers

from loadgen import trace_blocks, traces
from loadgen.errors import WorkloadError
from loadgen.report import render
from loadgen.traces import BLOCK_TOKENS, load_trace
from loadgen.workloads import WORDS, TextMaker, Tokenizer, load_jsonl
from tests.simulator.conftest import simulator
from tests.simulator.test_pressure import metric_values


def write_lines(path: Path, lines: list[dict]) -> str:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path)


def byte_level_bpe(directory: Path) -> str:
    """A GPT-2-style byte-level BPE tokenizer with a small vocabulary, so most words are several tokens."""
    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()
    )
    rng = random.Random(1)
    tokenizer.train_from_iterator((" ".join(rng.choices(WORDS, k=200)) for _ in range(200)), trainer)
    tokenizer.save(str(directory / "tokenizer.json"))
    return str(directory)


MOONCAKE = [
    {"timestamp": 0, "input_length": 1500, "output_length": 10, "hash_ids": [1, 2, 3]},
    {"timestamp": 40, "input_length": 1400, "output_length": 10, "hash_ids": [1, 2, 9]},
    {"timestamp": 20, "input_length": 1000, "output_length": 10, "hash_ids": [1, 7]},
    {"timestamp": 60, "input_length": 300, "output_length": 7, "hash_ids": [5]},
]


def common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def test_shared_hash_ids_are_shared_tokens_with_a_real_bpe_tokenizer(tmp_path: Path) -> None:
    tokenizer = Tokenizer(byte_level_bpe(tmp_path))
    trace = load_trace(
        "mooncake",
        write_lines(tmp_path / "t.jsonl", MOONCAKE),
        TextMaker(tokenizer),
        random.Random(0),
        None,
        1.0,
    )
    prompts = [trace.next().messages[0]["content"] for _ in range(4)]  # timestamp order: 0, 20, 40, 60 ms
    ids = [tokenizer.encode(prompt) for prompt in prompts]
    blocks = trace.blocks
    assert blocks is not None
    # the trace's ids 1 and 2 are the first two blocks of its first line (ids are numbered densely)
    first, second = 0, 1
    block = {1: blocks.block(first, BLOCK_TOKENS), 2: blocks.block(second, BLOCK_TOKENS)}
    assert all(len(tokenizer.encode(text)) == BLOCK_TOKENS for text in block.values())  # 512 tokens each
    one, two = len(tokenizer.encode(block[1])), len(tokenizer.encode(block[1] + " " + block[2]))
    # [1,2,3] and [1,2,9] share exactly the tokens of blocks 1 and 2; [1,7] shares block 1 with both
    assert common_prefix(ids[0], ids[2]) == two
    assert common_prefix(ids[0], ids[1]) == one and common_prefix(ids[1], ids[2]) == one
    assert ids[0][:one] == tokenizer.encode(block[1])
    # in context a block stays (about) 512 tokens: its first word gains the space before it
    assert abs(two - 2 * BLOCK_TOKENS) <= 2, two
    # every prompt has the trace's length, the partial last block included (within the boundary tokens)
    lengths = [line["input_length"] for line in sorted(MOONCAKE, key=lambda line: line["timestamp"])]
    assert all(abs(len(tokens) - length) <= 3 for tokens, length in zip(ids, lengths, strict=True)), [
        len(tokens) for tokens in ids
    ]
    assert trace.describe()["unique_blocks"] == 6


def test_without_a_tokenizer_blocks_are_words_and_shared_as_text(tmp_path: Path) -> None:
    text = TextMaker(None)
    text.tokens_per_word = 1.25  # as calibrated from a server's usage
    trace = load_trace(
        "mooncake", write_lines(tmp_path / "t.jsonl", MOONCAKE), text, random.Random(0), None, 1.0
    )
    a, c, b, d = (trace.next().messages[0]["content"] for _ in range(4))
    first_two = " ".join(a.split(" ")[: 2 * round(512 / 1.25)])
    assert b.startswith(first_two + " ") and not c.startswith(first_two)
    assert len(d.split(" ")) == round(300 / 1.25)


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ({"timestamp": -1, "input_length": 10, "output_length": 1, "hash_ids": [1]}, "timestamp"),
        ({"timestamp": 0, "input_length": 0, "output_length": 1, "hash_ids": []}, "input_length"),
        ({"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1, 2]}, "at most 1"),
        ({"timestamp": 0, "input_length": 10, "output_length": 0, "hash_ids": [1]}, "output_length"),
        ({"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": "1"}, "hash_ids"),
        ({"timestamp": 0, "input_length": 1 << 30, "output_length": 1, "hash_ids": [1]}, "input_length"),
        ({"timestamp": 0, "input_length": 10, "output_length": 1 << 70, "hash_ids": [1]}, "output_length"),
    ],
)
def test_bad_trace_lines_are_clear_errors(tmp_path: Path, line: dict, fragment: str) -> None:
    path = write_lines(tmp_path / "t.jsonl", [line])
    with pytest.raises(WorkloadError, match=fragment):
        load_trace("mooncake", path, TextMaker(None), random.Random(0), None, 1.0)


def test_a_trace_of_too_many_distinct_blocks_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(trace_blocks, "MAX_BLOCKS", 5)
    lines = [{"timestamp": i, "input_length": 1024, "output_length": 1} for i in range(3)]  # 2 blocks each
    with pytest.raises(WorkloadError, match=r"t.jsonl:3: more than 5 distinct blocks"):
        load_trace(
            "mooncake", write_lines(tmp_path / "t.jsonl", lines), TextMaker(None), random.Random(0), None, 1.0
        )


def test_missing_ids_are_unique_blocks(tmp_path: Path) -> None:
    lines = [{"timestamp": 0, "input_length": 1200, "output_length": 1, "hash_ids": [4]}] * 2
    trace = load_trace(
        "mooncake", write_lines(tmp_path / "t.jsonl", lines), TextMaker(None), random.Random(0), None, 1.0
    )
    first, second = (trace.next().messages[0]["content"].split(" ") for _ in range(2))
    assert first[:512] == second[:512] and first[512:] != second[512:]


def shared_words(a: str, b: str) -> int:
    return common_prefix(a.split(" "), b.split(" "))  # type: ignore[arg-type]


def test_blocks_without_ids_are_shared_with_no_other_line(tmp_path: Path) -> None:
    """A line's own blocks (fewer ids than blocks, or no hash_ids at all) never equal another line's
    block: ids of its own were once -(line x blocks + k) - 1, so line 3's only block was line 1's first
    one, and a trace's own negative ids met them too (a prefix hit the trace never had)."""
    lines = [
        {"timestamp": 0, "input_length": 1000, "output_length": 1, "hash_ids": []},
        {"timestamp": 1, "input_length": 1536, "output_length": 1, "hash_ids": []},
        {"timestamp": 2, "input_length": 300, "output_length": 1},  # no hash_ids: all its own
        {"timestamp": 3, "input_length": 300, "output_length": 1, "hash_ids": None},
        {"timestamp": 4, "input_length": 300, "output_length": 1, "hash_ids": [-4]},
        {"timestamp": 5, "input_length": 600, "output_length": 1, "hash_ids": [2**63 + 7, -4]},
        {"timestamp": 6, "input_length": 600, "output_length": 1, "hash_ids": [2**63 + 7]},
    ]
    trace = load_trace(
        "mooncake", write_lines(tmp_path / "t.jsonl", lines), TextMaker(None), random.Random(0), None, 1.0
    )
    prompts = [trace.next().messages[0]["content"] for _ in lines]
    for i, a in enumerate(prompts):
        for j, b in enumerate(prompts[i + 1 :], start=i + 1):
            if {i, j} != {5, 6}:  # 5 and 6 share the 64-bit id's block, and only these two
                assert shared_words(a, b) < 4, (i, j)
    assert shared_words(prompts[5], prompts[6]) == round(BLOCK_TOKENS / 1.0)
    assert trace.describe()["unique_blocks"] == 2 + 3 + 1 + 1 + 1 + 2  # the trace's own ids: -4 and 2**63+7


def test_more_distinct_blocks_than_the_word_pool_has_windows(tmp_path: Path, monkeypatch) -> None:
    """The pool of words grows with the trace: every distinct block keeps a window of its own."""
    monkeypatch.setattr(trace_blocks, "POOL_WORDS", 600)  # 600 words: fewer than 200 windows of 512 words
    lines = [
        {"timestamp": i, "input_length": 512, "output_length": 1, "hash_ids": [i * 7919]} for i in range(200)
    ]
    trace = load_trace(
        "mooncake", write_lines(tmp_path / "t.jsonl", lines), TextMaker(None), random.Random(0), None, 1.0
    )
    prompts = {trace.next().messages[0]["content"] for _ in lines}
    assert len(prompts) == 200


def _replayed(trace: traces.Trace) -> list[list[tuple[int, float, str, int | None]]]:
    """A warm-up segment of 3 requests, then the rest within 0.5 s: (index, offset, prompt, max_tokens)."""
    segments = []
    for limit, duration in ((3, float("inf")), (None, 0.5)):
        segments.append(
            [(i, offset, item.messages[0]["content"], item.max_tokens)
             for i, offset, item in trace.arrivals(limit, duration)]
        )  # fmt: skip
    return segments


@pytest.mark.parametrize("kind", ["mooncake", "trace"])
@pytest.mark.parametrize("in_order", [True, False])
def test_a_worker_reads_only_its_slice_of_the_trace(tmp_path: Path, kind: str, in_order: bool) -> None:
    """A pool's worker holds its own requests of the trace (every count-th in time order), not the whole:
    together the slices replay exactly what one process does (same prompts, lengths drawn from the same
    seed, same segments after a warm-up), in order or not in the file."""
    from loadgen.slicing import Slice
    from loadgen.workloads import LengthDist

    rng = random.Random(5)
    lines = [{"timestamp": 37 * n, "input_length": rng.randint(1, 2000), "output_length": 9,
              "hash_ids": [rng.randrange(4)], "prompt": f"request {n}"} for n in range(25)]  # fmt: skip
    if not in_order:
        rng.shuffle(lines)
    if kind == "trace":
        lines = [{"timestamp": line["timestamp"], "prompt": line["prompt"]} for line in lines]
    path = write_lines(tmp_path / "t.jsonl", lines)
    lengths = LengthDist.parse("uniform:1:50")  # drawn per line from the run's generator

    def load(part: Slice) -> traces.Trace:
        return load_trace(kind, path, TextMaker(None), random.Random(3), lengths, 1.0, part)

    whole = _replayed(load(Slice()))
    assert [len(segment) for segment in whole] == [3, 14]  # 13 x 37 ms < 0.5 s < 14 x 37 ms
    for count in (2, 3):
        parts = [load(Slice(index, count)) for index in range(count)]
        assert [len(part.rows) for part in parts] == [Slice(i, count).share(25) for i in range(count)]
        replayed = [_replayed(part) for part in parts]
        assert [_replayed(load(Slice()).sliced(i, count)) for i in range(count)] == replayed  # Sliceable
        for segment in range(2):
            merged = sorted(entry for part in replayed for entry in part[segment])
            assert merged == whole[segment], (count, segment)
        assert all(part.describe() == parts[0].describe() for part in parts)


def test_json_nested_past_the_recursion_limit_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text('{"timestamp": 0, "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    for kind in ("mooncake", "trace"):
        with pytest.raises(WorkloadError, match=r"deep\.jsonl:1: not JSON"):
            load_trace(kind, str(path), TextMaker(None), random.Random(0), None, 1.0)
    with pytest.raises(WorkloadError, match=r"deep\.jsonl:1: not JSON"):
        load_jsonl(str(path), random.Random(0), None)


def test_replay_sends_each_request_when_the_scaled_trace_says(scripted, run_loadgen, tmp_path: Path) -> None:
    # 30 requests 40 ms apart in file order reversed (sorted on load), replayed twice as fast
    lines = [{"timestamp": 1000 + 40 * i, "prompt": f"question {i}", "max_tokens": 3} for i in range(30)]
    path = write_lines(tmp_path / "plain.jsonl", lines[::-1])
    result = run_loadgen(url=scripted.url, model="scripted", dataset=f"trace:{path}", time_scale=0.5)
    assert result.phase["phase"] == "replay" and result.phase["requests"]["succeeded"] == 30
    scheduled = sorted(record["scheduled_ns"] for record in result.records)
    offsets = [(ns - scheduled[0]) / 1e9 for ns in scheduled]
    assert offsets == pytest.approx([0.02 * i for i in range(30)], abs=1e-6)  # due times: exact
    arrival = result.phase["latency_s"]["dispatch"]
    # sent when due: the figure at 1,000 requests/s is bench/trace_replay.py's; here only that the median
    # request is not late by more than a loaded shared machine delays a timer (5 ms failed at load 15)
    assert arrival["count"] == 30 and arrival["median"] < 0.02
    assert (
        result.report["workload"]["span_s"] == pytest.approx(1.16)
        and result.report["config"]["time_scale"] == 0.5
    )
    assert "Arrival Error (sent - due)" in render(result.report)


def test_replay_with_request_and_duration_limits(scripted, run_loadgen, tmp_path: Path) -> None:
    lines = [{"timestamp": 100 * i, "prompt": "q", "max_tokens": 2} for i in range(50)]
    path = write_lines(tmp_path / "plain.jsonl", lines)
    assert (
        run_loadgen(url=scripted.url, model="scripted", dataset=f"trace:{path}", requests=7).phase[
            "requests"
        ]["sent"]
        == 7
    )
    timed = run_loadgen(url=scripted.url, model="scripted", dataset=f"trace:{path}", step_duration="0.45s")
    assert timed.phase["requests"]["sent"] == 5  # due at 0, 0.1, 0.2, 0.3, 0.4 s


def test_a_replay_takes_no_rate_or_concurrency() -> None:
    from loadgen.errors import ScenarioError
    from loadgen.scenario import Scenario

    with pytest.raises(ScenarioError, match="trace's timing; drop concurrency"):
        Scenario.build(None, {"url": "http://h:1", "dataset": "mooncake:x", "concurrency": 4})
    with pytest.raises(ScenarioError, match="time_scale scales a trace"):
        Scenario.build(None, {"url": "http://h:1", "time_scale": 2})


def test_replayed_sharing_reaches_the_engines_prefix_cache(run_loadgen, tmp_path: Path) -> None:
    """Ten requests that share their first two 512-token blocks, then one of their own: every one after
    the first hits those blocks in the simulator's prefix cache, as vLLM would. Without --tokenizer a
    block is round(512 / tokens-per-word) words, so about 512 of the simulator's tokens (its pieces
    split words over 6 letters): each request hits the full 16-token blocks of the shared text."""
    lines = [
        {"timestamp": 150 * i, "input_length": 1100, "output_length": 4, "hash_ids": [11, 12, 100 + i]}
        for i in range(10)
    ]
    path = write_lines(tmp_path / "shared.jsonl", lines)
    with simulator(tmp_path, "--profile", "rtx4090d-qwen3-4b-fp8") as url:
        before = metric_values(url)
        result = run_loadgen(url=url, dataset=f"mooncake:{path}", extra_body={"ignore_eos": True})
        after = metric_values(url)
        assert result.phase["requests"]["succeeded"] == 10
        assert result.report["workload"]["length_source"].startswith("calibrated")
        hits = after["vllm:prefix_cache_hits_total"] - before["vllm:prefix_cache_hits_total"]
        per_request = hits / 9
        assert per_request % 16 == 0 and 2 * BLOCK_TOKENS - 16 <= per_request <= 2 * BLOCK_TOKENS + 32, hits
        prompt = httpx.get(f"{url}/metrics", timeout=5)  # the engine is still up and answering
        assert prompt.status_code == 200
