"""One request's timeline and the latency figures derived from it.

All instants are `time.perf_counter_ns()` readings (CLOCK_MONOTONIC on Linux, the same clock as
`time.monotonic_ns()` in every process on the host, which is what lets tests compare them with a
server's own send times). Definitions (README.md has the full text):

- dispatch delay = sent - scheduled (closed loop: the worker was free; open loop: the planned arrival)
- TTFT = first token event of any kind (content or reasoning) - sent
- TTFO = first content token event - sent
- E2E  = end of the response (`[DONE]` or the end of the body) - sent
- TPOT = (E2E - TTFT) / (output_tokens - 1), only when output_tokens > 1
- ITL  = gaps between consecutive token events, pooled over requests
- per-user rate (user_tps) = output_tokens / (last token - sent): the rate a person receives,
  waiting for the first token included (unstreamed: the last token comes with the end of the body)
- streaming rate (stream_tps) = 1 / TPOT: the rate after the first token
"""

from __future__ import annotations

from itertools import pairwise

OUTCOMES = (
    "success",
    "connect",
    "timeout",
    "http_429",
    "http_4xx",
    "http_5xx",
    "stream_broken",
    "malformed",
    "too_large",
    "cancelled",
)

NS = 1e-9


class RequestRecord:
    """Everything measured about one request. Plain slots: one of these per request, no churn."""

    __slots__ = (
        "content_events",
        "end_ns",
        "error",
        "finish_reason",
        "first_output_ns",
        "http_status",
        "invalid_utf8",
        "outcome",
        "output_tokens",
        "phase",
        "prompt_source",
        "prompt_tokens",
        "reasoning_events",
        "reasoning_tokens",
        "request_id",
        "resent_ns",
        "retries",
        "retry_after_s",
        "scheduled_ns",
        "sent_ns",
        "stream",
        "text",
        "throttled",
        "token_source",
        "token_times",
        "usage_disagrees",
        "usage_tokens",
    )

    def __init__(self, request_id: str, phase: str, scheduled_ns: int, stream: bool) -> None:
        self.request_id = request_id
        self.phase = phase
        self.scheduled_ns = scheduled_ns
        self.sent_ns = 0
        self.end_ns = 0
        self.first_output_ns = 0
        self.token_times: list[int] = []
        self.stream = stream
        self.outcome = "success"
        self.http_status = 0
        self.error = ""
        self.finish_reason: str | None = None
        self.prompt_tokens: int | None = None
        self.prompt_source: str | None = None  # usage, tokenizer, synthetic; None: unknown
        self.output_tokens = 0
        self.reasoning_tokens = 0
        self.token_source = "counted"  # usage, counted (token events), tokenizer, none
        self.usage_tokens: int | None = None  # usage.completion_tokens as the server sent it
        self.usage_disagrees = False  # usage and the stream's token events disagree (tokens.TokenCounter)
        self.content_events = 0
        self.reasoning_events = 0
        self.invalid_utf8 = 0
        self.retries = 0
        self.resent_ns = 0  # when the request was sent again (a reused connection found dead); 0: not
        self.throttled = False  # a 429, or a 503 with Retry-After
        self.retry_after_s: float | None = None  # what a throttled response's Retry-After asked for
        self.text: list[str] | None = None

    def resent(self, resent_ns: int) -> None:
        """The transport sent the request a second time, on a fresh connection, at `resent_ns`. Latency
        still counts from the first send (what the user waited); the wait until the re-send is kept."""
        if resent_ns:
            self.retries, self.resent_ns = 1, resent_ns

    @property
    def resend_wait_s(self) -> float:
        return (self.resent_ns - self.sent_ns) * NS if self.resent_ns else 0.0

    def fail(self, outcome: str, error: str) -> None:
        self.outcome = outcome
        self.error = error[:300]

    @property
    def ok(self) -> bool:
        return self.outcome == "success"

    @property
    def dispatch_s(self) -> float:
        return max(0, self.sent_ns - self.scheduled_ns) * NS

    @property
    def e2e_s(self) -> float:
        return (self.end_ns - self.sent_ns) * NS

    @property
    def ttft_s(self) -> float | None:
        if not self.stream or not self.token_times:
            return None
        return (self.token_times[0] - self.sent_ns) * NS

    @property
    def ttfo_s(self) -> float | None:
        if not self.stream or not self.first_output_ns:
            return None
        return (self.first_output_ns - self.sent_ns) * NS

    @property
    def tpot_s(self) -> float | None:
        ttft = self.ttft_s
        if ttft is None or self.output_tokens < 2:
            return None
        return (self.e2e_s - ttft) / (self.output_tokens - 1)

    @property
    def user_tps(self) -> float | None:
        """Output tokens over the time from sending to the last token (queueing for the first included)."""
        last = self.token_times[-1] if self.stream and self.token_times else self.end_ns
        if self.output_tokens < 1 or last <= self.sent_ns:
            return None
        return self.output_tokens / ((last - self.sent_ns) * NS)

    @property
    def stream_tps(self) -> float | None:
        """1 / TPOT: the rate after the first token."""
        tpot = self.tpot_s
        return 1.0 / tpot if tpot else None

    def itl_s(self) -> list[float]:
        """Gaps between consecutive token events, in seconds (none without streaming)."""
        if not self.stream:
            return []
        return [(later - earlier) * NS for earlier, later in pairwise(self.token_times)]

    def as_json(self) -> dict:
        """The per-request JSONL record (times in seconds; absolute instants in ns, same clock)."""
        return {
            "request_id": self.request_id,
            "phase": self.phase,
            "outcome": self.outcome,
            "http_status": self.http_status,
            "error": self.error or None,
            "scheduled_ns": self.scheduled_ns,
            "sent_ns": self.sent_ns,
            "sends_ns": [self.sent_ns, self.resent_ns] if self.resent_ns else [self.sent_ns],
            "end_ns": self.end_ns,
            "dispatch_delay_s": self.dispatch_s,
            "ttft_s": self.ttft_s,
            "ttfo_s": self.ttfo_s,
            "tpot_s": self.tpot_s,
            "user_tps": self.user_tps,
            "stream_tps": self.stream_tps,
            "e2e_s": self.e2e_s if self.end_ns else None,
            "itl_s": self.itl_s(),
            "token_events": len(self.token_times),
            "prompt_tokens": self.prompt_tokens,
            "prompt_token_source": self.prompt_source,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "token_source": self.token_source,
            "usage_output_tokens": self.usage_tokens,
            "usage_disagrees": self.usage_disagrees,
            "finish_reason": self.finish_reason,
            "invalid_utf8_events": self.invalid_utf8,
            "retries": self.retries,
            "throttled": self.throttled,
            "retry_after_s": self.retry_after_s,
        }
