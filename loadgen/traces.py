"""Trace replay: requests sent when a recorded trace says, its clock scaled by --time-scale.

Two formats, one JSON object per line:
- `mooncake:FILE` (the Mooncake trace format, as AIPerf replays it): `timestamp` (ms), `input_length`
  and `output_length` (tokens) and `hash_ids`, one id per 512-token block of the prompt. Prompts are
  built from the ids: every block is text generated from its id alone, so equal ids give equal text
  and two prompts that share their first k ids share their first k blocks, which is what the trace
  recorded and what an engine's prefix cache should see.
- `trace:FILE` (a plain timestamped JSONL): `timestamp` (ms) and the request as in `jsonl:` datasets
  (`prompt` or `messages`, optional `max_tokens`).

Lines are sorted by timestamp; request i is due (timestamp_i - timestamp_first) / 1000 x time_scale
seconds after the replay starts (time_scale 0.5 replays twice as fast). The runner sends each when due
and measures the arrival error (sent - due) as the request's dispatch delay.

Why shared blocks stay shared in tokens: a block's text is words, each after a space (the first word
of a prompt excepted, alike in every prompt), and blocks are joined with a space. Byte-level BPE
tokenizers (GPT-2, Llama 3, Qwen) and SentencePiece split text at spaces before merging, so no token
spans two blocks: a prompt's tokens are its blocks' tokens, one block after the other, and equal ids
give equal token sequences. tests/loadgen/test_traces.py checks this with a real `tokenizers` BPE
tokenizer. Without --tokenizer a block has round(512 / tokens-per-word) words, the ratio calibrated
from the server's usage; with one, exactly 512 tokens.

Budgets: at most MAX_LINES lines of at most MAX_LINE_BYTES (workloads.py), MAX_INPUT_TOKENS tokens per
request; the
word pool is POOL_WORDS words; block texts made with a tokenizer are kept in an LRU cache of
BLOCK_CACHE blocks and made again from their id when evicted.

Block ids are numbered densely as the trace is read (its ids in order of first use, then a fresh number
for each block a line gives no id, `hash_ids` missing included), so a trace's ids may be any whole
numbers (sparse, negative, 64-bit hashes) and a block of a line's own never equals another line's block.
Without a tokenizer the word pool grows past POOL_WORDS when a trace has more distinct blocks than the
pool has windows, so distinct blocks always get distinct text.
"""

from __future__ import annotations

import math
import random
from array import array
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate

from loadgen.errors import WorkloadError
from loadgen.workloads import LengthDist, TextMaker, WorkItem, jsonl_item, jsonl_objects, random_words

__all__ = ["BLOCK_TOKENS", "Trace", "load_trace"]

BLOCK_TOKENS = 512
MAX_INPUT_TOKENS = 1 << 20
BLOCK_CACHE = 4096  # block texts made with a tokenizer, kept
POOL_WORDS = 1 << 20  # words that blocks are windows of, without a tokenizer (about 6 MB)
TRACE_KINDS = ("mooncake", "trace")


@dataclass(frozen=True, slots=True)
class Entry:
    due_ms: float  # the trace's timestamp
    item: WorkItem | None  # trace: the request as written
    input_length: int = 0  # mooncake: the prompt is built from these at dispatch
    hash_ids: tuple[int, ...] = ()
    max_tokens: int | None = None


class Blocks:
    """The text of each 512-token block, from its hash id alone.

    Without a tokenizer a block is a window of WORDS_PER_BLOCK words (round(512 / tokens-per-word)) in
    one pool of random words made at start, at a word offset that is a bijection of the (dense) id (id x A
    mod M, M a prime above the number of distinct blocks): distinct ids get distinct windows, so blocks
    are shared exactly where the trace shares them, and a block costs a string slice at dispatch (making
    512 words per block cost about 1 ms per request at 1,000 requests/s). With a tokenizer a block is
    exactly 512 tokens, made and checked by the tokenizer once and kept in an LRU cache."""

    def __init__(self, text: TextMaker, seed: int, distinct: int = 0) -> None:
        self.text = text
        self.seed = seed
        self._cache: OrderedDict[tuple[int, int], str] = OrderedDict()
        if text.tokenizer is None:
            rng = random.Random(seed)
            self.words_per_block = max(1, round(BLOCK_TOKENS / text.tokens_per_word))
            size = max(POOL_WORDS, distinct + self.words_per_block + 16)  # a window per distinct block
            words = random_words(rng, size).split(" ")
            self._pool = " ".join(words)
            self._starts = array("I", accumulate((len(word) + 1 for word in words), initial=0))
            self._modulus = _prime_below(size - self.words_per_block)
            self._multiplier = rng.randrange(1, self._modulus)

    def block(self, hash_id: int, tokens: int) -> str:
        if self.text.tokenizer is None:
            words = min(self.words_per_block, max(1, round(tokens / self.text.tokens_per_word)))
            first = hash_id * self._multiplier % self._modulus
            return self._pool[self._starts[first] : self._starts[first + words] - 1]
        key = (hash_id, tokens)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        # the first `tokens` tokens of the block's full text, so a partial last block is a prefix of the
        # block with the same id seen whole elsewhere
        tokenizer = self.text.tokenizer
        full = self.text.make(BLOCK_TOKENS, random.Random(f"{self.seed}:{hash_id}"))
        text = full if tokens == BLOCK_TOKENS else tokenizer.decode(tokenizer.encode(full)[:tokens])
        self._cache[key] = text
        if len(self._cache) > BLOCK_CACHE:
            self._cache.popitem(last=False)
        return text

    def prompt(self, entry: Entry) -> str:
        blocks = []
        left = entry.input_length
        for hash_id in entry.hash_ids:
            blocks.append(self.block(hash_id, min(BLOCK_TOKENS, left)))
            left -= BLOCK_TOKENS
        return " ".join(blocks)


def _prime_below(limit: int) -> int:
    candidate = limit - 1 if limit % 2 == 0 else limit - 2
    while any(candidate % d == 0 for d in range(3, math.isqrt(candidate) + 1, 2)):
        candidate -= 2
    return candidate


class Trace:
    """A Workload whose requests have due times: `arrivals()` yields (seconds after the segment's start,
    item) from where the previous segment stopped (a warm-up segment, then the measured replay)."""

    def __init__(self, kind: str, path: str, entries: list[Entry], time_scale: float, blocks: Blocks | None):
        self.kind = kind
        self.path = path
        self.entries = entries
        self.time_scale = time_scale
        self.blocks = blocks
        self._cursor = 0

    def arrivals(
        self, max_requests: int | None = None, duration_s: float = math.inf
    ) -> Iterator[tuple[float, WorkItem]]:
        if self._cursor >= len(self.entries):
            return
        start_ms = self.entries[self._cursor].due_ms
        sent = 0
        while self._cursor < len(self.entries) and (max_requests is None or sent < max_requests):
            entry = self.entries[self._cursor]
            offset = (entry.due_ms - start_ms) / 1000 * self.time_scale
            if offset >= duration_s:
                return
            self._cursor += 1
            sent += 1
            yield offset, self._item(entry)

    def next(self) -> WorkItem:
        """The next request in trace order (the Workload protocol; arrivals() is how a replay runs)."""
        entry = self.entries[self._cursor % len(self.entries)]
        self._cursor += 1
        return self._item(entry)

    def _item(self, entry: Entry) -> WorkItem:
        if entry.item is not None:
            return entry.item
        assert self.blocks is not None
        message = {"role": "user", "content": self.blocks.prompt(entry)}
        return WorkItem((message,), entry.max_tokens, prompt_tokens=entry.input_length)

    def describe(self) -> dict[str, object]:
        span = (self.entries[-1].due_ms - self.entries[0].due_ms) / 1000
        described: dict[str, object] = {
            "kind": self.kind,
            "path": self.path,
            "requests": len(self.entries),
            "span_s": span,
            "time_scale": self.time_scale,
            "replay_s": span * self.time_scale,
        }
        if self.kind == "mooncake":
            ids = {hash_id for entry in self.entries for hash_id in entry.hash_ids}
            described.update(
                block_tokens=BLOCK_TOKENS,
                unique_blocks=len(ids),
                length_source=self.blocks.text.length_source,
            )  # type: ignore[union-attr]
        return described


def load_trace(
    kind: str,
    path: str,
    text: TextMaker,
    rng: random.Random,
    output_len: LengthDist | None,
    time_scale: float,
) -> Trace:
    if kind not in TRACE_KINDS:
        raise WorkloadError(f"unknown trace kind {kind!r}: use {' or '.join(TRACE_KINDS)}")
    entries: list[Entry] = []
    numbers = BlockNumbers()
    for where, obj in jsonl_objects(path):
        due = obj.get("timestamp")
        if not isinstance(due, int | float) or isinstance(due, bool) or not math.isfinite(due) or due < 0:
            raise WorkloadError(f"{where}: timestamp must be a number of milliseconds >= 0")
        if kind == "trace":
            entries.append(Entry(float(due), jsonl_item(obj, where, rng, output_len)))
        else:
            entries.append(_mooncake_entry(obj, where, float(due), rng, output_len, numbers))
    if not entries:
        raise WorkloadError(f"{path}: no requests")
    entries.sort(key=lambda entry: entry.due_ms)  # stable: equal timestamps keep file order
    blocks = Blocks(text, rng.randrange(1 << 30), numbers.count) if kind == "mooncake" else None
    return Trace(kind, path, entries, time_scale, blocks)


def _mooncake_entry(
    obj: dict,
    where: str,
    due: float,
    rng: random.Random,
    output_len: LengthDist | None,
    numbers: BlockNumbers,
) -> Entry:
    length, output, ids = obj.get("input_length"), obj.get("output_length"), obj.get("hash_ids", [])
    if type(length) is not int or not 1 <= length <= MAX_INPUT_TOKENS:
        raise WorkloadError(f"{where}: input_length must be a whole number from 1 to {MAX_INPUT_TOKENS}")
    if (type(output) is not int or output < 1) and (output_len is None or "output_length" in obj):
        raise WorkloadError(f"{where}: output_length must be a whole number >= 1")
    blocks = math.ceil(length / BLOCK_TOKENS)
    ids = [] if ids is None else ids  # no shared blocks (AIPerf's hash_ids are optional too)
    if not isinstance(ids, list) or not all(type(i) is int for i in ids) or len(ids) > blocks:
        raise WorkloadError(
            f"{where}: hash_ids must be a list of at most {blocks} whole numbers "
            f"(one per {BLOCK_TOKENS}-token block)"
        )
    max_tokens = output_len.sample(rng) if output_len is not None else output
    return Entry(due, None, length, numbers.dense(ids, blocks), max_tokens)


class BlockNumbers:
    """Dense block ids: the trace's ids numbered in order of first use, and a fresh number for each block
    a line gives no id (its own, shared with no other line)."""

    def __init__(self) -> None:
        self._numbers: dict[int, int] = {}
        self.count = 0  # distinct blocks so far

    def dense(self, ids: list[int], blocks: int) -> tuple[int, ...]:
        numbers, dense = self._numbers, []
        for hash_id in ids:
            number = numbers.get(hash_id)
            if number is None:
                number = numbers[hash_id] = self.count
                self.count += 1
            dense.append(number)
        own = blocks - len(ids)
        dense.extend(range(self.count, self.count + own))
        self.count += own
        return tuple(dense)
