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
