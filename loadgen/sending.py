"""A user's requests: one request, or a conversation whose turns each carry the transcript so far, with
the user's think time between them. Each request is recorded wherever it counts: the phase's stats,
the live metrics, and the per-request JSONL file; prompt tokens the server did not report are
estimated (the tokenizer, else the synthetic length drawn) and said to be.
"""

from __future__ import annotations

import random
from time import perf_counter_ns

from loadgen.bodies import Bodies, compact_json
from loadgen.client import LoadClient
from loadgen.jsonl import JsonlWriter
from loadgen.metrics import RunMetrics
from loadgen.result import Clock
from loadgen.scenario import Scenario
from loadgen.stats import PhaseStats
from loadgen.stops import Stops
from loadgen.timing import RequestRecord
from loadgen.workloads import Tokenizer, WorkItem

__all__ = ["Sender"]

FOREVER_NS = 2**62


class Sender:
    """Sends a run's requests and records them. Request ids are `{id_prefix}-{n}`, n from 1."""

    def __init__(
        self,
        scenario: Scenario,
        client: LoadClient,
        bodies: Bodies,
        metrics: RunMetrics,
        stops: Stops,
        *,
        id_prefix: str,
        clock: Clock,
        tokenizer: Tokenizer | None,
        jsonl: JsonlWriter | None,
        think_rng: random.Random,
    ) -> None:
        self.scenario = scenario
        self.client = client
        self.bodies = bodies
        self.metrics = metrics
        self.stops = stops
        self.id_prefix = id_prefix
        self.clock = clock
        self.tokenizer = tokenizer
        self.jsonl = jsonl
        # think times drawn apart from the prompts: pauses end in an order timing decides, and drawn from
        # the workload's generator they made the prompts of one seed differ from run to run
        self.think_rng = think_rng
        self._seq = 0

    async def think(self, deadline: int) -> None:
        """A user's pause after an answer (--think-time): before the next turn of its conversation, or a
        closed-loop user's next request; cut short by a stop or the deadline."""
        think = self.scenario.think_time
        if think is None:
            return
        pause = min(think.draw(self.think_rng), max(0.0, (deadline - perf_counter_ns()) * 1e-9))
        if pause > 0:
            await self.stops.sleep(pause)

    async def session(self, item: WorkItem, scheduled: int, stats: PhaseStats) -> RequestRecord:
        """One request, or one multi-turn conversation (each turn a request, replies fed back);
        the last request's record."""
        messages = list(item.messages)
        known = item.prompt_tokens  # synthetic prompts: the length drawn; None for datasets
        record = await self.request(
            self.bodies.encode(item), scheduled, stats, bool(item.followups), messages, item, known
        )
        turn_lengths = item.followup_tokens or (None,) * len(item.followups)
        for turn, turn_tokens in zip(item.followups, turn_lengths, strict=True):
            if not record.ok or self.stops.stopping:
                return record
            await self.think(FOREVER_NS)  # the user reads the answer and types: not part of any latency
            if self.stops.stopping:
                return record
            messages += [
                {"role": "assistant", "content": "".join(record.text or ())},
                {"role": "user", "content": turn},
            ]
            if known is not None and turn_tokens is not None:  # the transcript so far, and the new turn
                known = (record.prompt_tokens or known) + record.output_tokens + turn_tokens
            record = await self.request(
                self.bodies.encode(item, messages=list(messages)), perf_counter_ns(), stats, True,
                list(messages), item, known,
            )  # fmt: skip
        return record

    async def request(
        self,
        body: bytes,
        scheduled: int,
        stats: PhaseStats,
        capture: bool,
        messages: list[dict],
        item: WorkItem,
        known_prompt_tokens: int | None,
    ) -> RequestRecord:
        """One request, sent and recorded (`capture`: keep the answer's text, for the next turn)."""
        self._seq += 1
        record = RequestRecord(f"{self.id_prefix}-{self._seq}", stats.name, scheduled, self.scenario.stream)
        metrics = self.metrics.series(stats.name)
        metrics.on_sent()
        stats.sent += 1
        try:
            await self.client.execute(self.bodies.path, body, record, capture)
        finally:
            if record.prompt_tokens is None and record.ok:
                self._estimate_prompt_tokens(record, messages, item, known_prompt_tokens)
            metrics.on_done(record)
            stats.add(record)
            if self.jsonl is not None:
                line = record.as_json()
                line["sent_unix_s"] = self.clock.unix(record.sent_ns) if record.sent_ns else None
                self.jsonl.write(compact_json(line) + b"\n")
        return record

    def _estimate_prompt_tokens(
        self, record: RequestRecord, messages: list[dict], item: WorkItem, known: int | None
    ) -> None:
        """Prompt tokens when the server sent no usage: counted with the tokenizer if there is one
        (the prompt's text, without the chat template's tokens), else the synthetic length drawn."""
        if self.tokenizer is not None:
            record.prompt_tokens = self.tokenizer.count(item.prompt_text(messages))
            record.prompt_source = "tokenizer"
        elif known is not None:
            record.prompt_tokens = known
            record.prompt_source = "synthetic"
