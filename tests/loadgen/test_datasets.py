"""Datasets through the runner: the requests that reach the server carry the dataset's own lengths."""

from __future__ import annotations

import json


def test_sharegpt_answer_lengths_become_max_tokens(scripted, run_loadgen, tmp_path):
    path = tmp_path / "sg.json"
    answers = {"first question": "one two three", "second question": "a b c d e f g"}
    path.write_text(json.dumps([
        {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
        for q, a in answers.items()
    ]))  # fmt: skip
    result = run_loadgen(
        url=scripted.url, model="scripted", concurrency=1, requests=4, dataset=f"sharegpt:{path}"
    )
    truth = scripted.records(result.run.run_id)
    assert result.phase["requests"]["succeeded"] == 4
    assert sorted(r["max_tokens"] for r in truth.values()) == [3, 3, 7, 7]  # words of each answer
    assert result.phase["tokens"]["output"] == 20
    assert result.report["workload"]["output_len"] == "from the dataset"


def test_jsonl_max_tokens_per_line_are_sent_and_output_len_overrides(scripted, run_loadgen, tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        '{"prompt": "hi", "max_tokens": 2}\n'
        '{"messages": [{"role": "user", "content": "x"}], "max_tokens": 9}\n'
    )
    own = run_loadgen(url=scripted.url, model="scripted", concurrency=1, requests=2, dataset=f"jsonl:{path}")
    assert sorted(r["max_tokens"] for r in scripted.records(own.run.run_id).values()) == [2, 9]
    fixed = run_loadgen(
        url=scripted.url, model="scripted", concurrency=1, requests=2, dataset=f"jsonl:{path}", output_len=5
    )
    assert [r["max_tokens"] for r in scripted.records(fixed.run.run_id).values()] == [5, 5]


def test_synthetic_prompts_keep_a_default_output_length(scripted, run_loadgen):
    result = run_loadgen(url=scripted.url, model="scripted", concurrency=1, requests=1, input_len=8)
    assert [r["max_tokens"] for r in scripted.records(result.run.run_id).values()] == [128]
    assert result.report["workload"]["output_len"] == "128"


def test_a_jsonl_dataset_is_read_line_by_line_within_budgets(tmp_path, monkeypatch):
    """A `jsonl:` dataset had no budget: read whole into memory (a 1 GB line took 2.1 GB of RSS), and a
    byte that is not UTF-8 was a traceback. It is read as a trace is, line by line."""
    import random

    import pytest

    from loadgen import workloads
    from loadgen.errors import WorkloadError

    monkeypatch.setattr(workloads, "MAX_LINE_BYTES", 1000)
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"prompt": "x" * 5000}) + "\n")
    with pytest.raises(WorkloadError, match=r"big\.jsonl:1: a line longer than 1000 bytes"):
        workloads.load_jsonl(str(path), random.Random(0), None)
    path.write_bytes(b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(WorkloadError, match=r"big\.jsonl:1: not JSON"):
        workloads.load_jsonl(str(path), random.Random(0), None)
    path.write_text('{"prompt": "a"}\n\n{"messages": [{"role": "user", "content": "b"}], "max_tokens": 3}\n')
    loaded = workloads.load_jsonl(str(path), random.Random(0), None)
    assert sorted(item.messages[0]["content"] for item in loaded.items) == ["a", "b"]
