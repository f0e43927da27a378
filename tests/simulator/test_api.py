"""The OpenAI-compatible API behaves like vLLM's: stream shapes, usage, ignore_eos, max_tokens, errors."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.simulator.conftest import simulator, sse_events
from tests.simulator.test_pressure import metric_values

CHAT = {"messages": [{"role": "user", "content": "hello there"}]}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with simulator(
        tmp_path_factory.mktemp("simulator"), "--profile", "tiny", "--model", "test-model"
    ) as base:
        yield base


def test_models_health_version_load(url: str) -> None:
    models = httpx.get(f"{url}/v1/models", timeout=5).json()
    assert [card["id"] for card in models["data"]] == ["test-model"]
    assert models["data"][0]["max_model_len"] == 1024
    assert httpx.get(f"{url}/health", timeout=5).status_code == 200
    assert httpx.get(f"{url}/version", timeout=5).json()["version"].startswith("0.33.0")
    assert httpx.get(f"{url}/load", timeout=5).json() == {"server_load": 0}


def test_chat_stream_shape_with_usage(url: str) -> None:
    body = {
        **CHAT,
        "max_tokens": 5,
        "stream": True,
        "ignore_eos": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    tokens = chunks[1:-1]
    assert len(tokens) == 5  # one token per chunk
    assert all(chunk["choices"][0]["delta"]["content"].startswith(" ") for chunk in tokens)
    assert [chunk["choices"][0]["finish_reason"] for chunk in tokens] == [None] * 4 + ["length"]
    usage = chunks[-1]
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == 5
    assert usage["usage"]["total_tokens"] == usage["usage"]["prompt_tokens"] + 5


def test_completion_stream_with_continuous_usage(url: str) -> None:
    body = {"prompt": "count with me", "max_tokens": 3, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True}}  # fmt: skip
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=10) as response:
        chunks = [json.loads(event) for event in sse_events(response)[:-1]]
    assert [chunk["object"] for chunk in chunks] == ["text_completion"] * 4
    assert [chunk["usage"]["completion_tokens"] for chunk in chunks] == [1, 2, 3, 3]
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks[:3]] == [None, None, "length"]
    assert chunks[0]["usage"]["prompt_tokens"] == 3


def test_non_streamed_answers_are_deterministic(url: str) -> None:
    body = {**CHAT, "max_tokens": 8, "ignore_eos": True}
    first = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10).json()
    second = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10).json()
    assert first["object"] == "chat.completion"
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]
    assert len(first["choices"][0]["message"]["content"].split()) == 8
    assert first["usage"]["completion_tokens"] == 8
    assert first["choices"][0]["finish_reason"] == "length"


def test_without_ignore_eos_the_model_stops_by_itself(url: str) -> None:
    # tiny profile: natural answers are 8 to 64 tokens long
    reasons, lengths = set(), []
    for index in range(12):
        body = {"prompt": f"question {index}", "max_tokens": 500}
        choice = httpx.post(f"{url}/v1/completions", json=body, timeout=20).json()["choices"][0]
        reasons.add(choice["finish_reason"])
        lengths.append(len(choice["text"].split()))
    assert reasons == {"stop"}
    assert min(lengths) >= 8 and max(lengths) <= 64 and len(set(lengths)) > 1


def test_min_tokens_and_token_id_prompts(url: str) -> None:
    body = {"prompt": [1, 2, 3, 4, 5, 6, 7], "max_tokens": 300, "min_tokens": 100}
    response = httpx.post(f"{url}/v1/completions", json=body, timeout=30).json()
    assert response["usage"]["prompt_tokens"] == 7
    assert response["usage"]["completion_tokens"] >= 100


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/v1/chat/completions", {"messages": []}, 400, "messages"),
        ("/v1/chat/completions", {**CHAT, "model": "other"}, 404, "does not exist"),
        ("/v1/chat/completions", {**CHAT, "n": 2}, 400, "n=1"),
        ("/v1/chat/completions", {**CHAT, "max_tokens": 0}, 400, "max_tokens"),
        ("/v1/chat/completions", {**CHAT, "max_tokens": 5000}, 400, "maximum context length is 1024"),
        ("/v1/chat/completions", {**CHAT, "stream_options": {"include_usage": True}}, 400, "stream=True"),
        ("/v1/completions", {"prompt": {"text": "x"}}, 400, "prompt"),
        ("/v1/completions", {"prompt": "x", "stream": "yes"}, 400, "stream"),
        ("/v1/completions", [1, 2], 400, "JSON object"),
        ("/v1/completions", {"prompt": [1, 2**40]}, 400, "out of vocabulary"),
        ("/v1/completions", {"prompt": [1, -1]}, 400, "out of vocabulary"),
        ("/v1/chat/completions", {"messages": [{"role": 1, "content": "x"}]}, 400, "role"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            400,
            "text",
        ),
        ("/v1/chat/completions", {**CHAT, "min_tokens": -1}, 400, "min_tokens"),
    ],
)
def test_bad_requests_get_vllm_shaped_errors(url: str, path: str, body, status: int, fragment: str) -> None:
    response = httpx.post(f"{url}{path}", json=body, timeout=5)
    assert response.status_code == status
    error = response.json()["error"]
    assert fragment in error["message"]
    assert error["code"] == status


def test_invalid_json_is_a_400(url: str) -> None:
    response = httpx.post(f"{url}/v1/completions", content=b"{not json", timeout=5)
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]["message"]


def test_a_body_over_the_budget_is_a_413_and_the_server_goes_on(url: str) -> None:
    def endless() -> Iterator[bytes]:  # chunked: no Content-Length to refuse it by
        yield b'{"prompt": "'
        for _ in range(40):
            yield b"a" * (1 << 20)

    response = httpx.post(f"{url}/v1/completions", content=endless(), timeout=30)
    assert response.status_code == 413
    assert "over 32 MiB" in response.json()["error"]["message"]
    assert httpx.post(f"{url}/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=10).is_success


def test_client_disconnect_aborts_the_request(url: str) -> None:
    body = {**CHAT, "max_tokens": 500, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=10) as response:
        for index, _ in enumerate(response.iter_lines()):
            if index > 4:
                break
    deadline = time.monotonic() + 5
    while True:
        values = metric_values(url)
        if values["vllm:num_requests_running"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert values["vllm:num_requests_running"] == 0
    text = httpx.get(f"{url}/metrics", timeout=5).text
    assert (
        'vllm:request_success_total{engine="0",finished_reason="abort",model_name="test-model"} 1.0' in text
    )


def test_api_key_guards_v1_like_vllm(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SIM_TEST_KEY", "s3cret-key")
    with simulator(tmp_path, "--profile", "tiny", "--api-key-env", "SIM_TEST_KEY") as base:
        body = {"prompt": "hi", "max_tokens": 1}
        denied = httpx.post(f"{base}/v1/completions", json=body, timeout=5)
        assert (denied.status_code, denied.json()) == (401, {"error": "Unauthorized"})
        wrong = httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer nope"}, timeout=5)
        assert wrong.status_code == 401
        allowed = httpx.post(
            f"{base}/v1/completions", json=body, headers={"Authorization": "Bearer s3cret-key"}, timeout=5
        )
        assert allowed.status_code == 200
        assert httpx.get(f"{base}/metrics", timeout=5).status_code == 200  # open, as in vLLM
        assert httpx.get(f"{base}/health", timeout=5).status_code == 200
    assert "s3cret-key" not in (tmp_path / next(p.name for p in tmp_path.glob("simulator-*.log"))).read_text()


def test_junk_requests_never_get_a_5xx(url: str) -> None:
    rng = random.Random(11)
    junk = [None, True, -1, 0, 2**70, 1.5, "", "x" * 50, [], [None], {}, {"a": 1}, [1, "a"], [[1]], "🙂"]
    fields = ["model", "messages", "prompt", "max_tokens", "max_completion_tokens", "stream",
              "stream_options", "ignore_eos", "min_tokens", "n"]  # fmt: skip
    for _ in range(150):
        body = {field: rng.choice(junk) for field in rng.sample(fields, rng.randint(1, 5))}
        if body.get("max_completion_tokens", body.get("max_tokens")) is None:  # keep valid answers short
            body.pop("max_completion_tokens", None)
            body["max_tokens"] = 4
        for path in ("/v1/chat/completions", "/v1/completions"):
            response = httpx.post(f"{url}{path}", json=body, timeout=10)
            assert response.status_code < 500, (path, body, response.text)
    for raw in (b"", b"\xff\xfe", b"[", b"null", b'"text"'):
        assert httpx.post(f"{url}/v1/completions", content=raw, timeout=5).status_code == 400
    assert httpx.get(f"{url}/health", timeout=5).status_code == 200
