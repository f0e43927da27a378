"""KV-cache blocks as counts, with vLLM's prefix caching: full prompt blocks are content-hashed in a
chain, a block nobody references still counts as free but keeps its content until it is evicted,
oldest first (LRU), and a later request whose prompt starts with the same blocks reuses them.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol


class HoldsBlocks(Protocol):
    """What a request holds: the hashes of its leading cached blocks and a count of plain ones."""

    cached_refs: list[int]
    plain_blocks: int


class BlockPool:
    """KV blocks as counts: plain free blocks, plus content-hashed blocks with reference counts.
    A hashed block nobody references is still free (it counts as free for usage, like in vLLM)
    but keeps its content until it is evicted, oldest first."""

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self.free_plain = num_blocks
        self.refs: dict[int, int] = {}
        self.evictable: OrderedDict[int, None] = OrderedDict()

    @property
    def num_free(self) -> int:
        return self.free_plain + len(self.evictable)

    @property
    def usage(self) -> float:
        return 1.0 - self.num_free / self.num_blocks

    def cached_prefix(self, hashes: list[int], limit: int) -> list[int]:
        hits: list[int] = []
        for block_hash in hashes[:limit]:
            if block_hash not in self.refs:
                break
            hits.append(block_hash)
        return hits

    def acquire(self, block_hash: int) -> None:
        count = self.refs[block_hash]
        if count == 0:
            del self.evictable[block_hash]
        self.refs[block_hash] = count + 1

    def allocate(self, count: int) -> bool:
        if count > self.num_free:
            return False
        from_plain = min(count, self.free_plain)
        self.free_plain -= from_plain
        for _ in range(count - from_plain):
            evicted, _ = self.evictable.popitem(last=False)
            del self.refs[evicted]
        return True

    def promote(self, block_hash: int) -> None:
        """A plain block of a request now holds this content: share it, or make it the cached copy."""
        if block_hash in self.refs:
            self.acquire(block_hash)
            self.free_plain += 1  # our duplicate plain block is not needed
        else:
            self.refs[block_hash] = 1

    def release(self, seq: HoldsBlocks) -> None:
        # Tail blocks first, so a chain is evicted from its end and its prefix lives longest.
        for block_hash in reversed(seq.cached_refs):
            count = self.refs[block_hash] - 1
            self.refs[block_hash] = count
            if count == 0:
                self.evictable[block_hash] = None
        self.free_plain += seq.plain_blocks
        seq.cached_refs = []
        seq.plain_blocks = 0
