"""One completion request followed through the engine and written out the way vLLM 0.33 writes it.

Streamed: SSE chunks `data: {...}\\n\\n`, the role chunk with the first token, finish_reason on the
last token's chunk, an optional usage chunk with empty choices, then `data: [DONE]`. One event per
engine step (vLLM's output processor sends what a step produced): one token, or 1 + the accepted
draft tokens with speculative decoding; with a stream interval above 1, events wait until that many
tokens are ready (the first and the last go out at once). A reasoning profile streams the answer's
first tokens in the `reasoning` (or `reasoning_content`) delta field; an event that crosses the end of
the reasoning carries both fields. When the client falls behind, several events go out in one write,
never merged into one event.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi.responses import Response

from simulator import text
from simulator.engine import Engine, Sequence
from simulator.faults import Faults
from simulator.sends import SendLog


class Simulator(Protocol):
    """What a response needs of the server (server.Simulator)."""

    model: str
    faults: Faults
    sends: SendLog | None
    in_flight: int


SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
JSON_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json")],
}


class InjectedDrop(Exception):
    """Raised on purpose to make the server close a connection mid-response."""


@dataclass(frozen=True)
class ParsedRequest:
    kind: str  # "chat" or "completion"
    prompt_ids: list[int]
    max_tokens: int | None
    stream: bool
    include_usage: bool
    continuous_usage: bool
    ignore_eos: bool
    min_tokens: int
    request_key: str = ""  # the client's x-request-id, for the send log


@dataclass(frozen=True)
class FaultPlan:
    """What goes wrong with one request, decided when it arrives."""

    stall_at: int | None = None
    drop_at: int | None = None


class CompletionResponse(Response):
    """An ASGI response that follows one request through the engine, streamed or not."""

    def __init__(
        self, sim: Simulator, engine: Engine, request: ParsedRequest, seq: Sequence, plan: FaultPlan
    ) -> None:
        self.background = None
        self.status_code = 200
        self.sim = sim
        self.engine = engine
        self.request = request
        self.seq = seq
        self.plan = plan
        self.chat = request.kind == "chat"
        self.response_id = ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self._object = "chat.completion.chunk" if self.chat else "text_completion"
        reasoning = engine.profile.reasoning
        self.reasoning_field = reasoning.field
        # completions have no reasoning parser: their text is the whole answer
        self.reasoning_len = seq.reasoning_len if self.chat else 0
        self.stream_interval = engine.profile.scheduler.stream_interval
        self._heads = self._templates()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        watcher = asyncio.create_task(self._watch_disconnect(receive))
        self.sim.in_flight += 1
        try:
            if self.request.stream:
                await self._stream(send)
            else:
                await self._whole(send)
        finally:
            self.sim.in_flight -= 1
            watcher.cancel()

    async def _watch_disconnect(self, receive: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.engine.abort(self.seq)

    # -- a whole answer ---------------------------------------------------------------------

    async def _whole(self, send: Any) -> None:
        seq = self.seq
        while seq.finish_reason is None:
            await seq.wait()
        if seq.finish_reason == "abort":
            return  # the client is gone
        await send(JSON_START)
        if seq.finish_reason == "error" or self.plan.drop_at is not None:
            # Headers out, body never: the client sees the connection close mid-response.
            raise InjectedDrop("engine crashed" if seq.finish_reason == "error" else "drop fault")
        await send({"type": "http.response.body", "body": self._whole_body()})

    def _whole_body(self) -> bytes:
        seq = self.seq
        split = min(self.reasoning_len, seq.output_len)
        content = text.generated_text(seq.seed, split, seq.output_len)
        if self.chat:
            message = {
                "role": "assistant",
                "content": content,
                "refusal": None,
                "tool_calls": [],
                self.reasoning_field: text.generated_text(seq.seed, 0, split) if split else None,
            }
            choice = {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": seq.finish_reason,
                "stop_reason": None,
            }
            kind = "chat.completion"
        else:
            choice = {
                "index": 0,
                "text": content,
                "logprobs": None,
                "finish_reason": seq.finish_reason,
                "stop_reason": None,
                "prompt_logprobs": None,
            }
            kind = "text_completion"
        return json.dumps(
            {
                "id": self.response_id,
                "object": kind,
                "created": self.created,
                "model": self.sim.model,
                "choices": [choice],
                "usage": self._usage(seq.output_len),
            },
            separators=(",", ":"),
        ).encode()

    def _usage(self, completion_tokens: int) -> dict[str, int | None]:
        prompt = self.seq.prompt_len
        return {
            "prompt_tokens": prompt,
            "total_tokens": prompt + completion_tokens,
            "completion_tokens": completion_tokens,
            "prompt_tokens_details": None,
        }

    # -- a stream ---------------------------------------------------------------------------

    async def _stream(self, send: Any) -> None:
        seq, plan = self.seq, self.plan
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        sends = self.sim.sends
        sent = 0
        while True:
            if seq.finish_reason == "abort":
                return
            if seq.finish_reason == "error":
                raise InjectedDrop("engine crashed")
            finished = seq.finish_reason is not None
            faults = [at for at in (plan.stall_at, plan.drop_at) if at is not None and sent < at]
            ends = self._event_ends(sent, finished, min(faults, default=None))
            if not ends:
                await seq.wait()
                continue
            done = finished and ends[-1] == seq.output_len
            parts = [self._role_chunk()] if sent == 0 and self.chat else []
            start = sent
            for end in ends[:-1] if done else ends:
                parts.append(self._token_event(start, end))
                start = end
            if done:
                parts.append(self._final_chunks(start, ends[-1]))
            await send({"type": "http.response.body", "body": b"".join(parts), "more_body": not done})
            if sends is not None:
                now = time.perf_counter_ns()
                reasoning = self.reasoning_len
                sizes = [
                    (end - begin, max(0, min(end, reasoning) - begin))
                    for begin, end in zip([sent, *ends[:-1]], ends, strict=True)
                ]
                sends.events(self.request.request_key or self.response_id, now, sizes)
                if done:
                    sends.done(self.request.request_key or self.response_id, now)
            sent = ends[-1]
            if done:
                return
            if plan.drop_at is not None and sent >= plan.drop_at:
                raise InjectedDrop("drop fault")
            if plan.stall_at is not None and sent >= plan.stall_at:
                plan = FaultPlan(stall_at=None, drop_at=plan.drop_at)
                await asyncio.sleep(self.sim.faults.stall_seconds)

    def _event_ends(self, sent: int, finished: bool, cut: int | None) -> list[int]:
        """Where the events ready to go out end (output positions), after `sent` tokens went out: one
        per engine step, held back until `stream_interval` tokens are ready, except the first token
        and the last; none past the first end at or beyond `cut` (where a fault strikes)."""
        seq = self.seq
        produced = seq.output_len
        steps: Iterable[int]
        if seq.step_ends is None:
            steps = range(sent + 1, produced + 1)  # one token per step
        else:
            steps = [end for end in seq.step_ends if end <= produced]
        interval, last = self.stream_interval, sent
        ends = []
        for end in steps:
            if last == 0 or end - last >= interval or (finished and end == produced):
                ends.append(end)
                last = end
                if cut is not None and end >= cut:
                    break
        if seq.step_ends is not None:
            while seq.step_ends and seq.step_ends[0] <= last:
                seq.step_ends.popleft()
        return ends

    def _templates(self) -> tuple[bytes, bytes, bytes]:
        """The bytes of a plain event around its text: content head, reasoning head, tail."""
        start = (
            f'data: {{"id":"{self.response_id}","object":"{self._object}",'
            f'"created":{self.created},"model":{json.dumps(self.sim.model)},"choices":[{{"index":0,'
        )
        if self.chat:
            tail = b'"},"logprobs":null,"finish_reason":null}]}\n\n'
            return (
                (start + '"delta":{"content":"').encode(),
                (start + f'"delta":{{"{self.reasoning_field}":"').encode(),
                tail,
            )
        head = (start + '"text":"').encode()
        return head, head, b'","logprobs":null,"finish_reason":null,"stop_reason":null}]}\n\n'

    def _token_event(self, start: int, end: int) -> bytes:
        if self.request.continuous_usage:
            return self._event([self._choice(start, end, None)], self._usage(end))
        if start < self.reasoning_len < end:  # crosses the end of the reasoning: both fields
            return self._event([self._choice(start, end, None)])
        content_head, reasoning_head, tail = self._heads
        head = reasoning_head if start < self.reasoning_len else content_head
        seed, words, index = self.seq.seed, text.WORD_PIECES, text.word_index
        return head + b"".join(words[index(seed, position)] for position in range(start, end)) + tail

    def _event(self, choices: list, usage: dict | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": self.response_id,
            "object": self._object,
            "created": self.created,
            "model": self.sim.model,
            "choices": choices,
        }
        if usage is not None:
            body["usage"] = usage
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    def _role_chunk(self) -> bytes:
        usage = self._usage(0) if self.request.continuous_usage else None
        delta = {"role": "assistant", "content": ""}
        return self._event([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}], usage)

    def _choice(self, start: int, end: int, finish_reason: str | None) -> dict:
        seed, split = self.seq.seed, min(max(self.reasoning_len, start), end)
        if not self.chat:
            return {
                "index": 0,
                "text": text.generated_text(seed, start, end),
                "logprobs": None,
                "finish_reason": finish_reason,
                "stop_reason": None,
            }
        delta = {}
        if split < end:
            delta["content"] = text.generated_text(seed, split, end)
        if start < split:
            delta[self.reasoning_field] = text.generated_text(seed, start, split)
        return {
            "index": 0,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish_reason,
            "stop_reason": None,
        }

    def _final_chunks(self, start: int, end: int) -> bytes:
        seq = self.seq
        usage = self._usage(end) if self.request.continuous_usage else None
        parts = [self._event([self._choice(start, end, seq.finish_reason)], usage)]
        if self.request.include_usage:
            parts.append(self._event([], self._usage(seq.output_len)))
        parts.append(b"data: [DONE]\n\n")
        return b"".join(parts)
