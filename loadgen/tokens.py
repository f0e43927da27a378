"""Output tokens of a request: recognizing token events cheaply, and settling the count.

TokenShape recognizes a stream's plain token events by their bytes, so most events need no JSON
parsing. count_event_tokens records how many tokens an event carried when the server says (several
with speculative decoding or a stream interval). take_usage keeps the server's `usage` counts that
are counts; TokenCounter.settle decides,
per --output-tokens-from, whether a request's output tokens are the server's usage or the token
events counted, after checking the two against each other.
"""

from __future__ import annotations

import logging

from loadgen.timing import RequestRecord

__all__ = [
    "MAX_TOKENS_PER_EVENT",
    "OUTPUT_TOKENS_FROM",
    "TokenCounter",
    "TokenShape",
    "count_event_tokens",
    "take_usage",
]

log = logging.getLogger("loadgen.client")

# --output-tokens-from: where a streamed request's output-token count comes from
OUTPUT_TOKENS_FROM = ("auto", "usage", "events")
# usage agrees with a stream when it reports at least one token per token event and at most this
# many (servers may send several tokens per event: speculative decoding, a stream interval)
MAX_TOKENS_PER_EVENT = 16


class TokenCounter:
    """One run's output-token policy (--output-tokens-from), and whether it has said so in the log."""

    def __init__(self, output_tokens_from: str = "auto") -> None:
        self._tokens_from = output_tokens_from
        self._disagreement_logged = False

    def settle(self, record: RequestRecord) -> None:
        """The output-token count and its source. A stream that has both a usage count and token
        events is checked: usage disagrees when it reports fewer tokens than events, or more than
        MAX_TOKENS_PER_EVENT per event. --output-tokens-from auto then counts the events, `usage`
        keeps the server's figure anyway, `events` always counts them; the disagreement is recorded
        either way (and logged once)."""
        events = record.content_events + record.reasoning_events
        usage = record.usage_tokens
        counted = _counted_tokens(record, events)
        if usage is not None and events:
            if record.event_basis == "server":  # every event said how many tokens it carried
                record.usage_disagrees = usage != counted
            else:
                record.usage_disagrees = not events <= usage <= events * MAX_TOKENS_PER_EVENT
            if record.usage_disagrees and not self._disagreement_logged:
                self._disagreement_logged = True
                log.warning(
                    "request %s: usage.completion_tokens is %d for %d token events; %s "
                    "(--output-tokens-from %s; later disagreements are counted in the report)",
                    record.request_id, usage, events,
                    "using the server's usage" if self._tokens_from == "usage" else "counting the events",
                    self._tokens_from,
                )  # fmt: skip
        trust = self._tokens_from == "usage" or (self._tokens_from == "auto" and not record.usage_disagrees)
        reasoning = record.reasoning_events + record.reasoning_extra
        if usage is not None and (trust or not events):
            record.output_tokens, record.token_source = usage, "usage"
            if not record.reasoning_tokens:
                record.reasoning_tokens = reasoning
        elif record.token_source == "counted":
            record.output_tokens = counted
            record.reasoning_tokens = reasoning


def _counted_tokens(record: RequestRecord, events: int) -> int:
    """The stream's tokens by its events: what each event said it carried where every event said
    (an event carrying reasoning and content counts once), else one per token event."""
    if record.event_basis != "server":
        return events
    extra = sum(tokens - 1 for tokens in (record.multi_token_events or {}).values())
    return len(record.token_times) + extra


def count_event_tokens(choice: dict, usage: object, record: RequestRecord) -> int:
    """How many tokens the token event just recorded carried, when the server says: the step of the
    cumulative `usage.completion_tokens` on every event (continuous_usage_stats; `usage_tokens` still
    holds the previous event's), else one `logprobs.content` entry per token. An event it says nothing
    about counts as one token."""
    tokens = None
    completion = _count(usage.get("completion_tokens")) if isinstance(usage, dict) else None
    if completion is not None:
        tokens = max(1, completion - (record.usage_tokens or 0))
    else:
        logprobs = choice.get("logprobs")
        entries = logprobs.get("content") if isinstance(logprobs, dict) else None
        if isinstance(entries, list) and entries:
            tokens = len(entries)
    if tokens is None:
        return 1
    record.counted_events += 1
    if tokens > 1:
        if record.multi_token_events is None:
            record.multi_token_events = {}
        record.multi_token_events[len(record.token_times) - 1] = tokens
    return tokens


def take_usage(usage: dict, record: RequestRecord) -> None:
    """The server's counts, where they are counts (whole numbers >= 0); TokenCounter.settle decides."""
    prompt = _count(usage.get("prompt_tokens"))
    if prompt is not None:
        record.prompt_tokens = prompt
        record.prompt_source = "usage"
    record.usage_tokens = _count(usage.get("completion_tokens"))
    details = usage.get("completion_tokens_details")
    reasoning = _count(details.get("reasoning_tokens")) if isinstance(details, dict) else None
    if reasoning is not None:
        record.reasoning_tokens = reasoning


def _count(value: object) -> int | None:
    return value if type(value) is int and value >= 0 else None


class TokenShape:
    """The bytes of a stream's plain token event around its content text, to recognize the next
    token events of that stream without parsing their JSON.

    Engines render every token event of a stream from one template: the same id, model, created
    time, index, null finish_reason and so on; only the content text changes. Once one event has
    been parsed and found to be a content token and nothing else (no reasoning, tool call,
    finish_reason, usage or error), a later event that has exactly its bytes before and after the
    content string, with a content string that is plain (ASCII, no quote, no trailing backslash,
    so it cannot end the string early or hide other fields), is a content token too. Anything else
    (finish, usage, a non-ASCII or escaped-quote token, a server whose events vary) is parsed in
    full, and a parsed plain token event renews the shape (llama.cpp stamps `created` per event, in
    seconds). Parsing every event in JSON was the largest share of the client's CPU."""

    __slots__ = ("_cut", "_prefix", "_suffix")

    def __init__(self, prefix: bytes, suffix: bytes) -> None:
        self._prefix = prefix
        self._suffix = suffix
        self._cut = -len(suffix)

    @classmethod
    def learn(cls, data: bytes) -> TokenShape | None:
        """The shape of `data`, a parsed plain token event, when its content text is plain."""
        key = data.find(b'"content":')
        if key < 0 or data.find(b'"content":', key + 1) >= 0:
            return None  # one "content" key, so the one found is the delta's
        start = data.find(b'"', key + 10) + 1
        if not start or data[key + 10 : start - 1].strip() or not data.isascii():
            return None
        end = data.find(b'"', start)
        text = data[start:end]
        if end < 0 or not text or b"\\" in text:
            return None
        return cls(data[:start], data[end:])

    def matches(self, data: bytes) -> bool:
        if not (data.startswith(self._prefix) and data.endswith(self._suffix)):
            return False
        text = data[len(self._prefix) : self._cut]
        return bool(text) and b'"' not in text and text[-1] != 92 and text.isascii()  # 92: backslash
