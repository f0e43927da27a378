"""What a run does before its first phase: discover the model, calibrate the tokens per word of
synthetic text from the server's usage, check the --extra-body fields, size the shared system prompt
for --prefix-hit-rate, and load the workload the scenario names. The requests among these are setup
requests (probes.py), reported apart from every phase.

A pool's parent does the asking once (Run.prepare) and hands its findings to the workers (Prepared),
which then ask the server nothing.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable

import httpx

from loadgen.bodies import Bodies
from loadgen.client import ClientError, LoadClient
from loadgen.coordination import Prepared
from loadgen.engine_counters import read_prefix_cache
from loadgen.probes import SetupProber
from loadgen.scenario import Scenario
from loadgen.sessions import BLOCK_TOKENS, MESSAGE_TOKENS, system_prompt_tokens
from loadgen.sharegpt import load_sharegpt
from loadgen.slicing import Slice
from loadgen.traces import TRACE_KINDS, load_trace
from loadgen.workloads import (
    LengthDist,
    Synthetic,
    TextMaker,
    WorkItem,
    Workload,
    load_jsonl,
    random_words,
)

__all__ = [
    "OPEN_LOOP_CONNECTIONS",
    "SYNTHETIC_OUTPUT_LEN",
    "apply_calibration",
    "calibrate",
    "check_extra_body",
    "discover_model",
    "load_workload",
    "max_connections",
]

log = logging.getLogger("loadgen")

OPEN_LOOP_CONNECTIONS = 1000  # connection cap of an open loop without --max-concurrency
SYNTHETIC_OUTPUT_LEN = LengthDist("fixed", (128.0,))  # max_tokens of synthetic requests without --output-len


async def discover_model(client: LoadClient) -> tuple[str | None, str | None]:
    """The first model /v1/models lists, and a note when there is none. When the server is up but cannot
    list its models (seen: `transformers serve` answers 500 without a Hugging Face cache), requests go
    without a `model` field, which a single-model server answers with its own; said in the log and the
    report."""
    try:
        return await client.discover_model(), None
    except ClientError as exc:
        cause = exc.__cause__
        status = cause.response.status_code if isinstance(cause, httpx.HTTPStatusError) else None
        if status in (401, 403) or isinstance(cause, httpx.TransportError):
            raise  # wrong credentials or no server: every request would fail the same way
        why = f"HTTP {status}" if status else type(cause).__name__ if cause else str(exc)
        note = f"not discovered (/v1/models: {why}); requests carry no model field"
        log.warning("model %s: pass --model to name one", note)
        return None, note


async def calibrate(prober: SetupProber, bodies: Bodies, rng: random.Random, text: TextMaker) -> None:
    """Tokens per word of our synthetic text, from the server's prompt-token counts of two probes."""
    counts = []
    for words in (16, 216):
        prompt = random_words(rng, words)
        body = bodies.fields(WorkItem(({"role": "user", "content": prompt},), 1), stream=False)
        purpose = "calibration of prompt lengths (max_tokens=1, not streamed)"
        record = await prober.send(f"calibrate-{words}", purpose, body)
        if not record.ok:
            log.warning("calibration probe failed (%s): prompt lengths assume 1 token per word", record.error)
            return
        counts.append(record.prompt_tokens)
    if None in counts or counts[1] <= counts[0]:
        log.warning("server sent no usage: prompt lengths assume 1 token per word")
        return
    text.tokens_per_word = (counts[1] - counts[0]) / 200
    # what the prompt costs beyond its words: the chat template around one message and the
    # generation prompt (BOS alone for completions)
    text.template_tokens = max(0.0, counts[0] - 16 * text.tokens_per_word)
    text.length_source = f"calibrated from server usage ({text.tokens_per_word:.3f} tokens/word)"


def apply_calibration(prepared: Prepared, text: TextMaker) -> None:
    """What the pool's parent calibrated (nothing when it did not)."""
    if prepared.tokens_per_word is not None:
        text.tokens_per_word, text.template_tokens = prepared.tokens_per_word, prepared.template_tokens
        text.length_source = prepared.length_source  # type: ignore[assignment]


async def check_extra_body(prober: SetupProber, bodies: Bodies) -> None:
    """Without calibration, one setup request finds out whether the server takes --extra-body."""
    if bodies.extra_body and not prober.records:
        body = bodies.fields(WorkItem(({"role": "user", "content": "hello"},), 1), stream=False)
        await prober.send("check-extra-body", "check of the --extra-body fields (max_tokens=1)", body)


async def load_workload(
    scenario: Scenario,
    text: TextMaker,
    rng: random.Random,
    calibrate_once: Callable[[], Awaitable[None]] | None,
    part: Slice,
) -> Workload:
    """The scenario's workload: a trace, a dataset, or synthetic prompts. `calibrate_once`: how to learn
    the tokens per word when lengths are drawn in tokens (None: a tokenizer counts them). A trace is read
    as `part`'s slice (traces.py: a pool's worker holds its own requests only); other workloads whole,
    then dealt (slicing.deal)."""
    # an explicit output length applies to every workload; without one, datasets keep their own
    # lengths (ShareGPT answers, JSONL max_tokens) and synthetic prompts ask for 128 tokens
    output_len = scenario.output_len
    dataset = scenario.dataset
    if dataset is not None and dataset.kind in TRACE_KINDS:
        if dataset.kind == "mooncake" and calibrate_once is not None:
            await calibrate_once()  # block texts are sized in tokens
        return load_trace(dataset.kind, dataset.path, text, rng, output_len, scenario.time_scale, part)
    if dataset is not None:
        if dataset.kind == "sharegpt":
            return load_sharegpt(dataset.path, rng, output_len, text, scenario.turns)
        return load_jsonl(dataset.path, rng, output_len)
    output = output_len or SYNTHETIC_OUTPUT_LEN
    workload = Synthetic(
        scenario.input_len, output, text, rng, scenario.prefix_groups, scenario.prefix_len, scenario.turns
    )
    if calibrate_once is not None:
        await calibrate_once()
    if scenario.prefix_hit_rate is not None:
        if scenario.engine_metrics is None:
            log.info(
                "--prefix-hit-rate: the engine's prefix-cache counters are not read (--engine-metrics none)"
            )
        workload.system_len = await _system_prompt_len(scenario, text, output)
    return workload


async def _system_prompt_len(scenario: Scenario, text: TextMaker, output: LengthDist) -> int:
    """The shared system prompt that aims at --prefix-hit-rate (sessions.py), sized with the engine's KV
    block (vllm:cache_config_info) and the chat template's tokens (calibration) where known."""
    cache = await read_prefix_cache(scenario.engine_metrics)
    block = cache.block_size if cache and cache.block_size else BLOCK_TOKENS
    message = text.template_tokens / 2 if text.template_tokens is not None else MESSAGE_TOKENS
    rate, user, answer = scenario.prefix_hit_rate, scenario.input_len.mean(), output.mean()
    return system_prompt_tokens(rate, user, answer, scenario.turns, block, message)  # type: ignore[arg-type]


def max_connections(scenario: Scenario, part: Slice) -> int:
    """--max-connections, else the peak closed-loop concurrency or open-loop --max-concurrency, else
    OPEN_LOOP_CONNECTIONS: this slice's part of it (at least 1). Requests beyond it wait for a
    connection: dispatch delay."""
    if scenario.max_connections:
        return max(1, part.share(scenario.max_connections))
    peak = 1
    for phase in scenario.phases:
        if phase.closed:
            peak = max(peak, part.users(math.ceil(phase.peak())))
        else:
            peak = max(peak, part.share(phase.max_concurrency or OPEN_LOOP_CONNECTIONS))
    return peak
