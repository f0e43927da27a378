"""What reaches the server: URLs (path prefixes, a trailing /v1, query strings), the Authorization
header, stream_options.include_usage; and what never leaves the client (credentials in reports,
error messages, CR/LF in headers)."""

from __future__ import annotations

import asyncio
import json
import threading
from time import perf_counter_ns

import httpx
import pytest

from loadgen.client import ClientError, LoadClient, Timeouts, endpoint_url, redact_url
from loadgen.report import render
from loadgen.scenario import Scenario, ScenarioError
from loadgen.timing import RequestRecord
from tests.support.procs import free_port

CHAT = "/v1/chat/completions"


def test_bearer_header_and_include_usage_reach_the_server(scripted, run_loadgen, monkeypatch):
    monkeypatch.setenv("LOADGEN_TEST_KEY", "sk-reaches-the-server")
    before = len(scripted.stats()["models_requests"])
    result = run_loadgen(
        url=scripted.url, concurrency=2, requests=4, output_len=3, api_key_env="LOADGEN_TEST_KEY"
    )
    truth = scripted.records(result.run.run_id)
    assert len(truth) == 4
    assert {r["authorization"] for r in truth.values()} == {"Bearer sk-reaches-the-server"}
    assert {r["include_usage"] for r in truth.values()} == {True}
    discovery = scripted.stats()["models_requests"][before:]
    assert discovery and {m["authorization"] for m in discovery} == {"Bearer sk-reaches-the-server"}
    assert result.phase["tokens"]["output_source"] == {"usage": 4}


def test_calibration_probes_are_counted_apart_from_the_phases(scripted, run_loadgen):
    result = run_loadgen(url=scripted.url, concurrency=1, requests=2, output_len=2)
    probes = [r for r in httpx.get(f"{scripted.url}/records", timeout=30).json()
              if r["id"] and r["id"].startswith(f"{result.run.run_id}-setup-")]  # fmt: skip
    setup = result.report["setup_requests"]
    assert (setup["sent"], setup["succeeded"]) == (len(probes), 2)
    assert setup["prompt_tokens"] > 0 and setup["output_tokens"] >= 1
    assert result.phase["requests"]["sent"] == 2  # the probes are in no phase
    assert "Setup: 2 requests before the first phase" in render(result.report)


@pytest.mark.parametrize("suffix", ["/gw", "/gw/", "/gw/v1", "/gw/v1/"])
def test_a_path_prefix_is_kept_for_discovery_and_load(scripted, run_loadgen, suffix):
    before = len(scripted.stats()["models_requests"])
    result = run_loadgen(
        url=scripted.url + suffix + "?key=qs-secret-1", concurrency=1, requests=2, output_len=2
    )
    truth = scripted.records(result.run.run_id)
    assert {r["path"] for r in truth.values()} == {"/gw/v1/chat/completions?key=qs-secret-1"}
    assert [m["path"] for m in scripted.stats()["models_requests"][before:]] == [
        "/gw/v1/models?key=qs-secret-1"
    ]
    assert result.report["model"] == "scripted"
    assert result.report["config"]["url"] == f"{scripted.url}{suffix}?key=<redacted>"
    assert "qs-secret-1" not in json.dumps(result.report)


def test_endpoint_urls():
    for base in ("http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/"):
        assert str(endpoint_url(base, CHAT)) == "http://h:1/v1/chat/completions"
    assert str(endpoint_url("https://gw/a%20b/v1?k=1", "/v1/models")) == "https://gw/a%20b/v1/models?k=1"
    assert str(endpoint_url("https://gw/openai", CHAT)) == "https://gw/openai/v1/chat/completions"
    assert redact_url("http://u:pw@h:1/p?k=v&bare") == "http://<redacted>@h:1/p?k=<redacted>&<redacted>"


def sse_response(request: httpx.Request) -> httpx.Response:
    events = [
        {"choices": [{"index": 0, "delta": {"content": "a"}}]},
        {"choices": [{"index": 0, "delta": {"content": "b"}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
    ]
    chunks = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Chunks(chunks))


class Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self):
        for chunk in self.chunks:
            yield chunk


def test_https_code_path_builds_the_same_urls_and_headers():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": "m"}]})
        return sse_response(request)

    async def main() -> RequestRecord:
        client = LoadClient(
            "https://gw.example/api/v1?key=k-1234", "sk-https", Timeouts(), 4,
            https_transport=httpx.MockTransport(handler),
        )  # fmt: skip
        assert await client.discover_model() == "m"
        record = RequestRecord("r-1", "p", perf_counter_ns(), True)
        await client.execute(CHAT, b'{"stream": true}', record)
        await client.aclose()
        return record

    record = asyncio.run(main())
    assert record.ok and record.output_tokens == 2 and len(record.token_times) == 2
    assert [str(r.url) for r in seen] == [
        "https://gw.example/api/v1/models?key=k-1234",
        "https://gw.example/api/v1/chat/completions?key=k-1234",
    ]
    assert {r.headers["authorization"] for r in seen} == {"Bearer sk-https"}
    assert seen[1].headers["x-request-id"] == "r-1"


def test_url_credentials_become_basic_auth_and_stay_out_of_reports(scripted, run_loadgen):
    url = scripted.url.replace("http://", "http://alice:pw-secret-9@")
    result = run_loadgen(url=url, concurrency=1, requests=1, output_len=2)
    truth = scripted.records(result.run.run_id)
    assert {r["authorization"] for r in truth.values()} == {"Basic YWxpY2U6cHctc2VjcmV0LTk="}
    assert result.report["config"]["url"] == scripted.url.replace("http://", "http://<redacted>@")
    assert "pw-secret-9" not in json.dumps(result.report)


async def _echo_401(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers every request 401 with the request head in the body (as some gateways echo keys)."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            await reader.readexactly(length)
            body = b"invalid credentials in: " + head
            writer.write(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def test_error_messages_never_carry_the_key_or_url_secrets():
    async def main() -> tuple[str, RequestRecord]:
        server = await asyncio.start_server(_echo_401, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = LoadClient(f"http://127.0.0.1:{port}/v1?token=tok-in-query", "sk-echoed-back", Timeouts(), 2)
        with pytest.raises(ClientError) as caught:
            await client.discover_model()
        record = RequestRecord("r-1", "p", perf_counter_ns(), True)
        await client.execute(CHAT, b"{}", record)
        await client.aclose()
        server.close()
        return str(caught.value), record

    message, record = asyncio.run(main())
    assert record.outcome == "http_4xx" and "invalid credentials" in record.error
    for text in (message, record.error):
        assert "sk-echoed-back" not in text and "tok-in-query" not in text
        assert "<redacted>" in text


@pytest.mark.parametrize("key", ["sk-abc\r\nx-injected: 1", "sk-abc\nx-injected: 1", "sk-\x00abc"])
def test_api_key_with_line_breaks_is_refused(tmp_path, key):
    path = tmp_path / "key"
    path.write_text(key)
    scenario = Scenario.build(None, {"url": "http://127.0.0.1:1", "api_key_file": str(path)})
    with pytest.raises(ScenarioError, match=r"line break|printable"):
        scenario.api_key()
    with pytest.raises(ClientError, match=r"line break|printable"):
        LoadClient("http://127.0.0.1:1", key, Timeouts(), 1)


def test_api_key_problems_stop_a_run_with_a_clear_message(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "key"
    path.write_text("sk-one\r\nx-injected: yes\n")
    result = subprocess.run(
        [sys.executable, "-m", "loadgen", "run", "--url", f"http://127.0.0.1:{free_port()}", "--model", "m",
         "--api-key-file", str(path), "--requests", "1", "--metrics-address", "none"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "line break" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "x-injected" not in result.stderr


async def _picky_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Like `transformers serve`: /v1/models answers 500, a body with `ignore_eos` gets 422."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        lengths = [
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ]
        body = await reader.readexactly(lengths[0] if lengths else 0)
        if head.startswith(b"GET"):
            status, reply = "500 Internal Server Error", {"detail": "Internal Server Error"}
        elif b"ignore_eos" in body:
            status, reply = (
                "422 Unprocessable Entity",
                {"detail": "Unexpected fields in the request: {'ignore_eos'}"},
            )
        else:
            assert b'"model"' not in body  # discovery failed: no model named
            status = "200 OK"
            usage = {"prompt_tokens": len(body) // 8, "completion_tokens": 1, "total_tokens": 1}
            reply = {"choices": [{"index": 0, "finish_reason": "length", "text": "a"}], "usage": usage}
        data = json.dumps(reply).encode()
        writer.write(f"HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: {len(data)}\r\n".encode())
        writer.write(b"content-type: application/json\r\n\r\n" + data)
        await writer.drain()
    finally:
        writer.close()


def test_a_refused_body_field_is_dropped_once_and_a_failed_discovery_sends_no_model(run_loadgen):
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(_picky_server, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        result = run_loadgen(
            url=f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}",
            endpoint="completions",
            stream=False,
            concurrency=2,
            requests=6,
            output_len=1,
            extra_body={"ignore_eos": True, "top_k": 5},
        )
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
    report = result.report
    assert result.phase["requests"]["succeeded"] == 6
    assert report["model"] is None and report["model_note"].startswith(
        "not discovered (/v1/models: HTTP 500)"
    )
    assert list(report["dropped_body_fields"]) == ["ignore_eos"]  # top_k was not refused: still sent
    assert report["setup_requests"]["sent"] == 3 and report["setup_requests"]["succeeded"] == 2
