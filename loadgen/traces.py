"""Trace replay: requests sent when a recorded trace says, its clock scaled by --time-scale.

Two formats, one JSON object per line:
- `mooncake:FILE` (the Mooncake trace format, as AIPerf replays it): `timestamp` (ms), `input_length`
  and `output_length` (tokens) and `hash_ids`, one id per 512-token block of the prompt. Prompts are
  built from the ids (trace_blocks.py): every block is text generated from its id alone, so equal ids
  give equal text and two prompts that share their first k ids share their first k blocks, which is
  what the trace recorded and what an engine's prefix cache should see.
- `trace:FILE` (a plain timestamped JSONL): `timestamp` (ms) and the request as in `jsonl:` datasets
  (`prompt` or `messages`, optional `max_tokens`).

Lines are sorted by timestamp; request i is due (timestamp_i - timestamp_first) / 1000 x time_scale
seconds after the replay starts (time_scale 0.5 replays twice as fast). The runner sends each when due
and measures the arrival error (sent - due) as the request's dispatch delay.

A process of a pool (or a shard) holds only its slice of the requests: ranks index, index + count, ...
in time order (slicing.py), kept as it reads the file, the others dropped. Every part still reads every
line (to check it, number its blocks and draw what the run's seed draws, so its requests are the ones
one process would send) and keeps every request's due time (8 bytes each), so all parts agree on where
a replay segment starts and ends. A file not sorted by timestamp is read a second time, then knowing
each line's rank. A Mooncake request is kept as a row of flat arrays (its length, max_tokens and block
numbers: about 30 bytes with 4 blocks, where an object with a tuple of ints was about 270).

Budgets: at most MAX_LINES lines of at most MAX_LINE_BYTES (workloads.py), MAX_INPUT_TOKENS tokens per
prompt and MAX_OUTPUT_TOKENS per answer, MAX_BLOCKS distinct blocks (trace_blocks.py).
"""

from __future__ import annotations

import math
import random
from array import array
from bisect import bisect_left
from collections.abc import Iterator

from loadgen.errors import WorkloadError
from loadgen.slicing import WHOLE, Slice
from loadgen.trace_blocks import BLOCK_TOKENS, BlockNumbers, Blocks
from loadgen.workloads import LengthDist, TextMaker, WorkItem, jsonl_item, jsonl_objects

__all__ = ["BLOCK_TOKENS", "TRACE_KINDS", "Trace", "load_trace"]

MAX_INPUT_TOKENS = 1 << 20
MAX_OUTPUT_TOKENS = 1 << 20
TRACE_KINDS = ("mooncake", "trace")


class BlockRows:
    """Mooncake requests as rows of flat arrays: input length, max_tokens and block numbers."""

    def __init__(self) -> None:
        self.input_lengths = array("I")
        self.max_tokens = array("Q")
        self.numbers = array("I")  # every row's block numbers, one row after the other
        self.ends = array("Q")  # where each row's numbers end in `numbers`

    def add(self, input_length: int, max_tokens: int, numbers: list[int]) -> None:
        self.input_lengths.append(input_length)
        self.max_tokens.append(max_tokens)
        self.numbers.extend(numbers)
        self.ends.append(len(self.numbers))

    def __len__(self) -> int:
        return len(self.ends)

    def item(self, row: int, blocks: Blocks) -> WorkItem:
        numbers = self.numbers[self.ends[row - 1] if row else 0 : self.ends[row]]
        length = self.input_lengths[row]
        message = {"role": "user", "content": blocks.prompt(numbers, length)}
        return WorkItem((message,), self.max_tokens[row], prompt_tokens=length)


Rows = BlockRows | list[WorkItem]


class Trace:
    """A Workload whose requests have due times. It holds `part`'s requests (ranks part.index,
    part.index + part.count, ... of the trace in time order; every request for the whole) and every
    request's due time, so every part agrees on where a segment starts and ends. `arrivals()` yields
    (index in the segment, seconds after the segment's start, item) of the part's requests from where
    the previous segment stopped (a warm-up segment, then the measured replay)."""

    def __init__(
        self,
        kind: str,
        path: str,
        rows: Rows,
        dues_ms: array,
        time_scale: float,
        blocks: Blocks | None,
        part: Slice = WHOLE,
        order: array | None = None,
        distinct_blocks: int = 0,
    ) -> None:
        self.kind = kind
        self.path = path
        self.rows = rows  # the part's requests, in file order
        self.order = order  # the part's k-th request (rank part.index + k x part.count) is rows[order[k]]
        self.dues_ms = dues_ms  # every request's timestamp, in time order
        self.time_scale = time_scale
        self.blocks = blocks
        self.part = part
        self.distinct_blocks = distinct_blocks
        self._cursor = 0  # the rank the next segment starts at
        self._next = 0  # next(): the part's requests in turn

    def arrivals(
        self, max_requests: int | None = None, duration_s: float = math.inf
    ) -> Iterator[tuple[int, float, WorkItem]]:
        dues, start = self.dues_ms, self._cursor
        if start >= len(dues):
            return
        start_ms, scale = dues[start], self.time_scale

        def offset(rank: int) -> float:
            return (dues[rank] - start_ms) / 1000 * scale

        end = len(dues) if max_requests is None else min(len(dues), start + max_requests)
        if duration_s < math.inf:  # the first request due at or past the segment's end (dues are sorted)
            end = start + bisect_left(range(start, end), duration_s, key=offset)
        self._cursor = end  # the same in every part, however far its own requests get sent
        part = self.part
        for rank in range(start + (part.index - start) % part.count, end, part.count):
            yield rank - start, offset(rank), self._item(rank // part.count)

    def next(self) -> WorkItem:
        """The part's next request in trace order (the Workload protocol; arrivals() is how a replay runs)."""
        item = self._item(self._next % len(self.rows))
        self._next += 1
        return item

    def sliced(self, index: int, count: int) -> Trace:
        """Slice index/count of the requests (slicing.Sliceable): the trace itself when it was read as that
        slice (load_trace's `part`); from a whole trace, its every count-th request in time order."""
        wanted = Slice(index, count)
        if wanted == self.part:
            return self
        if not self.part.whole:
            raise ValueError(f"a trace read as slice {self.part} has no slice {wanted}")
        order = self.order if self.order is not None else array("Q", range(len(self.rows)))
        return Trace(
            self.kind, self.path, self.rows, self.dues_ms, self.time_scale, self.blocks, wanted,
            order[index::count], self.distinct_blocks,
        )  # fmt: skip

    def _item(self, k: int) -> WorkItem:
        row = self.order[k] if self.order is not None else k
        if isinstance(self.rows, BlockRows):
            assert self.blocks is not None
            return self.rows.item(row, self.blocks)
        return self.rows[row]

    def describe(self) -> dict[str, object]:
        span = (self.dues_ms[-1] - self.dues_ms[0]) / 1000
        described: dict[str, object] = {
            "kind": self.kind,
            "path": self.path,
            "requests": len(self.dues_ms),
            "span_s": span,
            "time_scale": self.time_scale,
            "replay_s": span * self.time_scale,
        }
        if self.kind == "mooncake":
            described.update(
                block_tokens=BLOCK_TOKENS,
                unique_blocks=self.distinct_blocks,
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
    part: Slice = WHOLE,
) -> Trace:
    """The trace at `path`: `part`'s requests of it (all of them for the whole) and every request's due
    time. Every part draws from `rng` what one process reading the whole trace would."""
    if kind not in TRACE_KINDS:
        raise WorkloadError(f"unknown trace kind {kind!r}: use {' or '.join(TRACE_KINDS)}")
    state = rng.getstate()
    dues, rows, numbers, in_order = _read(kind, path, rng, output_len, part, None)
    if not dues:
        raise WorkloadError(f"{path}: no requests")
    order = None
    if not in_order:  # stable: equal timestamps keep file order
        by_time = array("Q", sorted(range(len(dues)), key=dues.__getitem__))  # rank -> line
        if part.whole:
            order = by_time  # every line was kept: row = line
        else:  # read again, keeping this part's lines now that their ranks are known
            ranks = array("Q", bytes(8 * len(dues)))
            for rank, line in enumerate(by_time):
                ranks[line] = rank
            del by_time
            rng.setstate(state)
            _, rows, numbers, _ = _read(kind, path, rng, output_len, part, ranks)
            order = _rows_by_rank(ranks, part)
        dues = array("d", sorted(dues))
    blocks = Blocks(text, rng.randrange(1 << 30), numbers.count) if kind == "mooncake" else None
    return Trace(kind, path, rows, dues, time_scale, blocks, part, order, numbers.count)


def _read(
    kind: str,
    path: str,
    rng: random.Random,
    output_len: LengthDist | None,
    part: Slice,
    ranks: array | None,
) -> tuple[array, Rows, BlockNumbers, bool]:
    """Every line checked, numbered and drawn for; the rows of `part` kept, in file order (owned by rank
    when `ranks` is given, else by line, as if the lines were in time order); every line's due time;
    whether the lines were in time order."""
    dues, numbers, in_order = array("d"), BlockNumbers(), True
    rows: Rows = BlockRows() if kind == "mooncake" else []
    for line, (where, obj) in enumerate(jsonl_objects(path)):
        due = obj.get("timestamp")
        if not isinstance(due, int | float) or isinstance(due, bool) or not math.isfinite(due) or due < 0:
            raise WorkloadError(f"{where}: timestamp must be a number of milliseconds >= 0")
        if dues and due < dues[-1]:
            in_order = False
        dues.append(due)
        owned = part.owns(line if ranks is None else ranks[line])
        if isinstance(rows, BlockRows):
            length, max_tokens, blocks = _mooncake_line(obj, where, rng, output_len, numbers)
            if owned:
                rows.add(length, max_tokens, blocks)
        else:
            item = jsonl_item(obj, where, rng, output_len)
            if owned:
                rows.append(item)
    return dues, rows, numbers, in_order


def _rows_by_rank(ranks: array, part: Slice) -> array:
    """order[k] = the row (in file order, of the part's kept lines) of the part's k-th request by time."""
    order = array("Q", bytes(8 * part.share(len(ranks))))
    row = 0
    for rank in ranks:  # lines in file order; a kept line is the next row
        if part.owns(rank):
            order[rank // part.count] = row
            row += 1
    return order


def _mooncake_line(
    obj: dict, where: str, rng: random.Random, output_len: LengthDist | None, numbers: BlockNumbers
) -> tuple[int, int, list[int]]:
    """(input length, max_tokens, block numbers) of one Mooncake line, checked."""
    length, output, ids = obj.get("input_length"), obj.get("output_length"), obj.get("hash_ids", [])
    if type(length) is not int or not 1 <= length <= MAX_INPUT_TOKENS:
        raise WorkloadError(f"{where}: input_length must be a whole number from 1 to {MAX_INPUT_TOKENS}")
    if (type(output) is not int or not 1 <= output <= MAX_OUTPUT_TOKENS) and (
        output_len is None or "output_length" in obj
    ):
        raise WorkloadError(f"{where}: output_length must be a whole number from 1 to {MAX_OUTPUT_TOKENS}")
    blocks = math.ceil(length / BLOCK_TOKENS)
    ids = [] if ids is None else ids  # no shared blocks (AIPerf's hash_ids are optional too)
    if not isinstance(ids, list) or not all(type(i) is int for i in ids) or len(ids) > blocks:
        raise WorkloadError(
            f"{where}: hash_ids must be a list of at most {blocks} whole numbers "
            f"(one per {BLOCK_TOKENS}-token block)"
        )
    max_tokens = output_len.sample(rng) if output_len is not None else output
    return length, max_tokens, numbers.dense(ids, blocks, where)
