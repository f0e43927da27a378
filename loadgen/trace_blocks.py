"""The prompt blocks of a Mooncake trace: every 512-token block is text made from its (dense) block number
alone, so equal ids give equal text in every process of a run, and two prompts that share their first
k ids share their first k blocks.

Why shared blocks stay shared in tokens: a block's text is words, each after a space (the first word
of a prompt excepted, alike in every prompt), and blocks are joined with a space. Byte-level BPE
tokenizers (GPT-2, Llama 3, Qwen) and SentencePiece split text at spaces before merging, so no token
spans two blocks: a prompt's tokens are its blocks' tokens, one block after the other, and equal ids
give equal token sequences. tests/loadgen/test_traces.py checks this with a real `tokenizers` BPE
tokenizer. Without --tokenizer a block has round(512 / tokens-per-word) words, the ratio calibrated
from the server's usage; with one, exactly 512 tokens.

Block ids are numbered densely as the trace is read (BlockNumbers: its ids in order of first use, then a
fresh number for each block a line gives no id, `hash_ids` missing included), so a trace's ids may be
any whole numbers (sparse, negative, 64-bit hashes) and a block of a line's own never equals another
line's block. At most MAX_BLOCKS distinct blocks. Without a tokenizer the word pool grows past
POOL_WORDS when a trace has more distinct blocks than the pool has windows, so distinct blocks always
get distinct text; block texts made with a tokenizer are kept in an LRU cache of BLOCK_CACHE blocks and
made again from their id when evicted.
"""

from __future__ import annotations

import math
import random
from array import array
from collections import OrderedDict
from collections.abc import Iterable
from itertools import accumulate

from loadgen.errors import WorkloadError
from loadgen.workloads import WORDS, TextMaker

__all__ = ["BLOCK_TOKENS", "MAX_BLOCKS", "BlockNumbers", "Blocks"]

BLOCK_TOKENS = 512
BLOCK_CACHE = 4096  # block texts made with a tokenizer, kept
POOL_WORDS = 1 << 20  # words that blocks are windows of, without a tokenizer (about 6 MB)
MAX_BLOCKS = 1 << 24  # distinct blocks of one trace (a pool of that many words is about 100 MB)
_WIDTHS = tuple(len(word) + 1 for word in WORDS)  # a pool word and the space after it


class Blocks:
    """The text of each 512-token block, from its block number alone.

    Without a tokenizer a block is a window of WORDS_PER_BLOCK words (round(512 / tokens-per-word)) in
    one pool of random words made at start, at a word offset that is a bijection of the (dense) number
    (n x A mod M, M a prime above the number of distinct blocks): distinct numbers get distinct windows,
    so blocks are shared exactly where the trace shares them, and a block costs a string slice at dispatch
    (making 512 words per block cost about 1 ms per request at 1,000 requests/s). With a tokenizer a
    block is exactly 512 tokens, made and checked by the tokenizer once and kept in an LRU cache."""

    def __init__(self, text: TextMaker, seed: int, distinct: int = 0) -> None:
        self.text = text
        self.seed = seed
        self._cache: OrderedDict[tuple[int, int], str] = OrderedDict()
        if text.tokenizer is None:
            rng = random.Random(seed)
            self.words_per_block = max(1, round(BLOCK_TOKENS / text.tokens_per_word))
            size = max(POOL_WORDS, distinct + self.words_per_block + 16)  # a window per distinct block
            picks = rng.randbytes(size)  # the pool's words, as workloads.random_words draws them
            self._pool = " ".join(map(WORDS.__getitem__, picks))  # no string object per word on the way
            self._starts = array("I", accumulate(map(_WIDTHS.__getitem__, picks), initial=0))
            self._modulus = _prime_below(size - self.words_per_block)
            self._multiplier = rng.randrange(1, self._modulus)

    def block(self, number: int, tokens: int) -> str:
        if self.text.tokenizer is None:
            words = min(self.words_per_block, max(1, round(tokens / self.text.tokens_per_word)))
            first = number * self._multiplier % self._modulus
            return self._pool[self._starts[first] : self._starts[first + words] - 1]
        key = (number, tokens)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        # the first `tokens` tokens of the block's full text, so a partial last block is a prefix of the
        # block with the same id seen whole elsewhere
        tokenizer = self.text.tokenizer
        full = self.text.make(BLOCK_TOKENS, random.Random(f"{self.seed}:{number}"))
        text = full if tokens == BLOCK_TOKENS else tokenizer.decode(tokenizer.encode(full)[:tokens])
        self._cache[key] = text
        if len(self._cache) > BLOCK_CACHE:
            self._cache.popitem(last=False)
        return text

    def prompt(self, numbers: Iterable[int], input_length: int) -> str:
        """A prompt of `input_length` tokens: its blocks' texts, the last one partial."""
        blocks = []
        left = input_length
        for number in numbers:
            blocks.append(self.block(number, min(BLOCK_TOKENS, left)))
            left -= BLOCK_TOKENS
        return " ".join(blocks)


def _prime_below(limit: int) -> int:
    candidate = limit - 1 if limit % 2 == 0 else limit - 2
    while any(candidate % d == 0 for d in range(3, math.isqrt(candidate) + 1, 2)):
        candidate -= 2
    return candidate


class BlockNumbers:
    """Dense block numbers: the trace's ids numbered in order of first use, and a fresh number for each
    block a line gives no id (its own, shared with no other line)."""

    def __init__(self) -> None:
        self._numbers: dict[int, int] = {}
        self.count = 0  # distinct blocks so far

    def dense(self, ids: list[int], blocks: int, where: str) -> list[int]:
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
        if self.count > MAX_BLOCKS:
            raise WorkloadError(f"{where}: more than {MAX_BLOCKS} distinct blocks in the trace")
        return dense
