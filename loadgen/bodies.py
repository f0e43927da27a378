"""What a run sends: the endpoint's path and each request's JSON body (the model, streaming and
usage options, the workload item's messages or prompt, its max_tokens, then the --extra-body fields).
Bodies are compact JSON bytes, built once per request."""

from __future__ import annotations

import json

import orjson

from loadgen.scenario import Scenario
from loadgen.workloads import WorkItem

__all__ = ["PATHS", "Bodies", "compact_json"]

PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}


def compact_json(obj: object) -> bytes:
    """Compact JSON (20x json.dumps here: one body and one JSONL line per request); keys that are
    not strings (a YAML `extra_body` may have them) are written as strings, as json.dumps does."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # what orjson does not write (integers beyond 64 bits), written as json.dumps does
        return json.dumps(obj, separators=(",", ":")).encode()


class Bodies:
    """The request bodies of one run. `model` is the scenario's, or what setup discovered (None: the
    requests name none); `extra_body` is the run's own dict, shared with the setup prober, which drops
    a field the server refuses for every later request (probes.py)."""

    def __init__(self, scenario: Scenario, extra_body: dict) -> None:
        self.endpoint = scenario.endpoint
        self.path = PATHS[scenario.endpoint]
        self.stream = scenario.stream
        self.continuous_usage = scenario.continuous_usage
        self.model: str | None = scenario.model
        self.extra_body = extra_body

    def encode(self, item: WorkItem, stream: bool | None = None, messages: list | None = None) -> bytes:
        return compact_json({**self.fields(item, stream, messages), **self.extra_body})

    def fields(self, item: WorkItem, stream: bool | None = None, messages: list | None = None) -> dict:
        """A request's body without the --extra-body fields."""
        stream = self.stream if stream is None else stream
        body: dict = {"model": self.model, "stream": stream} if self.model else {"stream": stream}
        if self.endpoint == "chat":
            body["messages"] = messages if messages is not None else list(item.messages)
        else:
            body["prompt"] = item.prompt_text(messages)
        if item.max_tokens:
            body["max_tokens"] = item.max_tokens
        if stream:
            body["stream_options"] = (
                {"include_usage": True, "continuous_usage_stats": True}
                if self.continuous_usage
                else {"include_usage": True}
            )
        return body
