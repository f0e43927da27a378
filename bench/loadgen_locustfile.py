"""Locust FastHttpUser for bench/loadgen_bench.py (runs in the peers' venv).

Locust has no notion of tokens: its response time for a streamed request ends at the headers unless
the body is read. Here each task reads the whole SSE body (so the request really completes) and counts
the content events by hand; Locust's own statistics then time the full response, not tokens.
"""

from __future__ import annotations

from locust import FastHttpUser, events, task

PAYLOAD = {
    "model": "m",
    "messages": [{"role": "user", "content": " ".join(["the"] * 32)}],
    "max_tokens": 10,
    "stream": True,
    "stream_options": {"include_usage": True},
}
EVENTS = {"count": 0, "responses": 0}


class ChatUser(FastHttpUser):
    @task
    def chat(self) -> None:
        with self.client.post("/v1/chat/completions", json=PAYLOAD, catch_response=True) as response:
            body = response.content or b""
            EVENTS["count"] += body.count(b'"content"')
            EVENTS["responses"] += 1
            response.success() if response.status_code == 200 else response.failure(response.status_code)


@events.quitting.add_listener
def report_events(environment, **_kwargs) -> None:
    print(f"LOADGEN_BENCH_EVENTS {EVENTS['count']} {EVENTS['responses']}", flush=True)
