"""One request's timeline and the latency figures derived from it.

All instants are `time.perf_counter_ns()` readings (CLOCK_MONOTONIC on Linux, the same clock as
`time.monotonic_ns()` in every process on the host, which is what lets tests compare them with a
server's own send times). Definitions (README.md has the full text):

- dispatch delay = sent - scheduled (closed loop: the worker was free; open loop: the planned arrival)
- TTFT = first token event of any kind (content or reasoning) - sent
- TTFO = first content token event - sent
- E2E  = end of the response (`[DONE]` or the end of the body) - sent
- TPOT = (E2E - TTFT) / (output_tokens - 1), only when output_tokens > 1
- ITL  = per token: the gap before a token event divided among the tokens that event carried, pooled
- per-user rate (user_tps) = output_tokens / (last token - sent): the rate a person receives,
  waiting for the first token included (unstreamed: the last token comes with the end of the body)
- streaming rate (stream_tps) = 1 / TPOT: the rate after the first token

One event can carry several tokens (speculative decoding, multi-token prediction, a server's stream
interval). How many, the server says with cumulative `usage` on every event (vLLM's and SGLang's
`stream_options.continuous_usage_stats`) or one `logprobs.content` entry per token; the record keeps
those counts. When it does not say, but its final usage counts more tokens than there were events,
each gap is divided by the request's mean tokens per event (EVENT_BASES names the three cases).
"""

from __future__ import annotations

from itertools import pairwise

from loadgen.outcomes import Outcome

NS = 1e-9
# How the tokens of each event are known: the server said per event; each event is one token (no
# usage, or usage equal to the events); or the server's total exceeds the events and each event
# after the first is taken to carry the mean.
EVENT_BASES = ("server", "one per event", "mean")


class RequestRecord:
    """Everything measured about one request. Plain slots: one of these per request, no churn."""

    __slots__ = (
        "content_events",
        "counted_events",
        "end_ns",
        "error",
        "finish_reason",
        "first_output_ns",
        "http_status",
        "invalid_utf8",
        "multi_token_events",
        "outcome",
        "output_tokens",
        "phase",
        "prompt_source",
        "prompt_tokens",
        "reasoning_events",
        "reasoning_extra",
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
        self.outcome: Outcome = "success"
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
        self.counted_events = 0  # token events whose token count the server gave (usage, logprobs)
        self.reasoning_extra = 0  # tokens beyond one in reasoning-only events of known size
        self.multi_token_events: dict[int, int] | None = None  # event index -> tokens, where > 1
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

    def fail(self, outcome: Outcome, error: str) -> None:
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

    def event_gaps_s(self) -> list[float]:
        """Gaps between consecutive token events, in seconds (none without streaming)."""
        if not self.stream:
            return []
        return [(later - earlier) * NS for earlier, later in pairwise(self.token_times)]

    @property
    def coalesced_gaps(self) -> int:
        """Gaps between token events that arrived in one read (equal arrival times): their ITL samples are
        0 and the true time between the events is unknown to the client (its read came after both)."""
        if not self.stream:
            return 0
        return sum(1 for earlier, later in pairwise(self.token_times) if earlier == later)

    @property
    def event_basis(self) -> str:
        """One of EVENT_BASES."""
        events = len(self.token_times)
        if self.counted_events and self.counted_events == events:
            return "server"
        if self.token_source == "usage" and self.output_tokens > events >= 1:
            return "mean"
        return "one per event"

    def itl_s(self) -> tuple[list[float], list[int] | None]:
        """Inter-token latency per token, in seconds: for each gap between token events, the gap divided
        among the tokens the later event carried, and how many tokens that value stands for (None: one
        each). Weights instead of repeated values, so a server claiming huge events cannot make the
        client allocate per claimed token. Empty without streaming."""
        gaps = self.event_gaps_s()
        basis = self.event_basis
        if basis == "mean":  # the first event is taken to carry one token (it comes from the prefill)
            scale = len(gaps) / (self.output_tokens - 1)
            return [gap * scale for gap in gaps], None
        multi = self.multi_token_events
        if basis == "one per event" or not multi:
            return gaps, None
        weights = [multi.get(index, 1) for index in range(1, len(gaps) + 1)]
        return [gap / tokens for gap, tokens in zip(gaps, weights, strict=True)], weights

    def event_tokens(self) -> list[int] | None:
        """Tokens per token event, when the server said; None otherwise."""
        if self.event_basis != "server":
            return None
        multi = self.multi_token_events or {}
        return [multi.get(index, 1) for index in range(len(self.token_times))]

    @property
    def multi_token_event_count(self) -> int | None:
        """Events that carried more than one token; None when that is not known (basis `mean`)."""
        basis = self.event_basis
        if basis == "mean":
            return None
        return len(self.multi_token_events or ()) if basis == "server" else 0

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
            "itl_s": self.itl_s()[0],  # per gap: seconds per token; event_tokens[1:] are the weights
            "token_events": len(self.token_times),
            "event_tokens": self.event_tokens(),
            "event_token_basis": self.event_basis if self.stream else None,
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
